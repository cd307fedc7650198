package config

import (
	"reflect"
	"strings"
	"testing"
)

func proxmoxCluster(extra string) string {
	return strings.Split(minimal, "[provisioner]")[0] + `[provisioner]
type = "proxmox"
[provisioner.proxmox]
api_url = "https://10.0.0.2:8006"
api_token_id = "dc-agent@pve!agent"
api_token_secret_file = "pve-token"
template_vmid = 9000
tls_fingerprint = "` + strings.Repeat("ab", 32) + `"
` + extra
}

func TestProxmoxClusterKeys(t *testing.T) {
	cfg := mustParse(t, proxmoxCluster(`nodes = ["pve1", "pve2"]
memory_overcommit = 1.5
cpu_overcommit = 8.0
storage_headroom_percent = 20
[provisioner.proxmox.templates]
ubuntu = 9000
[provisioner.proxmox.node_templates.ubuntu]
pve2 = 9001
[provisioner.proxmox.node_templates."9100"]
pve2 = 9101
`))
	px := cfg.Provisioner.Proxmox
	if !reflect.DeepEqual(px.Nodes, ProxmoxNodes{"pve1", "pve2"}) || px.Nodes.Auto() || px.MemoryOvercommit != 1.5 ||
		px.CPUOvercommit != 8 || px.StorageHeadroomPercent != 20 || px.NodeTemplates["ubuntu"]["pve2"] != 9001 || px.NodeTemplates["9100"]["pve2"] != 9101 {
		t.Fatalf("parsed %+v", px.ProxmoxPlacement)
	}
	auto := mustParse(t, proxmoxCluster(`nodes = "auto"`+"\n")).Provisioner.Proxmox
	if !auto.Nodes.Auto() || auto.Node != "" {
		t.Fatalf("nodes = auto parsed as %+v", auto.Nodes)
	}
	// Both forms survive a save and a load.
	for _, c := range []*Config{cfg, mustParse(t, proxmoxCluster(`nodes = "auto"`+"\n"))} {
		b, err := Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		back := mustParse(t, string(b))
		if !reflect.DeepEqual(back.Provisioner.Proxmox.ProxmoxPlacement, c.Provisioner.Proxmox.ProxmoxPlacement) {
			t.Fatalf("round trip:\n%s\n%+v", b, back.Provisioner.Proxmox.ProxmoxPlacement)
		}
	}
}

func TestProxmoxClusterProblems(t *testing.T) {
	for _, c := range []struct{ name, extra, want string }{
		{"no node at all", "", "node is missing"},
		{"bad nodes string", `nodes = "all"` + "\n", `nodes = "all": use "auto"`},
		{"nodes not strings", "nodes = [1, 2]\n", "is not a node name"},
		{"bad node name", `nodes = ["pve_1"]` + "\n", `"pve_1" is not a node name`},
		{"auto in a list", `nodes = ["auto", "pve1"]` + "\n", `"auto" cannot be mixed`},
		{"twice", `nodes = ["pve1", "pve1"]` + "\n", `lists "pve1" twice`},
		{"overcommit", "nodes = [\"pve1\"]\nmemory_overcommit = 10.0\n", "memory_overcommit = 10 is out of range"},
		{"cpu overcommit", "nodes = [\"pve1\"]\ncpu_overcommit = -1.0\n", "cpu_overcommit = -1 is out of range"},
		{"headroom", "nodes = [\"pve1\"]\nstorage_headroom_percent = 95\n", "storage_headroom_percent = 95 is out of range"},
		{"unknown template", "nodes = [\"pve1\"]\n[provisioner.proxmox.node_templates.debian]\npve2 = 9001\n", `"debian" is neither a name of [templates] nor a template VMID`},
		{"bad copy", "nodes = [\"pve1\"]\n[provisioner.proxmox.node_templates.\"9000\"]\npve2 = 5\n", "node_templates.9000.pve2 = 5 is not a VMID"},
		{"typo", "nodess = [\"pve1\"]\nnode = \"pve1\"\n", `unknown key "nodess" in [provisioner.proxmox]; did you mean "nodes"?`},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := problems(t, proxmoxCluster(c.extra))
			if len(p) != 1 || !strings.Contains(p[0], c.want) {
				t.Fatalf("problems %q, want one containing %q", p, c.want)
			}
		})
	}
}
