package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// The test network: a client on the internet side, the gateway host with
// its public address and a private bridge, and a VM on that bridge. All
// addresses live only inside the namespaces the test makes.
//
//	client ns  c0 203.0.113.2/24 ── h0 203.0.113.1/24  host ns
//	                                vmbr1 10.77.0.1/24 ── hv0 ┐
//	vm ns      v0 10.77.0.2/24, default via 10.77.0.1 ───────┤
//	vm2 ns     v0 10.77.0.5/24, default via 10.77.0.1 ── hv2 ┘
//
// vm runs sshd and a web server; vm2 is another tenant's VM on the same
// bridge (hairpin: it reaches vm through the public address).
const (
	publicIP = testutil.GatewayPublicIP
	clientIP = testutil.GatewayClientIP
	bridgeIP = testutil.GatewayBridgeIP
	vmIP     = "10.77.0.2"
	vm2IP    = "10.77.0.5"
	dcID     = "dc-test"
)

type testNet struct {
	t                     testing.TB
	host, vm, vm2, client *testutil.NetNS
	dir                   string
	cfg                   config.GatewayConfig
	zone                  string
	caRoots               string // Caddy's internal CA root (PEM)
	sshd                  *testutil.SSHD
	knownHosts            string
	index                 string // what the VM's web server answers on /
}

// newHostNet makes the host namespace with its public side and bridge and
// a running Caddy; withVM adds the client and the VM with sshd and a web
// server.
func newTestNet(t testing.TB, withVM bool) *testNet {
	t.Helper()
	for _, tool := range []string{"ip", "nft", "caddy", "sshd", "ssh", "curl", "busybox"} {
		testutil.RequireBinary(t, tool)
	}
	n := &testNet{t: t, dir: t.TempDir()}
	gn := testutil.NewGatewayNet(t, "dcgw")
	n.host, n.client = gn.Host, gn.Client

	n.cfg = config.GatewayConfig{
		DCID: dcID, PublicIP: publicIP, PortRangeStart: 20000, PortRangeEnd: 20099, PortsPerVM: 10,
		CaddySitesDir:       filepath.Join(n.dir, "sites"),
		PortAllocationsPath: filepath.Join(n.dir, "state", "port-allocations.json"),
		Caddyfile:           filepath.Join(n.dir, "Caddyfile"),
		CaddyAdmin:          "127.0.0.1:2019",
	}
	n.cfg.ApplyDefaults()
	n.zone = filepath.Join(n.dir, "zone.json")
	n.startCaddy()
	if withVM {
		n.vm = gn.AddVM(t, "dcgw-vm", "hv0", vmIP)
		n.vm2 = gn.AddVM(t, "dcgw-vm2", "hv2", vm2IP)
		n.sshd = testutil.StartSSHD(t, testutil.SSHDOptions{NetNS: n.vm, ListenHost: "0.0.0.0", Port: 22})
		n.index = testutil.StartVMWeb(t, n.vm, vmIP, n.dir)
	}
	return n
}

func (n *testNet) startCaddy() {
	t := n.t
	data := filepath.Join(n.dir, "caddy-data")
	if err := os.MkdirAll(n.cfg.CaddySitesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, n.cfg.Caddyfile, string(Caddyfile(n.cfg, TLSInternal, data)), 0o644)
	// Ready when the wildcard certificate of Caddy's internal CA is served.
	n.caRoots = testutil.StartCaddy(t, n.host, n.dir, n.cfg.Caddyfile, data, publicIP+":443", "probe."+n.cfg.Zone()).RootCA
}

func contractID(n int) string { return fmt.Sprintf("%064x", n) }

// child starts a gateway operation in the host namespace.
func (n *testNet) child(op string, args ...string) *exec.Cmd {
	cfg, _ := json.Marshal(n.cfg)
	cmd := n.host.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DC_GW_CHILD="+op, "DC_GW_ARGS="+strings.Join(args, " "),
		"DC_GW_CONFIG="+string(cfg), "DC_GW_ZONE="+n.zone)
	return cmd
}

// gw runs an operation to its end and returns its output.
func (n *testNet) gw(op string, args ...string) string {
	n.t.Helper()
	out, err := n.child(op, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		n.t.Fatalf("gateway %s %v: %v\n%s", op, args, err, stderr)
	}
	return string(out)
}

func (n *testNet) assign(cid, ip string) Assignment {
	n.t.Helper()
	var a Assignment
	if err := json.Unmarshal([]byte(n.gw("assign", cid, ip)), &a); err != nil {
		n.t.Fatal(err)
	}
	return a
}

func (n *testNet) stats() map[string]dcapi.VMBandwidthReport {
	n.t.Helper()
	var s []dcapi.VMBandwidthReport
	if err := json.Unmarshal([]byte(n.gw("stats")), &s); err != nil {
		n.t.Fatal(err)
	}
	out := map[string]dcapi.VMBandwidthReport{}
	for _, r := range s {
		out[r.ContractID] = r
	}
	return out
}

// killedAfter starts an operation that stops at "HANG", waits for that
// line, and SIGKILLs it there. It returns what the process printed before.
func (n *testNet) killedAfter(op string, args ...string) []string {
	n.t.Helper()
	cmd := n.child(op, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		n.t.Fatal(err)
	}
	var stderr testutil.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	var lines []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if sc.Text() == "HANG" {
			break
		}
		lines = append(lines, sc.Text())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		n.t.Fatalf("%s ended before HANG: %v\n%s", op, err, stderr.String())
	}
	err = cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		n.t.Fatalf("%s did not die of SIGKILL at HANG: %v %v\n%s", op, err, lines, stderr.String())
	}
	return lines
}

func (n *testNet) zoneRecords() map[string]string {
	n.t.Helper()
	recs := map[string]string{}
	b, err := os.ReadFile(n.zone)
	if os.IsNotExist(err) {
		return recs
	}
	if err != nil || json.Unmarshal(b, &recs) != nil {
		n.t.Fatalf("zone: %v %s", err, b)
	}
	return recs
}

// table is `nft list table ip dc_gateway`, read by the nft tool (not the
// library the gateway uses).
func (n *testNet) table() string {
	n.t.Helper()
	return n.host.Run(n.t, "nft", "list", "table", "ip", TableName)
}

// nftElements counts, with nft's JSON, the elements of each set.
func (n *testNet) nftElements() map[string][]string {
	n.t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(n.host.Run(n.t, "nft", "-j", "list", "table", "ip", TableName)), &doc); err != nil {
		n.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, o := range doc.Nftables {
		raw, ok := o["set"]
		if !ok {
			raw, ok = o["map"]
		}
		if !ok {
			continue
		}
		var s struct {
			Name string            `json:"name"`
			Elem []json.RawMessage `json:"elem"`
		}
		if err := json.Unmarshal(raw, &s); err != nil {
			n.t.Fatal(err)
		}
		out[s.Name] = []string{}
		for _, e := range s.Elem {
			out[s.Name] = append(out[s.Name], string(e))
		}
	}
	return out
}

// sshVM runs a command over ssh (the system client) from ns to the public
// address and port, accepting only the VM's sshd host key.
func (n *testNet) sshVM(from *testutil.NetNS, port int, command string, stdin string) (string, error) {
	kh := filepath.Join(n.dir, "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s", publicIP, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(n.sshd.HostKey))))
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		n.t.Fatal(err)
	}
	cmd := from.Command("ssh", "-p", strconv.Itoa(port), "-i", n.sshd.ClientKeyFile,
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+kh, "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", n.sshd.User+"@"+publicIP, command)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// curl fetches https://<name><path> from the client through the public
// address, trusting only Caddy's internal CA (curl --resolve).
func (n *testNet) curl(name, path string) (string, error) {
	out, err := n.client.Command("curl", "-sS", "--max-time", "20", "--cacert", n.caRoots,
		"--resolve", name+":443:"+publicIP, "-o", "-", "-w", "\n%{http_code}", "https://"+name+path).CombinedOutput()
	return string(out), err
}

// reach reports whether a TCP connection from ns to addr is accepted.
func reach(ns *testutil.NetNS, addr string) error {
	c, err := ns.Dial("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}
