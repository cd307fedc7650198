package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// TableName is the nftables table the gateway owns, whole: nothing else
// writes to it and the gateway writes nowhere else (`nft list table ip
// dc_gateway` shows all of it; `nft delete table ip dc_gateway` undoes it).
const TableName = "dc_gateway"

// The table's layout. Per-VM state lives only in the sets and maps, so
// adding or removing a VM is one atomic batch of element changes and a new
// connection costs one map lookup whatever the number of VMs:
//
//	map dnat_tcp, dnat_udp   public port : VM address . VM port
//	set vms                  VM addresses (hairpin masquerade)
//	set acct_in, acct_out    VM addresses with a counter each (bandwidthStats)
//	chain portmap            dnat ip to tcp/udp dport map @dnat_tcp/@dnat_udp
//	chain prerouting  (nat)  to a local address or public_ip: goto portmap
//	chain output      (nat)  the same for connections the host itself opens
//	chain postrouting (nat)  a forwarded connection from a private address
//	                         (another VM, or the VM itself) masquerades,
//	                         so the answer comes back through the host
//	chain count_in  (filter, postrouting)  ip daddr @acct_in: bytes to the VM
//	chain count_out (filter, prerouting)   ip saddr @acct_out: bytes from it
//
// The counting hooks see forwarded traffic and the host's own (Caddy's
// proxying), so HTTP through Caddy counts as well as DNAT'd ports.
const (
	setTCP    = "dnat_tcp"
	setUDP    = "dnat_udp"
	setVMs    = "vms"
	setAcctIn = "acct_in"
	setAcctOu = "acct_out"
)

// hairpinSources are the sources whose DNAT'd connections masquerade: the
// private ranges a VM (or a host on the provider's LAN) connects from.
// Internet clients keep their address, so tenants see who connects.
var hairpinSources = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
}

// forward is one VM's port block as the kernel should have it.
type forward struct {
	IP    netip.Addr
	Base  int
	Count int
}

// Forward is one public port forwarded to a VM.
type Forward struct {
	Proto      string `json:"proto"` // "tcp" or "udp"
	PublicPort int    `json:"publicPort"`
	VMPort     int    `json:"vmPort"`
}

// FirstVMPort is where block port i (i ≥ 1) lands on the VM: 10000+i.
const FirstVMPort = 10001

// forwards is the block's port map: its first port to the VM's SSH (TCP),
// port i to the VM's port 10000+i, TCP and UDP. The Rust agent forwarded
// 1-4 as TCP and 5-9 as UDP (docs/specs/2025-12-31-dc-gateway-spec.md);
// both protocols on every port include that.
func forwards(base, count int) []Forward {
	out := []Forward{{Proto: "tcp", PublicPort: base, VMPort: 22}}
	for i := 1; i < count; i++ {
		out = append(out, Forward{"tcp", base + i, FirstVMPort - 1 + i}, Forward{"udp", base + i, FirstVMPort - 1 + i})
	}
	return out
}

type netfilter struct {
	conn   *nftables.Conn
	table  *nftables.Table
	sets   map[string]*nftables.Set
	public netip.Addr
}

// vmsPerBatch bounds one netlink batch (the socket's send buffer); one VM's
// elements always go in one batch, so a crash leaves a VM whole or absent.
const vmsPerBatch = 64

func openNetfilter(public netip.Addr) (*netfilter, error) {
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("open netlink to nftables: %w", err)
	}
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyIPv4}
	dnatData := nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	n := &netfilter{conn: c, table: t, public: public, sets: map[string]*nftables.Set{
		setTCP:    {Table: t, Name: setTCP, IsMap: true, KeyType: nftables.TypeInetService, DataType: dnatData},
		setUDP:    {Table: t, Name: setUDP, IsMap: true, KeyType: nftables.TypeInetService, DataType: dnatData},
		setVMs:    {Table: t, Name: setVMs, KeyType: nftables.TypeIPAddr},
		setAcctIn: {Table: t, Name: setAcctIn, KeyType: nftables.TypeIPAddr, Counter: true},
		setAcctOu: {Table: t, Name: setAcctOu, KeyType: nftables.TypeIPAddr, Counter: true},
	}}
	if err := n.ensureBase(); err != nil {
		_ = c.CloseLasting()
		return nil, err
	}
	return n, nil
}

func (n *netfilter) close() { _ = n.conn.CloseLasting() }

// ensureBase creates the table, sets and chains if missing and rewrites
// the chains' rules, in one transaction: the sets' elements (the VMs) are
// kept, the rules never have a gap.
func (n *netfilter) ensureBase() error {
	c := n.conn
	c.AddTable(n.table)
	for _, name := range []string{setTCP, setUDP, setVMs, setAcctIn, setAcctOu} {
		if err := c.AddSet(n.sets[name], nil); err != nil {
			return fmt.Errorf("nftables set %s: %w", name, err)
		}
	}
	nat, filter := nftables.ChainTypeNAT, nftables.ChainTypeFilter
	portmap := c.AddChain(&nftables.Chain{Name: "portmap", Table: n.table})
	chains := map[string]*nftables.Chain{
		"prerouting":  c.AddChain(&nftables.Chain{Name: "prerouting", Table: n.table, Type: nat, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest}),
		"output":      c.AddChain(&nftables.Chain{Name: "output", Table: n.table, Type: nat, Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest}),
		"postrouting": c.AddChain(&nftables.Chain{Name: "postrouting", Table: n.table, Type: nat, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource}),
		"count_in":    c.AddChain(&nftables.Chain{Name: "count_in", Table: n.table, Type: filter, Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityMangle}),
		"count_out":   c.AddChain(&nftables.Chain{Name: "count_out", Table: n.table, Type: filter, Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle}),
	}
	c.FlushChain(portmap)
	for _, ch := range chains {
		c.FlushChain(ch)
	}
	add := func(ch *nftables.Chain, exprs ...expr.Any) {
		c.AddRule(&nftables.Rule{Table: n.table, Chain: ch, Exprs: exprs})
	}

	for _, p := range []struct {
		proto byte
		set   string
	}{{unix.IPPROTO_TCP, setTCP}, {unix.IPPROTO_UDP, setUDP}} {
		add(portmap,
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p.proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, DestRegister: 1, IsDestRegSet: true, SetName: p.set, SetID: n.sets[p.set].ID},
			// The map's data is address . port: the address in register 1,
			// the port in the next 32-bit register (9), as nft compiles
			// "dnat ip to tcp dport map @m".
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegAddrMax: 1, RegProtoMin: 9, RegProtoMax: 9, Specified: true},
		)
	}
	toPortmap := &expr.Verdict{Kind: expr.VerdictGoto, Chain: "portmap"}
	for _, name := range []string{"prerouting", "output"} {
		add(chains[name],
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutilNative(unix.RTN_LOCAL)},
			toPortmap)
		// Behind 1:1 NAT the public address is not local; a VM that
		// connects to it is still forwarded here instead of leaving.
		add(chains[name],
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.public.AsSlice()},
			toPortmap)
	}
	for _, src := range hairpinSources {
		mask := netipMask(src)
		add(chains["postrouting"],
			&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutilNative(ipsDstNAT), Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Lookup{SourceRegister: 1, SetName: setVMs, SetID: n.sets[setVMs].ID},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: []byte{0, 0, 0, 0}},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Addr().AsSlice()},
			&expr.Masq{},
		)
	}
	add(chains["count_in"],
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: setAcctIn, SetID: n.sets[setAcctIn].ID})
	add(chains["count_out"],
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: setAcctOu, SetID: n.sets[setAcctOu].ID})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create nftables table ip %s: %w (the gateway needs root or CAP_NET_ADMIN and a kernel with nf_tables, nft_nat, nft_fib and nft_masq)", TableName, err)
	}
	return nil
}

// ipsDstNAT is the conntrack status bit of a destination-NAT'd connection
// (IPS_DST_NAT, include/uapi/linux/netfilter/nf_conntrack_common.h).
const ipsDstNAT = 1 << 5

func binaryutilNative(v uint32) []byte {
	b := make([]byte, 4)
	binary.NativeEndian.PutUint32(b, v)
	return b
}

func netipMask(p netip.Prefix) []byte {
	m := make([]byte, 4)
	binary.BigEndian.PutUint32(m, ^uint32(0)<<(32-p.Bits()))
	return m
}

// element encodings: a port is 2 bytes big endian; a map value is the
// address (4 bytes) and the port padded to a 4-byte register.
func portKey(p int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(p)) }

func dnatValue(ip netip.Addr, port int) []byte {
	v := append(ip.AsSlice(), 0, 0, 0, 0)
	binary.BigEndian.PutUint16(v[4:], uint16(port))
	return v
}

// desired is the element content of every set for a list of forwards.
type desiredSets map[string]map[string][]byte // set → key → value (nil for plain sets)

func desiredFor(fw []forward) (desiredSets, [][]forward) {
	d := desiredSets{setTCP: {}, setUDP: {}, setVMs: {}, setAcctIn: {}, setAcctOu: {}}
	for _, f := range fw {
		ip := string(f.IP.AsSlice())
		for _, p := range forwards(f.Base, f.Count) {
			set := setTCP
			if p.Proto == "udp" {
				set = setUDP
			}
			d[set][string(portKey(p.PublicPort))] = dnatValue(f.IP, p.VMPort)
		}
		d[setVMs][ip], d[setAcctIn][ip], d[setAcctOu][ip] = nil, nil, nil
	}
	return d, slices.Collect(slices.Chunk(fw, vmsPerBatch))
}

// sync makes the sets hold exactly fw: elements of gone VMs (or stale
// values) are deleted, missing ones added. Counters of VMs that stay are
// kept. Removals go first in one batch; additions follow, vmsPerBatch VMs
// per batch. It returns how many elements changed.
func (n *netfilter) sync(fw []forward) (int, error) {
	want, chunks := desiredFor(fw)
	changed := 0
	c := n.conn
	adds := map[string]map[string]bool{}
	for name, set := range n.sets {
		cur, err := c.GetSetElements(set)
		if err != nil {
			return 0, fmt.Errorf("list nftables set %s: %w (was table ip %s deleted? restart the agent to recreate it)", name, err, TableName)
		}
		have := map[string]bool{}
		var del []nftables.SetElement
		for _, e := range cur {
			k := string(e.Key)
			w, ok := want[name][k]
			if !ok || set.IsMap && string(w) != string(e.Val) {
				del = append(del, nftables.SetElement{Key: e.Key})
				continue
			}
			have[k] = true
		}
		adds[name] = have
		for len(del) > 0 {
			part := del[:min(len(del), 1024)]
			del = del[len(part):]
			if err := c.SetDeleteElements(set, part); err != nil {
				return 0, err
			}
			changed += len(part)
		}
	}
	if err := c.Flush(); err != nil {
		return 0, fmt.Errorf("remove nftables elements: %w", err)
	}
	for _, chunk := range chunks {
		part, _ := desiredFor(chunk)
		count := 0
		for name, elems := range part {
			var add []nftables.SetElement
			for k, v := range elems {
				if !adds[name][k] {
					add = append(add, nftables.SetElement{Key: []byte(k), Val: v})
				}
			}
			if len(add) > 0 {
				if err := c.SetAddElements(n.sets[name], add); err != nil {
					return changed, err
				}
				count += len(add)
			}
		}
		if count == 0 {
			continue
		}
		if err := c.Flush(); err != nil {
			return changed, fmt.Errorf("add nftables elements: %w", err)
		}
		changed += count
	}
	return changed, nil
}

// add puts one VM's elements in, in one batch. Elements already there with
// the same value stay (and keep their counters); one that maps a port
// elsewhere fails the batch (EBUSY), and nothing changes: the caller then
// syncs the whole table.
func (n *netfilter) add(f forward) error {
	want, _ := desiredFor([]forward{f})
	for name, elems := range want {
		var add []nftables.SetElement
		for k, v := range elems {
			add = append(add, nftables.SetElement{Key: []byte(k), Val: v})
		}
		if err := n.conn.SetAddElements(n.sets[name], add); err != nil {
			return err
		}
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("add the nftables elements of %s: %w", f.IP, err)
	}
	return nil
}

// remove deletes one VM's elements in one batch; if one is missing the
// batch fails (ENOENT) and nothing changes: the caller then syncs.
func (n *netfilter) remove(f forward) error {
	want, _ := desiredFor([]forward{f})
	for name, elems := range want {
		var del []nftables.SetElement
		for k := range elems {
			del = append(del, nftables.SetElement{Key: []byte(k)})
		}
		if err := n.conn.SetDeleteElements(n.sets[name], del); err != nil {
			return err
		}
	}
	if err := n.conn.Flush(); err != nil {
		return fmt.Errorf("remove the nftables elements of %s: %w", f.IP, err)
	}
	return nil
}

// traffic is one VM's byte counters.
type traffic struct{ in, out uint64 }

// counters reads acct_in and acct_out.
func (n *netfilter) counters() (map[netip.Addr]traffic, error) {
	out := map[netip.Addr]traffic{}
	for _, name := range []string{setAcctIn, setAcctOu} {
		elems, err := n.conn.GetSetElements(n.sets[name])
		if err != nil {
			return nil, fmt.Errorf("read nftables counters %s: %w", name, err)
		}
		for _, e := range elems {
			ip, ok := netip.AddrFromSlice(e.Key)
			if !ok || !ip.Is4() {
				return nil, errors.New("nftables set " + name + " holds a key that is not an IPv4 address")
			}
			var bytes uint64
			if e.Counter != nil {
				bytes = e.Counter.Bytes
			}
			t := out[ip]
			if name == setAcctIn {
				t.in = bytes
			} else {
				t.out = bytes
			}
			out[ip] = t
		}
	}
	return out, nil
}
