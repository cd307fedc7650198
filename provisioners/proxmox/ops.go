package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Terminate stops and purges a VM; a VM that is gone is success. Only VMs
// named dc-<contract id> are ever deleted.
func (p *Provisioner) Terminate(ctx context.Context, externalID string) error {
	node, vmid, err := p.parseExternalID(externalID)
	if err != nil {
		return err
	}
	return p.destroy(ctx, node, vmid, anyContractVM)
}

// HealthCheck reads status/current (running and uptime) and, when ssh_probe
// is on, connects to the SSH port and reports the latency.
// HealthCheckMany implements provisioners.HealthBatcher: one read of
// /cluster/resources answers for every VM that is running or stopped.
// VMs it cannot vouch for (on a node that is not online: PVE shows their
// last status for a while, or "unknown"; too new for pvestatd's
// statistics; on another node than the id says; not listed) are left to
// HealthCheck, as is everything when the
// SSH probe is on (it needs each guest).
func (p *Provisioner) HealthCheckMany(ctx context.Context, externalIDs []string) (map[string]provisioners.Health, error) {
	if p.cfg.SSHProbe != nil && *p.cfg.SSHProbe {
		return nil, nil
	}
	v, err := p.view(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make(map[string]provisioners.Health, len(externalIDs))
	for _, id := range externalIDs {
		node, vmid, err := p.parseExternalID(id)
		if err != nil {
			continue
		}
		r, ok := v.byVMID[vmid]
		if !ok || r.Node != node || bool(r.Template) || !v.online(node) {
			continue // a node that is down shows its guests' last status
		}
		switch r.Status {
		case "running":
			out[id] = provisioners.Health{Status: provisioners.Healthy, UptimeSeconds: r.Uptime}
		case "stopped":
			out[id] = provisioners.Health{Status: provisioners.Unhealthy, Reason: "VM is stopped"}
		}
	}
	return out, nil
}

func (p *Provisioner) HealthCheck(ctx context.Context, externalID string) (provisioners.Health, error) {
	node, vmid, err := p.parseExternalID(externalID)
	if err != nil {
		return provisioners.Health{}, err
	}
	vm := p.vm(node, vmid)
	if err := p.c.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", node, vmid), vm); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return provisioners.Health{Status: provisioners.Unhealthy, Reason: fmt.Sprintf("VM %d no longer exists on %s", vmid, node)}, nil
		}
		return provisioners.Health{Status: provisioners.Unknown, Reason: err.Error()}, apiError(fmt.Sprintf("read VM %d", vmid), err)
	}
	if !vm.IsRunning() {
		st := vm.Status
		if vm.QMPStatus != "" && vm.QMPStatus != vm.Status {
			st += " (" + vm.QMPStatus + ")"
		}
		return provisioners.Health{Status: provisioners.Unhealthy, Reason: "VM is " + st}, nil
	}
	h := provisioners.Health{Status: provisioners.Healthy, UptimeSeconds: int64(vm.Uptime)}
	if p.cfg.SSHProbe == nil || !*p.cfg.SSHProbe {
		return h, nil
	}
	ip := p.knownIP(externalID)
	if ip == "" {
		ifs, err := vm.AgentGetNetworkIFaces(ctx)
		if err != nil {
			h.Status = provisioners.Unhealthy
			h.Reason = "guest agent does not answer: " + err.Error()
			return h, nil
		}
		v4, v6 := pickAddrs(ifs)
		ip = firstNonEmpty(v4, v6)
		p.rememberIP(externalID, ip)
	}
	if ip == "" {
		h.Status = provisioners.Unhealthy
		h.Reason = "the VM has no IP address"
		return h, nil
	}
	start := time.Now()
	d := net.Dialer{Timeout: p.opts.ProbeTimeout}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(p.opts.SSHPort)))
	if err != nil {
		h.Status = provisioners.Unhealthy
		h.Reason = fmt.Sprintf("SSH port %d on %s is not reachable: %v", p.opts.SSHPort, ip, err)
		return h, nil
	}
	conn.Close()
	ms := int(time.Since(start).Milliseconds())
	h.LatencyMs = &ms
	return h, nil
}

func (p *Provisioner) knownIP(externalID string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ips[externalID]
}

// GetInstance finds a contract's VM by name (nil, nil if none).
func (p *Provisioner) GetInstance(ctx context.Context, contractID string) (*provisioners.Instance, error) {
	name := provisioners.InstanceName(contractID)
	found, err := p.findAnywhere(ctx, name)
	if err != nil {
		return nil, err
	}
	e, ok := best(found)
	if !ok {
		return nil, nil
	}
	inst := &provisioners.Instance{ExternalID: ExternalID(e.node, e.vmid), ContractID: contractID, Name: name,
		Status: e.status, SSHPort: p.opts.SSHPort, AdditionalDetails: map[string]any{"node": e.node, "vmid": e.vmid}}
	if e.lock != "" {
		inst.Status += " (locked: " + e.lock + ")"
	}
	if e.status == "running" && e.online {
		if ifs, err := p.vm(e.node, e.vmid).AgentGetNetworkIFaces(ctx); err == nil {
			inst.IPAddress, inst.IPv6Address = pickAddrs(ifs)
		}
	}
	return inst, nil
}

// List returns every dc-<contract id> VM on the node (in a cluster: on
// every node, see listCluster).
func (p *Provisioner) List(ctx context.Context) ([]provisioners.Instance, error) {
	if p.clustered() {
		return p.listCluster(ctx)
	}
	vms, err := p.node(p.cfg.Node).VirtualMachines(ctx)
	if err != nil {
		return nil, apiError("list VMs on "+p.cfg.Node, err)
	}
	var out []provisioners.Instance
	for _, v := range vms {
		cid := provisioners.ContractIDFromName(v.Name)
		if cid == "" || bool(v.Template) {
			continue
		}
		out = append(out, provisioners.Instance{ExternalID: ExternalID(p.cfg.Node, int(v.VMID)), ContractID: cid,
			Name: v.Name, Status: v.Status, SSHPort: p.opts.SSHPort,
			AdditionalDetails: map[string]any{"node": p.cfg.Node, "vmid": int(v.VMID)}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ExternalID < out[j].ExternalID })
	return out, nil
}

// Resources reports the node's cores and memory (from /nodes: PVE shows
// them with Sys.Audit on the node), its storages and its templates (in a
// cluster: the sums of the placement nodes, see resourcesCluster).
func (p *Provisioner) Resources(ctx context.Context) (provisioners.Resources, error) {
	if p.clustered() {
		return p.resourcesCluster(ctx)
	}
	var res provisioners.Resources
	nodes, err := p.c.Nodes(ctx)
	if err != nil {
		return res, apiError("list nodes", err)
	}
	found := false
	for _, n := range nodes {
		res.Nodes = append(res.Nodes, n.Node)
		if n.Node == p.cfg.Node {
			found = true
			res.CPUThreads = n.MaxCPU
			res.MemoryMB = int64(n.MaxMem >> 20)
			res.MemoryFreeMB = int64((n.MaxMem - min(n.Mem, n.MaxMem)) >> 20)
		}
	}
	if found && res.CPUThreads == 0 {
		p.warnHourly("grant", "the API token cannot read the node's size and load; "+p.grantHint())
	}
	node := p.node(p.cfg.Node)
	storages, err := node.Storages(ctx)
	if err != nil && !proxmox.IsNotAuthorized(err) {
		return res, apiError("list storages of "+p.cfg.Node, err)
	}
	for _, s := range storages {
		if s.Enabled == 0 || !strings.Contains(s.Content, "images") {
			continue
		}
		res.StoragePools = append(res.StoragePools, provisioners.StoragePool{Name: s.Name, Type: s.Type, TotalGB: int64(s.Total >> 30), AvailGB: int64(s.Avail >> 30)})
	}
	vms, err := node.VirtualMachines(ctx)
	if err != nil {
		return res, apiError("list VMs on "+p.cfg.Node, err)
	}
	names := map[int]string{}
	for name, id := range p.cfg.Templates {
		names[id] = name
	}
	for _, v := range vms {
		if !bool(v.Template) {
			continue
		}
		label := v.Name
		if n, ok := names[int(v.VMID)]; ok {
			label = n
		}
		res.Templates = append(res.Templates, provisioners.Template{VMID: int(v.VMID), Name: label})
	}
	sort.Slice(res.Templates, func(i, j int) bool { return res.Templates[i].VMID < res.Templates[j].VMID })
	if !found {
		return res, errors.New("node " + p.cfg.Node + " is not in the cluster's node list; check [provisioner.proxmox].node")
	}
	p.hostDetails(ctx, p.cfg.Node, &res)
	return res, nil
}
