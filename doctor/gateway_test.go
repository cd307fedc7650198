package doctor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/gateway"
)

// A [gateway] on a host that has the VMs' private bridge passes the host
// check; the same config on a host without one (the agent runs beside the
// node, not on it) fails, saying so and what to do.
func TestGatewayHostChecks(t *testing.T) {
	b, err := os.ReadFile("../gateway/testdata/host-network.txt")
	if err != nil {
		t.Fatal(err)
	}
	node, err := gateway.ParseHost(b)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	g := &config.GatewayConfig{DCID: "dc-lk", PublicIP: "198.51.100.7", CaddySitesDir: filepath.Join(dir, "sites"),
		PortAllocationsPath: filepath.Join(dir, "ports.json"), Caddyfile: filepath.Join(dir, "Caddyfile")}
	g.ApplyDefaults()
	cfg := &config.Config{Gateway: g, Provisioner: config.ProvisionerConfig{Type: config.TypeManual, Manual: &config.ManualConfig{}}}

	host := func(fs []Finding) Finding {
		var last Finding
		for _, f := range fs {
			if f.Check == "gateway host" {
				last = f
			}
		}
		return last
	}
	fs := checkGateway(context.Background(), cfg, node, nil)
	if f := host(fs); f.Status != OK || !strings.Contains(f.Message, "vmbr1") {
		t.Fatalf("node with vmbr1: %+v\n%+v", f, fs)
	}
	if !slices.ContainsFunc(fs, func(f Finding) bool { return f.Check == "gateway caddy" && f.Status == Fail }) {
		t.Errorf("no Caddyfile: the caddy check did not fail: %+v", fs)
	}

	beside := node
	beside.Ifaces = slices.DeleteFunc(slices.Clone(node.Ifaces), func(i gateway.Iface) bool { return i.Name == "vmbr1" })
	f := host(checkGateway(context.Background(), cfg, beside, nil))
	if f.Status != Fail || !strings.Contains(f.Message, "does not run on the host that routes the VMs' bridge") || f.Fix == "" {
		t.Fatalf("host without the private bridge: %+v", f)
	}

	// A configured Proxmox bridge that is not here fails the same way.
	cfg.Provisioner = config.ProvisionerConfig{Type: config.TypeProxmox, Proxmox: &config.ProxmoxConfig{Bridge: "vmbr7"}}
	f = host(checkGateway(context.Background(), cfg, node, nil))
	if f.Status != Fail || !strings.Contains(f.Message, "vmbr7") {
		t.Fatalf("missing configured bridge: %+v", f)
	}
}
