package setup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// A private bridge gets the offer, prefilled with its subnet and the
// node's public address; a public bridge, an unknown one, or a config
// that has [gateway] already gets none. The hint at the end carries it.
func TestGatewayOffer(t *testing.T) {
	d := &Discovery{Bridges: []BridgeInfo{{Name: "vmbr0", CIDR: "198.51.100.7/24"}, {Name: "vmbr1", CIDR: "10.10.0.1/24"}, {Name: "vmbr2"}}}
	o, ok := d.GatewayOffer("vmbr1", "https://198.51.100.7:8006")
	if !ok || o.Subnet.String() != "10.10.0.0/24" || o.HostIP.String() != "10.10.0.1" || o.PublicIP.String() != "198.51.100.7" {
		t.Fatalf("offer %+v %v", o, ok)
	}
	text := o.Text("/etc/dc-agent/dc-agent.toml")
	for _, want := range []string{"vmbr1 has a private subnet (10.10.0.0/24", "add to /etc/dc-agent/dc-agent.toml", "[gateway]", `public_ip = "198.51.100.7"`, "dc-agent doctor"} {
		if !strings.Contains(text, want) {
			t.Errorf("offer lacks %q:\n%s", want, text)
		}
	}
	if o, _ := d.GatewayOffer("vmbr1", "https://10.0.0.5:8006"); o.PublicIP.IsValid() || !strings.Contains(o.Text("x"), "<the node's public IPv4>") {
		t.Errorf("a private API address prefilled public_ip: %+v", o)
	}
	for _, br := range []string{"vmbr0", "vmbr2", "vmbr9"} {
		if o, ok := d.GatewayOffer(br, "https://198.51.100.7:8006"); ok {
			t.Errorf("%s: offered %+v", br, o)
		}
	}

	cfgPath := filepath.Join(t.TempDir(), "dc-agent.toml")
	f := &Flow{disc: d, ans: ProxmoxAnswers{ConfigPath: cfgPath, Bridge: "vmbr1", ProxmoxAPIURL: "https://198.51.100.7:8006"}, stage: StageInstalled}
	if h := f.Hint(); !strings.Contains(h, "[gateway]") || !strings.Contains(h, "service is installed") {
		t.Fatalf("hint without the offer:\n%s", h)
	}
	// The Rust agent's config with a [gateway] (it loads unchanged).
	rust, err := os.ReadFile("../config/testdata/rust/setup-token-proxmox-gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, cfgPath, string(rust), 0o600)
	if cfg, err := config.Load(cfgPath); err != nil || cfg.Gateway == nil {
		t.Fatalf("the gateway config does not load: %v", err)
	}
	if h := f.Hint(); strings.Contains(h, "[gateway]") {
		t.Fatalf("offered although [gateway] is configured:\n%s", h)
	}
}
