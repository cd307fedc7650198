package proxmox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// A cluster (nodes = [...] or "auto") is seen through GET
// /cluster/resources, one request that the API node answers from the
// cluster file system and the statistics every node broadcasts
// (PVE::API2::Cluster resources):
//   - nodes: status online/offline; their size and load only with
//     Sys.Audit on /nodes/{node}; hastate "maintenance" in HA maintenance;
//   - storages: one entry per node, with shared 0/1, size and use;
//   - guests: vmid and node at once, name, status, sizes and template only
//     once their node's pvestatd reported them (up to 10 s after a clone),
//     and for an offline node the last values for 5 minutes, then none.
// Lookups by name therefore ask a node's own VM list for guests that have
// no statistics yet.

// resource is one entry of GET /cluster/resources.
type resource struct {
	ID       string   `json:"id"`
	Type     string   `json:"type"`
	Node     string   `json:"node"`
	Status   string   `json:"status"`
	Name     string   `json:"name"`
	VMID     int      `json:"vmid"`
	Template flexBool `json:"template"`
	Lock     string   `json:"lock"`
	Tags     string   `json:"tags"`
	HAState  string   `json:"hastate"`
	Storage  string   `json:"storage"`
	Shared   flexBool `json:"shared"`
	Content  string   `json:"content"`
	// PluginType is a storage's type (lvmthin, zfspool, rbd, …).
	PluginType string  `json:"plugintype"`
	MaxCPU     float64 `json:"maxcpu"`
	MaxMem     int64   `json:"maxmem"`
	Mem        int64   `json:"mem"`
	MaxDisk    int64   `json:"maxdisk"`
	Disk       int64   `json:"disk"`
	Uptime     int64   `json:"uptime"`
}

// flexBool is PVE's 0/1 (also true/false or "1").
type flexBool bool

func (b *flexBool) UnmarshalJSON(data []byte) error {
	switch string(bytes.Trim(data, `"`)) {
	case "1", "true":
		*b = true
	case "0", "false", "", "null":
		*b = false
	default:
		return fmt.Errorf("%s is not 0 or 1", data)
	}
	return nil
}

// clusterView is one answer of GET /cluster/resources.
type clusterView struct {
	nodes    map[string]resource // by node name
	storages map[string]resource // by "node/storage"
	vms      []resource          // qemu guests, by VMID
	byVMID   map[int]resource
}

func newView(rs []resource) (*clusterView, error) {
	v := &clusterView{nodes: map[string]resource{}, storages: map[string]resource{}, byVMID: map[int]resource{}}
	for _, r := range rs {
		switch r.Type {
		case "node":
			if !nodeNameRe.MatchString(r.Node) {
				return nil, fmt.Errorf("the cluster lists a node named %q, which is not a host name", r.Node)
			}
			v.nodes[r.Node] = r
		case "storage":
			v.storages[r.Node+"/"+r.Storage] = r
		case "qemu":
			if r.VMID < 100 || !nodeNameRe.MatchString(r.Node) {
				return nil, fmt.Errorf("the cluster lists guest %q with VMID %d on node %q, which is not a Proxmox VM", r.ID, r.VMID, r.Node)
			}
			v.vms = append(v.vms, r)
			v.byVMID[r.VMID] = r
		}
	}
	sort.Slice(v.vms, func(i, j int) bool { return v.vms[i].VMID < v.vms[j].VMID })
	return v, nil
}

// parseResources decodes the data of GET /cluster/resources.
func parseResources(data []byte) (*clusterView, error) {
	var rs []resource
	if err := json.Unmarshal(data, &rs); err != nil {
		return nil, fmt.Errorf("the answer of /cluster/resources is not a list of resources: %w", err)
	}
	return newView(rs)
}

// view reads the cluster (typ: "" for everything, or "node", "vm").
func (p *Provisioner) view(ctx context.Context, typ string) (*clusterView, error) {
	path := "/cluster/resources"
	if typ != "" {
		path += "?type=" + typ
	}
	var raw json.RawMessage
	if err := p.c.Get(ctx, path, &raw); err != nil {
		return nil, apiError("read the cluster's resources", err)
	}
	return parseResources(raw)
}

// online reports whether a node answers (offline and unknown nodes do not).
func (v *clusterView) online(node string) bool { return v.nodes[node].Status == "online" }

// clustered reports whether placement spreads contracts over nodes.
func (p *Provisioner) clustered() bool { return len(p.cfg.Nodes) > 0 }

// placementNodes are the nodes contracts may go to, sorted.
func (p *Provisioner) placementNodes(v *clusterView) []string {
	var out []string
	if p.cfg.Nodes.Auto() {
		for n := range v.nodes {
			out = append(out, n)
		}
	} else {
		out = slices.Clone([]string(p.cfg.Nodes))
	}
	sort.Strings(out)
	return out
}

// replacesTag marks a VM that took over a contract from VM vmid, which
// was lost with its node: "dc-replaces-105". The tag is the record that
// the other VM must go once its node is back (List removes it).
func replacesTag(vmid int) string { return "dc-replaces-" + strconv.Itoa(vmid) }

// replaced lists the VMIDs a VM's tags say it replaces.
func replaced(tags string) []int {
	var out []int
	for _, t := range strings.FieldsFunc(tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
		if s, ok := strings.CutPrefix(t, "dc-replaces-"); ok {
			if id, err := strconv.Atoi(s); err == nil && id >= 100 {
				out = append(out, id)
			}
		}
	}
	return out
}

// clusterVMs lists the guests of the whole cluster as vmEntry, with the
// names of guests too new for statistics read from their node's own VM
// list (one request per such node).
func (p *Provisioner) clusterVMs(ctx context.Context, v *clusterView) ([]vmEntry, error) {
	var out []vmEntry
	ask := map[string]bool{}
	for _, r := range v.vms {
		if r.Name == "" && r.Status == "unknown" {
			if v.online(r.Node) {
				ask[r.Node] = true
			}
			continue
		}
		if bool(r.Template) {
			continue
		}
		out = append(out, vmEntry{node: r.Node, vmid: r.VMID, name: r.Name, status: r.Status, lock: r.Lock, tags: r.Tags, online: v.online(r.Node)})
	}
	nodes := make([]string, 0, len(ask))
	for n := range ask {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	for _, n := range nodes {
		vms, err := p.node(n).VirtualMachines(ctx)
		if err != nil {
			return nil, apiError("list VMs on "+n, err)
		}
		for _, vm := range vms {
			r, ok := v.byVMID[int(vm.VMID)]
			if !ok || r.Node != n || r.Name != "" || bool(vm.Template) {
				continue
			}
			out = append(out, vmEntry{node: n, vmid: int(vm.VMID), name: vm.Name, status: vm.Status, lock: vm.Lock, tags: vm.Tags, online: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].vmid < out[j].vmid })
	return out, nil
}

// contractVMs groups the dc-<contract id> VMs by contract and marks those
// another VM of the same contract replaces.
func contractVMs(all []vmEntry) map[string][]vmEntry {
	byName := map[string][]vmEntry{}
	for _, e := range all {
		if provisioners.ContractIDFromName(e.name) != "" {
			byName[e.name] = append(byName[e.name], e)
		}
	}
	for name, es := range byName {
		gone := map[int]int{} // replaced VMID -> replacing VMID
		for _, e := range es {
			for _, id := range replaced(e.tags) {
				if id != e.vmid {
					gone[id] = e.vmid
				}
			}
		}
		for i := range es {
			es[i].replacedBy = gone[es[i].vmid]
		}
		byName[name] = es
	}
	return byName
}

// findAnywhere lists the VMs named name: on the node, or anywhere in the
// cluster.
func (p *Provisioner) findAnywhere(ctx context.Context, name string) ([]vmEntry, error) {
	if !p.clustered() {
		return p.findByName(ctx, name)
	}
	v, err := p.view(ctx, "")
	if err != nil {
		return nil, err
	}
	return p.findInCluster(ctx, v, name)
}

// findInCluster lists the VMs named name anywhere in the cluster.
func (p *Provisioner) findInCluster(ctx context.Context, v *clusterView, name string) ([]vmEntry, error) {
	all, err := p.clusterVMs(ctx, v)
	if err != nil {
		return nil, err
	}
	return contractVMs(all)[name], nil
}

// sweep removes the VMs that other VMs of their contract replace, once
// their node is back: what a node lost mid-provision left there. A VM
// still locked by the clone that died with its node cannot be removed
// with the API token (only root may skip a lock): the provider is told
// how, once an hour.
func (p *Provisioner) sweep(ctx context.Context, byName map[string][]vmEntry) {
	for name, es := range byName {
		for _, e := range es {
			if e.replacedBy == 0 || !e.online {
				continue
			}
			if e.lock != "" {
				p.warnLocked(e)
				continue
			}
			if err := p.destroy(ctx, e.node, e.vmid, exactly(name)); err != nil {
				p.log.Warn("cannot remove a VM left on a node that was lost mid-provision; retrying at the next reconcile",
					"vmid", e.vmid, "node", e.node, "err", err)
				continue
			}
			p.log.Info("removed the VM a node lost mid-provision left behind", "vmid", e.vmid, "node", e.node, "replaced_by", e.replacedBy)
			p.untag(ctx, es, e)
		}
	}
}

// untag drops the replaces tag of the VM that replaced gone.
func (p *Provisioner) untag(ctx context.Context, es []vmEntry, gone vmEntry) {
	for _, e := range es {
		if e.vmid != gone.replacedBy || !e.online {
			continue
		}
		var keep []string
		for _, t := range strings.FieldsFunc(e.tags, func(r rune) bool { return r == ';' || r == ',' || r == ' ' }) {
			if t != replacesTag(gone.vmid) {
				keep = append(keep, t)
			}
		}
		if err := p.vm(e.node, e.vmid).ConfigSync(ctx, proxmox.VirtualMachineOption{Name: "tags", Value: strings.Join(keep, ";")}); err != nil {
			p.log.Warn("cannot drop the replaces tag", "vmid", e.vmid, "err", err)
		}
	}
}

// warnHourly logs a warning at most once an hour per key.
func (p *Provisioner) warnHourly(key, msg string, args ...any) {
	p.mu.Lock()
	if p.warned == nil {
		p.warned = map[string]time.Time{}
	}
	last, seen := p.warned[key]
	now := p.opts.Now()
	if seen && now.Sub(last) < time.Hour {
		p.mu.Unlock()
		return
	}
	p.warned[key] = now
	p.mu.Unlock()
	p.log.Warn(msg, args...)
}

func (p *Provisioner) warnLocked(e vmEntry) {
	p.warnHourly("locked:"+e.node+"/"+strconv.Itoa(e.vmid), fmt.Sprintf("VM %d on %s is locked (%s) by a task that died when the node went offline; the API token may not remove a locked VM. Remove it as root on %s: qm unlock %d && qm destroy %d --purge",
		e.vmid, e.node, e.lock, e.node, e.vmid, e.vmid), "contract", provisioners.ContractIDFromName(e.name))
}

// nodesLost returns the first of nodes that the cluster reports offline
// ("" when all are online or the cluster cannot be read).
func (p *Provisioner) nodesLost(ctx context.Context, nodes ...string) string {
	v, err := p.view(ctx, "node")
	if err != nil {
		return ""
	}
	for _, n := range nodes {
		if n != "" && !v.online(n) {
			return n
		}
	}
	return ""
}

// errNodeLost is a step that failed because its node went offline.
type errNodeLost struct {
	node string
	err  error
}

func (e *errNodeLost) Error() string {
	return fmt.Sprintf("node %s went offline: %v", e.node, e.err)
}

func (e *errNodeLost) Unwrap() error { return e.err }

// lostNode tells whether a failed step failed because one of nodes went
// offline (the cluster says so), and which.
func (p *Provisioner) lostNode(ctx context.Context, err error, nodes ...string) string {
	var nl *errNodeLost
	if errors.As(err, &nl) {
		return nl.node
	}
	if !p.clustered() || !transient(err) {
		return ""
	}
	return p.nodesLost(ctx, nodes...)
}

// locate returns the node a VM is on ("" if the cluster has no such VM).
func (p *Provisioner) locate(ctx context.Context, vmid int) (string, error) {
	v, err := p.view(ctx, "vm")
	if err != nil {
		return "", err
	}
	return v.byVMID[vmid].Node, nil
}

// listCluster is List for a cluster: every dc-<contract id> VM of every
// node, except those another VM of their contract replaced (which are
// removed first, once their node is back).
func (p *Provisioner) listCluster(ctx context.Context) ([]provisioners.Instance, error) {
	v, err := p.view(ctx, "")
	if err != nil {
		return nil, err
	}
	all, err := p.clusterVMs(ctx, v)
	if err != nil {
		return nil, err
	}
	byName := contractVMs(all)
	p.sweep(ctx, byName)
	var out []provisioners.Instance
	for name, es := range byName {
		for _, e := range es {
			if e.replacedBy != 0 {
				continue
			}
			out = append(out, provisioners.Instance{ExternalID: ExternalID(e.node, e.vmid), ContractID: provisioners.ContractIDFromName(name),
				Name: name, Status: e.status, SSHPort: p.opts.SSHPort,
				AdditionalDetails: map[string]any{"node": e.node, "vmid": e.vmid}})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExternalID < out[j].ExternalID })
	return out, nil
}

// best picks a contract's current VM among several: not replaced, on a
// node that answers, running, newest.
func best(es []vmEntry) (vmEntry, bool) {
	var cand []vmEntry
	for _, e := range es {
		if e.replacedBy == 0 {
			cand = append(cand, e)
		}
	}
	if len(cand) == 0 {
		return vmEntry{}, false
	}
	sort.SliceStable(cand, func(i, j int) bool {
		a, b := cand[i], cand[j]
		if a.online != b.online {
			return a.online
		}
		if (a.status == "running") != (b.status == "running") {
			return a.status == "running"
		}
		return a.vmid > b.vmid
	})
	return cand[0], true
}

// resourcesCluster is the inventory of the placement nodes: the sums of
// the online nodes that are not in maintenance, their storages for VM
// disks (a shared one once) and templates, and every placement node by
// name ("pve2 (offline)" for one that takes no contracts now).
func (p *Provisioner) resourcesCluster(ctx context.Context) (provisioners.Resources, error) {
	var res provisioners.Resources
	v, err := p.view(ctx, "")
	if err != nil {
		return res, err
	}
	names := map[int]string{}
	for name, id := range p.cfg.Templates {
		names[id] = name
	}
	seenShared := map[string]bool{}
	hidden := false
	for _, n := range p.placementNodes(v) {
		r, ok := v.nodes[n]
		switch {
		case !ok:
			res.Nodes = append(res.Nodes, n+" (not in the cluster)")
			continue
		case r.Status != "online":
			res.Nodes = append(res.Nodes, n+" ("+r.Status+")")
			continue
		case r.HAState == "maintenance":
			res.Nodes = append(res.Nodes, n+" (maintenance)")
			continue
		}
		res.Nodes = append(res.Nodes, n)
		if r.MaxMem == 0 {
			hidden = true
		}
		res.CPUThreads += int(r.MaxCPU)
		res.MemoryMB += r.MaxMem >> 20
		res.MemoryFreeMB += max(0, r.MaxMem-r.Mem) >> 20
		for _, s := range sortedStorages(v, n) {
			if !strings.Contains(","+s.Content+",", ",images,") || s.Status != "available" {
				continue
			}
			name := n + "/" + s.Storage
			if bool(s.Shared) {
				if seenShared[s.Storage] {
					continue
				}
				seenShared[s.Storage] = true
				name = s.Storage
			}
			res.StoragePools = append(res.StoragePools, provisioners.StoragePool{Name: name, Type: s.PluginType, TotalGB: s.MaxDisk >> 30, AvailGB: max(0, s.MaxDisk-s.Disk) >> 30})
		}
		for _, vm := range v.vms {
			if vm.Node != n || !bool(vm.Template) {
				continue
			}
			label := vm.Name
			if l, ok := names[vm.VMID]; ok {
				label = l
			}
			res.Templates = append(res.Templates, provisioners.Template{VMID: vm.VMID, Name: label + " on " + n})
		}
	}
	sort.Slice(res.Templates, func(i, j int) bool { return res.Templates[i].VMID < res.Templates[j].VMID })
	if hidden {
		p.warnHourly("grant", "the API token cannot read node sizes and load; "+p.grantHint())
	}
	return res, nil
}

func sortedStorages(v *clusterView, node string) []resource {
	var out []resource
	for _, s := range v.storages {
		if s.Node == node {
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Storage < out[j].Storage })
	return out
}

// grantHint says how to let the token read node load (Sys.Audit on the
// nodes; PVEAuditor grants nothing else there).
func (p *Provisioner) grantHint() string {
	user, _, _ := strings.Cut(p.cfg.APITokenID, "!")
	return fmt.Sprintf("grant it Sys.Audit on the nodes: pveum acl modify /nodes --roles PVEAuditor --users %s --tokens '%s'", user, p.cfg.APITokenID)
}
