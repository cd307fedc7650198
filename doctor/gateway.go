package doctor

import (
	"context"
	"fmt"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/gateway"
)

// checkGateway checks [gateway] on this host: nftables, Caddy and the
// allocations (gateway.CheckServices), then the network (gateway.CheckHost
// on what gateway.LocalHost found, or hostErr).
func checkGateway(ctx context.Context, cfg *config.Config, host gateway.Host, hostErr error) []Finding {
	g := cfg.Gateway
	if g == nil {
		return nil
	}
	var out []Finding
	add := func(fs []gateway.Finding) {
		for _, f := range fs {
			out = append(out, Finding{Check: f.Check, Status: Status(f.Level), Message: f.Message, Fix: f.Fix})
		}
	}
	add(gateway.CheckServices(ctx, *g))
	if hostErr != nil {
		return append(out, Finding{Check: "gateway host", Status: Fail, Message: "cannot read this host's network: " + hostErr.Error(), Fix: "install iproute2 (apt install iproute2)"})
	}
	bridge := ""
	for _, p := range cfg.AllProvisioners() {
		if p.Proxmox != nil && p.Proxmox.Bridge != "" {
			bridge = p.Proxmox.Bridge
		}
	}
	add(gateway.CheckHost(host, *g, bridge, nil))
	if bridge == "" && len(host.PrivateBridges()) == 0 {
		// Without a configured bridge, a host with no private bridge at all
		// is not the one that routes the VMs.
		out = append(out, Finding{Check: "gateway host", Status: Fail,
			Message: "this host has no bridge with a private subnet: the agent does not run on the host that routes the VMs' bridge, and the gateway forwards from the host it runs on",
			Fix:     "run the agent on the node whose bridge (e.g. vmbr1 10.10.0.1/24) is the VMs' default gateway, or remove [gateway]"})
	} else if bridge == "" {
		b := host.PrivateBridges()[0]
		out = append(out, Finding{Check: "gateway host", Status: OK, Message: fmt.Sprintf("this host routes the private bridge %s (%s)", b.Name, b.Subnet)})
	}
	return out
}
