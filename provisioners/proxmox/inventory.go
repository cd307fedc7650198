package proxmox

import (
	"context"
	"strings"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// hostDetails adds what only a privileged token can read to res: the CPU's
// model, cores, threads and clock and the memory in use (GET
// /nodes/{node}/status, Sys.Audit on the node) and the GPUs the node could
// pass through (GET /nodes/{node}/hardware/pci, Sys.Audit or Sys.Modify on
// /). The agent's least-privilege token has neither unless the provider
// granted it (a cluster's PVEAuditor grant gives the first): what it may
// not read stays as /nodes showed it, and GPUs stay unknown (none). The
// live Rust agent reads the same two endpoints for its inventory
// (dc-agent/src/provisioner/proxmox.rs collect_resources).
func (p *Provisioner) hostDetails(ctx context.Context, node string, res *provisioners.Resources) {
	n := p.node(node)
	if err := n.Status(ctx); err == nil {
		ci := n.CPUInfo
		res.CPUModel = strings.TrimSpace(ci.Model)
		if ci.CPUs > 0 {
			res.CPUThreads = ci.CPUs
		}
		if ci.Cores > 0 {
			res.CPUCores = ci.Cores * max(ci.Sockets, 1)
		}
		res.CPUMhz = int(ci.MHZ)
		if n.Memory.Total > 0 {
			res.MemoryMB = int64(n.Memory.Total >> 20)
			res.MemoryFreeMB = int64((n.Memory.Total - min(n.Memory.Used, n.Memory.Total)) >> 20)
		}
	} else if !proxmox.IsNotAuthorized(err) {
		p.log.Debug("node status for the inventory", "node", node, "err", err)
	}
	// An empty blacklist lists every class; display controllers are class
	// 03xxxx, processing accelerators 12xxxx.
	devs, err := n.ListPCIDevices(ctx, &proxmox.HardwarePCIOptions{ClassBlacklist: []string{"05", "06", "0b"}})
	if err != nil {
		if !proxmox.IsNotAuthorized(err) {
			p.log.Debug("PCI devices for the inventory", "node", node, "err", err)
		}
		return
	}
	res.GPUs = gpusOf(devs)
}

// gpusOf picks the display controllers and accelerators out of a PCI list.
func gpusOf(devs []*proxmox.PCIDevice) []provisioners.GPU {
	var out []provisioners.GPU
	for _, d := range devs {
		class := strings.TrimPrefix(strings.ToLower(d.Class), "0x")
		if !strings.HasPrefix(class, "03") && !strings.HasPrefix(class, "12") {
			continue
		}
		g := provisioners.GPU{PCIID: d.ID, Name: d.DeviceName, Vendor: d.VendorName}
		if g.Name == "" {
			g.Name = "PCI device " + d.Device
		}
		if g.Vendor == "" {
			g.Vendor = "PCI vendor " + d.Vendor
		}
		out = append(out, g)
	}
	return out
}
