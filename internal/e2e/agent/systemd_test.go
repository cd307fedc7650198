package agente2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func eq(s string) func(string) bool { return func(m string) bool { return m == s } }

// TestSdNotifyProcess runs the real binary with NOTIFY_SOCKET and
// WATCHDOG_USEC set, as systemd starts a Type=notify unit.
func TestSdNotifyProcess(t *testing.T) {
	w := newWorld(t)
	n := testutil.ListenNotify(t)
	p := w.startAgent([]string{"NOTIFY_SOCKET=" + n.Path, "WATCHDOG_USEC=300000"})
	eventually(t, 15*time.Second, "READY=1, an online STATUS= and WATCHDOG=1", func() bool {
		return n.Has(eq("READY=1")) && n.Has(eq("WATCHDOG=1")) &&
			n.Has(func(m string) bool {
				return strings.HasPrefix(m, "STATUS=online · 0 active · 0 provisioning · last poll")
			})
	})
	// The watchdog keeps being fed while the API is down: an outage is not a hang.
	w.srv.Stop()
	count := func() int { return n.Count("WATCHDOG=1") }
	before := count()
	eventually(t, 15*time.Second, "WATCHDOG=1 pings going on during the API outage", func() bool {
		return count() >= before+3
	})
	if w.srv.Running() {
		t.Fatal("the API came back during the outage check")
	}
	w.srv.Restart()
	// SIGHUP reloads: RELOADING=1, then READY=1 again.
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "RELOADING=1 then READY=1", func() bool {
		m := n.All()
		i := slices.Index(m, "RELOADING=1")
		return i >= 0 && slices.Contains(m[i:], "READY=1")
	})
	p.stop()
	if !n.Has(eq("STOPPING=1")) {
		t.Fatalf("no STOPPING=1 in %v", n.All())
	}
}

// TestSystemdUserUnit runs the agent as a real Type=notify unit with a
// watchdog under systemd --user and sees it active, reloaded and stopped.
func TestSystemdUserUnit(t *testing.T) {
	w := newWorld(t)
	m := testutil.StartUserManager(t, "")
	unit := fmt.Sprintf(`[Unit]
Description=dc-agent under test

[Service]
Type=notify
NotifyAccess=main
ExecStart=%s run --config %s --time-scale %v
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec=1
Restart=on-failure
TimeoutStopSec=30
Environment=PATH=%s
`, dcAgent, w.cfgPath, timeScale, os.Getenv("PATH"))
	if err := os.WriteFile(filepath.Join(m.Root, "etc/systemd/user/dc-agent-test.service"), []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := m.Systemctl("daemon-reload"); err != nil {
		t.Fatal(out, err)
	}
	// For Type=notify, start returns once the agent sent READY=1.
	if out, err := m.Systemctl("start", "dc-agent-test.service"); err != nil {
		t.Fatal(out, err)
	}
	props := m.WaitFor(t, "dc-agent-test.service", 15*time.Second, "active with an online status line", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && strings.HasPrefix(p["StatusText"], "online · ")
	})
	pid := props["MainPID"]
	eventually(t, 10*time.Second, "provider online at the API", func() bool { return w.srv.AgentStatus(w.prov).Online })
	if out, err := m.Systemctl("reload", "dc-agent-test.service"); err != nil {
		t.Fatal(out, err)
	}
	// Watchdog fed, no restarts, same process after the reload.
	time.Sleep(1500 * time.Millisecond) // longer than WatchdogSec
	p := m.Show(t, "dc-agent-test.service", "ActiveState", "MainPID", "NRestarts")
	if p["ActiveState"] != "active" || p["MainPID"] != pid || p["NRestarts"] != "0" {
		t.Fatalf("after reload and a watchdog period: %v (pid was %s)", p, pid)
	}
	if out, err := m.Systemctl("stop", "dc-agent-test.service"); err != nil {
		t.Fatal(out, err)
	}
	p = m.Show(t, "dc-agent-test.service", "ActiveState", "Result")
	if p["ActiveState"] != "inactive" || p["Result"] != "success" {
		t.Fatalf("after stop: %v", p)
	}
}

// TestReloadRefusesBrokenConfig: SIGHUP with a config that does not load
// is refused with a message, and the agent keeps working on the running
// one; the fixed file is taken at the next SIGHUP.
func TestReloadRefusesBrokenConfig(t *testing.T) {
	w := newWorld(t)
	n := testutil.ListenNotify(t)
	p := w.startAgent([]string{"NOTIFY_SOCKET=" + n.Path})
	eventually(t, 10*time.Second, "online", func() bool { st, err := w.state(); return err == nil && st.Online })
	good, err := os.ReadFile(w.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	readies := func() int { return n.Count("READY=1") }
	initial := readies()
	if err := os.WriteFile(w.cfgPath, []byte("[api\nendpoint = \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the reload refused in the log", func() bool {
		return strings.Contains(p.stderr.String(), "reload refused; keeping the running configuration")
	})
	// systemd leaves "reloading" only with READY=1, refused or not.
	eventually(t, 10*time.Second, "READY=1 after the refused reload", func() bool { return readies() > initial })
	// Still at work on the old configuration.
	cid := w.contract(apitest.ContractSpec{})
	waitLive(t, w, cid)
	if !p.running() {
		t.Fatal("the agent exited after a broken reload")
	}

	before := readies()
	if err := os.WriteFile(w.cfgPath, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "READY=1 after reloading the fixed file", func() bool { return readies() > before })
	p.stop()
}
