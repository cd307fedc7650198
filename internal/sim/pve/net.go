package pve

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// newMAC returns a MAC with Proxmox's OUI (BC:24:11).
func (st *State) newMAC() string {
	n := st.nextSeq()
	return fmt.Sprintf("BC:24:11:%02X:%02X:%02X", byte(n>>16), byte(n>>8), byte(n))
}

// newUUID returns a deterministic version-4-shaped UUID.
func (st *State) newUUID() string {
	n := st.nextSeq()
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], n*0x9E3779B97F4A7C15)
	binary.BigEndian.PutUint64(b[8:], (n+0x5bd1e995)*0xC2B2AE3D27D4EB4F)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// lease returns (allocating on first use) the DHCP address of mac on a
// bridge.
func (st *State) lease(br *Bridge, mac string) (string, error) {
	mac = strings.ToUpper(mac)
	if ip, ok := br.Leases[mac]; ok {
		return ip, nil
	}
	start, err1 := netip.ParseAddr(br.DHCPStart)
	end, err2 := netip.ParseAddr(br.DHCPEnd)
	if err1 != nil || err2 != nil {
		return "", fmt.Errorf("bridge %s has no DHCP range", br.Name)
	}
	if br.Leases == nil {
		br.Leases = map[string]string{}
	}
	if start == end {
		br.Leases[mac] = start.String()
		return start.String(), nil
	}
	used := map[string]bool{}
	for _, ip := range br.Leases {
		used[ip] = true
	}
	for a := start; a.Compare(end) <= 0; a = a.Next() {
		if !used[a.String()] {
			br.Leases[mac] = a.String()
			return a.String(), nil
		}
	}
	return "", fmt.Errorf("DHCP pool of %s exhausted", br.Name)
}

func (st *State) releaseLeases(vm *VM) {
	n := st.Nodes[vm.Node]
	if n == nil {
		return
	}
	for k, v := range vm.Config {
		if !strings.HasPrefix(k, "net") {
			continue
		}
		_, mac, opts, err := ParseNet(v)
		if err != nil {
			continue
		}
		if br := n.Bridges[opts["bridge"]]; br != nil {
			delete(br.Leases, strings.ToUpper(mac))
		}
	}
}

// eui64 builds the SLAAC address of mac in prefix.
func eui64(prefix netip.Prefix, mac string) (netip.Addr, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return netip.Addr{}, fmt.Errorf("bad MAC %q", mac)
	}
	a := prefix.Masked().Addr().As16()
	a[8] = hw[0] ^ 0x02
	a[9], a[10], a[11], a[12] = hw[1], hw[2], 0xff, 0xfe
	a[13], a[14], a[15] = hw[3], hw[4], hw[5]
	return netip.AddrFrom16(a), nil
}

// GuestInterfaces is what the guest agent's network-get-interfaces
// reports for a booted VM: lo, then one ethN per netN with the addresses
// cloud-init configured from ipconfigN (DHCP leases from the bridge, SLAAC
// from its prefix) and always an fe80:: link-local address.
func (st *State) GuestInterfaces(vm *VM) ([]map[string]any, error) {
	n := st.Nodes[vm.Node]
	out := []map[string]any{{
		"name": "lo", "hardware-address": "00:00:00:00:00:00",
		"ip-addresses": []map[string]any{
			{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
			{"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
		},
	}}
	var keys []int
	for k := range vm.Config {
		if rest, ok := strings.CutPrefix(k, "net"); ok {
			if i, err := strconv.Atoi(rest); err == nil {
				keys = append(keys, i)
			}
		}
	}
	sort.Ints(keys)
	for idx, i := range keys {
		_, mac, opts, err := ParseNet(vm.Config[fmt.Sprintf("net%d", i)])
		if err != nil {
			continue
		}
		var addrs []map[string]any
		br := n.Bridges[opts["bridge"]]
		ipc := IPConfig{IP: "dhcp"}
		if v, ok := vm.Config[fmt.Sprintf("ipconfig%d", i)]; ok {
			if ipc, err = ParseIPConfig(v); err != nil {
				return nil, err
			}
		}
		switch {
		case ipc.IP == "dhcp" && br != nil:
			// Clones of an image whose /etc/machine-id was not emptied send
			// the same DHCP client id, so they all get one address.
			key := mac
			if o := st.bootOrigin(vm); o != nil && !o.has("machine-id") {
				key = "machine-id:" + o.File
			}
			ip, err := st.lease(br, key)
			if err != nil {
				return nil, err
			}
			bits := 24
			if p, err := netip.ParsePrefix(br.CIDR); err == nil {
				bits = p.Bits()
			}
			addrs = append(addrs, map[string]any{"ip-address": ip, "ip-address-type": "ipv4", "prefix": bits})
		case ipc.IP != "" && ipc.IP != "dhcp":
			p := netip.MustParsePrefix(ipc.IP)
			addrs = append(addrs, map[string]any{"ip-address": p.Addr().String(), "ip-address-type": "ipv4", "prefix": p.Bits()})
		}
		switch {
		case (ipc.IP6 == "auto" || ipc.IP6 == "dhcp") && br != nil && br.IPv6Prefix != "":
			pfx, err := netip.ParsePrefix(br.IPv6Prefix)
			if err == nil {
				a, err := eui64(pfx, mac)
				if ipc.IP6 == "dhcp" {
					b := pfx.Masked().Addr().As16()
					binary.BigEndian.PutUint32(b[12:], uint32(vm.VMID))
					a, err = netip.AddrFrom16(b), nil
				}
				if err == nil {
					addrs = append(addrs, map[string]any{"ip-address": a.String(), "ip-address-type": "ipv6", "prefix": 64})
				}
			}
		case ipc.IP6 != "" && ipc.IP6 != "auto" && ipc.IP6 != "dhcp":
			p := netip.MustParsePrefix(ipc.IP6)
			addrs = append(addrs, map[string]any{"ip-address": p.Addr().String(), "ip-address-type": "ipv6", "prefix": p.Bits()})
		}
		if ll, err := eui64(netip.MustParsePrefix("fe80::/64"), mac); err == nil {
			addrs = append(addrs, map[string]any{"ip-address": ll.String(), "ip-address-type": "ipv6", "prefix": 64})
		}
		out = append(out, map[string]any{
			"name": fmt.Sprintf("eth%d", idx), "hardware-address": strings.ToLower(mac), "ip-addresses": addrs,
			"statistics": map[string]any{"rx-bytes": 1024, "rx-packets": 12, "tx-bytes": 2048, "tx-packets": 14,
				"rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0},
		})
	}
	return out, nil
}
