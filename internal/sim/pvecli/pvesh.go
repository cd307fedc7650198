package pvecli

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

const pveshUsage = "USAGE: pvesh <COMMAND> [ARGS] [OPTIONS]\n       pvesh get <api_path> [OPTIONS] [FORMAT_OPTIONS]"

// pvesh gives the API's GET answers on the command line, as root, without
// the {"data": ...} envelope.
func (c *cli) pvesh(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintf(c.env.Stderr, "ERROR: no command specified\n%s\n", pveshUsage)
		return exitErr
	}
	verb := argv[0]
	switch verb {
	case "get", "ls", "usage":
	case "create", "set", "delete":
		return c.pveshWrite(verb, argv[1:])
	default:
		fmt.Fprintf(c.env.Stderr, "unknown command 'pvesh %s'\n%s\n", verb, pveshUsage)
		return exitErr
	}
	a, err := parseArgs(argv[1:], map[string]bool{"noborder": true, "noheader": true, "human-readable": true, "current": true, "full": true}, nil)
	if err != nil {
		return c.failUsage(err, pveshUsage)
	}
	if len(a.pos) != 1 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", pveshUsage)
		return exitErr
	}
	path := "/" + strings.Trim(a.pos[0], "/")
	var data any
	if err := c.store.View(func(st *pve.State) error {
		var err error
		data, err = pveshGet(st, c.env.Node, path, a.opts)
		return err
	}); err != nil {
		return c.fail(err, "")
	}
	return c.printData(a.opts["output-format"], data)
}

func pveshGet(st *pve.State, node, path string, o map[string]string) (any, error) {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case path == "/version":
		return map[string]any{"version": st.Version, "release": st.Release(), "repoid": st.RepoID}, nil
	case path == "/nodes":
		return st.NodesData(pve.Root), nil
	case path == "/cluster/resources":
		return st.ClusterResourcesData(pve.Root, o["type"]), nil
	case path == "/cluster/status":
		return st.ClusterStatusData(pve.Root, node)
	case path == "/cluster/nextid":
		if v := o["vmid"]; v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return nil, pve.ParamError(map[string]string{"vmid": fmt.Sprintf("type check ('integer') failed - got '%s'", v)})
			}
			if err := st.CheckID(n); err != nil {
				return nil, err
			}
			return strconv.Itoa(n), nil
		}
		return strconv.Itoa(st.NextID()), nil
	case path == "/pools":
		return st.PoolsData(pve.Root), nil
	case path == "/storage":
		var out []map[string]any
		for _, id := range st.StorageIDs() {
			s := st.Storages[id]
			d := map[string]any{"storage": id, "type": s.Type, "content": strings.Join(s.Content, ","), "digest": "0"}
			if s.Path != "" {
				d["path"] = s.Path
			}
			if s.VGName != "" {
				d["vgname"] = s.VGName
			}
			if s.ThinPool != "" {
				d["thinpool"] = s.ThinPool
			}
			if s.Shared {
				d["shared"] = 1
			}
			out = append(out, d)
		}
		return out, nil
	case path == "/access/users":
		var out []map[string]any
		var ids []string
		for id := range st.Users {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		full := boolOpt(args{opts: o}, "full")
		for _, id := range ids {
			u := st.Users[id]
			e := map[string]any{"userid": id, "enable": b2i(u.Enable), "expire": u.Expire}
			if full {
				// PVE::API2::User index: with full=1, each user's tokens.
				toks := []map[string]any{}
				for _, name := range slices.Sorted(maps.Keys(u.Tokens)) {
					tk := u.Tokens[name]
					toks = append(toks, map[string]any{"tokenid": name, "comment": tk.Comment, "expire": tk.Expire, "privsep": b2i(tk.Privsep)})
				}
				e["tokens"] = toks
			}
			out = append(out, e)
		}
		return out, nil
	case path == "/access/roles":
		return roleListData(st), nil
	case path == "/access/acl":
		return aclListData(st), nil
	case path == "/access/permissions":
		authid := o["userid"]
		if authid == "" {
			authid = pve.Root
		}
		out := map[string]any{}
		tree := st.PermissionsTree(authid)
		if p := o["path"]; p != "" {
			tree = map[string]map[string]bool{p: st.Permissions(authid, p)}
		}
		for p, privs := range tree {
			m := map[string]any{}
			for k := range privs {
				m[k] = 1
			}
			out[p] = m
		}
		return out, nil
	case len(seg) >= 2 && seg[0] == "nodes":
		return pveshNode(st, seg[1], seg[2:], o)
	}
	return nil, pve.Fail("no such resource '%s'", path)
}

func pveshNode(st *pve.State, node string, rest []string, o map[string]string) (any, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	p := strings.Join(rest, "/")
	switch {
	case p == "status":
		return st.NodeStatusData(pve.Root, node)
	case p == "storage":
		all, err := st.NodeStorages(pve.Root, node)
		if err != nil {
			return nil, err
		}
		if ct := o["content"]; ct != "" {
			var out []map[string]any
			for _, s := range all {
				if strings.Contains(","+s["content"].(string)+",", ","+ct+",") {
					out = append(out, s)
				}
			}
			return out, nil
		}
		return all, nil
	case len(rest) == 3 && rest[0] == "storage" && rest[2] == "status":
		return st.NodeStorage(pve.Root, node, rest[1])
	case p == "network":
		all, err := st.NodeNetworkData(pve.Root, node)
		if err != nil {
			return nil, err
		}
		if t := o["type"]; t != "" && t != "bridge" && t != "any_bridge" {
			return []map[string]any{}, nil
		}
		return all, nil
	case p == "qemu":
		vms, err := st.ListVMs(pve.Root, node)
		if err != nil {
			return nil, err
		}
		out := []map[string]any{}
		for _, vm := range vms {
			out = append(out, st.VMListData(vm))
		}
		return out, nil
	case len(rest) >= 3 && rest[0] == "qemu":
		id, err := strconv.Atoi(rest[1])
		if err != nil {
			return nil, pve.ParamError(map[string]string{"vmid": fmt.Sprintf("type check ('integer') failed - got '%s'", rest[1])})
		}
		vm, err := st.GetVM(pve.Root, node, id)
		if err != nil {
			return nil, err
		}
		switch strings.Join(rest[2:], "/") {
		case "config":
			return pve.ConfigData(vm), nil
		case "status/current":
			return st.VMStatusData(vm), nil
		}
	}
	return nil, pve.Fail("no such resource '/nodes/%s/%s'", node, p)
}

// pveshWrite supports the few writes a setup might make through pvesh:
// creating a pool, and on any node of the cluster (pvesh forwards the
// call to it) converting a VM to a template, setting its config and
// destroying it.
func (c *cli) pveshWrite(verb string, argv []string) int {
	a, err := parseArgs(argv, map[string]bool{"purge": true, "skiplock": true, "destroy-unreferenced-disks": true}, nil)
	if err != nil {
		return c.failUsage(err, pveshUsage)
	}
	if len(a.pos) != 1 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", pveshUsage)
		return exitErr
	}
	path := "/" + strings.Trim(a.pos[0], "/")
	seg := strings.Split(strings.Trim(path, "/"), "/")
	notImpl := &pve.Error{Status: 501, Msg: fmt.Sprintf("Method '%s %s' not implemented", map[string]string{"create": "POST", "set": "PUT", "delete": "DELETE"}[verb], path)}
	if verb == "create" && path == "/pools" {
		if err := c.store.Update(func(st *pve.State) error { return st.AddPool(pve.Root, a.opts["poolid"], a.opts["comment"]) }); err != nil {
			return c.fail(err, "")
		}
		return 0
	}
	if len(seg) < 4 || seg[0] != "nodes" || seg[2] != "qemu" {
		return c.fail(notImpl, "")
	}
	node := seg[1]
	id, err := strconv.Atoi(seg[3])
	if err != nil {
		return c.fail(pve.ParamError(map[string]string{"vmid": fmt.Sprintf("type check ('integer') failed - got '%s'", seg[3])}), "")
	}
	reach := func(st *pve.State) error {
		if err := st.CheckNode(node); err != nil {
			return err
		}
		if !st.NodeOnline(node) {
			// pvesh forwards the call to the node over SSH.
			return pve.Fail("proxy handler failed: ssh: connect to host %s port 22: No route to host", st.Nodes[node].IP)
		}
		return nil
	}
	var op func(st *pve.State) (string, error)
	rest := strings.Join(seg[4:], "/")
	switch {
	case verb == "create" && rest == "template":
		op = func(st *pve.State) (string, error) { return st.ConvertToTemplate(pve.Root, node, id) }
	case verb == "set" && rest == "config":
		params := map[string]string{}
		for k, v := range a.opts {
			params[k] = v
		}
		// PUT: applied at once, no task.
		err = c.store.Update(func(st *pve.State) error {
			if err := reach(st); err != nil {
				return err
			}
			_, err := st.SetConfig(pve.Root, node, id, params, false)
			return err
		})
		if err != nil {
			return c.fail(err, "")
		}
		return 0
	case verb == "delete" && rest == "":
		op = func(st *pve.State) (string, error) {
			return st.Destroy(pve.Root, node, id, boolOpt(a, "purge"), boolOpt(a, "destroy-unreferenced-disks"), boolOpt(a, "skiplock"))
		}
	default:
		return c.fail(notImpl, "")
	}
	err = c.runTask(func(st *pve.State) (string, error) {
		if err := reach(st); err != nil {
			return "", err
		}
		return op(st)
	})
	if err != nil {
		return c.fail(err, "")
	}
	return 0
}
