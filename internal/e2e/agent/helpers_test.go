package agente2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
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

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// dcAgent is the real dc-agent binary and demoBackend the demo machine
// pool the script provisioner drives, both built once by TestMain (without
// -race: these run as separate processes, many times; the in-process
// tests cover races).
var dcAgent, demoBackend string

func TestMain(m *testing.M) {
	testutil.RunWithBinaries(m,
		testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-agent", Name: "dc-agent", Path: &dcAgent},
		testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/internal/demobackend/demo-backend", Name: "demo-backend", Path: &demoBackend})
}

// timeScale shrinks the agent's intervals: a 30 s poll takes 300 ms, the
// 60 s backoff cap 600 ms.
const timeScale = 0.01

// world is one test's reference server, provider, agent key and demo backend.
type world struct {
	t        *testing.T
	srv      *apitest.Server
	prov     *apitest.Provider
	acc      *e2eutil.Account
	agentKey ed25519.PrivateKey
	dir      string
	backend  *demobackend.Backend
	cfgPath  string
	socket   string
	stateDir string
}

type worldOpt func(*worldConfig)

type worldConfig struct {
	profile     e2eutil.Profile
	apiOpts     []apitest.Option
	extraConfig string
	maxConc     int
	orphanGrace int
	// agentExtra goes into the [agent] section.
	agentExtra string
}

func newWorld(t *testing.T, opts ...worldOpt) *world {
	t.Helper()
	wc := worldConfig{maxConc: 4, orphanGrace: 3600, profile: e2eutil.Profiles[0]}
	for _, o := range opts {
		o(&wc)
	}
	srv := apitest.Start(t, append(append([]apitest.Option{apitest.WithNextHeartbeat(60)}, wc.profile.Options()...), wc.apiOpts...)...)
	acc := wc.profile.Enroll(t, srv, "script")
	prov, key := acc.Provider, acc.AgentKey
	dir := t.TempDir()
	w0 := &world{backend: &demobackend.Backend{Dir: filepath.Join(dir, "pool")}}
	// Registered after TempDir, so it runs before the directory is removed.
	t.Cleanup(w0.reapBackends)
	// Unix socket paths must stay short (108 bytes).
	sockDir := testutil.ShortDir(t)
	w := &world{t: t, srv: srv, prov: prov, acc: acc, agentKey: key, dir: dir,
		backend: &demobackend.Backend{Dir: filepath.Join(dir, "pool")},
		cfgPath: filepath.Join(dir, "dc-agent.toml"), socket: filepath.Join(sockDir, "status.sock"), stateDir: filepath.Join(dir, "state")}
	if err := os.MkdirAll(w.backend.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := w.backend.Set("delay", "20ms"); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(dir, "backend.sh")
	if err := demobackend.WriteWrapper(wrapper, demoBackend, w.backend.Dir); err != nil {
		t.Fatal(err)
	}
	keyPath := filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	pool := ""
	if acc.Pool != nil {
		pool = fmt.Sprintf("pool_id = %q", acc.Pool.PoolID)
	}
	testutil.AgentTOML{Endpoint: srv.URL, ProviderPubkey: prov.Pubkey, AgentKey: keyPath, API: pool,
		Polling: fmt.Sprintf(`interval_seconds = 30
health_check_interval_seconds = 10
reconcile_interval_seconds = 10
orphan_grace_period_seconds = %d`, wc.orphanGrace),
		StateDir: w.stateDir, StatusSocket: w.socket, Agent: fmt.Sprintf(`max_concurrent_provisions = %d
shutdown_grace_seconds = 300
%s`, wc.maxConc, wc.agentExtra),
		Rest: fmt.Sprintf(`[provisioner]
type = "script"
# The demo backend reads these from instance_config ("fail" makes it fail).
instance_config_allow = ["hostname", "fail"]

[provisioner.script]
provision = %q
terminate = %q
health_check = %q
get_instance = %q
list = %q
pause = %q
resume = %q
timeout_seconds = 60
%s`, wrapper, wrapper, wrapper, wrapper, wrapper, wrapper, wrapper, wc.extraConfig)}.Write(t, w.cfgPath)
	return w
}

// withProfile runs the world's server in profile p.
func withProfile(p e2eutil.Profile) worldOpt { return func(c *worldConfig) { c.profile = p } }

// withAPI adds options of the world's server.
func withAPI(opts ...apitest.Option) worldOpt {
	return func(c *worldConfig) { c.apiOpts = append(c.apiOpts, opts...) }
}

// contract creates a contract the world's agent is offered.
func (w *world) contract(spec apitest.ContractSpec) string {
	return w.acc.CreateContract(w.srv, spec)
}

// eachProfile runs f against a server of each dc-api profile.
func eachProfile(t *testing.T, f func(t *testing.T, p e2eutil.Profile)) {
	for _, p := range e2eutil.Profiles {
		t.Run(p.Name, func(t *testing.T) { f(t, p) })
	}
}

// proc is a running `dc-agent run`.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
	err    error
}

// startAgent runs dc-agent run against the world; extra args and env are added.
func (w *world) startAgent(env []string, args ...string) *proc {
	w.t.Helper()
	all := append([]string{"run", "--config", w.cfgPath, "--log-format", "json", "--log-level", "debug", "--time-scale", fmt.Sprint(timeScale)}, args...)
	cmd := exec.Command(dcAgent, all...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + w.dir, "LANG=C.UTF-8"}, env...)
	p := &proc{t: w.t, cmd: cmd, stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	cmd.Stdout = p.stderr
	if err := cmd.Start(); err != nil {
		w.t.Fatal(err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	w.t.Cleanup(func() {
		p.kill()
		if w.t.Failed() {
			w.t.Logf("agent (pid %d) log tail:\n%s", cmd.Process.Pid, tail(p.stderr.String(), 40))
		}
	})
	return p
}

func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatal("agent did not stop within 30s of SIGTERM")
	}
	if p.err != nil {
		p.t.Fatalf("agent exited with %v after SIGTERM:\n%s", p.err, tail(p.stderr.String(), 30))
	}
}

// waitExit waits for the process to end by itself and returns its error.
func (p *proc) waitExit(d time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.t.Fatalf("agent still running after %s:\n%s", d, tail(p.stderr.String(), 30))
		return nil
	}
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// reapBackends kills what the agent's scripts left running in this world:
// each script runs in its own process group (so that its timeout can kill
// it whole), so a SIGKILLed agent does not take it along, and it could
// still be writing into the world's directory while the test removes it.
func (w *world) reapBackends() {
	needle := []byte(demobackend.EnvVar + "=" + w.backend.Dir + "\x00")
	wrapper := []byte(filepath.Join(filepath.Dir(w.backend.Dir), "backend.sh"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		found := false
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			env, _ := os.ReadFile("/proc/" + e.Name() + "/environ")
			cmdline, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if !bytes.Contains(env, needle) && !bytes.Contains(cmdline, wrapper) {
				continue // neither the backend nor its wrapper script (sh)
			}
			found = true
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if !found || time.Now().After(deadline) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// state reads the agent's status socket.
func (w *world) state() (status.State, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return status.NewClient(w.socket).State(ctx)
}

// eventually polls cond until it holds, failing the test after its timeout.
var eventually = testutil.Eventually

// instancesByContract counts the backend's instances per contract.
func (w *world) instancesByContract() map[string]int {
	out := map[string]int{}
	for _, inst := range w.backend.Instances() {
		out[inst.ContractID]++
	}
	return out
}

// provisionCalls counts provision calls per contract in the backend's log.
func (w *world) provisionCalls() map[string]int {
	calls, err := w.backend.Calls()
	if err != nil {
		w.t.Fatal(err)
	}
	out := map[string]int{}
	for _, c := range calls {
		if c.Action == "provision" {
			out[c.ContractID]++
		}
	}
	return out
}

// runCLI runs dc-agent with args and returns its stdout; it must exit 0.
func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(dcAgent, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "LANG=C.UTF-8"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dc-agent %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// writeStrayInstance puts a machine into the backend's pool that no
// contract knows.
func writeStrayInstance(w *world) error {
	stray := demobackend.Instance{ExternalID: "demo-stray", Name: "dc-" + strings.Repeat("0", 64), ContractID: strings.Repeat("0", 64),
		IPAddress: "10.77.9.9", SSHPort: 22, CreatedAt: time.Now()}
	b, err := json.Marshal(stray)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(w.backend.Dir, "instances", stray.Name+".json"), b, 0o644)
}
