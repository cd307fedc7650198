package pvecli

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// The node's network as iproute2 and procps show it: lo, the uplink (the
// default route's interface, a public address) and the node's bridges
// with their addresses. Only what the gateway's host discovery reads
// (gateway.HostScript): `ip -j [-d] addr show`, `ip -j -4 route show
// default`, `sysctl -n|-w net.ipv4.ip_forward`.

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	Prefixlen int    `json:"prefixlen"`
}

type ipLink struct {
	Ifindex   int       `json:"ifindex"`
	Ifname    string    `json:"ifname"`
	Flags     []string  `json:"flags"`
	Operstate string    `json:"operstate"`
	Linkinfo  *linkinfo `json:"linkinfo,omitempty"`
	AddrInfo  []ipAddr  `json:"addr_info"`
}

type linkinfo struct {
	InfoKind string `json:"info_kind"`
}

func addrOf(cidr string) []ipAddr {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil
	}
	return []ipAddr{{Family: "inet", Local: p.Addr().String(), Prefixlen: p.Bits()}}
}

func (c *cli) node(fn func(n *pve.Node) error) error {
	return c.store.Update(func(st *pve.State) error {
		n := st.Nodes[c.env.Node]
		if n == nil {
			return fmt.Errorf("no node %q", c.env.Node)
		}
		return fn(n)
	})
}

func (c *cli) ip(argv []string) int {
	var flags, words []string
	for _, a := range argv {
		if strings.HasPrefix(a, "-") {
			flags = append(flags, a)
		} else {
			words = append(words, a)
		}
	}
	if !slices.Contains(flags, "-j") {
		fmt.Fprintln(c.env.Stderr, "ip (simulated): only JSON output (-j) is simulated")
		return 1
	}
	var out any
	err := c.node(func(n *pve.Node) error {
		up, upCIDR := n.NodeUplink()
		switch {
		case len(words) >= 1 && (words[0] == "addr" || words[0] == "address" || words[0] == "a"):
			links := []ipLink{{Ifindex: 1, Ifname: "lo", Flags: []string{"LOOPBACK", "UP", "LOWER_UP"}, Operstate: "UNKNOWN",
				AddrInfo: []ipAddr{{Family: "inet", Local: "127.0.0.1", Prefixlen: 8}}},
				{Ifindex: 2, Ifname: up, Flags: []string{"BROADCAST", "MULTICAST", "UP", "LOWER_UP"}, Operstate: "UP", AddrInfo: addrOf(upCIDR)}}
			names := make([]string, 0, len(n.Bridges))
			for b := range n.Bridges {
				names = append(names, b)
			}
			sort.Strings(names)
			for i, b := range names {
				links = append(links, ipLink{Ifindex: 3 + i, Ifname: b, Flags: []string{"BROADCAST", "MULTICAST", "UP", "LOWER_UP"}, Operstate: "UP",
					Linkinfo: &linkinfo{InfoKind: "bridge"}, AddrInfo: addrOf(n.Bridges[b].CIDR)})
			}
			for i := range links {
				if links[i].AddrInfo == nil {
					links[i].AddrInfo = []ipAddr{}
				}
			}
			out = links
		case len(words) >= 1 && (words[0] == "route" || words[0] == "r"):
			p, _ := netip.ParsePrefix(upCIDR)
			gw := p.Masked().Addr().Next()
			out = []map[string]any{{"dst": "default", "gateway": gw.String(), "dev": up, "protocol": "kernel", "flags": []string{}}}
		default:
			return fmt.Errorf("only `ip -j addr show` and `ip -j -4 route show default` are simulated, not %q", strings.Join(argv, " "))
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(c.env.Stderr, "ip (simulated): %v\n", err)
		return 1
	}
	b, _ := json.Marshal(out)
	c.out("%s\n", b)
	return 0
}

func (c *cli) sysctl(argv []string) int {
	const key = "net.ipv4.ip_forward"
	bad := func() int {
		fmt.Fprintf(c.env.Stderr, "sysctl (simulated): only `sysctl -n %s` and `sysctl -w %s=0|1` are simulated, not %q\n", key, key, strings.Join(argv, " "))
		return 255
	}
	switch {
	case len(argv) == 2 && argv[0] == "-n" && argv[1] == key:
		v := 0
		_ = c.node(func(n *pve.Node) error {
			if n.Forwarding {
				v = 1
			}
			return nil
		})
		c.out("%d\n", v)
		return 0
	case len(argv) == 2 && argv[0] == "-w" && (argv[1] == key+"=1" || argv[1] == key+"=0"):
		on := argv[1] == key+"=1"
		if err := c.node(func(n *pve.Node) error { n.Forwarding = on; return nil }); err != nil {
			fmt.Fprintf(c.env.Stderr, "sysctl (simulated): %v\n", err)
			return 255
		}
		c.out("%s\n", strings.Replace(argv[1], "=", " = ", 1))
		return 0
	}
	return bad()
}
