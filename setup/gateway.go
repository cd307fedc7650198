package setup

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/decent-stuff/dc-agent/config"
)

// GatewayOffer is setup's proposal of a [gateway] (docs/gateway.md) when
// the VMs' bridge has a private subnet: tenants could not reach the VMs'
// addresses, so the node forwards its public address to them.
type GatewayOffer struct {
	Bridge string
	// Subnet is the bridge's, e.g. 10.10.0.0/24; HostIP the node's address
	// on it (the VMs' gateway).
	Subnet netip.Prefix
	HostIP netip.Addr
	// PublicIP is the node's address as setup reached it, when that is a
	// public IPv4 (invalid otherwise: behind NAT the provider knows it).
	PublicIP netip.Addr
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// GatewayOffer returns the offer for the chosen bridge: only when its
// subnet (as Proxmox reports it) is private. apiURL is the node's API as
// the agent reaches it (its host prefills public_ip when public).
func (d *Discovery) GatewayOffer(bridge, apiURL string) (GatewayOffer, bool) {
	b, ok := d.Bridge(bridge)
	if !ok || b.CIDR == "" {
		return GatewayOffer{}, false
	}
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() || !(p.Addr().IsPrivate() || cgnat.Contains(p.Addr())) {
		return GatewayOffer{}, false
	}
	o := GatewayOffer{Bridge: b.Name, Subnet: p.Masked(), HostIP: p.Addr()}
	if u, err := url.Parse(apiURL); err == nil {
		host := u.Hostname()
		if h, _, err := net.SplitHostPort(u.Host); err == nil {
			host = h
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() && ip.IsGlobalUnicast() && !ip.IsPrivate() && !cgnat.Contains(ip) {
			o.PublicIP = ip
		}
	}
	return o, true
}

// Text explains the offer and gives the [gateway] section to add,
// prefilled from what setup discovered.
func (o GatewayOffer) Text(configPath string) string {
	pub := `"<the node's public IPv4>"`
	if o.PublicIP.IsValid() {
		pub = fmt.Sprintf("%q", o.PublicIP.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The VMs' bridge %s has a private subnet (%s, the node is %s): tenants cannot reach those addresses.\n", o.Bridge, o.Subnet, o.HostIP)
	fmt.Fprintf(&b, "A gateway forwards the node's public address to each VM (SSH port, HTTPS by name); to use it, add to %s:\n", configPath)
	fmt.Fprintf(&b, "  [gateway]\n  dc_id = \"<2-20 of a-z 0-9 ->\"\n  public_ip = %s\n", pub)
	b.WriteString("then install Caddy (apt install caddy), run dc-agent doctor and restart the service (docs/gateway.md).")
	return b.String()
}

// gatewayHint is the offer for the hint at the end of setup, or "" when
// the bridge is public, unknown, or a [gateway] is configured already.
func (f *Flow) gatewayHint() string {
	if f.disc == nil {
		return ""
	}
	o, ok := f.disc.GatewayOffer(f.ans.Bridge, f.ans.ProxmoxAPIURL)
	if !ok {
		return ""
	}
	if cfg, err := config.Load(f.ans.ConfigPath); err == nil && cfg.Gateway != nil {
		return ""
	}
	return "\n\n" + o.Text(f.ans.ConfigPath)
}
