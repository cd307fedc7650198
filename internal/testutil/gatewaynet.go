package testutil

import (
	"crypto/rand"
	"path/filepath"
	"strings"
	"testing"
)

// The addresses of a GatewayNet. They live only inside its namespaces.
const (
	GatewayPublicIP = "203.0.113.1"
	GatewayClientIP = "203.0.113.2"
	GatewayBridgeIP = "10.77.0.1"
)

// GatewayNet is the network the gateway's tests run on: a client on the
// internet side and the gateway host with its public address and a
// private bridge (IPv4 forwarding on), for VM namespaces (AddVM):
//
//	client ns  c0 203.0.113.2/24 ── h0 203.0.113.1/24  host ns
//	                                vmbr1 10.77.0.1/24 ── <hostIf> ┐
//	vm ns      v0 <ip>/24, default via 10.77.0.1 ─────────────────┘
type GatewayNet struct {
	Host, Client *NetNS
}

// NewGatewayNet makes the host and client namespaces (named prefix-host,
// prefix-client) and connects them.
func NewGatewayNet(t testing.TB, prefix string) *GatewayNet {
	t.Helper()
	g := &GatewayNet{Host: NewNetNS(t, prefix+"-host"), Client: NewNetNS(t, prefix+"-client")}
	Veth(t, g.Client, "c0", g.Host, "h0")
	g.Client.Run(t, "ip", "addr", "add", GatewayClientIP+"/24", "dev", "c0")
	g.Host.Run(t, "ip", "addr", "add", GatewayPublicIP+"/24", "dev", "h0")
	g.Host.Run(t, "ip", "link", "add", "vmbr1", "type", "bridge")
	g.Host.Run(t, "ip", "addr", "add", GatewayBridgeIP+"/24", "dev", "vmbr1")
	g.Host.Run(t, "ip", "link", "set", "vmbr1", "up")
	g.Host.Run(t, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	return g
}

// AddVM makes a namespace named prefix on the bridge (the host's end of
// its veth is hostIf) with address ip, routed through the host.
func (g *GatewayNet) AddVM(t testing.TB, prefix, hostIf, ip string) *NetNS {
	t.Helper()
	vm := NewNetNS(t, prefix)
	Veth(t, vm, "v0", g.Host, hostIf)
	g.Host.Run(t, "ip", "link", "set", hostIf, "master", "vmbr1")
	vm.Run(t, "ip", "addr", "add", ip+"/24", "dev", "v0")
	vm.Run(t, "ip", "route", "add", "default", "via", GatewayBridgeIP)
	return vm
}

// StartVMWeb runs busybox httpd in vm on ip:80, serving from dir/www an
// index naming this run (returned: what / answers) and a 1 MiB big.bin
// for traffic counters.
func StartVMWeb(t testing.TB, vm *NetNS, ip, dir string) (index string) {
	t.Helper()
	www := filepath.Join(dir, "www")
	index = "hello from the VM " + rand.Text() + "\n"
	WriteFile(t, filepath.Join(www, "index.html"), index, 0o644)
	WriteFile(t, filepath.Join(www, "big.bin"), strings.Repeat("x", 1<<20), 0o644)
	StartHTTPD(t, vm, ip+":80", www)
	return index
}
