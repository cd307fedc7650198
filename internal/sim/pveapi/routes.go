package pveapi

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// allow rejects parameters outside a method's schema, as PVE does
// (additionalProperties => 0).
func allow(params map[string]string, names ...string) error {
	perr := map[string]string{}
	for k := range params {
		if !slices.Contains(names, k) {
			perr[k] = "property is not defined in schema and the schema does not allow additional properties"
		}
	}
	if len(perr) > 0 {
		return pve.ParamError(perr)
	}
	return nil
}

func boolParam(params map[string]string, name string) (bool, error) {
	v, ok := params[name]
	if !ok || v == "" {
		return false, nil
	}
	switch v {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, pve.ParamError(map[string]string{name: fmt.Sprintf("type check ('boolean') failed - got '%s'", v)})
}

func notImplemented(req *request) error {
	return &pve.Error{Status: 501, Msg: fmt.Sprintf("Method '%s /api2/json%s' not implemented", req.method, req.path)}
}

// route dispatches a request and returns the route pattern (for counting)
// and the response data.
func (s *Server) route(st *pve.State, req *request) (string, any, error) {
	seg := req.segs
	m := req.method
	p := req.params
	switch {
	case len(seg) == 1 && seg[0] == "version" && m == "GET":
		return "/version", map[string]any{"version": st.Version, "release": st.Release(), "repoid": st.RepoID}, allow(p)
	case len(seg) == 1 && seg[0] == "nodes" && m == "GET":
		return "/nodes", st.NodesData(req.actor), allow(p)
	case len(seg) == 1 && seg[0] == "pools" && m == "GET":
		return "/pools", st.PoolsData(req.actor), allow(p, "type")
	case len(seg) == 1 && seg[0] == "storage" && m == "GET":
		var out []map[string]any
		for _, sid := range st.StorageIDs() {
			if st.HasAny(req.actor, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace") {
				sc := st.Storages[sid]
				out = append(out, map[string]any{"storage": sid, "type": sc.Type, "content": joinSorted(sc.Content), "digest": "0"})
			}
		}
		return "/storage", out, allow(p, "type")
	case len(seg) == 2 && seg[0] == "cluster":
		return s.routeCluster(st, req)
	case len(seg) == 2 && seg[0] == "access" && seg[1] == "permissions" && m == "GET":
		if err := allow(p, "path", "userid"); err != nil {
			return "/access/permissions", nil, err
		}
		tree := st.PermissionsTree(req.actor)
		if p["path"] != "" {
			// With a path PVE computes the effective privileges there,
			// inherited ones included, whether or not an ACL names it.
			tree = map[string]map[string]bool{p["path"]: st.Permissions(req.actor, p["path"])}
		}
		out := map[string]map[string]int{}
		for path, privs := range tree {
			out[path] = map[string]int{}
			for pr := range privs {
				out[path][pr] = 1
			}
		}
		return "/access/permissions", out, nil
	case len(seg) >= 2 && seg[0] == "nodes":
		return s.routeNode(st, req)
	}
	return req.path, nil, notImplemented(req)
}

func joinSorted(v []string) string {
	c := slices.Clone(v)
	sort.Strings(c)
	out := ""
	for i, s := range c {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

func (s *Server) routeCluster(st *pve.State, req *request) (string, any, error) {
	p := req.params
	switch {
	case req.segs[1] == "nextid" && req.method == "GET":
		if err := allow(p, "vmid"); err != nil {
			return "/cluster/nextid", nil, err
		}
		if v, ok := p["vmid"]; ok {
			id, err := atoiParam("vmid", v)
			if err != nil {
				return "/cluster/nextid", nil, err
			}
			if err := st.CheckID(id); err != nil {
				return "/cluster/nextid", nil, err
			}
			return "/cluster/nextid", fmt.Sprint(id), nil
		}
		// PVE returns the id as a string; go-proxmox relies on it.
		return "/cluster/nextid", fmt.Sprint(st.NextID()), nil
	case req.segs[1] == "status" && req.method == "GET":
		d, err := st.ClusterStatusData(req.actor, s.node)
		return "/cluster/status", d, err
	case req.segs[1] == "resources" && req.method == "GET":
		if err := allow(p, "type"); err != nil {
			return "/cluster/resources", nil, err
		}
		typ := p["type"]
		if typ != "" && typ != "vm" && typ != "storage" && typ != "node" && typ != "sdn" {
			return "/cluster/resources", nil, pve.ParamError(map[string]string{"type": "value '" + typ + "' does not have a value in the enumeration 'vm, storage, node, sdn'"})
		}
		return "/cluster/resources", st.ClusterResourcesData(req.actor, typ), nil
	}
	return req.path, nil, notImplemented(req)
}

func (s *Server) routeNode(st *pve.State, req *request) (string, any, error) {
	seg := req.segs
	node := seg[1]
	m := req.method
	p := req.params
	if err := st.CheckNode(node); err != nil {
		return "/nodes/{node}", nil, err
	}
	rest := seg[2:]
	switch {
	case len(rest) == 1 && rest[0] == "status" && m == "GET":
		d, err := st.NodeStatusData(req.actor, node)
		return "/nodes/{node}/status", d, err
	case len(rest) == 1 && rest[0] == "version" && m == "GET":
		return "/nodes/{node}/version", map[string]any{"version": st.Version, "release": st.Release(), "repoid": st.RepoID}, nil
	case len(rest) == 1 && rest[0] == "network" && m == "GET":
		d, err := st.NodeNetworkData(req.actor, node)
		return "/nodes/{node}/network", d, err
	case len(rest) == 1 && rest[0] == "storage" && m == "GET":
		if err := allow(p, "content", "enabled", "format", "storage", "target"); err != nil {
			return "/nodes/{node}/storage", nil, err
		}
		d, err := st.NodeStorages(req.actor, node)
		return "/nodes/{node}/storage", d, err
	case len(rest) == 3 && rest[0] == "storage" && rest[2] == "status" && m == "GET":
		d, err := st.NodeStorage(req.actor, node, rest[1])
		return "/nodes/{node}/storage/{storage}/status", d, err
	case len(rest) == 1 && rest[0] == "tasks" && m == "GET":
		var out []map[string]any
		for _, t := range st.NodeTasks(node) {
			if t.User == req.actor || st.Has(req.actor, "/nodes/"+node, "Sys.Audit") {
				out = append(out, pve.TaskListData(t))
			}
		}
		return "/nodes/{node}/tasks", out, nil
	case len(rest) == 3 && rest[0] == "tasks" && rest[2] == "status" && m == "GET":
		t, err := st.TaskStatus(req.actor, node, rest[1])
		if err != nil {
			return "/nodes/{node}/tasks/{upid}/status", nil, err
		}
		return "/nodes/{node}/tasks/{upid}/status", pve.TaskStatusData(t), nil
	case len(rest) == 3 && rest[0] == "tasks" && rest[2] == "log" && m == "GET":
		t, err := st.TaskStatus(req.actor, node, rest[1])
		if err != nil {
			return "/nodes/{node}/tasks/{upid}/log", nil, err
		}
		return "/nodes/{node}/tasks/{upid}/log", pve.TaskLogData(t), nil
	case len(rest) == 2 && rest[0] == "hardware" && rest[1] == "pci" && m == "GET":
		if err := allow(p, "pci-class-blacklist", "verbose"); err != nil {
			return "/nodes/{node}/hardware/pci", nil, err
		}
		bl, set := p["pci-class-blacklist"]
		d, err := st.NodePCIData(req.actor, node, bl, !set)
		return "/nodes/{node}/hardware/pci", d, err
	case len(rest) >= 1 && rest[0] == "qemu":
		return s.routeQemu(st, req, node, rest[1:])
	}
	return req.path, nil, notImplemented(req)
}

func (s *Server) routeQemu(st *pve.State, req *request, node string, rest []string) (string, any, error) {
	m := req.method
	p := req.params
	if len(rest) == 0 {
		switch m {
		case "GET":
			if err := allow(p, "full"); err != nil {
				return "/nodes/{node}/qemu", nil, err
			}
			vms, err := st.ListVMs(req.actor, node)
			if err != nil {
				return "/nodes/{node}/qemu", nil, err
			}
			out := []map[string]any{}
			for _, vm := range vms {
				out = append(out, st.VMListData(vm))
			}
			return "/nodes/{node}/qemu", out, nil
		case "POST":
			id, err := atoiParam("vmid", p["vmid"])
			if err != nil {
				return "/nodes/{node}/qemu", nil, err
			}
			params := map[string]string{}
			for k, v := range p {
				if k != "vmid" {
					params[k] = v
				}
			}
			upid, err := st.CreateVM(req.actor, node, id, params)
			return "/nodes/{node}/qemu", upid, err
		}
		return "/nodes/{node}/qemu", nil, notImplemented(req)
	}
	vmid, err := atoiParam("vmid", rest[0])
	if err != nil {
		return "/nodes/{node}/qemu/{vmid}", nil, err
	}
	sub := rest[1:]
	key := func(s string) string { return "/nodes/{node}/qemu/{vmid}" + s }
	switch {
	case len(sub) == 0 && m == "GET":
		if _, err := st.GetVM(req.actor, node, vmid); err != nil {
			return key(""), nil, err
		}
		var out []map[string]any
		for _, d := range []string{"config", "pending", "status", "agent", "clone", "resize", "template", "firewall", "rrd", "rrddata"} {
			out = append(out, map[string]any{"subdir": d})
		}
		return key(""), out, nil
	case len(sub) == 0 && m == "DELETE":
		if err := allow(p, "purge", "destroy-unreferenced-disks", "skiplock"); err != nil {
			return key(""), nil, err
		}
		purge, err := boolParam(p, "purge")
		if err != nil {
			return key(""), nil, err
		}
		unref, err := boolParam(p, "destroy-unreferenced-disks")
		if err != nil {
			return key(""), nil, err
		}
		skip, err := boolParam(p, "skiplock")
		if err != nil {
			return key(""), nil, err
		}
		upid, err := st.Destroy(req.actor, node, vmid, purge, unref, skip)
		return key(""), upid, err
	case len(sub) == 2 && sub[0] == "status" && sub[1] == "current" && m == "GET":
		vm, err := st.GetVM(req.actor, node, vmid)
		if err != nil {
			return key("/status/current"), nil, err
		}
		return key("/status/current"), st.VMStatusData(vm), allow(p)
	case len(sub) == 2 && sub[0] == "status" && m == "POST":
		var upid string
		var err error
		switch sub[1] {
		case "start":
			if err = allow(p, "skiplock", "timeout", "machine"); err == nil {
				upid, err = st.Start(req.actor, node, vmid)
			}
		case "stop":
			if err = allow(p, "skiplock", "timeout", "keepActive", "overrule-shutdown"); err == nil {
				upid, err = st.Stop(req.actor, node, vmid)
			}
		case "shutdown":
			if err = allow(p, "skiplock", "timeout", "keepActive", "forceStop"); err == nil {
				upid, err = st.Shutdown(req.actor, node, vmid)
			}
		default:
			return key("/status/" + sub[1]), nil, notImplemented(req)
		}
		return key("/status/" + sub[1]), upid, err
	case len(sub) == 1 && sub[0] == "config" && m == "GET":
		if err := allow(p, "current", "snapshot"); err != nil {
			return key("/config"), nil, err
		}
		vm, err := st.GetVM(req.actor, node, vmid)
		if err != nil {
			return key("/config"), nil, err
		}
		return key("/config"), pve.ConfigData(vm), nil
	case len(sub) == 1 && sub[0] == "config" && (m == "POST" || m == "PUT"):
		upid, err := st.SetConfig(req.actor, node, vmid, p, m == "POST")
		if m == "PUT" {
			return key("/config"), nil, err
		}
		return key("/config"), upid, err
	case len(sub) == 1 && sub[0] == "clone" && m == "POST":
		if err := allow(p, "newid", "name", "description", "pool", "snapname", "storage", "format", "full", "target", "bwlimit"); err != nil {
			return key("/clone"), nil, err
		}
		newid, err := atoiParam("newid", p["newid"])
		if err != nil {
			return key("/clone"), nil, err
		}
		cp := pve.CloneParams{NewID: newid, Name: p["name"], Description: p["description"], Pool: p["pool"],
			Storage: p["storage"], Format: p["format"], Target: p["target"], SnapName: p["snapname"]}
		if _, ok := p["full"]; ok {
			full, err := boolParam(p, "full")
			if err != nil {
				return key("/clone"), nil, err
			}
			cp.Full = &full
		}
		upid, err := st.Clone(req.actor, node, vmid, cp)
		return key("/clone"), upid, err
	case len(sub) == 1 && sub[0] == "resize" && m == "PUT":
		if err := allow(p, "disk", "size", "digest", "skiplock"); err != nil {
			return key("/resize"), nil, err
		}
		if p["disk"] == "" || p["size"] == "" {
			missing := map[string]string{}
			for _, k := range []string{"disk", "size"} {
				if p[k] == "" {
					missing[k] = "property is missing and it is not optional"
				}
			}
			return key("/resize"), nil, pve.ParamError(missing)
		}
		upid, err := st.Resize(req.actor, node, vmid, p["disk"], p["size"])
		return key("/resize"), upid, err
	case len(sub) == 1 && sub[0] == "template" && m == "POST":
		if err := allow(p, "disk"); err != nil {
			return key("/template"), nil, err
		}
		upid, err := st.ConvertToTemplate(req.actor, node, vmid)
		return key("/template"), upid, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "POST" && sub[1] == "set-user-password"):
		if err := allow(p, "username", "password", "crypted"); err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		crypted, err := boolParam(p, "crypted")
		if err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		d, err := st.SetUserPassword(req.actor, node, vmid, p["username"], p["password"], crypted)
		return key("/agent/" + sub[1]), d, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "GET" && sub[1] == "file-read"):
		if err := allow(p, "file"); err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		d, err := st.FileRead(req.actor, node, vmid, p["file"])
		return key("/agent/" + sub[1]), d, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "POST" && sub[1] == "file-write"):
		if err := allow(p, "file", "content", "encode"); err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		encode := true
		if _, ok := p["encode"]; ok {
			var err error
			if encode, err = boolParam(p, "encode"); err != nil {
				return key("/agent/" + sub[1]), nil, err
			}
		}
		d, err := st.FileWrite(req.actor, node, vmid, p["file"], p["content"], encode)
		return key("/agent/" + sub[1]), d, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "POST" && sub[1] == "exec"):
		if err := allow(p, "command", "input-data"); err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		var cmd []string
		if c := p["command"]; c != "" {
			cmd = strings.Split(c, "\x00")
		}
		d, err := st.Exec(req.actor, node, vmid, cmd)
		return key("/agent/" + sub[1]), d, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "GET" && sub[1] == "exec-status"):
		if err := allow(p, "pid"); err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		pid, err := atoiParam("pid", p["pid"])
		if err != nil {
			return key("/agent/" + sub[1]), nil, err
		}
		d, err := st.ExecStatus(req.actor, node, vmid, pid)
		return key("/agent/" + sub[1]), d, err
	case len(sub) == 2 && sub[0] == "agent" && (m == "GET" || (m == "POST" && sub[1] == "ping")):
		d, err := st.Agent(req.actor, node, vmid, sub[1])
		return key("/agent/" + sub[1]), d, err
	}
	return req.path, nil, notImplemented(req)
}
