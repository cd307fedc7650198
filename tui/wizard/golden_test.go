package wizard

import (
	"bytes"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/setup"
)

// Golden screens at 80x24 with the Ascii profile and the frozen clock.
// Regenerate with: go test ./tui/wizard -run TestGolden -update

// goldenScreen runs m in a teatest program at 80x24, sends msgs, and
// compares the final frame with testdata/<test name>.golden.
func goldenScreen(t *testing.T, m *Model, msgs ...tea.Msg) {
	t.Helper()
	goldenScreenAfter(t, m, "", msgs...)
}

// goldenScreenAfter waits until the screen shows want (for what Init
// starts) before taking the frame.
func goldenScreenAfter(t *testing.T, m *Model, want string, msgs ...tea.Msg) {
	t.Helper()
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(80, 24))
	for _, msg := range msgs {
		tm.Send(msg)
	}
	if want != "" {
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte(want)) },
			teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
	}
	if err := tm.Quit(); err != nil {
		t.Fatal(err)
	}
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*Model)
	view := fm.View()
	lines := strings.Split(view, "\n")
	if len(lines) != 24 {
		t.Errorf("%d lines, want 24", len(lines))
	}
	for _, l := range lines {
		if lipgloss.Width(l) > 80 {
			t.Errorf("line wider than 80: %q", l)
		}
	}
	golden.RequireEqual(t, []byte(view))
}

// progressFixture is a node plan's screen in a given state: the real
// step titles, events as the engine sends them.
func progressFixture(m *Model, failAt int, doneUpTo int) {
	titles := []string{"Agent key", "Template ubuntu-24.04", "Pool dc-agent", "User dc-agent@pve", "Role DCAgent",
		"API token dc-agent@pve!agent", "Permissions", "Check the token's permissions", "Write " + fixedDir + "/dc-agent.toml"}
	texts := []string{"created " + fixedDir + "/agent.key", "built template 9000 dc-ubuntu-2404-r1", "created pool dc-agent",
		"created user dc-agent@pve", "created role DCAgent", "created token dc-agent@pve!agent", "granted DCAgent on /pool/dc-agent",
		"the token holds exactly what it needs", "wrote " + fixedDir + "/dc-agent.toml"}
	var steps []setup.Step
	for _, t := range titles {
		steps = append(steps, setup.Step{Title: t})
	}
	m.gen++
	m.progress.reset(m.gen, &setup.Plan{Steps: steps}, m.now)
	m.stage = stagePlan
	m.screen = scrProgress
	ev := func(e setup.Event) {
		e.Total, e.Time = len(titles), t0
		m.progress.apply(e)
	}
	for i := range titles {
		if i > doneUpTo && i > failAt {
			break
		}
		ev(setup.Event{Kind: setup.EventStarted, Index: i + 1})
		ev(setup.Event{Kind: setup.EventCommand, Index: i + 1, Text: "pvesh get /nodes --output-format json"})
		switch {
		case i == failAt:
			ev(setup.Event{Kind: setup.EventOutput, Index: i + 1, Text: "qemu-img: error while writing at byte 2147483648: No space left on device"})
			ev(setup.Event{Kind: setup.EventFailed, Index: i + 1, Text: "import the disk of template 9000: exit status 1",
				Fix: "free space on storage bulk (pvesm status), then retry", Elapsed: 2300 * time.Millisecond})
			m.Update(planDoneMsg{gen: m.gen, err: &setup.StepError{Step: "template", Title: titles[i]}})
			return
		case failAt < 0 && i == doneUpTo && doneUpTo < len(titles)-1:
			return // still running
		case i == 7:
			ev(setup.Event{Kind: setup.EventSkipped, Index: i + 1, Text: texts[i], Elapsed: 80 * time.Millisecond})
		default:
			ev(setup.Event{Kind: setup.EventDone, Index: i + 1, Text: texts[i], Elapsed: time.Duration(i+1) * 310 * time.Millisecond})
		}
	}
	m.run = testRun()
	m.Update(planDoneMsg{gen: m.gen})
}

func TestGolden(t *testing.T) {
	t.Run("welcome", func(t *testing.T) {
		goldenScreenAfter(t, newTestModel(t), "enter start")
	})
	t.Run("welcome-blocked", func(t *testing.T) {
		m := newTestModel(t)
		m.o.Prereqs = func() []Check {
			return append([]Check{{Name: "permissions", Text: "cannot write /etc/dc-agent: permission denied",
				Fix: "run as root (sudo dc-agent), or pass --config with a path you can write"}}, fixedChecks[1:]...)
		}
		goldenScreenAfter(t, m, "check again")
	})
	t.Run("api", func(t *testing.T) {
		m := newTestModel(t)
		toAPI(t, m)
		press(m, "tab")
		typeText(m, providerHex[:20])
		goldenScreen(t, m)
	})
	t.Run("host", func(t *testing.T) {
		m := newTestModel(t)
		toHost(t, m)
		typeText(m, "pve.example.com")
		goldenScreen(t, m)
	})
	t.Run("host-key", func(t *testing.T) {
		m := newTestModel(t)
		toHostKey(t, m, testHostKey)
		goldenScreen(t, m)
	})
	t.Run("host-key-changed", func(t *testing.T) {
		m := newTestModel(t)
		changed := testHostKey
		changed.Changed = true
		toHostKey(t, m, changed)
		goldenScreen(t, m)
	})
	t.Run("connect-failed", func(t *testing.T) {
		m := newTestModel(t)
		toHostKey(t, m, testHostKey)
		m.hostScr.state = hostConnecting
		m.gen++
		m.hostScr.conn.reset(m.gen, &setup.Plan{Steps: []setup.Step{{Title: "Connect to root@pve.example.com"}, {Title: "Discover the node"}}}, m.now)
		m.hostScr.conn.apply(setup.Event{Kind: setup.EventStarted, Index: 1, Time: t0})
		m.hostScr.conn.apply(setup.Event{Kind: setup.EventFailed, Index: 1, Time: t0, Elapsed: 20 * time.Millisecond,
			Text: "ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey]",
			Fix:  "check the user and that its authorized_keys holds the key " + fixedDir + "/id_ed25519.pub"})
		goldenScreen(t, m, planDoneMsg{gen: m.gen, err: setup.Fixf("x", "ssh: unable to authenticate")})
	})
	t.Run("discovery", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		goldenScreen(t, m, key("down"), key(" "))
	})
	t.Run("progress-running", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		progressFixture(m, -1, 1)
		goldenScreen(t, m)
	})
	t.Run("progress-running-output", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		progressFixture(m, -1, 1)
		goldenScreen(t, m, key("o"))
	})
	t.Run("progress-failed", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		progressFixture(m, 1, 0)
		goldenScreen(t, m)
	})
	t.Run("progress-done", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		chooseAll(m)
		_ = m.choose()
		progressFixture(m, -1, 8)
		goldenScreen(t, m)
	})
	t.Run("request", func(t *testing.T) {
		m := newTestModel(t)
		toRequest(t, m)
		goldenScreen(t, m)
	})
	t.Run("request-qr", func(t *testing.T) {
		m := newTestModel(t)
		toRequest(t, m)
		tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 80))
		if err := tm.Quit(); err != nil {
			t.Fatal(err)
		}
		golden.RequireEqual(t, []byte(tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()))
	})
	for _, c := range []struct{ name, code string }{
		{"paste-malformed", "dcds1:AAAA"},
		{"paste-wrong-provider", sign(t, otherKey, agentHex, nil)},
		{"paste-expired", sign(t, providerKey, agentHex, ptr(t0.Add(-24*time.Hour).UnixNano()))},
		{"paste-valid", sign(t, providerKey, agentHex, ptr(t0.Add(72*time.Hour).UnixNano()))},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := newTestModel(t)
			toRequest(t, m)
			press(m, "enter")
			goldenScreen(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(c.code), Paste: true})
		})
	}
	t.Run("register-done", func(t *testing.T) {
		m := newTestModel(t)
		toRequest(t, m)
		m.answers.APIEndpoint = "https://api.example.org"
		m.screen = scrRegister
		m.gen++
		m.reg.reset(m.gen, &setup.Plan{Steps: []setup.Step{{Title: "Register the delegation"}}}, m.now)
		m.reg.apply(setup.Event{Kind: setup.EventStarted, Index: 1, Time: t0})
		m.reg.apply(setup.Event{Kind: setup.EventDone, Index: 1, Time: t0, Elapsed: 120 * time.Millisecond,
			Text: "registered agent " + agentHex[:16] + "… with https://api.example.org"})
		goldenScreen(t, m, planDoneMsg{gen: m.gen})
	})
	t.Run("service-done", func(t *testing.T) {
		m := newTestModel(t)
		toRequest(t, m)
		m.screen = scrService
		m.gen++
		m.svc.reset(m.gen, &setup.Plan{Steps: []setup.Step{{Title: "Install the service files"}}}, m.now)
		m.svc.apply(setup.Event{Kind: setup.EventStarted, Index: 1, Time: t0})
		m.svc.apply(setup.Event{Kind: setup.EventOutput, Index: 1, Time: t0, Text: "changed unit              " + fixedDir + "/root/etc/systemd/system/dc-agent.service"})
		m.svc.apply(setup.Event{Kind: setup.EventDone, Index: 1, Time: t0, Elapsed: 40 * time.Millisecond, Text: "wrote /etc/systemd/system/dc-agent.service"})
		goldenScreen(t, m, planDoneMsg{gen: m.gen})
	})
	t.Run("summary", func(t *testing.T) {
		m := newTestModel(t)
		toRequest(t, m)
		m.answers.APIEndpoint = "https://api.example.org"
		m.svcRes.UnitPath = "/etc/systemd/system/dc-agent.service"
		m.toSummary()
		hb := t0.Add(-4 * time.Second).UnixNano()
		goldenScreen(t, m, agentStatusMsg{st: dcapi.AgentStatus{Online: true, LastHeartbeatNs: &hb}, at: t0})
	})
}

func ptr[T any](v T) *T { return &v }
