package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"

	"github.com/google/nftables"

	"github.com/decent-stuff/dc-agent/config"
)

// What the gateway needs of its host, discovered the same way locally
// (`dc-agent doctor`, the agent) and over SSH (setup on the Proxmox node):
// run HostScript there and give its output to ParseHost.

// HostScript prints the host's IPv4 interfaces, its default route and
// whether it forwards IPv4, for ParseHost. POSIX sh, iproute2's JSON output.
const HostScript = `ip -j -d addr show; echo '#'; ip -j -4 route show default; echo '#'; sysctl -n net.ipv4.ip_forward 2>/dev/null || cat /proc/sys/net/ipv4/ip_forward`

// Iface is one interface with its IPv4 addresses.
type Iface struct {
	Name   string
	Bridge bool
	Up     bool
	Addrs  []netip.Prefix // address/prefix length, e.g. 10.77.0.1/24
}

// Host is the gateway host's network as HostScript shows it.
type Host struct {
	Ifaces       []Iface
	DefaultIface string // the interface of the default route ("" if none)
	Forwarding   bool   // net.ipv4.ip_forward = 1
}

// ParseHost reads HostScript's output.
func ParseHost(out []byte) (Host, error) {
	parts := bytes.Split(out, []byte("\n#\n"))
	if len(parts) != 3 {
		return Host{}, errors.New("host network: unexpected output (is iproute2 with JSON output, `ip -j`, installed?)")
	}
	var h Host
	var links []struct {
		Ifname    string   `json:"ifname"`
		Flags     []string `json:"flags"`
		Operstate string   `json:"operstate"`
		Linkinfo  *struct {
			InfoKind string `json:"info_kind"`
		} `json:"linkinfo"`
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(parts[0], &links); err != nil {
		return Host{}, fmt.Errorf("host network: `ip -j addr` output: %v", err)
	}
	for _, l := range links {
		if l.Ifname == "" {
			return Host{}, errors.New("host network: an interface without a name")
		}
		ifc := Iface{Name: l.Ifname, Bridge: l.Linkinfo != nil && l.Linkinfo.InfoKind == "bridge", Up: slices.Contains(l.Flags, "UP")}
		for _, a := range l.AddrInfo {
			if a.Family != "inet" {
				continue
			}
			ip, err := netip.ParseAddr(a.Local)
			if err != nil || !ip.Is4() || a.Prefixlen < 0 || a.Prefixlen > 32 {
				return Host{}, fmt.Errorf("host network: %s has an unreadable address %q/%d", l.Ifname, a.Local, a.Prefixlen)
			}
			ifc.Addrs = append(ifc.Addrs, netip.PrefixFrom(ip, a.Prefixlen))
		}
		h.Ifaces = append(h.Ifaces, ifc)
	}
	var routes []struct {
		Dst string `json:"dst"`
		Dev string `json:"dev"`
	}
	if len(bytes.TrimSpace(parts[1])) > 0 {
		if err := json.Unmarshal(parts[1], &routes); err != nil {
			return Host{}, fmt.Errorf("host network: `ip -j route` output: %v", err)
		}
	}
	for _, r := range routes {
		if r.Dst == "default" && r.Dev != "" {
			h.DefaultIface = r.Dev
			break
		}
	}
	switch strings.TrimSpace(string(parts[2])) {
	case "1":
		h.Forwarding = true
	case "0":
	default:
		return Host{}, fmt.Errorf("host network: net.ipv4.ip_forward reads %q", truncate(strings.TrimSpace(string(parts[2])), 40))
	}
	return h, nil
}

// LocalHost runs HostScript on this machine.
func LocalHost(ctx context.Context) (Host, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", HostScript).Output()
	if err != nil {
		return Host{}, fmt.Errorf("host network: %w (needs iproute2)", err)
	}
	return ParseHost(out)
}

// cgnat is shared address space (RFC 6598): private in practice.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// PublicIPv4 is the host's own public address: a global address that is
// not private, on the default route's interface if it has one. ok is false
// behind 1:1 NAT (the public address is on the NAT, not here).
func (h Host) PublicIPv4() (netip.Addr, bool) {
	var found netip.Addr
	for _, ifc := range h.Ifaces {
		for _, a := range ifc.Addrs {
			ip := a.Addr()
			if !ip.IsGlobalUnicast() || ip.IsPrivate() || cgnat.Contains(ip) {
				continue
			}
			if ifc.Name == h.DefaultIface {
				return ip, true
			}
			if !found.IsValid() {
				found = ip
			}
		}
	}
	return found, found.IsValid()
}

// PrivateBridge is a bridge with a private subnet: where VMs that need the
// gateway live (the host's address there is their default gateway).
type PrivateBridge struct {
	Name   string
	Subnet netip.Prefix // e.g. 10.77.0.0/24
	HostIP netip.Addr   // e.g. 10.77.0.1
}

// PrivateBridges lists the host's bridges with a private IPv4 subnet.
func (h Host) PrivateBridges() []PrivateBridge {
	var out []PrivateBridge
	for _, ifc := range h.Ifaces {
		if !ifc.Bridge {
			continue
		}
		for _, a := range ifc.Addrs {
			if a.Addr().IsPrivate() || cgnat.Contains(a.Addr()) {
				out = append(out, PrivateBridge{Name: ifc.Name, Subnet: a.Masked(), HostIP: a.Addr()})
			}
		}
	}
	return out
}

// Routes returns the interface whose subnet holds ip (directly connected).
func (h Host) Routes(ip netip.Addr) (string, bool) {
	for _, ifc := range h.Ifaces {
		for _, a := range ifc.Addrs {
			if a.Masked().Contains(ip) {
				return ifc.Name, true
			}
		}
	}
	return "", false
}

// Level of a Finding.
type Level string

// Levels, as doctor's.
const (
	OK   Level = "ok"
	Warn Level = "warn"
	Fail Level = "fail"
)

// Finding is one check of the gateway's host: what was found, and the
// fix when it is not ok. doctor shows them; setup stops on Fail.
type Finding struct {
	Check   string
	Level   Level
	Message string
	Fix     string
}

// CheckHost checks the network for cfg on a host: that it forwards IPv4,
// that it is the host routing the VMs' bridge (bridge: the provisioner's
// bridge, e.g. [provisioner.proxmox] bridge; vmIPs: addresses of VMs it
// forwards to), and what public_ip is to it.
func CheckHost(h Host, cfg config.GatewayConfig, bridge string, vmIPs []netip.Addr) []Finding {
	var out []Finding
	add := func(check string, l Level, msg, fix string) {
		out = append(out, Finding{Check: check, Level: l, Message: msg, Fix: fix})
	}
	if h.Forwarding {
		add("gateway forwarding", OK, "the host forwards IPv4 (net.ipv4.ip_forward = 1)", "")
	} else {
		add("gateway forwarding", Fail, "the host does not forward IPv4: nothing reaches the VMs",
			"sysctl -w net.ipv4.ip_forward=1, and keep it: echo net.ipv4.ip_forward=1 > /etc/sysctl.d/99-dc-gateway.conf")
	}

	routing := "gateway host"
	switch ifc := findIface(h, bridge); {
	case bridge == "":
	case ifc == nil:
		add(routing, Fail, fmt.Sprintf("this host has no interface %s: the agent is not on the host that routes the VMs' bridge, and the gateway forwards from the host it runs on", bridge),
			fmt.Sprintf("run the agent (or at least its gateway) on the Proxmox node that has %s, or remove [gateway]", bridge))
	case len(ifc.Addrs) == 0:
		add(routing, Fail, fmt.Sprintf("%s has no IPv4 address here: this host does not route the VMs' bridge (their default gateway is elsewhere), so forwarded connections would not come back", bridge),
			fmt.Sprintf("give %s the VMs' gateway address on this host (e.g. address 10.10.0.1/24 in /etc/network/interfaces), or run the agent where the bridge is routed", bridge))
	default:
		private := false
		for _, a := range ifc.Addrs {
			private = private || a.Addr().IsPrivate() || cgnat.Contains(a.Addr())
		}
		if private {
			add(routing, OK, fmt.Sprintf("this host routes %s (%s): VMs there are reached through the gateway", bridge, ifc.Addrs[0]), "")
		} else {
			add(routing, Warn, fmt.Sprintf("%s has a public subnet (%s): VMs there get public addresses and need no gateway", bridge, ifc.Addrs[0]),
				"remove [gateway], or put the VMs on a private bridge")
		}
	}
	for _, ip := range vmIPs {
		if _, ok := h.Routes(ip); !ok {
			add(routing, Fail, fmt.Sprintf("VM address %s is on no subnet of this host: its gateway cannot reach it", ip),
				"run the agent on the host whose bridge holds the VMs' subnet")
		}
	}

	pub, _ := netip.ParseAddr(cfg.PublicIP)
	own, hasOwn := h.PublicIPv4()
	switch {
	case !pub.IsValid():
	case hostHas(h, pub):
		add("gateway public_ip", OK, fmt.Sprintf("public_ip %s is on this host", pub), "")
	case hasOwn:
		add("gateway public_ip", Warn, fmt.Sprintf("public_ip %s is not this host's address; this host's public address is %s", pub, own),
			fmt.Sprintf("set [gateway] public_ip = %q, unless a 1:1 NAT in front forwards %s to this host", own.String(), pub))
	default:
		add("gateway public_ip", OK, fmt.Sprintf("public_ip %s is not on this host and the host has no public address: behind 1:1 NAT, all ports of %s must reach this host", pub, pub), "")
	}
	return out
}

func findIface(h Host, name string) *Iface {
	for i := range h.Ifaces {
		if h.Ifaces[i].Name == name {
			return &h.Ifaces[i]
		}
	}
	return nil
}

func hostHas(h Host, ip netip.Addr) bool {
	for _, ifc := range h.Ifaces {
		for _, a := range ifc.Addrs {
			if a.Addr() == ip {
				return true
			}
		}
	}
	return false
}

// CheckServices checks what the gateway uses on its host: nftables (root
// or CAP_NET_ADMIN, AF_NETLINK), Caddy's admin API, the Caddyfile importing
// the sites directory, and the allocation journal.
func CheckServices(ctx context.Context, cfg config.GatewayConfig) []Finding {
	cfg.ApplyDefaults()
	var out []Finding
	add := func(check string, l Level, msg, fix string) {
		out = append(out, Finding{Check: check, Level: l, Message: msg, Fix: fix})
	}
	if c, err := nftables.New(); err != nil {
		add("gateway nftables", Fail, "cannot open netlink to nftables: "+err.Error(), "run the agent as root or with CAP_NET_ADMIN, and allow AF_NETLINK in its unit")
	} else if _, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4); err != nil {
		add("gateway nftables", Fail, "cannot read nftables: "+err.Error(), "run the agent as root or with CAP_NET_ADMIN (AmbientCapabilities=CAP_NET_ADMIN), and allow AF_NETLINK in its unit")
	} else {
		add("gateway nftables", OK, "nftables is usable (the gateway's rules: nft list table ip "+TableName+")", "")
	}

	cf, err := os.ReadFile(cfg.Caddyfile)
	switch {
	case err != nil:
		add("gateway caddy", Fail, "cannot read the Caddyfile: "+err.Error(), "install Caddy with the gateway's Caddyfile (dc-agent setup), or set [gateway] caddyfile")
	case !importsDir(cf, cfg.CaddySitesDir):
		add("gateway caddy", Fail, fmt.Sprintf("%s does not import %s/*.caddy: the VMs' routes would never load", cfg.Caddyfile, cfg.CaddySitesDir),
			fmt.Sprintf("add `import %s/*.caddy` inside the *.%s site block", cfg.CaddySitesDir, cfg.Zone()))
	default:
		c := newCaddySites(slog.New(slog.DiscardHandler), cfg.CaddySitesDir, cfg.Caddyfile, cfg.CaddyAdmin)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.admin+"/config/", nil)
		resp, err := c.hc.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			msg := "no answer"
			if err != nil {
				msg = err.Error()
			} else {
				msg = resp.Status
			}
			add("gateway caddy", Fail, fmt.Sprintf("Caddy's admin API at %s: %s", cfg.CaddyAdmin, msg), "start Caddy (systemctl enable --now caddy) and make [gateway] caddy_admin match the Caddyfile's admin option")
		} else {
			add("gateway caddy", OK, fmt.Sprintf("Caddy answers at %s and its Caddyfile imports %s", cfg.CaddyAdmin, cfg.CaddySitesDir), "")
		}
	}

	if data, err := os.ReadFile(cfg.PortAllocationsPath); err == nil {
		if recs, err := parseJournal(data); err != nil {
			add("gateway allocations", Fail, fmt.Sprintf("%s: %v", cfg.PortAllocationsPath, err), "fix or remove that entry by hand")
		} else {
			add("gateway allocations", OK, fmt.Sprintf("%d VM(s) hold port blocks in %s", len(recs), cfg.PortAllocationsPath), "")
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		add("gateway allocations", Fail, err.Error(), "make gateway.port_allocations_path readable by the agent")
	}
	return out
}
