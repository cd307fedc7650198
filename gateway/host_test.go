package gateway

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
)

// testdata/host-network.txt is HostScript's output on a namespace shaped
// like a Proxmox node: eno1 with the public address and the default route,
// vmbr0 (no address), vmbr1 10.10.0.1/24 for the VMs, forwarding on.
func loadHost(t *testing.T) Host {
	t.Helper()
	b, err := os.ReadFile("testdata/host-network.txt")
	if err != nil {
		t.Fatal(err)
	}
	h, err := ParseHost(b)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestParseHostDiscovers(t *testing.T) {
	h := loadHost(t)
	if pub, ok := h.PublicIPv4(); !ok || pub.String() != "198.51.100.7" || h.DefaultIface != "eno1" || !h.Forwarding {
		t.Fatalf("host %+v: public %v %v", h, pub, ok)
	}
	br := h.PrivateBridges()
	if len(br) != 1 || br[0].Name != "vmbr1" || br[0].Subnet.String() != "10.10.0.0/24" || br[0].HostIP.String() != "10.10.0.1" {
		t.Fatalf("private bridges %+v", br)
	}
	if ifc, ok := h.Routes(netip.MustParseAddr("10.10.0.77")); !ok || ifc != "vmbr1" {
		t.Fatalf("route to a VM: %s %v", ifc, ok)
	}
	if _, ok := h.Routes(netip.MustParseAddr("10.20.0.2")); ok {
		t.Fatal("10.20.0.2 is on no subnet here")
	}
}

func TestCheckHost(t *testing.T) {
	h := loadHost(t)
	cfg := config.GatewayConfig{DCID: "dc-lk", PublicIP: "198.51.100.7"}
	level := func(fs []Finding, check string) (Level, string) {
		for _, f := range fs {
			if f.Check == check && f.Level != OK {
				return f.Level, f.Message + " | " + f.Fix
			}
		}
		for _, f := range fs {
			if f.Check == check {
				return f.Level, f.Message
			}
		}
		return "", ""
	}
	for name, c := range map[string]struct {
		bridge, publicIP string
		forwarding       bool
		vms              []string
		check            string
		want             Level
		words            string
	}{
		"routing host":       {"vmbr1", "198.51.100.7", true, []string{"10.10.0.5"}, "gateway host", OK, "this host routes vmbr1 (10.10.0.1/24)"},
		"no such bridge":     {"vmbr7", "198.51.100.7", true, nil, "gateway host", Fail, "the agent is not on the host that routes the VMs' bridge"},
		"bridge not routed":  {"vmbr0", "198.51.100.7", true, nil, "gateway host", Fail, "does not route the VMs' bridge"},
		"vm elsewhere":       {"vmbr1", "198.51.100.7", true, []string{"10.20.0.5"}, "gateway host", Fail, "10.20.0.5 is on no subnet of this host"},
		"public bridge":      {"eno1", "198.51.100.7", true, nil, "gateway host", Warn, "need no gateway"},
		"no forwarding":      {"vmbr1", "198.51.100.7", false, nil, "gateway forwarding", Fail, "sysctl -w net.ipv4.ip_forward=1"},
		"public_ip here":     {"vmbr1", "198.51.100.7", true, nil, "gateway public_ip", OK, "is on this host"},
		"public_ip not ours": {"vmbr1", "203.0.113.50", true, nil, "gateway public_ip", Warn, `set [gateway] public_ip = "198.51.100.7"`},
	} {
		hh := h
		hh.Forwarding = c.forwarding
		cfg.PublicIP = c.publicIP
		var vms []netip.Addr
		for _, v := range c.vms {
			vms = append(vms, netip.MustParseAddr(v))
		}
		l, msg := level(CheckHost(hh, cfg, c.bridge, vms), c.check)
		if l != c.want || !strings.Contains(msg, c.words) {
			t.Errorf("%s: %s %q, want %s with %q", name, l, msg, c.want, c.words)
		}
	}
	// Behind 1:1 NAT: no public address on the host at all.
	nat := h
	nat.Ifaces = []Iface{{Name: "vmbr1", Bridge: true, Addrs: []netip.Prefix{netip.MustParsePrefix("10.10.0.1/24")}}, {Name: "eno1", Addrs: []netip.Prefix{netip.MustParsePrefix("172.31.0.9/20")}}}
	cfg.PublicIP = "203.0.113.50"
	if l, msg := level(CheckHost(nat, cfg, "vmbr1", nil), "gateway public_ip"); l != OK || !strings.Contains(msg, "1:1 NAT") {
		t.Errorf("1:1 NAT: %s %s", l, msg)
	}
}

func TestParseHostRefuses(t *testing.T) {
	good, _ := os.ReadFile("testdata/host-network.txt")
	for name, in := range map[string]string{
		"no sections":   `[]`,
		"addr json":     "[{\n#\n[]\n#\n1\n",
		"route json":    "[]\n#\n{\n#\n1\n",
		"forward value": "[]\n#\n[]\n#\nmaybe\n",
		"bad address":   `[{"ifname":"x","addr_info":[{"family":"inet","local":"10.0.0","prefixlen":24}]}]` + "\n#\n[]\n#\n1\n",
		"bad prefix":    `[{"ifname":"x","addr_info":[{"family":"inet","local":"10.0.0.1","prefixlen":40}]}]` + "\n#\n[]\n#\n1\n",
		"no name":       `[{"addr_info":[]}]` + "\n#\n[]\n#\n1\n",
		"truncated":     string(good[:len(good)/2]),
	} {
		if _, err := ParseHost([]byte(in)); err == nil || !strings.HasPrefix(err.Error(), "host network:") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
