// Package gatewaye2e runs the agent's gateway end to end: the dc-agent
// binary (the script backend, which reports a VM on a private bridge) and
// dc-api, with real nftables, a real Caddy (tls internal) and a real sshd
// in network namespaces the test makes.
package gatewaye2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/setup"
)

// The network (as gateway/netns_test.go's):
//
//	client ns  c0 203.0.113.2/24 ── h0 203.0.113.1/24  host ns (dc-agent, dc-api, Caddy)
//	                                vmbr1 10.77.0.1/24 ── hv0
//	vm ns      v0 10.77.0.2/24, default via 10.77.0.1 ──┘   (sshd, httpd)
const (
	publicIP = testutil.GatewayPublicIP
	clientIP = testutil.GatewayClientIP
	bridgeIP = testutil.GatewayBridgeIP
	vmIP     = "10.77.0.2"
	dcID     = "dc-e2e"
	wait     = 90 * time.Second
)

// dcAgent is the dc-agent binary, built by TestMain.
var dcAgent string

func TestMain(m *testing.M) {
	testutil.RunWithBinaries(m, testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-agent", Name: "dc-agent", Path: &dcAgent})
}

// backend is the script provisioner: provision waits while the file hold
// exists, writes passed-<contract id>, and answers the address in
// ip-<contract id> (default the VM's); everything else succeeds.
const backend = `#!/bin/sh
in=$(cat)
cid=$(printf '%s' "$in" | sed -n 's/.*"contract_id":"\([0-9a-f]*\)".*/\1/p')
case "$in" in
*'"action":"provision"'*)
  while [ -e "$(dirname "$0")/hold" ]; do sleep 0.05; done
  : > "$(dirname "$0")/passed-$cid"
  ip=$(cat "$(dirname "$0")/ip-$cid" 2>/dev/null || echo ` + vmIP + `)
  echo "{\"success\":true,\"instance\":{\"external_id\":\"vm-$cid\",\"ip_address\":\"$ip\",\"ssh_port\":22}}" ;;
*) echo '{"success":true}' ;;
esac
`

type testEnv struct {
	t                  *testing.T
	env                *e2eutil.Env
	host, client, vm   *testutil.NetNS
	dir, cfgPath       string
	gw                 config.GatewayConfig
	caRoot, index      string
	sshd               *testutil.SSHD
	scriptDir          string
	agentLog           *testutil.SyncBuffer
	agent              *exec.Cmd
	agentDone          chan error
	agentKilledAtCrash bool
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	for _, tool := range []string{"ip", "nft", "caddy", "sshd", "ssh", "curl", "busybox"} {
		testutil.RequireBinary(t, tool)
	}
	e := &testEnv{t: t, dir: t.TempDir()}
	gn := testutil.NewGatewayNet(t, "dcgwe")
	e.host, e.client = gn.Host, gn.Client
	e.vm = gn.AddVM(t, "dcgwe-vm", "hv0", vmIP)

	// dc-api listens in the host namespace, where the agent runs.
	e.env = e2eutil.NewEnv(t, apitest.WithListen(e.host.Listen), apitest.WithPublicURL("https://api.example.org"))
	// What setup does once per gateway host: claim the dc_id through the
	// API with the agent's key (from the host namespace, where dc-api is).
	hc := &http.Client{Transport: &http.Transport{DialContext: func(_ context.Context, network, addr string) (net.Conn, error) {
		return e.host.Dial(network, addr, 5*time.Second)
	}}}
	if _, err := setup.RegisterGateway(context.Background(), e.env.API.Client(e.env.Provider, e.env.AgentKey, dcapi.WithHTTPClient(hc)), dcID); err != nil {
		t.Fatal(err)
	}

	e.gw = config.GatewayConfig{
		DCID: dcID, PublicIP: publicIP, PortRangeStart: 20000, PortRangeEnd: 20099, PortsPerVM: 10,
		CaddySitesDir:       filepath.Join(e.dir, "sites"),
		PortAllocationsPath: filepath.Join(e.dir, "gw-state", "port-allocations.json"),
		Caddyfile:           filepath.Join(e.dir, "Caddyfile"),
		CaddyAdmin:          "127.0.0.1:2019",
	}
	e.gw.ApplyDefaults()
	if err := os.MkdirAll(e.gw.CaddySitesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(e.dir, "caddy-data")
	testutil.WriteFile(t, e.gw.Caddyfile, string(gateway.Caddyfile(e.gw, gateway.TLSInternal, data)), 0o644)
	e.caRoot = testutil.StartCaddy(t, e.host, e.dir, e.gw.Caddyfile, data, publicIP+":443", "probe."+e.gw.Zone()).RootCA

	e.sshd = testutil.StartSSHD(t, testutil.SSHDOptions{NetNS: e.vm, ListenHost: "0.0.0.0", Port: 22})
	e.index = testutil.StartVMWeb(t, e.vm, vmIP, e.dir)

	e.scriptDir = filepath.Join(e.dir, "backend")
	script := testutil.WriteFile(t, filepath.Join(e.scriptDir, "backend.sh"), backend, 0o755)
	cfg := e.env.Config(config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
		Provision: script, Terminate: script, HealthCheck: script, TimeoutSeconds: 30,
	}}, "")
	cfg.Gateway = &e.gw
	e.cfgPath = filepath.Join(e.dir, "dc-agent.toml")
	if err := config.Save(e.cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	return e
}

// startAgent runs the dc-agent binary in the host namespace; extra are
// more `run` flags (--crash-at).
func (e *testEnv) startAgent(extra ...string) {
	e.t.Helper()
	args := append([]string{"--config", e.cfgPath, "run", "--time-scale", "0.01"}, extra...)
	cmd := e.host.Command(dcAgent, args...)
	e.agentLog = &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = e.agentLog, e.agentLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	e.agent, e.agentDone = cmd, done
	e.t.Cleanup(func() {
		if e.agent == cmd {
			e.stopAgent()
		}
	})
}

// stopAgent stops the agent with SIGTERM and waits for it.
func (e *testEnv) stopAgent() {
	e.t.Helper()
	_ = e.agent.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-e.agentDone:
		if err != nil {
			e.t.Errorf("agent exited with %v\n%s", err, e.agentLog.String())
		}
	case <-time.After(wait):
		_ = syscall.Kill(-e.agent.Process.Pid, syscall.SIGKILL)
		<-e.agentDone
		e.t.Errorf("agent did not stop\n%s", e.agentLog.String())
	}
	e.agent = nil
}

// waitKilled waits for the agent to SIGKILL itself at its crash point.
func (e *testEnv) waitKilled() {
	e.t.Helper()
	select {
	case err := <-e.agentDone:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			e.t.Fatalf("agent ended with %v, not SIGKILL at its crash point\n%s", err, e.agentLog.String())
		}
	case <-time.After(wait):
		e.t.Fatalf("agent did not reach its crash point\n%s", e.agentLog.String())
	}
	e.agent = nil
}

func (e *testEnv) provisioned(cid string) dcapi.InstanceDetails {
	e.t.Helper()
	e.env.API.WaitForContract(cid, wait, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
	d, ok := e.env.API.InstanceDetails(cid)
	if !ok {
		e.t.Fatal("no instance details")
	}
	return d
}

func (e *testEnv) terminated(cid string) {
	e.t.Helper()
	e.env.API.CancelContract(cid)
	e.env.API.WaitForContract(cid, wait, func(c *store.Contract) bool { return c.TerminatedAtNs != nil }, "terminated")
}

// allocations reads the agent's port-allocation journal.
func (e *testEnv) allocations() map[string]struct {
	Base       int    `json:"base"`
	ContractID string `json:"contract_id"`
	State      string `json:"state"`
} {
	e.t.Helper()
	var f struct {
		Allocations map[string]struct {
			Base       int    `json:"base"`
			ContractID string `json:"contract_id"`
			State      string `json:"state"`
		} `json:"allocations"`
	}
	b, err := os.ReadFile(e.gw.PortAllocationsPath)
	if err != nil || json.Unmarshal(b, &f) != nil {
		e.t.Fatalf("port allocations: %v %s", err, b)
	}
	return f.Allocations
}

func (e *testEnv) zone() []store.DNSRecord {
	e.t.Helper()
	recs, err := e.env.API.Store.DNSRecords(context.Background(), "")
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

// table is `nft list table ip dc_gateway` (the nft tool, not the library).
func (e *testEnv) table() string {
	e.t.Helper()
	return e.host.Run(e.t, "nft", "list", "table", "ip", gateway.TableName)
}

func (e *testEnv) ssh(port int, command string) (string, error) {
	kh := filepath.Join(e.dir, "known_hosts")
	line := fmt.Sprintf("[%s]:%d %s", publicIP, port, strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.sshd.HostKey))))
	if err := os.WriteFile(kh, []byte(line+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	out, err := e.client.Command("ssh", "-p", strconv.Itoa(port), "-i", e.sshd.ClientKeyFile,
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile="+kh, "-o", "BatchMode=yes",
		"-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR", e.sshd.User+"@"+publicIP, command).CombinedOutput()
	return string(out), err
}

func (e *testEnv) curl(name, path string) (string, error) {
	out, err := e.client.Command("curl", "-sS", "--max-time", "20", "--cacert", e.caRoot,
		"--resolve", name+":443:"+publicIP, "-o", "-", "-w", "\n%{http_code}", "https://"+name+path).CombinedOutput()
	return string(out), err
}

func (e *testEnv) reach(port int) error {
	c, err := e.client.Dial("tcp", publicIP+":"+strconv.Itoa(port), 5*time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// A paid contract becomes a VM on the private bridge that the tenant
// reaches through the gateway: SSH on the reported port of the public
// address lands on the VM's sshd, HTTPS for the reported name on its web
// server through Caddy; the traffic shows in the next heartbeat's
// bandwidthStats on the API; after termination SSH, HTTPS, the DNS record,
// the rules and the allocation are gone and the ports are given again.
func TestGatewayContractEndToEnd(t *testing.T) {
	e := newTestEnv(t)
	cid := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{RequesterSSHPubkey: apitest.NewSSHPubkey(t)})
	e.startAgent()
	d := e.provisioned(cid)
	if d.IPAddress != vmIP || d.PublicIP != publicIP || d.GatewaySSHPort != 20000 || d.GatewayPortRangeStart != 20000 || d.GatewayPortRangeEnd != 20009 ||
		len(d.GatewaySlug) != 6 || d.GatewaySubdomain != d.GatewaySlug+"."+dcID+".gw.decent-cloud.org" {
		t.Fatalf("instance details %+v", d)
	}
	if z := e.zone(); len(z) != 1 || z[0].FQDN != d.GatewaySubdomain || z[0].PublicIP != publicIP {
		t.Fatalf("DNS zone %+v", z)
	}
	// `dc-agent status` shows the VM's name and SSH command.
	st, err := exec.Command(dcAgent, "--config", e.cfgPath, "status").CombinedOutput()
	if want := d.GatewaySubdomain + "  ssh -p 20000 " + publicIP + "  ports 20000-20009 → " + vmIP + " (active)"; err != nil || !strings.Contains(string(st), want) {
		t.Fatalf("dc-agent status: %v\n%s\nwant a line with %q", err, st, want)
	}

	out, err := e.ssh(d.GatewaySSHPort, "ip -4 -o addr show dev v0; echo from $SSH_CLIENT")
	if err != nil || !strings.Contains(out, vmIP+"/24") || !strings.Contains(out, "from "+clientIP+" ") {
		t.Fatalf("ssh -p %d %s: %v\n%s\nsshd log:\n%s", d.GatewaySSHPort, publicIP, err, out, e.sshd.Log())
	}
	if body, err := e.curl(d.GatewaySubdomain, "/"); err != nil || body != e.index+"\n200" {
		t.Fatalf("curl https://%s/: %v\n%q", d.GatewaySubdomain, err, body)
	}

	// 1 MiB out of the VM through Caddy: the API sees it in a heartbeat.
	if out, err := e.curl(d.GatewaySubdomain, "/big.bin"); err != nil || len(out) < 1<<20 {
		t.Fatalf("download through Caddy: %v (%d bytes)", err, len(out))
	}
	var bw store.BandwidthSnapshot
	e2eutil.Eventually(t, wait, "a heartbeat carrying ≥ 1 MiB out of the VM", func() bool {
		all, err := e.env.API.Store.LatestBandwidth(context.Background(), e.env.Provider.Pubkey)
		bw = all[cid]
		return err == nil && bw.BytesOut >= 1<<20
	})
	if bw.GatewaySlug != d.GatewaySlug {
		t.Fatalf("bandwidth report %+v: want slug %s", bw, d.GatewaySlug)
	}

	e.terminated(cid)
	if err := e.reach(d.GatewaySSHPort); err == nil {
		t.Fatal("the SSH port still answers after termination")
	}
	if body, _ := e.curl(d.GatewaySubdomain, "/"); strings.Contains(body, e.index) {
		t.Fatalf("Caddy still routes %s after termination: %q", d.GatewaySubdomain, body)
	}
	if z := e.zone(); len(z) != 0 {
		t.Fatalf("DNS records left: %+v", z)
	}
	if tab := e.table(); strings.Contains(tab, vmIP) || strings.Contains(tab, "20000") {
		t.Fatalf("rules left for the VM:\n%s", tab)
	}
	if a := e.allocations(); len(a) != 0 {
		t.Fatalf("allocations left: %+v", a)
	}
	// The ports are free again: the next contract gets the same block.
	next := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{})
	if d2 := e.provisioned(next); d2.GatewaySSHPort != 20000 || d2.GatewaySlug == d.GatewaySlug {
		t.Fatalf("next contract %+v: want block 20000 under a new slug", d2)
	}
	if out, err := e.ssh(20000, "echo again"); err != nil || strings.TrimSpace(out) != "again" {
		t.Fatalf("ssh to the next contract's VM: %v %s", err, out)
	}
}

// The agent is SIGKILLed after the gateway of a provisioned VM is in place
// and before its report is queued. Restarted, it reports that same
// gateway (slug and ports from the journal, no second allocation, one DNS
// record, one set of rules), and the next contract gets the next block:
// no port is given twice. Killed the same way for a contract that is
// cancelled while the agent is down, the restart leaves nothing behind.
func TestGatewayKilledBetweenAllocationAndReport(t *testing.T) {
	e := newTestEnv(t)
	first := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{})
	e.startAgent("--crash-at", "gateway_assigned")
	e.waitKilled()
	before := e.allocations()
	if len(before) != 1 {
		t.Fatalf("allocations after the kill: %+v", before)
	}
	var slug string
	for s, a := range before {
		slug = s
		if a.ContractID != first || a.Base != 20000 || a.State != "active" {
			t.Fatalf("allocation %s %+v", s, a)
		}
	}
	if st := e.env.API.ContractStatus(first); st == dcapi.StatusProvisioned {
		t.Fatal("the contract was reported before the kill")
	}

	e.startAgent()
	d := e.provisioned(first)
	if d.GatewaySlug != slug || d.GatewaySSHPort != 20000 {
		t.Fatalf("after the restart the contract reports %+v; the journal had slug %s at 20000", d, slug)
	}
	if a := e.allocations(); len(a) != 1 {
		t.Fatalf("allocations after the restart: %+v", a)
	}
	if z := e.zone(); len(z) != 1 || z[0].Slug != slug {
		t.Fatalf("DNS zone after the restart: %+v", z)
	}
	if n := strings.Count(e.table(), vmIP); n == 0 {
		t.Fatalf("no forwarding to the VM:\n%s", e.table())
	}
	if out, err := e.ssh(d.GatewaySSHPort, "echo reached"); err != nil || strings.TrimSpace(out) != "reached" {
		t.Fatalf("ssh after the restart: %v %s", err, out)
	}

	// The next contract (another VM) gets the next block.
	second := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{})
	testutil.WriteFile(t, filepath.Join(e.scriptDir, "ip-"+second), "10.77.0.3\n", 0o644)
	if d2 := e.provisioned(second); d2.GatewaySSHPort != 20010 {
		t.Fatalf("second contract %+v: want block 20010", d2)
	}
	e.stopAgent()

	// Killed again at the same point, for a third contract that is then
	// cancelled while the agent is down.
	third := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{})
	testutil.WriteFile(t, filepath.Join(e.scriptDir, "ip-"+third), "10.77.0.4\n", 0o644)
	e.startAgent("--crash-at", "gateway_assigned")
	e.waitKilled()
	if a := e.allocations(); len(a) != 3 || !strings.Contains(e.table(), "10.77.0.4") {
		t.Fatalf("allocations after the second kill: %+v\n%s", a, e.table())
	}
	e.env.API.CancelContract(third)
	e.startAgent()
	e2eutil.Eventually(t, wait, "the cancelled contract's gateway released", func() bool {
		for _, a := range e.allocations() {
			if a.ContractID == third {
				return false
			}
		}
		return true
	})
	if tab := e.table(); strings.Contains(tab, "10.77.0.4") || strings.Contains(tab, "20020") {
		t.Fatalf("rules left for the cancelled contract:\n%s", tab)
	}
	if z := e.zone(); len(z) != 2 {
		t.Fatalf("DNS zone: %+v, want the two live contracts' records", z)
	}
	if out, err := e.ssh(20000, "echo still"); err != nil || strings.TrimSpace(out) != "still" {
		t.Fatalf("the first contract's VM after the release of another: %v %s", err, out)
	}
}

// The API refuses a provisioned VM's report for good (dc-api answers 409
// when another agent of the provider took the contract's lock): the
// tenant never gets this gateway, so the agent frees it at once — ports,
// rules, route and DNS name — instead of keeping it while the contract
// lives.
func TestGatewayFreedWhenReportRefused(t *testing.T) {
	e := newTestEnv(t)
	hold := testutil.WriteFile(t, filepath.Join(e.scriptDir, "hold"), "", 0o644)
	cid := e.env.API.CreateContract(e.env.Provider, apitest.ContractSpec{})
	e.startAgent()
	// The backend is held: "provisioning" is accepted, the VM not made yet.
	e.env.API.WaitForContract(cid, wait, func(c *store.Contract) bool { return c.Status == dcapi.StatusProvisioning }, "provisioning")
	e.env.API.FailNext("PUT", "/provisioning", 1, http.StatusConflict)
	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	// Once this provision is past the hold, hold again: the API offers the
	// contract again (nobody holds its lock here), and that second
	// provision must not assign a gateway before the checks below.
	e2eutil.Eventually(t, wait, "the backend called", func() bool {
		_, err := os.Stat(filepath.Join(e.scriptDir, "passed-"+cid))
		return err == nil
	})
	testutil.WriteFile(t, hold, "", 0o644)
	e2eutil.Eventually(t, wait, "the refused report dropped", func() bool {
		return strings.Contains(e.agentLog.String(), "provisioned report; dropped")
	})
	e2eutil.Eventually(t, wait, "the gateway freed", func() bool {
		return len(e.allocations()) == 0 && len(e.zone()) == 0
	})
	if tab := e.table(); strings.Contains(tab, vmIP) || strings.Contains(tab, "20000") {
		t.Fatalf("rules left for the VM:\n%s", tab)
	}
	if n := e.env.API.CountRequests("PUT", "/provisioning", http.StatusConflict); n != 1 {
		t.Fatalf("%d refused reports, want 1", n)
	}
	if st := e.env.API.ContractStatus(cid); st == dcapi.StatusProvisioned {
		t.Fatal("the refused report was recorded")
	}
}
