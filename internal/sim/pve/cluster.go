package pve

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
)

// nodeMemUsed is the host's memory use: 2 GiB for PVE plus what running
// guests were given.
func (st *State) nodeMemUsed(node string) int64 {
	used := int64(2 << 30)
	for _, vm := range st.VMs {
		if vm.Node == node && vm.Status == "running" {
			used += VMMemoryMB(vm) << 20
		}
	}
	return used
}

// NodesData is GET /nodes (and `pvesh get /nodes`): one entry per node
// with its certificate fingerprint.
func (st *State) NodesData() []map[string]any {
	var out []map[string]any
	for _, name := range st.NodeNames() {
		n := st.Nodes[name]
		d := map[string]any{
			"node": name, "type": "node", "id": "node/" + name, "level": "",
			"ssl_fingerprint": n.SSLFingerprint,
		}
		if st.NodeOnline(name) {
			var disk int64
			for _, sid := range st.StorageIDs() {
				if st.StorageOnNode(sid, name) {
					disk += st.StorageUsed(sid, name)
				}
			}
			d["status"] = "online"
			d["maxcpu"] = n.CPUs
			d["maxmem"] = n.MemoryBytes
			d["mem"] = st.nodeMemUsed(name)
			d["cpu"] = 0.031
			d["uptime"] = int64(st.Now().Sub(n.BootedAt).Seconds())
			d["maxdisk"] = int64(100 << 30)
			d["disk"] = int64(12 << 30)
		} else {
			d["status"] = "offline"
		}
		out = append(out, d)
	}
	return out
}

// NodeStatusData is GET /nodes/{node}/status (Sys.Audit on /nodes/{node}).
func (st *State) NodeStatusData(actor, node string) (map[string]any, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	if err := st.Check(actor, "/nodes/"+node, "Sys.Audit"); err != nil {
		return nil, err
	}
	n := st.Nodes[node]
	used := st.nodeMemUsed(node)
	return map[string]any{
		"uptime":     int64(st.Now().Sub(n.BootedAt).Seconds()),
		"loadavg":    []string{"0.12", "0.10", "0.08"},
		"cpu":        0.031,
		"wait":       0.0004,
		"idle":       0,
		"kversion":   "Linux " + st.Kernel + " #1 SMP PREEMPT_DYNAMIC PMX",
		"pveversion": fmt.Sprintf("pve-manager/%s/%s", st.Version, st.RepoID),
		"cpuinfo": map[string]any{"cpus": n.CPUs, "cores": n.CPUs, "sockets": 1, "model": n.CPUModel,
			"mhz": "2999.998", "hvm": "1", "user_hz": 100, "flags": "fpu vme de pse tsc msr pae mce"},
		"memory": map[string]any{"total": n.MemoryBytes, "used": used, "free": n.MemoryBytes - used},
		"swap":   map[string]any{"total": int64(8 << 30), "used": 0, "free": int64(8 << 30)},
		"rootfs": map[string]any{"total": int64(100 << 30), "used": int64(12 << 30), "free": int64(88 << 30), "avail": int64(83 << 30)},
		"ksm":    map[string]any{"shared": 0},
	}, nil
}

// ClusterStatusData is GET /cluster/status (Sys.Audit on /).
func (st *State) ClusterStatusData(actor string) ([]map[string]any, error) {
	if err := st.Check(actor, "/", "Sys.Audit"); err != nil {
		return nil, err
	}
	var out []map[string]any
	if len(st.Nodes) > 1 {
		out = append(out, map[string]any{"type": "cluster", "id": "cluster", "name": "simcluster",
			"nodes": len(st.Nodes), "quorate": 1, "version": len(st.Nodes) + 1})
	}
	for i, name := range st.NodeNames() {
		n := st.Nodes[name]
		online := 0
		if st.NodeOnline(name) {
			online = 1
		}
		local := 0
		if i == 0 {
			local = 1
		}
		out = append(out, map[string]any{"type": "node", "id": "node/" + name, "name": name, "nodeid": n.NodeID,
			"ip": n.IP, "online": online, "local": local, "level": ""})
	}
	return out, nil
}

// ClusterResourcesData is GET /cluster/resources (?type=vm|storage|node).
func (st *State) ClusterResourcesData(actor, typ string) []map[string]any {
	var out []map[string]any
	if typ == "" || typ == "node" {
		for _, d := range st.NodesData() {
			if st.Has(actor, "/nodes/"+d["node"].(string), "Sys.Audit") {
				d["type"] = "node"
				out = append(out, d)
			}
		}
	}
	if typ == "" || typ == "vm" {
		for _, id := range st.VMIDs() {
			vm := st.VMs[id]
			if !st.Has(actor, vmPath(id), "VM.Audit") {
				continue
			}
			d := st.vmCommon(vm)
			d["id"] = fmt.Sprintf("qemu/%d", id)
			d["type"] = "qemu"
			d["node"] = vm.Node
			if vm.Pool != "" {
				d["pool"] = vm.Pool
			}
			out = append(out, d)
		}
	}
	if typ == "" || typ == "storage" {
		for _, node := range st.NodeNames() {
			for _, sid := range st.StorageIDs() {
				if !st.StorageOnNode(sid, node) || !st.HasAny(actor, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace") {
					continue
				}
				s := st.StorageStatusData(sid, node)
				out = append(out, map[string]any{"id": "storage/" + node + "/" + sid, "type": "storage", "storage": sid,
					"node": node, "status": "available", "plugintype": s["type"], "content": s["content"],
					"maxdisk": s["total"], "disk": s["used"], "shared": s["shared"]})
			}
		}
	}
	return out
}

// NodeStorages lists the storages of a node that actor may see (GET
// /nodes/{node}/storage).
func (st *State) NodeStorages(actor, node string) ([]map[string]any, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	var out []map[string]any
	for _, sid := range st.StorageIDs() {
		if st.StorageOnNode(sid, node) && st.HasAny(actor, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace") {
			out = append(out, st.StorageStatusData(sid, node))
		}
	}
	return out, nil
}

// NodeStorage is GET /nodes/{node}/storage/{storage}/status.
func (st *State) NodeStorage(actor, node, sid string) (map[string]any, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	if err := st.CheckAny(actor, "/storage/"+sid, "Datastore.Audit", "Datastore.AllocateSpace"); err != nil {
		return nil, err
	}
	if !st.StorageOnNode(sid, node) {
		return nil, Fail("storage '%s' does not exist", sid)
	}
	return st.StorageStatusData(sid, node), nil
}

// NodeNetworkData is GET /nodes/{node}/network: the bridges.
func (st *State) NodeNetworkData(actor, node string) ([]map[string]any, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	if err := st.Check(actor, "/nodes/"+node, "Sys.Audit"); err != nil {
		return nil, err
	}
	n := st.Nodes[node]
	var names []string
	for b := range n.Bridges {
		names = append(names, b)
	}
	sort.Strings(names)
	var out []map[string]any
	for _, b := range names {
		br := n.Bridges[b]
		out = append(out, map[string]any{"iface": b, "type": "bridge", "active": 1, "autostart": 1,
			"cidr": br.CIDR, "bridge_ports": "eno1", "bridge_stp": "off", "bridge_fd": "0", "method": "static", "families": []string{"inet"}})
	}
	return out, nil
}

var poolIDRe = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)

// AddPool creates a pool.
func (st *State) AddPool(actor, id, comment string) error {
	if err := st.Check(actor, "/pool/"+id, "Pool.Allocate"); err != nil {
		return err
	}
	if !poolIDRe.MatchString(id) {
		return paramErr("poolid", "invalid format - value does not look like a valid pool id")
	}
	if st.Pools[id] != nil {
		return Fail("create pool failed: pool '%s' already exists", id)
	}
	st.Pools[id] = &Pool{ID: id, Comment: comment}
	return nil
}

// AddToPool adds VMs and storages to a pool.
func (st *State) AddToPool(actor, id string, vms []int, storages []string) error {
	if err := st.Check(actor, "/pool/"+id, "Pool.Allocate"); err != nil {
		return err
	}
	p := st.Pools[id]
	if p == nil {
		return Fail("pool '%s' does not exist", id)
	}
	for _, vmid := range vms {
		vm := st.VMs[vmid]
		if vm == nil {
			return Fail("VM %d does not exist", vmid)
		}
		if vm.Pool != "" && vm.Pool != id {
			return Fail("VM %d is already a pool member", vmid)
		}
		st.addToPool(id, vmid)
	}
	for _, sid := range storages {
		if st.Storages[sid] == nil {
			return Fail("storage '%s' does not exist", sid)
		}
		if !slices.Contains(p.Storages, sid) {
			p.Storages = append(p.Storages, sid)
		}
	}
	return nil
}

// PoolsData is GET /pools: the pools actor may audit.
func (st *State) PoolsData(actor string) []map[string]any {
	var ids []string
	for id := range st.Pools {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	var out []map[string]any
	for _, id := range ids {
		if st.Has(actor, "/pool/"+id, "Pool.Audit") {
			out = append(out, map[string]any{"poolid": id, "comment": st.Pools[id].Comment})
		}
	}
	return out
}
