package service

// The installed unit, for real: `dc-agent service install --user` puts the
// unit that `service install` renders into a real systemd --user manager
// (private mount namespace, DESIGN.md) whose world lives in a test root,
// and the real dc-agent runs in it against the reference API server.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

var agentBin struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// dcAgent builds the real binary once per test process.
func dcAgent(t *testing.T) string {
	t.Helper()
	agentBin.once.Do(func() {
		agentBin.dir, agentBin.err = os.MkdirTemp("", "dc-agent-bin-")
		if agentBin.err == nil {
			agentBin.path, agentBin.err = testutil.BuildBinary(agentBin.dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
		}
	})
	if agentBin.err != nil {
		t.Fatal(agentBin.err)
	}
	return agentBin.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if agentBin.dir != "" {
		os.RemoveAll(agentBin.dir)
	}
	os.Exit(code)
}

// backendScript is a script provisioner. With a file "hold" beside it, a
// provision marks "started" and then waits until the test creates "gate",
// so the test decides when it ends; it then marks "provisioned".
const backendScript = `#!/bin/sh
dir=$(dirname "$0")
in=$(cat)
case $in in
*'"action":"provision"'*)
	if [ -e "$dir/hold" ]; then
		touch "$dir/started"
		while [ ! -e "$dir/gate" ]; do sleep 0.05; done
	fi
	touch "$dir/provisioned"
	echo '{"success":true,"instance":{"external_id":"inst-1","ip_address":"192.0.2.10","ssh_port":22}}' ;;
*'"action":"health_check"'*)
	echo '{"success":true,"health":{"status":"healthy","uptime_seconds":5}}' ;;
*)
	echo '{"success":true}' ;;
esac
`

type unitWorld struct {
	m       *testutil.UserManager
	srv     *apitest.Server
	prov    *apitest.Provider
	bin     string
	cfgPath string
	backend string // the directory of backendScript and its marker files
}

func newUnitWorld(t *testing.T) *unitWorld {
	t.Helper()
	bin := dcAgent(t)
	// Unix socket paths must stay short: a short root of our own.
	root := testutil.ShortDir(t)
	m := testutil.StartUserManager(t, root)
	srv := apitest.Start(t, apitest.WithNextHeartbeat(1))
	prov := srv.NewProvider("Service Test Hosting")
	key := srv.NewAgent(prov)
	etc := filepath.Join(root, "etc/dc-agent")
	if err := identity.SaveAgentKey(filepath.Join(etc, "agent.key"), key, false); err != nil {
		t.Fatal(err)
	}
	script := testutil.WriteFile(t, filepath.Join(root, "backend/backend.sh"), backendScript, 0o755)
	w := &unitWorld{m: m, srv: srv, prov: prov, bin: bin, cfgPath: filepath.Join(etc, "dc-agent.toml"), backend: filepath.Dir(script)}
	testutil.AgentTOML{Endpoint: srv.URL, ProviderPubkey: prov.Pubkey, AgentKey: filepath.Join(etc, "agent.key"),
		Polling:  "interval_seconds = 30\nhealth_check_interval_seconds = 10",
		StateDir: filepath.Join(root, "var/lib/dc-agent"), StatusSocket: filepath.Join(root, "run/dc-agent/status.sock"),
		Agent: `max_concurrent_provisions = 2
# TimeoutStopSec = 90 s: the provision in flight at stop is held only until
# systemd is stopping the agent, which the test must see within the grace
# even on a loaded machine. (On this cgroup-v1 host systemd --user has been
# seen to wait for TimeoutStopSec after the agent exited.)
shutdown_grace_seconds = 60`,
		Rest: testutil.ScriptProvisionerTOML(script, []string{"provision", "terminate", "health_check"}, "timeout_seconds = 60"),
	}.Write(t, w.cfgPath)
	return w
}

// cli runs the dc-agent CLI against this world's user manager.
func (w *unitWorld) cli(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(w.bin, append([]string{"--config", w.cfgPath}, args...)...)
	cmd.Env = w.m.Env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// install runs `dc-agent service install --user` with the test's run
// arguments (intervals shrunk 100×, SIGUSR2 hangs the loops) and fails the
// test unless it exits 0.
func (w *unitWorld) install(t *testing.T, extra ...string) (string, string) {
	t.Helper()
	args := append([]string{"service", "install", "--user", "--binary", w.bin, "--timeout", "60s",
		"--run-arg=--time-scale=0.01", "--run-arg=--debug-hang-on-sigusr2"}, extra...)
	out, errOut, code := w.cli(t, args...)
	if code != 0 {
		t.Fatalf("service install: exit %d\n%s%s", code, out, errOut)
	}
	return out, errOut
}

const unit = "dc-agent.service"

func TestInstalledUnitUnderSystemdUser(t *testing.T) {
	start := time.Now()
	phase := func(name string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), name) }
	w := newUnitWorld(t)
	phase("world ready")

	// A drop-in records each stop's result ($SERVICE_RESULT): the
	// transient Result=watchdog lasts only until the restart, which polling
	// can miss under load (and there is no journal here).
	results := filepath.Join(w.backend, "results")
	dropIn := testutil.WriteFile(t, filepath.Join(w.m.Root, "etc/systemd/user", unit+".d", "test.conf"),
		"[Service]\nExecStopPost=/bin/sh -c 'echo \"$$SERVICE_RESULT\" >> "+results+"'\n", 0o644)

	// Install: active (running) with a readable STATUS= line.
	out, progress := w.install(t, "--watchdog", "2s")
	if !strings.Contains(out, "active (running)") || !strings.Contains(progress, "changed  start") {
		t.Fatalf("install output:\n%s%s", out, progress)
	}
	props := w.m.WaitFor(t, unit, 20*time.Second, "online STATUS=", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && strings.HasPrefix(p["StatusText"], "online · 0 active")
	})
	t.Logf("STATUS=%s", props["StatusText"])
	pid := props["MainPID"]
	unitFile := filepath.Join(w.m.Root, "etc/systemd/user", unit)
	b, err := os.ReadFile(unitFile)
	if err != nil || !strings.Contains(string(b), "Type=notify\n") || !strings.Contains(string(b), "WatchdogSec=2s\n") {
		t.Fatalf("unit file %s: %v\n%s", unitFile, err, b)
	}
	status, _, code := w.cli(t, "service", "status", "--user")
	if code != 0 || !strings.Contains(status, "dc-agent.service: active (running), enabled") || !strings.Contains(status, "status: online · ") {
		t.Fatalf("service status: exit %d\n%s", code, status)
	}
	testutil.Eventually(t, 10*time.Second, "provider online at the API", func() bool { return w.srv.AgentStatus(w.prov).Online })

	phase("installed, online")
	// Same inputs again: nothing changes, the agent keeps running.
	out, progress = w.install(t, "--watchdog", "2s")
	if !strings.Contains(out, "nothing changed") || strings.Contains(progress, "changed ") {
		t.Fatalf("second install changed something:\n%s%s", out, progress)
	}
	if p := w.m.Show(t, unit, "MainPID"); p["MainPID"] != pid {
		t.Fatalf("second install restarted the agent (pid %s → %s)", pid, p["MainPID"])
	}

	phase("reinstalled unchanged")
	// A hung loop: the agent withholds WATCHDOG=1 and systemd restarts it.
	if _, err := w.m.Systemctl("kill", "--kill-who=main", "-s", "SIGUSR2", unit); err != nil {
		t.Fatal(err)
	}
	// systemd kills it (Result=watchdog), waits RestartSec, starts it
	// again. Result=watchdog lasts only until the restart, which polling
	// can miss under load: the manager's log keeps it.
	props = w.m.WaitFor(t, unit, 30*time.Second, "restarted after the watchdog", func(p map[string]string) bool {
		return p["NRestarts"] == "1" && p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != pid
	})
	if b, _ := os.ReadFile(results); string(b) != "watchdog\n" {
		t.Fatalf("restarted, but the stop results were %q, not the watchdog's", b)
	}
	// (Removed from disk; the next install's daemon-reload drops it.)
	if err := os.Remove(dropIn); err != nil {
		t.Fatal(err)
	}
	pid = props["MainPID"]

	phase("watchdog restart seen")
	// Graceful stop: a provision in flight finishes before the agent exits
	// (a hard stop would kill the script's process group); its report is
	// delivered at the latest by the next start (outbox). The provision is
	// held until systemd is stopping the agent, whatever the machine's load.
	marker := func(name string) string { return filepath.Join(w.backend, name) }
	testutil.WriteFile(t, marker("hold"), "", 0o644)
	id := w.srv.CreateContract(w.prov, apitest.ContractSpec{})
	testutil.Eventually(t, 20*time.Second, "the provision started", func() bool {
		_, err := os.Stat(marker("started"))
		return err == nil && w.srv.Contract(id).Status == dcapi.StatusProvisioning
	})
	stopped := make(chan error, 1)
	go func() { _, err := w.m.Systemctl("stop", unit); stopped <- err }()
	w.m.WaitFor(t, unit, 50*time.Second, "the agent told to stop", func(p map[string]string) bool {
		return p["ActiveState"] == "deactivating"
	})
	select {
	case err := <-stopped:
		t.Fatalf("the agent stopped with a provision in flight: %v", err)
	default:
	}
	// Only now may the provision end: if the agent had not waited for it,
	// KillMode=mixed would have killed the script and "provisioned" would
	// never appear.
	testutil.WriteFile(t, marker("gate"), "", 0o644)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	props = w.m.Show(t, unit, "ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
	if props["ActiveState"] != "inactive" || props["Result"] != "success" || props["ExecMainStatus"] != "0" {
		t.Fatalf("after stop: %v", props)
	}
	if _, err := os.Stat(marker("provisioned")); err != nil {
		t.Fatal("the provision in flight did not finish before the agent stopped")
	}

	phase("graceful stop done")
	// New inputs: the unit is rewritten and the service (started again by
	// install) runs with it.
	out, progress = w.install(t, "--watchdog", "3s")
	if !strings.Contains(progress, "changed  unit file") || !strings.Contains(out, "active (running)") {
		t.Fatalf("install with a new watchdog:\n%s%s", out, progress)
	}
	if b, _ := os.ReadFile(unitFile); !strings.Contains(string(b), "WatchdogSec=3s\n") {
		t.Fatalf("unit not updated:\n%s", b)
	}
	testutil.Eventually(t, 20*time.Second, "the contract reported provisioned", func() bool {
		st := w.srv.Contract(id).Status
		return st == dcapi.StatusProvisioned || st == dcapi.StatusActive
	})
	pid = w.m.Show(t, unit, "MainPID")["MainPID"]
	// ... and once more while running: exactly one restart.
	_, progress = w.install(t, "--watchdog", "4s")
	if strings.Count(progress, "changed  restart") != 1 {
		t.Fatalf("want one restart:\n%s", progress)
	}
	if p := w.m.Show(t, unit, "MainPID", "ActiveState"); p["MainPID"] == pid || p["ActiveState"] != "active" {
		t.Fatalf("after a changed install: %v (pid was %s)", p, pid)
	}

	phase("changed installs done")
	// Uninstall: stopped, unit gone, config and key kept.
	out, _, code = w.cli(t, "service", "uninstall", "--user")
	if code != 0 || !strings.Contains(out, "Removed") {
		t.Fatalf("uninstall: exit %d\n%s", code, out)
	}
	if _, err := os.Stat(unitFile); err == nil {
		t.Fatal("unit file kept")
	}
	if p := w.m.Show(t, unit, "LoadState", "ActiveState"); p["LoadState"] != "not-found" || p["ActiveState"] != "inactive" {
		t.Fatalf("after uninstall: %v", p)
	}
	for _, f := range []string{w.cfgPath, filepath.Join(filepath.Dir(w.cfgPath), "agent.key")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("uninstall removed %s", f)
		}
	}
	if _, _, code := w.cli(t, "service", "status", "--user"); code == 0 {
		t.Fatal("service status exits 0 after uninstall")
	}
}
