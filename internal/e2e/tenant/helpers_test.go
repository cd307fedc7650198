// Package tenante2e runs tenant password resets and SSH key rotations end
// to end: the real dc-agent binary, the real dc-api (both profiles; the
// tenant's requests made with the dc-api binary on the server's database,
// from another process), and each backend — the Proxmox simulator's guest
// agent, a real dockerd, the Hetzner simulator, and the script protocol
// (the demo backend).
package tenante2e

import (
	"context"
	"crypto/ed25519"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

var dcAgent, dcAPI, demoBackend string

// dockerEnv is one real dockerd for the package, started by TestMain.
var dockerEnv *testutil.DockerEnv

const dockerImage = "dc-tenant/busybox:1"

func TestMain(m *testing.M) {
	testutil.RunWithBinariesAnd(m, func() func() {
		dockerEnv = testutil.StartDockerEnv()
		dockerEnv.ImportBusybox(dockerImage)
		return dockerEnv.Stop
	},
		testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-agent", Name: "dc-agent", Path: &dcAgent},
		testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-api", Name: "dc-api", Path: &dcAPI},
		testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/internal/demobackend/demo-backend", Name: "demo-backend", Path: &demoBackend})
}

// wait bounds every wait for the agent.
const wait = 120 * time.Second // a hang guard: passing runs take seconds

// world is one dc-api of a profile with a provider and its agent key.
type world struct {
	t         *testing.T
	api       *apitest.Server
	dsn       string
	prov      *apitest.Provider
	pool      *store.Pool
	live      bool
	keyPath   string
	dir       string
	requester ed25519.PrivateKey
	proc      *agentProc   // the agent running now
	procs     []*agentProc // every agent started, for noLeak
	serverLog *testutil.SyncBuffer
}

// alive fails the test if the running agent has exited.
func (w *world) alive() {
	w.t.Helper()
	if w.proc == nil {
		return
	}
	select {
	case <-w.proc.done:
		w.t.Fatalf("the agent exited: %v\n%s", w.proc.cmd.ProcessState, w.proc.out.String())
	default:
	}
}

var profiles = []string{apiserver.ProfileDefault, apiserver.ProfileLive}

func newWorld(t *testing.T, profile string) *world {
	t.Helper()
	dir := t.TempDir()
	dsn := "sqlite:" + filepath.Join(dir, "dc-api.db")
	serverLog := &testutil.SyncBuffer{}
	api := apitest.Start(t, apitest.WithProfile(profile), apitest.WithDB(dsn),
		apitest.WithLogger(slog.New(slog.NewTextHandler(serverLog, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	w := &world{t: t, api: api, dsn: dsn, prov: api.NewProvider("Tenant Hosting"), live: profile == apiserver.ProfileLive, dir: dir,
		serverLog: serverLog}
	var key ed25519.PrivateKey
	if w.live {
		// The live API hands contracts to agents of a pool only.
		w.pool = api.NewPool(w.prov, "eu", "europe", "any")
		key = api.NewPoolAgent(w.pool)
	} else {
		key = api.NewAgent(w.prov)
	}
	w.keyPath = filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(w.keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	w.requester, _ = identity.GenerateKey()
	return w
}

// config writes dc-agent.toml with the provisioner section given.
func (w *world) config(provisioner string) string {
	w.t.Helper()
	sockDir := testutil.ShortDir(w.t)
	return testutil.AgentTOML{Endpoint: w.api.URL, ProviderPubkey: w.prov.Pubkey, AgentKey: w.keyPath,
		Polling: `interval_seconds = 30
health_check_interval_seconds = 30
reconcile_interval_seconds = 30`,
		StateDir: filepath.Join(w.dir, "state"), StatusSocket: filepath.Join(sockDir, "s.sock"), Agent: "max_concurrent_provisions = 4",
		Rest: provisioner + "\n"}.Write(w.t, filepath.Join(w.dir, "dc-agent.toml"))
}

// contract creates a paid contract with the requester's key (in the pool
// on the live profile).
func (w *world) contract(spec apitest.ContractSpec) string {
	w.t.Helper()
	rp := identity.PublicHex(w.requester)
	spec.RequesterPubkey = &rp
	if w.pool != nil {
		spec.AgentPoolID = &w.pool.PoolID
	}
	return w.api.CreateContract(w.prov, spec)
}

func (w *world) waitLive(cid string) {
	w.t.Helper()
	w.api.WaitForContract(cid, wait, func(c *store.Contract) bool {
		w.alive()
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
}

// tenant runs `dc-api contract ARGS` on the server's database, as the
// tenant's request arrives from another process.
func (w *world) tenant(args ...string) {
	w.t.Helper()
	cmd := exec.Command(dcAPI, append([]string{"--db", w.dsn, "contract"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		w.t.Fatalf("dc-api contract %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (w *world) request(cid, kind string) *store.TenantRequest {
	w.t.Helper()
	list, err := w.api.Store.TenantRequests(context.Background(), cid)
	if err != nil {
		w.t.Fatal(err)
	}
	for i := range list {
		if list[i].Kind == kind {
			return &list[i]
		}
	}
	return nil
}

// waitDone waits until the agent reported the request (done or failed).
func (w *world) waitDone(cid, kind string) *store.TenantRequest {
	w.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		if r := w.request(cid, kind); r != nil && r.DoneAtNs != nil {
			return r
		}
		w.alive()
		if time.Now().After(deadline) {
			w.t.Fatalf("the agent did not report the %s of %s within %s", kind, cid, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFailure waits until the tenant can read why the request failed: the
// request's error (default profile) or a health check's details (live,
// which has no failure report); it returns the message.
func (w *world) waitFailure(cid, kind string) string {
	w.t.Helper()
	if !w.live {
		r := w.waitDone(cid, kind)
		if r.Error == nil {
			w.t.Fatalf("the %s succeeded", kind)
		}
		return *r.Error
	}
	prefix := map[string]string{store.RequestPasswordReset: "password reset failed: ", store.RequestKeyRotation: "SSH key rotation failed: "}[kind]
	deadline := time.Now().Add(wait)
	for {
		for _, hc := range w.api.HealthChecks(cid) {
			if strings.HasPrefix(hc.Details, prefix) {
				if r := w.request(cid, kind); r.DoneAtNs != nil {
					w.t.Fatal("a live request ended without being carried out")
				}
				return hc.Details
			}
		}
		w.alive()
		if time.Now().After(deadline) {
			w.t.Fatalf("no failure of the %s reached the tenant within %s", kind, wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// password is the contract's root password as its tenant opens it.
func (w *world) password(cid string) string {
	w.t.Helper()
	d, ok := w.api.InstanceDetails(cid)
	if !ok || d.RootPassword == "" {
		w.t.Fatalf("contract %s has no root password", cid)
	}
	pw, err := identity.Open(d.RootPassword, w.requester)
	if err != nil {
		w.t.Fatalf("the tenant cannot open the root password: %v", err)
	}
	return string(pw)
}

// agentProc is a running `dc-agent run`.
type agentProc struct {
	cmd  *exec.Cmd
	out  *testutil.SyncBuffer
	done chan struct{}
}

// run starts the agent binary with every interval scaled down 100x.
func (w *world) run(cfg string, extra ...string) *agentProc {
	w.t.Helper()
	args := append([]string{"run", "-c", cfg, "--time-scale", "0.01", "--log-level", "debug"}, extra...)
	cmd := exec.Command(dcAgent, args...)
	cmd.Env = []string{"HOME=" + w.t.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8"}
	out := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if os.Getenv("DC_E2E_AGENT_LOG") != "" {
		cmd.Stdout, cmd.Stderr = io.MultiWriter(out, os.Stderr), io.MultiWriter(out, os.Stderr)
	}
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	p := &agentProc{cmd: cmd, out: out, done: make(chan struct{})}
	w.proc = p
	w.procs = append(w.procs, p)
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	w.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.done
		}
		if w.t.Failed() {
			w.t.Logf("agent log:\n%s", out.String())
		}
	})
	return p
}

// killed waits for the agent to die by SIGKILL (a --crash-at point).
func (w *world) killed(p *agentProc) {
	t := w.t
	t.Helper()
	w.proc = nil
	select {
	case <-p.done:
	case <-time.After(wait):
		t.Fatal("the agent did not crash at its crash point")
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("the agent ended %v, not by SIGKILL:\n%s", p.cmd.ProcessState, p.out.String())
	}
}

// noLeak fails if the log of any agent run of the test or dc-api's
// (debug level, both) shows the password pw.
func (w *world) noLeak(pw string) {
	w.t.Helper()
	for i, p := range w.procs {
		if strings.Contains(p.out.String(), pw) {
			w.t.Fatalf("the log of agent run %d shows the new password", i+1)
		}
	}
	if l := w.serverLog.String(); l == "" {
		w.t.Fatal("dc-api logged nothing: the check would prove nothing")
	} else if strings.Contains(l, pw) {
		w.t.Fatal("dc-api's log shows the new password")
	}
}
