package config

import (
	"strings"
	"testing"
)

// rustGateway is [gateway] as the Rust agent's setup writes it
// (dc-agent/src/setup/gateway.rs generate_gateway_config).
const rustGateway = `
[gateway]
dc_id = "dc-lk"
public_ip = "198.51.100.7"
domain = "decent-cloud.org"
gw_prefix = "dev-gw"
port_range_start = 20000
port_range_end = 59999
ports_per_vm = 10
caddy_sites_dir = "/etc/caddy/sites"
port_allocations_path = "/var/lib/dc-agent/port-allocations.json"
# DNS: per-VM A records via central API; TLS: per-provider wildcard cert via DNS-01 (acme-dns)
`

func TestGatewayLoadsTheRustAgentsSection(t *testing.T) {
	cfg := mustParse(t, minimal+rustGateway)
	g := cfg.Gateway
	want := GatewayConfig{DCID: "dc-lk", PublicIP: "198.51.100.7", Domain: "decent-cloud.org", GWPrefix: "dev-gw",
		PortRangeStart: 20000, PortRangeEnd: 59999, PortsPerVM: 10, CaddySitesDir: "/etc/caddy/sites",
		PortAllocationsPath: "/var/lib/dc-agent/port-allocations.json", Caddyfile: DefaultCaddyfile, CaddyAdmin: DefaultCaddyAdmin}
	if g == nil || *g != want {
		t.Fatalf("gateway %+v, want %+v", g, want)
	}
	if g.Zone() != "dc-lk.dev-gw.decent-cloud.org" {
		t.Fatal(g.Zone())
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "does not start the gateway yet") {
		t.Fatal(cfg.Warnings)
	}
	// Only the required keys: the Rust agent's defaults.
	g = mustParse(t, minimal+"[gateway]\ndc_id = \"a3x9f2b1\"\npublic_ip = \"198.51.100.7\"\n").Gateway
	if g.Domain != "decent-cloud.org" || g.GWPrefix != "gw" || g.PortRangeStart != 20000 || g.PortRangeEnd != 59999 || g.PortsPerVM != 10 ||
		g.CaddySitesDir != "/etc/caddy/sites" || g.PortAllocationsPath != "/var/lib/dc-agent/port-allocations.json" {
		t.Fatalf("defaults %+v", g)
	}
	if mustParse(t, minimal).Gateway != nil {
		t.Fatal("no [gateway]: no gateway")
	}
}

func TestGatewayValidation(t *testing.T) {
	for name, c := range map[string]struct{ body, want string }{
		"missing dc_id":    {`public_ip = "198.51.100.7"`, "gateway.dc_id is missing"},
		"short dc_id":      {`dc_id = "a"` + "\n" + `public_ip = "198.51.100.7"`, `gateway.dc_id "a" is too short`},
		"upper dc_id":      {`dc_id = "DC-LK"` + "\n" + `public_ip = "198.51.100.7"`, "lowercase letters, digits and hyphens"},
		"hyphen dc_id":     {`dc_id = "-abc"` + "\n" + `public_ip = "198.51.100.7"`, "not starting or ending with a hyphen"},
		"long dc_id":       {`dc_id = "abcdefghijklmnopqrstu"` + "\n" + `public_ip = "198.51.100.7"`, "2-20"},
		"missing ip":       {`dc_id = "dc-lk"`, "gateway.public_ip is missing"},
		"ipv6":             {`dc_id = "dc-lk"` + "\n" + `public_ip = "2001:db8::1"`, "not an IPv4 address"},
		"loopback":         {`dc_id = "dc-lk"` + "\n" + `public_ip = "127.0.0.1"`, "cannot be reached by tenants"},
		"range reversed":   {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_range_start = 30000\nport_range_end = 20000", "not a usable port range"},
		"low range":        {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_range_start = 80\nport_range_end = 20000", "not a usable port range"},
		"proxmox ui":       {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_range_start = 8000\nport_range_end = 9000", "port 8006 (the Proxmox web UI)"},
		"vnc":              {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_range_start = 5000\nport_range_end = 6000", "5900-5999"},
		"too few ports":    {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_range_start = 20000\nport_range_end = 20004", "fewer than ports_per_vm = 10"},
		"ports_per_vm":     {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nports_per_vm = 60000", "gateway.ports_per_vm = 60000 is out of range"},
		"relative path":    {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\ncaddy_sites_dir = \"sites\"", `gateway.caddy_sites_dir "sites" must be an absolute path`},
		"journal in caddy": {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nport_allocations_path = \"/etc/caddy/sites/a.json\"", "inside caddy_sites_dir"},
		"admin public":     {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\ncaddy_admin = \"0.0.0.0:2019\"", "must be on loopback"},
		"admin unix":       {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\ncaddy_admin = \"unix/run/caddy.sock\"", "not absolute"},
		"bad prefix":       {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\ngw_prefix = \"gw_1\"", "gateway.gw_prefix"},
		"bad domain":       {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\ndomain = \"localhost\"", "gateway.domain"},
		"typo":             {`dc_id = "dc-lk"` + "\n" + `public_ip = "198.51.100.7"` + "\nports_per_mv = 10", `did you mean "ports_per_vm"?`},
	} {
		_, err := Parse([]byte(minimal + "[gateway]\n" + c.body + "\n"))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
	cfg := mustParse(t, minimal+"[gateway]\ndc_id = \"dc-lk\"\npublic_ip = \"10.1.2.3\"\ncaddy_admin = \"unix//run/caddy/admin.sock\"\n")
	if len(cfg.Warnings) != 2 || !strings.Contains(cfg.Warnings[1], "private address") {
		t.Fatalf("warnings %v", cfg.Warnings)
	}
}
