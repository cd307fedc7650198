package proxmox

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Placement (docs/proxmox-cluster.md). For each contract every placement
// node is considered; a node is skipped when it is offline, in HA
// maintenance, has no way to the template (the template or a copy of it
// from node_templates on the node, or the template on shared storage so
// that it can be cloned to the node with target), or when the VM does not
// fit:
//
//	free memory = min(maxmem × memory_overcommit − memory of its VMs,
//	                  maxmem − memory in use)  − memory being placed there
//	free vCPUs  = maxcpu × cpu_overcommit − vCPUs of its VMs − vCPUs being placed
//	storage     = size − used − disks being placed ≥ the VM's disk + storage_headroom_percent of size
//
// where "its VMs" are the running VMs and every dc-agent VM (stopped ones
// are meant to run). Of the nodes where the VM fits, the one with the
// most free memory left wins (then the most free vCPUs, then the name).
// What a provision places is reserved until its VM shows in the
// cluster's statistics, so a burst of contracts spreads out.

// checkNodes checks the placement nodes; a bare VMID in an instance id
// means the first listed node when node is not set.
func checkNodes(cfg *config.ProxmoxConfig) error {
	if !cfg.Nodes.Auto() {
		for _, n := range cfg.Nodes {
			if !config.ValidNodeName(n) {
				return fmt.Errorf("nodes: %q is not a node name; list node names (see `pvesh get /nodes`) or write nodes = \"auto\"", n)
			}
		}
		if cfg.Node == "" && len(cfg.Nodes) > 0 {
			cfg.Node = cfg.Nodes[0]
		}
	}
	return nil
}

// plan is where one contract's VM is made.
type plan struct {
	node string        // the node the VM lives on
	tpl  *templateInfo // the template cloned (on tpl.node; a clone with target when it is not node)
	// storage is where the VM's boot disk lands; fullStorage is the
	// storage option of a full clone ("" keeps the template's storage).
	storage, fullStorage string
	res                  *reservation
}

// target is the clone's target node ("" for a clone on the template's node).
func (pl *plan) target() string {
	if pl.node == pl.tpl.node {
		return ""
	}
	return pl.node
}

// placing is the placement state of a Provisioner, under its mu.
type placing struct {
	// placeMu makes choosing a node and reserving room there one step.
	placeMu      sync.Mutex
	reservations map[*reservation]struct{}
	// warned: when a warning was last logged (warnHourly).
	warned map[string]time.Time
}

// holdVMID records the VMID a placed clone got: the cluster's statistics
// do not count it while the reservation does.
func (p *Provisioner) holdVMID(pl *plan, vmid int) {
	if pl.res == nil {
		return
	}
	p.mu.Lock()
	pl.res.vmid = vmid
	p.mu.Unlock()
}

// reservation is what a provision is placing on a node.
type reservation struct {
	node, storageKey string
	mem, cores, disk int64
	vmid             int
	// done: the VM was made; the reservation counts until the cluster's
	// statistics do.
	done   bool
	doneAt time.Time
}

// need is what a contract's VM takes.
type need struct {
	mem, cores, disk int64
}

func (p *Provisioner) need(req provisioners.Request, tpl *templateInfo) need {
	n := need{mem: int64(req.MemoryMB) << 20, cores: int64(req.CPUCores), disk: max(int64(req.StorageGB)<<30, tpl.size)}
	if n.mem <= 0 {
		n.mem = tpl.memMB << 20
	}
	if n.cores <= 0 {
		n.cores = tpl.cores
	}
	return n
}

// templateOn returns the template to clone for a VM on node: one of the
// template's family (the template and its node_templates copies) that is
// on node, else the template itself when all its disks are on shared
// storage (cloned with target), else nil and why not.
func (p *Provisioner) templateOn(ctx context.Context, v *clusterView, tplID int, node string) (*templateInfo, string, error) {
	for _, id := range p.family(tplID) {
		if r, ok := v.byVMID[id]; ok && r.Node == node {
			ti, err := p.templateInfo(ctx, id, node)
			return ti, "", err
		}
	}
	home, ok := v.byVMID[tplID]
	if !ok {
		return nil, "", provisioners.Permanent(fmt.Errorf("template VM %d does not exist in the cluster; build it with `dc-agent setup proxmox` or fix template_vmid", tplID))
	}
	if !v.online(home.Node) {
		return nil, fmt.Sprintf("no copy of template %d here and its node %s is offline", tplID, home.Node), nil
	}
	ti, err := p.templateInfo(ctx, tplID, home.Node)
	if err != nil {
		return nil, "", err
	}
	for _, sid := range ti.storages {
		if s, ok := v.storages[home.Node+"/"+sid]; !ok || !bool(s.Shared) {
			return nil, fmt.Sprintf("template %d is on local storage %s of %s and node_templates names no copy here", tplID, sid, home.Node), nil
		}
	}
	return ti, "", nil
}

// family is the template and its copies on other nodes.
func (p *Provisioner) family(tplID int) []int {
	out := []int{tplID}
	for key, copies := range p.cfg.NodeTemplates {
		id, err := strconv.Atoi(key)
		if err != nil {
			id = p.cfg.Templates[key]
		}
		if id != tplID {
			continue
		}
		nodes := make([]string, 0, len(copies))
		for n := range copies {
			nodes = append(nodes, n)
		}
		sort.Strings(nodes)
		for _, n := range nodes {
			out = append(out, copies[n])
		}
	}
	return out
}

// candidate is a node the VM fits on.
type candidate struct {
	plan             plan
	memLeft, cpuLeft float64
}

// place picks the node for a contract's VM and reserves room there.
// excluded nodes (lost during this provision) are skipped.
func (p *Provisioner) place(ctx context.Context, v *clusterView, tplID int, req provisioners.Request, excluded map[string]string) (*plan, error) {
	p.placeMu.Lock()
	defer p.placeMu.Unlock()
	memOC := orFloat(p.cfg.MemoryOvercommit, config.DefaultMemoryOvercommit)
	cpuOC := orFloat(p.cfg.CPUOvercommit, config.DefaultCPUOvercommit)
	headroom := p.cfg.StorageHeadroomPercent
	if headroom == 0 {
		headroom = config.DefaultStorageHeadroomPercent
	}
	p.mu.Lock()
	p.settleReservations()
	p.mu.Unlock()
	var fits []candidate
	var why []string
	skip := func(n, format string, args ...any) { why = append(why, n+": "+fmt.Sprintf(format, args...)) }
	for _, n := range p.placementNodes(v) {
		r, ok := v.nodes[n]
		switch {
		case excluded[n] != "":
			skip(n, "%s", excluded[n])
			continue
		case !ok:
			skip(n, "not in the cluster")
			continue
		case r.Status != "online":
			skip(n, "%s", r.Status)
			continue
		case r.HAState == "maintenance":
			skip(n, "in maintenance")
			continue
		case r.MaxMem == 0:
			skip(n, "its size and load are hidden from the API token; %s", p.grantHint())
			continue
		}
		tpl, reason, err := p.templateOn(ctx, v, tplID, n)
		if err != nil {
			return nil, err
		}
		if tpl == nil {
			skip(n, "%s", reason)
			continue
		}
		want := p.need(req, tpl)
		pl := plan{node: n, tpl: tpl}
		pl.storage, pl.fullStorage = p.diskStorage(v, tpl, n)
		used := p.usage(v, n)
		p.mu.Lock()
		rMem, rCores, rDisk := p.reserved(v, n, storageKey(v, n, pl.storage))
		p.mu.Unlock()
		memFree := min(float64(r.MaxMem)*memOC-float64(used.mem), float64(r.MaxMem-r.Mem)) - float64(rMem)
		cpuFree := r.MaxCPU*cpuOC - float64(used.cores) - float64(rCores)
		s, ok := v.storages[n+"/"+pl.storage]
		switch {
		case memFree < float64(want.mem):
			skip(n, "%s free memory, %s needed", gib(memFree), gib(float64(want.mem)))
			continue
		case cpuFree < float64(want.cores):
			skip(n, "%.0f free vCPUs (cpu_overcommit %g), %d needed", max(cpuFree, 0), cpuOC, want.cores)
			continue
		case !ok || s.Status != "available":
			skip(n, "storage %s is not available there", pl.storage)
			continue
		case float64(s.MaxDisk-s.Disk-rDisk-want.disk) < float64(s.MaxDisk)*float64(headroom)/100:
			skip(n, "storage %s has %s free, %s needed plus %d%% headroom", pl.storage, gib(float64(s.MaxDisk-s.Disk-rDisk)), gib(float64(want.disk)), headroom)
			continue
		}
		fits = append(fits, candidate{plan: pl, memLeft: memFree - float64(want.mem), cpuLeft: cpuFree - float64(want.cores)})
	}
	if len(fits) == 0 {
		return nil, fmt.Errorf("no node of the cluster can take this contract now (%s)", strings.Join(why, "; "))
	}
	sort.SliceStable(fits, func(i, j int) bool {
		a, b := fits[i], fits[j]
		if a.memLeft != b.memLeft {
			return a.memLeft > b.memLeft
		}
		if a.cpuLeft != b.cpuLeft {
			return a.cpuLeft > b.cpuLeft
		}
		return a.plan.node < b.plan.node
	})
	pl := fits[0].plan
	want := p.need(req, pl.tpl)
	pl.res = &reservation{node: pl.node, storageKey: storageKey(v, pl.node, pl.storage), mem: want.mem, cores: want.cores, disk: want.disk}
	p.mu.Lock()
	if p.reservations == nil {
		p.reservations = map[*reservation]struct{}{}
	}
	p.reservations[pl.res] = struct{}{}
	p.mu.Unlock()
	p.log.Debug("placed", "node", pl.node, "template", pl.tpl.vmid, "template_node", pl.tpl.node, "storage", pl.storage,
		"free_memory", gib(fits[0].memLeft+float64(want.mem)), "skipped", strings.Join(why, "; "))
	return &pl, nil
}

// diskStorage is the storage a VM's boot disk lands on when cloned from
// tpl to node, and the storage option of a full clone: a linked clone
// stays on the template's storage; a full clone goes to the configured
// storage, except when cloned to another node, which PVE allows only to
// a shared storage (else it stays on the template's shared storage).
func (p *Provisioner) diskStorage(v *clusterView, tpl *templateInfo, node string) (string, string) {
	if p.cfg.LinkedClone && !tpl.noLink && (p.cfg.Storage == "" || p.cfg.Storage == tpl.storage) {
		return tpl.storage, ""
	}
	if node != tpl.node {
		if s, ok := v.storages[node+"/"+p.cfg.Storage]; !ok || !bool(s.Shared) {
			return tpl.storage, ""
		}
	}
	return p.cfg.Storage, p.cfg.Storage
}

// storageKey names a storage's capacity: a shared storage has one.
func storageKey(v *clusterView, node, sid string) string {
	if bool(v.storages[node+"/"+sid].Shared) {
		return sid
	}
	return node + "/" + sid
}

// usage is the memory and vCPUs a node's VMs are given: running VMs and
// dc-agent VMs, except those still being made (their reservation counts).
func (p *Provisioner) usage(v *clusterView, node string) need {
	p.mu.Lock()
	mine := map[int]bool{}
	for r := range p.reservations {
		if r.vmid != 0 && !r.done {
			mine[r.vmid] = true
		}
	}
	p.mu.Unlock()
	var u need
	for _, r := range v.vms {
		if r.Node != node || bool(r.Template) || mine[r.VMID] {
			continue
		}
		if r.Status == "running" || provisioners.ContractIDFromName(r.Name) != "" {
			u.mem += r.MaxMem
			u.cores += int64(r.MaxCPU)
		}
	}
	return u
}

// reserved sums what provisions are placing on a node and a storage, and
// what they made that v does not count yet. Callers hold p.mu.
func (p *Provisioner) reserved(v *clusterView, node, storage string) (mem, cores, disk int64) {
	for r := range p.reservations {
		if r.done && v.byVMID[r.vmid].MaxMem > 0 {
			continue
		}
		if r.node == node {
			mem += r.mem
			cores += r.cores
		}
		if r.storageKey == storage {
			disk += r.disk
		}
	}
	return mem, cores, disk
}

// reservationKept is how long a made VM's reservation outlives it: by
// then pvestatd (every 10 s) has long reported the VM.
const reservationKept = 5 * time.Minute

// settleReservations forgets the reservations of VMs made long ago.
// Callers hold p.mu.
func (p *Provisioner) settleReservations() {
	now := p.opts.Now()
	for r := range p.reservations {
		if r.done && now.Sub(r.doneAt) > reservationKept {
			delete(p.reservations, r)
		}
	}
}

// release ends a provision's reservation: a made VM keeps it until the
// statistics count the VM; a failed provision frees it.
func (p *Provisioner) release(pl *plan, vmid int, ok bool) {
	if pl == nil || pl.res == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if ok {
		pl.res.vmid, pl.res.done, pl.res.doneAt = vmid, true, p.opts.Now()
		return
	}
	delete(p.reservations, pl.res)
}

func orFloat(v, def float64) float64 {
	if v > 0 {
		return v
	}
	return def
}

func gib(b float64) string { return fmt.Sprintf("%.1f GiB", max(b, 0)/(1<<30)) }
