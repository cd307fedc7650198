package proxmoxe2e

import (
	"cmp"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// e2e is the real agent binary, the reference API and the simulated
// Proxmox node, wired together.
type e2e struct {
	t    *testing.T
	api  *apitest.Server
	prov *apitest.Provider
	acc  *e2eutil.Account
	sim  *pveapi.TestSim
	cfg  string
	// where: the config lines that say which node(s) agents use;
	// agentLines: more keys of their [agent] section.
	where, agentLines string
}

// setup is how newE2EWith builds the world.
type setup struct {
	profile e2eutil.Profile
	apiOpts []apitest.Option
	agent   string // more keys of the [agent] section
	// sim is the simulator (default: one node, pve1, instant tasks) and
	// where the config lines of [provisioner.proxmox] saying which node(s)
	// the agent uses (default: node = "pve1").
	sim   *pveapi.TestSim
	where string
}

func newE2E(t *testing.T, apiOpts ...apitest.Option) *e2e {
	return newE2EWith(t, setup{profile: e2eutil.Profiles[0], apiOpts: apiOpts})
}

// newE2EOn wires the agent to sim; where says which node(s) it uses.
func newE2EOn(t *testing.T, sim *pveapi.TestSim, where string, apiOpts ...apitest.Option) *e2e {
	return newE2EWith(t, setup{profile: e2eutil.Profiles[0], apiOpts: apiOpts, sim: sim, where: where})
}

func newE2EWith(t *testing.T, s setup) *e2e {
	t.Helper()
	api := apitest.Start(t, append(s.profile.Options(), s.apiOpts...)...)
	acc := s.profile.Enroll(t, api, "proxmox")
	sim := s.sim
	if sim == nil {
		sim = pveapi.StartTest(t, pveapi.TestOptions{Timing: instantTiming()})
	}
	e := &e2e{t: t, api: api, prov: acc.Provider, acc: acc, sim: sim, where: cmp.Or(s.where, `node = "pve1"`), agentLines: s.agent}
	e.cfg, _ = e.agentConfig(acc.AgentKey, api.URL)
	return e
}

// agentConfig writes the config of an agent of e's provider with key that
// reaches the API at endpoint, in a directory of its own; it returns the
// config's path and the agent's status socket.
func (e *e2e) agentConfig(key ed25519.PrivateKey, endpoint string) (cfgPath, socket string) {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short: keep the socket out of the long TempDir.
	sockDir := testutil.ShortDir(t)
	socket = filepath.Join(sockDir, "s.sock")
	pool := ""
	if e.acc != nil && e.acc.Pool != nil {
		pool = fmt.Sprintf("pool_id = %q", e.acc.Pool.PoolID)
	}
	cfg := testutil.AgentTOML{Endpoint: endpoint, ProviderPubkey: e.prov.Pubkey, AgentKey: keyPath, API: pool,
		Polling: `interval_seconds = 30
health_check_interval_seconds = 30
reconcile_interval_seconds = 30`,
		StateDir: filepath.Join(dir, "state"), StatusSocket: socket, Agent: "max_concurrent_provisions = 4\n" + e.agentLines,
		Rest: e.sim.ProvisionerTOML(t, filepath.Join(dir, "pve-token"), e.where+`
linked_clone = true
ip_wait_attempts = 2
ip_wait_interval_secs = 1
task_poll_interval_ms = 50`)}
	return cfg.Write(t, filepath.Join(dir, "dc-agent.toml")), socket
}

// contract creates a contract the agent is offered.
func (e *e2e) contract(spec apitest.ContractSpec) string { return e.acc.CreateContract(e.api, spec) }

// agentProc is a running `dc-agent run`.
type agentProc struct {
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{} // closed when the process has exited
}

// run starts the agent with every interval scaled down 50x.
func (e *e2e) run(extra ...string) *agentProc {
	e.t.Helper()
	return e.runConfig(e.cfg, extra...)
}

// runConfig starts an agent with config cfg (see run).
func (e *e2e) runConfig(cfg string, extra ...string) *agentProc {
	e.t.Helper()
	args := append([]string{"run", "-c", cfg, "--time-scale", "0.02", "--log-level", "debug"}, extra...)
	cmd := exec.Command(dcAgent, args...)
	cmd.Env = []string{"HOME=" + e.t.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	e.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if e.t.Failed() {
			e.t.Logf("agent log:\n%s", out.String())
		}
	})
	return p
}

// stop sends SIGTERM and waits for a graceful exit.
func (p *agentProc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop on SIGTERM")
	}
}

// vms lists the simulator's non-template VMs.
func (e *e2e) vms() map[int]*pve.VM {
	out := map[int]*pve.VM{}
	e.sim.Update(e.t, func(st *pve.State) error {
		for id, vm := range st.VMs {
			if !vm.IsTemplate() {
				c := *vm
				out[id] = &c
			}
		}
		return nil
	})
	return out
}

func (e *e2e) waitNoVMs(timeout time.Duration) {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for len(e.vms()) > 0 {
		if time.Now().After(deadline) {
			e.t.Fatalf("VMs left after %s: %v", timeout, e.vms())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestAgentLoopProvisionsOnSimulatedProxmox(t *testing.T) {
	e := newE2E(t)
	a := e.run()
	cid := e.api.CreateContract(e.prov, apitest.ContractSpec{CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("2 GB"),
		StorageCapacity: apitest.Ptr("20 GB")})
	e.api.WaitForStatus(cid, dcapi.StatusProvisioned, time.Minute)
	d, ok := e.api.InstanceDetails(cid)
	if !ok || d.ExternalID != "pve1/100" || d.IPAddress != "10.99.0.100" {
		t.Fatalf("instance details: %+v", d)
	}
	vm := e.vms()[100]
	if vm == nil || vm.Name() != "dc-"+cid || vm.Status != "running" || vm.Config["cores"] != "2" || !strings.Contains(vm.Config["scsi0"], "size=20G") {
		t.Fatalf("VM: %+v", vm)
	}
	// The agent reports the VM healthy.
	deadline := time.Now().Add(time.Minute)
	for {
		recs := e.api.HealthChecks(cid)
		if len(recs) > 0 && recs[len(recs)-1].Status == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no healthy check reported: %+v", recs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Cancelling the contract terminates the VM.
	e.api.CancelContract(cid)
	e.waitNoVMs(time.Minute)
	a.stop(t)
}

// An agent killed right after the backend created the VM (before it told
// the API) finds that VM when it starts again: with SSH-key-only access the
// running VM is reused; when a root password is sealed for the requester
// (lost with the crash) it is replaced. Either way exactly one VM exists
// and it is the one reported.
func TestAgentCrashAfterProvisionFindsTheVM(t *testing.T) {
	e := newE2E(t)
	for _, tc := range []struct {
		name  string
		key   string // requester SSH key; ECDSA cannot be sealed to
		reuse bool
	}{
		{"ssh key only", ecdsaSSHKey(t), true},
		{"sealed password", apitest.NewSSHPubkey(t), false},
	} {
		cid := e.api.CreateContract(e.prov, apitest.ContractSpec{RequesterSSHPubkey: tc.key})
		first := e.run("--crash-at", "provisioner_returned")
		select {
		case <-first.done:
		case <-time.After(time.Minute):
			t.Fatalf("%s: the agent did not crash at provisioner_returned", tc.name)
		}
		if st := e.api.ContractStatus(cid); st == dcapi.StatusProvisioned {
			t.Fatalf("%s: contract already %s before the restart", tc.name, st)
		}
		before := e.vms()
		if len(before) != 1 {
			t.Fatalf("%s: VMs after the crash: %v", tc.name, before)
		}
		second := e.run()
		e.api.WaitForStatus(cid, dcapi.StatusProvisioned, time.Minute)
		after := e.vms()
		if len(after) != 1 {
			t.Fatalf("%s: %d VMs after the restart, want 1: %v", tc.name, len(after), after)
		}
		d, _ := e.api.InstanceDetails(cid)
		for id, vm := range after {
			if vm.Name() != "dc-"+cid || d.ExternalID != fmt.Sprintf("pve1/%d", id) {
				t.Errorf("%s: VM %d %s, reported %s", tc.name, id, vm.Name(), d.ExternalID)
			}
			// A replacement may get the freed VMID again; clones differ by
			// their SMBIOS UUID.
			same := before[id] != nil && before[id].Config["smbios1"] == vm.Config["smbios1"]
			if same != tc.reuse {
				t.Errorf("%s: VM %d reused = %v, want %v", tc.name, id, same, tc.reuse)
			}
		}
		if !tc.reuse && d.RootPassword == "" {
			t.Errorf("%s: no sealed password reported", tc.name)
		}
		second.stop(t)
		// Start the next case on an empty node.
		e.api.CancelContract(cid)
		e.sim.Update(t, func(st *pve.State) error {
			for id, vm := range st.VMs {
				if !vm.IsTemplate() {
					delete(st.VMs, id)
				}
			}
			return nil
		})
	}
}

func ecdsaSSHKey(t *testing.T) string {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " requester"
}

// Injected failures end in provisioning_failed with a clear reason, and
// nothing is left on the node: every fault of the simulator, through the
// real binary (its --time-scale shortens the provisioner's task deadlines
// and lock-timeout backoff too).
func TestAgentLoopReportsProxmoxFailures(t *testing.T) {
	// Reported at once: the local retry of transient failures is
	// TestProxmoxTransientFailureRetried's.
	e := newE2EWith(t, setup{profile: e2eutil.Profiles[0], apiOpts: []apitest.Option{apitest.WithRetryCooldown(time.Hour)}, agent: "provision_retry_seconds = 0"})
	var capacity int64
	e.sim.Update(t, func(st *pve.State) error { capacity = st.Storages["local-lvm"].TotalBytes; return nil })
	a := e.run()
	for _, tc := range []struct {
		name  string
		fault func(st *pve.State) error
		want  string
	}{
		{"clone fails", func(st *pve.State) error {
			st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: "clone failed: storage 'local-lvm' is offline", Count: 1}}
			return nil
		}, "clone failed: storage 'local-lvm' is offline"},
		// One try and five retries, all refused.
		{"lock timeout persists", func(st *pve.State) error {
			st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: pve.LockTimeout(9000), Count: 6}}
			return nil
		}, "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout"},
		{"guest agent never starts", func(st *pve.State) error { st.Faults.AgentNeverStarts = true; return nil }, "got no IP address"},
		{"storage full", func(st *pve.State) error {
			return st.SetStorageCapacity("local-lvm", st.StorageUsed("local-lvm", "pve1")+(1<<30))
		}, "insufficient free space"},
		{"500 on configure", func(st *pve.State) error {
			st.Faults.HTTPErrors = []pve.HTTPError{{Method: "PUT", PathContains: "/config", Status: 500, Reason: "unable to write config: disk quota exceeded", Count: 1}}
			return nil
		}, "500 unable to write config: disk quota exceeded"},
		// Longer than the scaled task deadline (3 min x 0.02 = 3.6 s):
		// the start is given up, and the VM removed once the node is back.
		{"node vanishes mid-task", func(st *pve.State) error {
			st.Faults.Outages = []pve.Outage{{Node: "pve1", OnTask: "qmstart", Duration: pve.Duration(6 * time.Second)}}
			return nil
		}, "the Proxmox API stopped answering"},
	} {
		e.sim.Update(t, func(st *pve.State) error {
			st.Faults = pve.Faults{}
			if err := st.SetStorageCapacity("local-lvm", capacity); err != nil {
				return err
			}
			return tc.fault(st)
		})
		// 20 GB: the linked clone's disk grows, so a full storage shows.
		cid := e.api.CreateContract(e.prov, apitest.ContractSpec{StorageCapacity: apitest.Ptr("20 GB")})
		c := e.api.WaitForStatus(cid, dcapi.StatusProvisioningFailed, time.Minute)
		if c.LastError == nil || !strings.Contains(*c.LastError, tc.want) {
			t.Errorf("%s: reason %v, want %q", tc.name, c.LastError, tc.want)
		} else {
			t.Logf("%s: provisioning_failed: %s", tc.name, *c.LastError)
		}
		e.waitNoVMs(time.Minute)
		e.sim.Update(t, func(st *pve.State) error {
			for id, v := range st.Volumes {
				if v.VMID != 9000 {
					t.Errorf("%s: leftover volume %s", tc.name, id)
				}
			}
			return nil
		})
	}
	a.stop(t)
}
