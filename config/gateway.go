package config

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// GatewayConfig is [gateway]: VMs on a private bridge reached through the
// host's one public address (package gateway). The keys and defaults are the
// Rust agent's (dc-agent/src/config.rs GatewayConfig), so its files load
// unchanged; caddyfile and caddy_admin are ours.
type GatewayConfig struct {
	// DCID names this gateway in DNS: <slug>.<dc_id>.<gw_prefix>.<domain>.
	// 2-20 characters [a-z0-9-], no leading or trailing hyphen (the API's
	// rule, api/src/cloudflare_dns.rs validate_dc_id).
	DCID string `toml:"dc_id"`
	// PublicIP is the IPv4 address tenants connect to (the DNS A record).
	PublicIP string `toml:"public_ip"`
	Domain   string `toml:"domain,omitempty"`
	GWPrefix string `toml:"gw_prefix,omitempty"`
	// PortRangeStart..PortRangeEnd (inclusive) is cut into blocks of
	// PortsPerVM public ports, one block per VM.
	PortRangeStart int `toml:"port_range_start,omitempty,omitzero"`
	PortRangeEnd   int `toml:"port_range_end,omitempty,omitzero"`
	PortsPerVM     int `toml:"ports_per_vm,omitempty,omitzero"`
	// CaddySitesDir holds one <slug>.caddy file per VM, imported by the
	// wildcard site of Caddyfile.
	CaddySitesDir string `toml:"caddy_sites_dir,omitempty"`
	// PortAllocationsPath is the allocation journal (the Rust agent's JSON
	// file, extended).
	PortAllocationsPath string `toml:"port_allocations_path,omitempty"`
	// Caddyfile is the main Caddy config, sent to Caddy's admin API after
	// the sites change.
	Caddyfile string `toml:"caddyfile,omitempty"`
	// CaddyAdmin is Caddy's admin endpoint: host:port or unix//path.
	CaddyAdmin string `toml:"caddy_admin,omitempty"`
}

// [gateway] defaults (the Rust agent's, dc-agent/src/config.rs).
const (
	DefaultGatewayDomain        = "decent-cloud.org"
	DefaultGatewayPrefix        = "gw"
	DefaultPortRangeStart       = 20000
	DefaultPortRangeEnd         = 59999
	DefaultPortsPerVM           = 10
	DefaultCaddySitesDir        = "/etc/caddy/sites"
	DefaultPortAllocationsPath  = "/var/lib/dc-agent/port-allocations.json"
	DefaultCaddyfile            = "/etc/caddy/Caddyfile"
	DefaultCaddyAdmin           = "localhost:2019"
	gatewayFirstVMPort          = 10001 // block port i>0 forwards to VM port 10000+i
	gatewayMaxPortsPerVM        = 65535 - gatewayFirstVMPort + 2
	gatewayMinPublicPort        = 1024
	gatewayLongestSubdomainSlug = 6
)

// Zone is the DNS zone of this gateway's VMs: <dc_id>.<gw_prefix>.<domain>.
// Caddy's wildcard site is *.<Zone>.
func (g *GatewayConfig) Zone() string {
	return g.DCID + "." + g.GWPrefix + "." + g.Domain
}

func (g *GatewayConfig) applyDefaults() {
	setDefault(&g.Domain, DefaultGatewayDomain)
	setDefault(&g.GWPrefix, DefaultGatewayPrefix)
	setDefault(&g.PortRangeStart, DefaultPortRangeStart)
	setDefault(&g.PortRangeEnd, DefaultPortRangeEnd)
	setDefault(&g.PortsPerVM, DefaultPortsPerVM)
	setDefault(&g.CaddySitesDir, DefaultCaddySitesDir)
	setDefault(&g.PortAllocationsPath, DefaultPortAllocationsPath)
	setDefault(&g.Caddyfile, DefaultCaddyfile)
	setDefault(&g.CaddyAdmin, DefaultCaddyAdmin)
}

// ApplyDefaults fills the unset keys of a [gateway] built in code (Load
// does it for files).
func (g *GatewayConfig) ApplyDefaults() { g.applyDefaults() }

var (
	dcIDRe     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,18}[a-z0-9])?$`)
	dnsLabelRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// reservedHostPorts are ports a Proxmox host serves itself; a DNAT block on
// them would hide the service behind a tenant's VM.
var reservedHostPorts = map[int]string{
	22: "SSH", 80: "Caddy (HTTP)", 443: "Caddy (HTTPS)", 2019: "Caddy's admin API",
	3128: "Proxmox SPICE proxy", 8006: "the Proxmox web UI",
}

// Validate returns one actionable message per problem in [gateway]; warn
// records findings that do not stop the agent.
func (g *GatewayConfig) Validate(warn func(string, ...any)) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	switch {
	case g.DCID == "":
		add("gateway.dc_id is missing; set a 2-20 character name of this gateway in DNS, e.g. dc_id = \"dc-lk\" (lowercase letters, digits, hyphens)")
	case !dcIDRe.MatchString(g.DCID):
		add("gateway.dc_id %q is not usable in DNS; use 2-20 lowercase letters, digits and hyphens, not starting or ending with a hyphen, e.g. dc_id = \"dc-lk\"", g.DCID)
	case len(g.DCID) < 2:
		add("gateway.dc_id %q is too short; use 2-20 characters, e.g. dc_id = \"dc-lk\"", g.DCID)
	}
	switch ip, err := netip.ParseAddr(g.PublicIP); {
	case g.PublicIP == "":
		add("gateway.public_ip is missing; set the IPv4 address tenants reach this host on, e.g. public_ip = \"198.51.100.7\" (`dc-agent doctor` shows the host's addresses)")
	case err != nil || !ip.Is4():
		add("gateway.public_ip %q is not an IPv4 address; set the host's public IPv4, e.g. public_ip = \"198.51.100.7\" (the DNS records are A records)", g.PublicIP)
	case ip.IsUnspecified() || ip.IsLoopback() || ip.IsMulticast() || ip.IsLinkLocalUnicast():
		add("gateway.public_ip %s cannot be reached by tenants; set the host's public IPv4 address", g.PublicIP)
	case ip.IsPrivate() || cgnat.Contains(ip):
		warn("gateway.public_ip %s is a private address: tenants outside your network cannot reach it; set the address the internet sees (behind 1:1 NAT, the NAT's public address)", g.PublicIP)
	}
	for _, l := range strings.Split(g.GWPrefix, ".") {
		if !dnsLabelRe.MatchString(l) {
			add("gateway.gw_prefix %q is not a DNS name; use lowercase labels like \"gw\" (production) or \"dev-gw\"", g.GWPrefix)
			break
		}
	}
	if labels := strings.Split(g.Domain, "."); len(labels) < 2 {
		add("gateway.domain %q is not a domain name; remove it for %q", g.Domain, DefaultGatewayDomain)
	} else {
		for _, l := range labels {
			if !dnsLabelRe.MatchString(l) {
				add("gateway.domain %q is not a domain name; remove it for %q", g.Domain, DefaultGatewayDomain)
				break
			}
		}
	}
	if n := len(g.Zone()) + 1 + gatewayLongestSubdomainSlug; len(out) == 0 && n > 253 {
		add("gateway: the VM names <slug>.%s would be %d characters, over DNS's 253; shorten gw_prefix or domain", g.Zone(), n)
	}

	rangeOK := true
	if g.PortRangeStart < gatewayMinPublicPort || g.PortRangeEnd > 65535 || g.PortRangeStart > g.PortRangeEnd {
		add("gateway: port_range_start..port_range_end (%d..%d) is not a usable port range; use ports %d..65535 with start ≤ end, e.g. %d..%d", g.PortRangeStart, g.PortRangeEnd, gatewayMinPublicPort, DefaultPortRangeStart, DefaultPortRangeEnd)
		rangeOK = false
	}
	if g.PortsPerVM < 1 || g.PortsPerVM > gatewayMaxPortsPerVM {
		add("gateway.ports_per_vm = %d is out of range; use 1..%d (default %d: port 0 of a block is SSH, port i forwards to the VM's port 10000+i)", g.PortsPerVM, gatewayMaxPortsPerVM, DefaultPortsPerVM)
		rangeOK = false
	}
	if rangeOK {
		if n := g.PortRangeEnd - g.PortRangeStart + 1; n < g.PortsPerVM {
			add("gateway: port range %d..%d holds %d ports, fewer than ports_per_vm = %d; widen the range", g.PortRangeStart, g.PortRangeEnd, n, g.PortsPerVM)
		}
		for _, p := range slices.Sorted(maps.Keys(reservedHostPorts)) {
			if p >= g.PortRangeStart && p <= g.PortRangeEnd {
				add("gateway: port range %d..%d contains port %d (%s), which would then forward to a VM; start the range above it, e.g. %d..%d", g.PortRangeStart, g.PortRangeEnd, p, reservedHostPorts[p], DefaultPortRangeStart, DefaultPortRangeEnd)
			}
		}
		if g.PortRangeStart <= 5999 && g.PortRangeEnd >= 5900 {
			add("gateway: port range %d..%d overlaps 5900-5999 (Proxmox VNC consoles); start the range above it, e.g. %d..%d", g.PortRangeStart, g.PortRangeEnd, DefaultPortRangeStart, DefaultPortRangeEnd)
		}
	}

	for _, p := range []struct{ key, val, example string }{
		{"caddy_sites_dir", g.CaddySitesDir, DefaultCaddySitesDir},
		{"port_allocations_path", g.PortAllocationsPath, DefaultPortAllocationsPath},
		{"caddyfile", g.Caddyfile, DefaultCaddyfile},
	} {
		if !filepath.IsAbs(p.val) {
			add("gateway.%s %q must be an absolute path, e.g. %q", p.key, p.val, p.example)
		}
	}
	if filepath.Clean(filepath.Dir(g.PortAllocationsPath)) == filepath.Clean(g.CaddySitesDir) {
		add("gateway.port_allocations_path %q is inside caddy_sites_dir; keep the journal out of Caddy's directory, e.g. %q", g.PortAllocationsPath, DefaultPortAllocationsPath)
	}
	if err := checkCaddyAdmin(g.CaddyAdmin); err != nil {
		add("gateway.caddy_admin %q: %v; use host:port as in the Caddyfile's admin option (default %q) or unix//path/to/socket", g.CaddyAdmin, err, DefaultCaddyAdmin)
	}
	return out
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

func checkCaddyAdmin(a string) error {
	if p, ok := strings.CutPrefix(a, "unix/"); ok {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("socket path %q is not absolute", p)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("not host:port")
	}
	if host == "" {
		return fmt.Errorf("no host")
	}
	if ip, err := netip.ParseAddr(host); err == nil && !ip.IsLoopback() || err != nil && host != "localhost" {
		return fmt.Errorf("the admin API must be on loopback (anyone who reaches it controls Caddy)")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a port", port)
	}
	return nil
}
