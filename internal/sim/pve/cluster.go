package pve

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
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

// nodeCPU is the node's CPU load: a little for the host plus a little
// per running guest's vCPU.
func (st *State) nodeCPU(node string) float64 {
	n := st.Nodes[node]
	busy := 0
	for _, vm := range st.VMs {
		if vm.Node == node && vm.Status == "running" {
			busy += vmCPUs(vm)
		}
	}
	return 0.031 + 0.05*float64(busy)/float64(max(n.CPUs, 1))
}

// statsExpiry is how long pmxcfs keeps a silent node's statistics
// (status.c: rrd entries older than 5 minutes are dropped).
const statsExpiry = 5 * time.Minute

// statsStale: node went offline, its last statistics still shown.
// statsGone: they expired.
func (st *State) nodeStats(node string) (online, stale bool) {
	if st.NodeOnline(node) {
		return true, false
	}
	n := st.Nodes[node]
	return false, st.Now().Sub(n.OfflineSince) <= statsExpiry
}

// nodeEntry is a node as GET /nodes and /cluster/resources list it
// (API2Tools::extract_node_stats): the statistics only with Sys.Audit on
// /nodes/{node}; an offline node keeps its sizes while they last.
func (st *State) nodeEntry(actor, name string) map[string]any {
	n := st.Nodes[name]
	d := map[string]any{"node": name, "type": "node", "id": "node/" + name, "status": "unknown"}
	audit := st.Has(actor, "/nodes/"+name, "Sys.Audit")
	online, stale := st.nodeStats(name)
	if online || stale {
		d["level"] = ""
		if audit {
			d["maxcpu"] = n.CPUs
			d["maxmem"] = n.MemoryBytes
			d["maxdisk"] = int64(100 << 30)
		}
	}
	if online {
		d["status"] = "online"
		if audit {
			d["mem"] = st.nodeMemUsed(name)
			d["cpu"] = st.nodeCPU(name)
			d["uptime"] = int64(st.Now().Sub(n.BootedAt).Seconds())
			d["disk"] = int64(12 << 30)
		}
	} else {
		d["status"] = "offline"
	}
	return d
}

// NodesData is GET /nodes (and `pvesh get /nodes`): one entry per node
// with its certificate fingerprint.
func (st *State) NodesData(actor string) []map[string]any {
	var out []map[string]any
	for _, name := range st.NodeNames() {
		d := st.nodeEntry(actor, name)
		d["ssl_fingerprint"] = st.Nodes[name].SSLFingerprint
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
		"cpu":        st.nodeCPU(node),
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

// Quorate: more than half of the nodes are online (corosync votes, one
// per node). Without quorum the cluster file system is read-only.
func (st *State) Quorate() bool {
	online := 0
	for name := range st.Nodes {
		if st.NodeOnline(name) {
			online++
		}
	}
	return 2*online > len(st.Nodes)
}

// ErrNoQuorum is PVE's answer to a change while the cluster has no
// quorum (PVE::Cluster::check_cfs_quorum).
func ErrNoQuorum() *Error { return Fail("cluster not ready - no quorum?") }

// ClusterStatusData is GET /cluster/status (Sys.Audit on /), as answered
// by node local.
func (st *State) ClusterStatusData(actor, local string) ([]map[string]any, error) {
	if err := st.Check(actor, "/", "Sys.Audit"); err != nil {
		return nil, err
	}
	var out []map[string]any
	if len(st.Nodes) > 1 {
		out = append(out, map[string]any{"type": "cluster", "id": "cluster", "name": "simcluster",
			"nodes": len(st.Nodes), "quorate": b2i(st.Quorate()), "version": len(st.Nodes) + 1})
	}
	for _, name := range st.NodeNames() {
		n := st.Nodes[name]
		out = append(out, map[string]any{"type": "node", "id": "node/" + name, "name": name, "nodeid": n.NodeID,
			"ip": n.IP, "online": b2i(st.NodeOnline(name)), "local": b2i(name == local), "level": ""})
	}
	return out, nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// haActive: the HA manager runs once a node was put in maintenance; from
// then on /cluster/resources shows every node's HA state.
func (st *State) haActive() bool {
	for _, n := range st.Nodes {
		if n.Maintenance {
			return true
		}
	}
	return false
}

// vmStatsShown reports whether a VM's statistics are in /cluster/resources:
// pvestatd on its node sent them (Timing.Stats after its creation) and
// they have not expired since the node went offline.
func (st *State) vmStatsShown(vm *VM) bool {
	online, stale := st.nodeStats(vm.Node)
	if !online && !stale {
		return false
	}
	return vm.CreatedAt.IsZero() || !st.Now().Before(vm.CreatedAt.Add(st.Timing.Stats.D()))
}

// vmResource is a guest's entry in /cluster/resources
// (API2Tools::extract_vm_stats plus lock, tags and pool).
func (st *State) vmResource(actor string, vm *VM) map[string]any {
	d := map[string]any{"id": fmt.Sprintf("qemu/%d", vm.VMID), "vmid": vm.VMID, "node": vm.Node, "type": "qemu", "status": "unknown"}
	if st.vmStatsShown(vm) {
		c := st.vmCommon(vm)
		for _, k := range []string{"uptime", "name", "status", "maxmem", "mem", "maxdisk", "disk", "netin", "netout", "diskread", "diskwrite", "cpu"} {
			d[k] = c[k]
		}
		d["maxcpu"] = vmCPUs(vm)
		d["template"] = b2i(vm.IsTemplate())
		if !st.NodeOnline(vm.Node) && vm.LastStatus != "" {
			d["status"] = vm.LastStatus
		}
	}
	if l := vm.Lock(); l != "" {
		d["lock"] = l
	}
	if t := vm.Config["tags"]; t != "" {
		d["tags"] = t
	}
	if vm.Pool != "" && st.Has(actor, "/pool/"+vm.Pool, "Pool.Audit") {
		d["pool"] = vm.Pool
	}
	return d
}

// ClusterResourcesData is GET /cluster/resources (?type=vm|storage|node),
// as PVE::API2::Cluster answers it: every node (statistics only with
// Sys.Audit on it), the guests with VM.Audit, one entry per node and
// storage with Datastore.Audit, pools with Pool.Audit.
func (st *State) ClusterResourcesData(actor, typ string) []map[string]any {
	var out []map[string]any
	if typ == "" {
		var ids []string
		for id := range st.Pools {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			if st.Has(actor, "/pool/"+id, "Pool.Audit") {
				out = append(out, map[string]any{"id": "/pool/" + id, "pool": id, "type": "pool"})
			}
		}
	}
	if typ == "" || typ == "vm" {
		for _, id := range st.VMIDs() {
			if st.Has(actor, vmPath(id), "VM.Audit") {
				out = append(out, st.vmResource(actor, st.VMs[id]))
			}
		}
	}
	if typ == "" || typ == "node" {
		ha := st.haActive()
		for _, name := range st.NodeNames() {
			d := st.nodeEntry(actor, name)
			d["cgroup-mode"] = 2
			if ha {
				switch {
				case !st.NodeOnline(name):
					d["hastate"] = "unknown"
				case st.Nodes[name].Maintenance:
					d["hastate"] = "maintenance"
				default:
					d["hastate"] = "online"
				}
			}
			out = append(out, d)
		}
	}
	if typ == "" || typ == "storage" {
		for _, sid := range st.StorageIDs() {
			if !st.Has(actor, "/storage/"+sid, "Datastore.Audit") {
				continue
			}
			for _, node := range st.NodeNames() {
				if !st.StorageOnNode(sid, node) {
					continue
				}
				s := st.Storages[sid]
				d := map[string]any{"id": "storage/" + node + "/" + sid, "type": "storage", "storage": sid, "node": node,
					"status": "unknown", "plugintype": s.Type, "content": strings.Join(s.Content, ","), "shared": b2i(s.Shared)}
				if online, stale := st.nodeStats(node); online || stale {
					d["status"] = "available"
					d["maxdisk"] = st.StorageTotal(sid, node)
					d["disk"] = st.StorageUsed(sid, node)
				}
				out = append(out, d)
			}
		}
	}
	return out
}

// SetNodeOffline takes a node out of the cluster until SetNodeOnline.
// powerLoss: its running tasks die where they are (a clone leaves its
// locked temporary VM behind), its guests stop.
func (st *State) SetNodeOffline(node string, powerLoss bool) error {
	n := st.Nodes[node]
	if n == nil {
		return st.CheckNode(node)
	}
	now := st.Now()
	if st.NodeOnline(node) {
		n.OfflineSince = now
		for _, vm := range st.VMs {
			if vm.Node == node {
				vm.LastStatus = vm.Status
			}
		}
	}
	n.Down = true
	if !powerLoss {
		return nil
	}
	n.PoweredOff = true
	for _, t := range st.Tasks {
		if t.Node == node && t.Status == "running" {
			t.Status = "stopped"
			t.ExitStatus = "unexpected status"
			t.EndTime = now.Unix()
			t.Effect = nil
			t.PollsLeft = 0
		}
	}
	for _, vm := range st.VMs {
		if vm.Node == node && vm.Status == "running" {
			vm.Status = "stopped"
			vm.PID = 0
			vm.StartedAt = time.Time{}
			vm.BootAt = time.Time{}
		}
	}
	return nil
}

// SetNodeOnline brings a node back. After a power loss it boots: the
// guests with onboot=1 start (pve-guests.service).
func (st *State) SetNodeOnline(node string) error {
	n := st.Nodes[node]
	if n == nil {
		return st.CheckNode(node)
	}
	now := st.Now()
	if n.PoweredOff {
		n.BootedAt = now
		for _, id := range st.VMIDs() {
			vm := st.VMs[id]
			if vm.Node != node || vm.IsTemplate() || vm.Lock() != "" || vm.Config["onboot"] != "1" {
				continue
			}
			vm.Status = "running"
			vm.StartedAt = now
			vm.PID = 200000 + int(st.nextSeq()%700000)
			vm.BootAt = now.Add(st.Timing.Boot.D())
		}
	}
	n.Down, n.PoweredOff = false, false
	n.OfflineUntil = time.Time{}
	for _, vm := range st.VMs {
		if vm.Node == node {
			vm.LastStatus = ""
		}
	}
	return nil
}

// SetNodeMaintenance puts a node in or out of HA maintenance mode.
func (st *State) SetNodeMaintenance(node string, on bool) error {
	n := st.Nodes[node]
	if n == nil {
		return st.CheckNode(node)
	}
	n.Maintenance = on
	return nil
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

// Migrate moves a stopped VM to another node (`qm migrate VMID TARGET`,
// POST .../migrate without online): its disks on local storage are
// copied to the same storage of the target node (PVE::QemuMigrate).
func (st *State) Migrate(actor, node string, vmid int, target string) (string, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Migrate"); err != nil {
		return "", err
	}
	if target == node {
		return "", Fail("target is local node.")
	}
	if st.Nodes[target] == nil {
		return "", Fail("no such cluster node '%s'", target)
	}
	if !st.Quorate() {
		return "", ErrNoQuorum()
	}
	if vm.Status == "running" {
		return "", Fail("can't migrate running VM without --online")
	}
	if l := vm.Lock(); l != "" {
		return "", Fail("VM %d is locked (%s)", vmid, l)
	}
	t := st.startTask(node, "qmigrate", strconv.Itoa(vmid), actor, st.Timing.Clone, &Effect{VMID: vmid, Target: target})
	t.Log = append(t.Log, fmt.Sprintf("starting migration of VM %d to node '%s'", vmid, target))
	return t.UPID, nil
}

// finishMigrate copies the VM's local disks to the target and moves its
// config there.
func (st *State) finishMigrate(t *Task, e *Effect) error {
	vm := st.VMs[e.VMID]
	if vm == nil {
		return fmt.Errorf("migration aborted: VM %d vanished", e.VMID)
	}
	if !st.NodeOnline(e.Target) {
		return fmt.Errorf("migration aborted (duration 00:00:03): Can't connect to destination address using public key - ssh: connect to host %s port 22: No route to host", st.Nodes[e.Target].IP)
	}
	var moved []*Volume
	for _, v := range st.Volumes {
		if v.VMID != vm.VMID || v.Node != vm.Node {
			continue
		}
		s := st.Storages[v.Storage]
		if s == nil || s.Shared {
			continue
		}
		if strings.Contains(v.Name, "/") {
			return fmt.Errorf("migration aborted: can't migrate local disk '%s': linked clone of a local base volume", v.VolID)
		}
		if !st.StorageOnNode(v.Storage, e.Target) {
			return fmt.Errorf("migration aborted: storage '%s' is not available on node '%s'", v.Storage, e.Target)
		}
		if v.AllocBytes > st.StorageAvail(v.Storage, e.Target) {
			return fmt.Errorf("migration aborted: %v", st.errNoSpace(v.Storage, e.Target, v.Name, v.AllocBytes, "lvcreate"))
		}
		moved = append(moved, v)
	}
	for _, v := range moved {
		v.Node = e.Target
		t.Log = append(t.Log, fmt.Sprintf("copying local disk '%s' to node '%s'", v.VolID, e.Target))
	}
	vm.Node = e.Target
	t.Log = append(t.Log, "migration finished successfully")
	return nil
}
