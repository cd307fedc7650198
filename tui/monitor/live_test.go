package monitor

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/teatest"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners/all"
)

// backendScript is a script provisioner backend that succeeds at every
// action (the script provisioner itself, its process handling and the
// protocol are the real ones).
const backendScript = `#!/bin/sh
cat >/dev/null
echo '{"success":true,"instance":{"external_id":"vm-101","ip_address":"10.0.0.7","ssh_port":22},"health":{"status":"healthy"},"instances":[]}'
`

// liveWorld is a real agent (in-process, the real script provisioner)
// against the reference dc-api, with its real status socket.
type liveWorld struct {
	srv  *apitest.Server
	prov *apitest.Provider
	cfg  *config.Config
	path string
}

func newLiveWorld(t testing.TB) *liveWorld {
	t.Helper()
	env := e2eutil.NewEnv(t)
	srv, prov, keyPath, dir := env.API, env.Provider, env.KeyPath, env.Dir
	script := filepath.Join(dir, "backend.sh")
	if err := os.WriteFile(script, []byte(backendScript), 0o755); err != nil {
		t.Fatal(err)
	}
	// Unix socket paths are short (108 bytes): not under the long TempDir.
	sockDir := testutil.ShortDir(t)
	cfg := &config.Config{
		API:     config.APIConfig{Endpoint: srv.URL, ProviderPubkey: prov.Pubkey, AgentSecretKey: keyPath},
		Polling: config.PollingConfig{IntervalSeconds: 30, HealthCheckIntervalSeconds: 300, ReconcileIntervalSeconds: 300},
		Agent:   config.AgentConfig{StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(sockDir, "s.sock"), MaxConcurrentProvisions: 2, ShutdownGraceSeconds: 10},
		Provisioner: config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
			Provision: script, Terminate: script, HealthCheck: script, GetInstance: script, List: script, TimeoutSeconds: 30}},
	}
	path := filepath.Join(dir, "dc-agent.toml")
	if err := config.Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return &liveWorld{srv: srv, prov: prov, cfg: cfg, path: path}
}

// startAgent runs the agent until the returned stop is called (or the test
// ends).
func (w *liveWorld) startAgent(t testing.TB) (stop func()) {
	t.Helper()
	a, err := agent.New(w.cfg, agent.Options{Registry: all.Registry(), Version: "0.0.0-live",
		Timing: func(cfg *config.Config) agent.Timing { return agent.TimingFromConfig(cfg).Scaled(0.01) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	return stop
}

// screenLog keeps everything the program drew. The renderer redraws only
// changed lines, so a wait looks at all output since the last mark.
type screenLog struct {
	t    *testing.T
	r    io.Reader
	buf  []byte
	from int
}

func (s *screenLog) mark() { s.read(); s.from = len(s.buf) }

func (s *screenLog) read() {
	b := make([]byte, 64<<10)
	for {
		n, _ := s.r.Read(b)
		if n == 0 {
			return
		}
		s.buf = append(s.buf, b[:n]...)
	}
}

func (s *screenLog) wait(want string) {
	s.t.Helper()
	deadline := time.Now().Add(60 * time.Second) // a hang guard: a loaded machine is slow, never wrong
	for {
		s.read()
		if bytes.Contains(s.buf[s.from:], []byte(want)) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the screen never showed %q; last output:\n%s", want, tailBytes(s.buf, 3000))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func tailBytes(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// TestLiveAgent watches a real agent: the monitor comes up online (from
// the real API and the real socket), shows a contract provisioned live
// from the event stream, says the agent is not running when it stops, and
// picks the new process up when it starts again.
func TestLiveAgent(t *testing.T) {
	w := newLiveWorld(t)
	stop := w.startAgent(t)

	m := New(Options{
		ConfigPath: w.path, Config: w.cfg, Renderer: plainRenderer(),
		Logs: func(context.Context, int) ([]string, error) { return nil, os.ErrNotExist },
		Tick: 20 * time.Millisecond, StateEvery: 50 * time.Millisecond, APIEvery: 100 * time.Millisecond,
		ReconnectMin: 10 * time.Millisecond, ReconnectMax: 50 * time.Millisecond,
	})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 40))
	term := &screenLog{t: t, r: tm.Output()}
	term.wait("ONLINE   the API sees the provider online")
	term.wait("live from the status socket")

	term.mark()
	cid := w.srv.CreateContract(w.prov, apitest.ContractSpec{})
	term.wait("provisioned vm-101 (10.0.0.7)")
	w.srv.WaitForStatus(cid, "provisioned", 60*time.Second)

	term.mark()
	stop()
	term.wait("agent not running")

	term.mark()
	w.startAgent(t)
	term.wait("the agent restarted while you watched")
	term.wait("dc-agent starting")

	tm.Send(key("q"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(10*time.Second)).(*Model)
	if fm.state == nil || fm.stateErr != nil || fm.state.Version != "0.0.0-live" || !fm.connected {
		t.Errorf("final state: %+v err %v connected %v", fm.state, fm.stateErr, fm.connected)
	}
	if fm.ctx.Err() == nil {
		t.Error("quitting left the watcher running")
	}
	// Quitting the monitor never stops the service.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := status.NewClient(w.cfg.Agent.StatusSocket).State(ctx); err != nil || st.Phase != status.PhaseRunning {
		t.Errorf("after quitting the monitor the agent answers %+v, %v; want it running", st.Phase, err)
	}
}
