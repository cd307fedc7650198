package wizard

import (
	"errors"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// Golden screens at 80x24 with the Ascii profile and the frozen clock.
// Regenerate with: go test ./tui/wizard -run TestGolden -update

// goldenScreen sends msgs to m and compares its frame with
// testdata/<test name>.golden.
func goldenScreen(t *testing.T, m *Model, msgs ...tea.Msg) {
	t.Helper()
	for _, msg := range msgs {
		deliver(t, m, msg)
	}
	view := m.View()
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

var nodeTitles = []string{"Agent key", "Template ubuntu-24.04", "Pool dc-agent", "User dc-agent@pve", "Role DCAgent",
	"API token dc-agent@pve!agent", "Permissions", "Check the token's permissions", "Write " + fixedDir + "/dc-agent.toml"}

// progressFixture is the node plan's screen in a given state: the real
// step titles, events as the flow sends them.
func progressFixture(t *testing.T, m *Model, failAt int, doneUpTo int) {
	texts := []string{"created " + fixedDir + "/agent.key", "built template 9000 dc-ubuntu-2404-r1", "created pool dc-agent",
		"created user dc-agent@pve", "created role DCAgent", "created token dc-agent@pve!agent", "granted DCAgent on /pool/dc-agent",
		"the token holds exactly what it needs", "wrote " + fixedDir + "/dc-agent.toml"}
	deliver(t, m, startedMsg{phase: setup.PhaseNode, steps: titled(nodeTitles...), ans: testAnswers()})
	ev := func(e setup.Event) {
		e.Phase, e.Total, e.Time = setup.PhaseNode, len(nodeTitles), t0
		deliver(t, m, eventMsg{e})
	}
	for i := range nodeTitles {
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
			ask(t, m, endedQ{phase: setup.PhaseNode, err: &setup.StepError{Step: "template", Title: nodeTitles[i]}})
			return
		case failAt < 0 && i == doneUpTo && doneUpTo < len(nodeTitles)-1:
			return // still running
		case i == 7:
			ev(setup.Event{Kind: setup.EventSkipped, Index: i + 1, Text: texts[i], Elapsed: 80 * time.Millisecond})
		default:
			ev(setup.Event{Kind: setup.EventDone, Index: i + 1, Text: texts[i], Elapsed: time.Duration(i+1) * 310 * time.Millisecond})
		}
	}
	ask(t, m, endedQ{phase: setup.PhaseNode})
}

func TestGolden(t *testing.T) {
	t.Run("welcome", func(t *testing.T) {
		goldenScreen(t, newTestModel(t), askMsg{q: prereqQ{checks: fixedChecks}, reply: make(chan answerMsg, 1)})
	})
	t.Run("welcome-blocked", func(t *testing.T) {
		checks := append([]setup.Check{{Name: "permissions", Text: "cannot write /etc/dc-agent: permission denied",
			Fix: "run as root (sudo dc-agent), or pass --config with a path you can write"}}, fixedChecks[1:]...)
		goldenScreen(t, newTestModel(t), askMsg{q: prereqQ{checks: checks}, reply: make(chan answerMsg, 1)})
	})
	t.Run("api", func(t *testing.T) {
		m := newTestModel(t)
		toAPI(t, m)
		press(t, m, "tab")
		typeText(t, m, providerHex[:20])
		goldenScreen(t, m)
	})
	t.Run("api-setup-token", func(t *testing.T) {
		m := newTestModel(t)
		toAPIBoth(t, m, setup.APIAnswer{Endpoint: "https://api.decent-cloud.org"}, nil)
		press(t, m, "tab", "tab")
		typeText(t, m, "apt_europe_0123")
		goldenScreen(t, m)
	})
	t.Run("api-setup-token-used", func(t *testing.T) {
		m := newTestModel(t)
		err := &setup.TokenError{Reason: "used", Err: setup.Fixf(setup.TokenFix, "the setup token was already used: each token registers one agent, once")}
		toAPIBoth(t, m, setup.APIAnswer{Endpoint: "https://api.decent-cloud.org", Method: setup.MethodSetupToken},
			&setup.AnswerError{Field: "setup-token", Err: err})
		goldenScreen(t, m)
	})
	t.Run("api-delegation", func(t *testing.T) {
		m := newTestModel(t)
		toAPIBoth(t, m, setup.APIAnswer{Endpoint: "https://api.decent-cloud.org"}, nil)
		press(t, m, "tab", "right", "tab")
		typeText(t, m, providerHex[:20])
		goldenScreen(t, m)
	})
	t.Run("backend", func(t *testing.T) {
		m := newTestModel(t)
		goldenScreen(t, m, askMsg{q: setup.BackendQuestion{Backends: setup.Backends, Answer: config.TypeProxmox}, reply: make(chan answerMsg, 1)}, key("down"))
	})
	t.Run("cloud-token-rejected", func(t *testing.T) {
		m := newTestModel(t)
		toCloud(t, m)
		err := setup.WithFix(errors.New("DigitalOcean rejected the API token (401 Unable to authenticate you)"),
			"check the token (read and write access) and that this host reaches the API")
		goldenScreen(t, m, askMsg{q: setup.CloudQuestion{Type: config.TypeDigitalOcean, Answer: setup.CloudChoice{TokenFile: "/root/do-token"},
			Err: &setup.AnswerError{Field: "token-file", Err: err}}, reply: make(chan answerMsg, 1)})
	})
	t.Run("cloud-region", func(t *testing.T) {
		m := newTestModel(t)
		toCloud(t, m)
		goldenScreen(t, m, askMsg{q: setup.CloudQuestion{Type: config.TypeDigitalOcean, Answer: setup.CloudChoice{TokenFile: "/root/do-token", Region: "fra1"},
			Catalog: testCatalog()}, reply: make(chan answerMsg, 1)}, key("down"))
	})
	t.Run("host", func(t *testing.T) {
		m := newTestModel(t)
		toHost(t, m)
		typeText(t, m, "pve.example.com")
		goldenScreen(t, m)
	})
	t.Run("host-key", func(t *testing.T) {
		m := newTestModel(t)
		toHostKey(t, m)
		goldenScreen(t, m)
	})
	t.Run("host-key-changed", func(t *testing.T) {
		m := newTestModel(t)
		toHost(t, m)
		e := &setup.HostKeyChangedError{Addr: testHostKey.Addr, Got: testHostKey.Fingerprint, Type: testHostKey.Type, File: pinsPath}
		goldenScreen(t, m, askMsg{q: setup.SSHQuestion{Answer: setup.SSHAnswer{Host: "pve.example.com"}, Err: setup.WithFix(e, e.Fix())}, reply: make(chan answerMsg, 1)})
	})
	t.Run("connect-failed", func(t *testing.T) {
		m := newTestModel(t)
		toHostKey(t, m)
		press(t, m, "y")
		runPlan(t, m, setup.PhaseConnect, testAnswers(), titled("Connect to root@pve.example.com", "Discover the node"), []setup.Event{
			{Kind: setup.EventStarted, Index: 1},
			{Kind: setup.EventFailed, Index: 1, Elapsed: 20 * time.Millisecond,
				Text: "ssh: handshake failed: ssh: unable to authenticate, attempted methods [none publickey]",
				Fix:  "check the user and that its authorized_keys holds the key " + fixedDir + "/id_ed25519.pub"}},
			setup.Fixf("x", "ssh: unable to authenticate"))
		goldenScreen(t, m)
	})
	t.Run("discovery", func(t *testing.T) {
		m := newTestModel(t)
		toDiscovery(t, m)
		goldenScreen(t, m, key("down"), key(" "))
	})
	t.Run("discovery-second-agent", func(t *testing.T) {
		m := newTestModel(t)
		d := testDiscovery()
		d.AgentTokens = []setup.AgentToken{{Name: "agent", Comment: "dc-agent provisioning"}}
		goldenScreen(t, m, askMsg{q: setup.ChoiceQuestion{Discovery: d, Choices: setup.Choices{Storage: "fast", Bridge: "vmbr0", Templates: []string{"ubuntu-24.04"}}},
			reply: make(chan answerMsg, 1)})
	})
	t.Run("progress-running", func(t *testing.T) {
		m := newTestModel(t)
		progressFixture(t, m, -1, 1)
		goldenScreen(t, m)
	})
	t.Run("progress-running-output", func(t *testing.T) {
		m := newTestModel(t)
		progressFixture(t, m, -1, 1)
		goldenScreen(t, m, key("o"))
	})
	t.Run("progress-failed", func(t *testing.T) {
		m := newTestModel(t)
		progressFixture(t, m, 1, 0)
		goldenScreen(t, m)
	})
	t.Run("progress-done", func(t *testing.T) {
		m := newTestModel(t)
		progressFixture(t, m, -1, 8)
		goldenScreen(t, m)
	})
	t.Run("progress-done-token", func(t *testing.T) {
		m := newTestModel(t)
		m.env.method = setup.MethodSetupToken
		progressFixture(t, m, -1, 8)
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
		deliver(t, m, tea.WindowSizeMsg{Width: 100, Height: 80})
		golden.RequireEqual(t, []byte(m.View()))
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
			press(t, m, "enter")
			goldenScreen(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(c.code), Paste: true})
		})
	}
	t.Run("register-done", func(t *testing.T) {
		m := newTestModel(t)
		runPlan(t, m, setup.PhaseRegister, testAnswers(), titled("Register the delegation"), []setup.Event{
			{Kind: setup.EventStarted, Index: 1},
			{Kind: setup.EventDone, Index: 1, Elapsed: 120 * time.Millisecond, Text: "registered agent " + agentHex[:16] + "… with https://api.example.org"}}, nil)
		goldenScreen(t, m)
	})
	t.Run("service-done", func(t *testing.T) {
		m := newTestModel(t)
		runPlan(t, m, setup.PhaseService, testAnswers(), titled("Install the service files"), []setup.Event{
			{Kind: setup.EventStarted, Index: 1},
			{Kind: setup.EventOutput, Index: 1, Text: "changed unit              " + fixedDir + "/root/etc/systemd/system/dc-agent.service"},
			{Kind: setup.EventDone, Index: 1, Elapsed: 40 * time.Millisecond, Text: "wrote /etc/systemd/system/dc-agent.service"}}, nil)
		goldenScreen(t, m)
	})
	t.Run("summary", func(t *testing.T) {
		m := newTestModel(t)
		a := testAnswers()
		a.Storage = "fast"
		a.Pool = setup.Pool{ID: "eu-8eba3c90", Name: "eu-proxmox", Location: "europe"}
		hb := t0.Add(-4 * time.Second).UnixNano()
		goldenScreen(t, m, flowDoneMsg{stage: setup.StageInstalled, summary: setup.Summary{Answers: a, Key: &setup.KeyStatus{Pubkey: agentHex, Key: agentKey},
			Discovery: testDiscovery(), Templates: map[string]int{"ubuntu-24.04": 9000}, Service: service.Result{UnitPath: "/etc/systemd/system/dc-agent.service"}}},
			agentStatusMsg{st: dcapi.AgentStatus{Online: true, LastHeartbeatNs: &hb}, at: t0})
	})
}

func ptr[T any](v T) *T { return &v }

// toCloud answers the backend screen with DigitalOcean.
func toCloud(t *testing.T, m *Model) {
	t.Helper()
	ch := ask(t, m, setup.BackendQuestion{Backends: setup.Backends, Answer: config.TypeProxmox})
	press(t, m, "down", "enter")
	if a := answered(t, ch); a.v != config.TypeDigitalOcean || a.err != nil {
		t.Fatalf("backend answer %+v", a)
	}
}

func testCatalog() *provisioners.Catalog {
	return &provisioners.Catalog{Account: "provider@example.invalid",
		Regions: []provisioners.CatalogRegion{{ID: "ams3", Name: "Amsterdam 3"}, {ID: "fra1", Name: "Frankfurt 1"}, {ID: "nyc3", Name: "New York 3"}},
		Sizes:   []provisioners.CatalogSize{{ID: "s-1vcpu-1gb"}, {ID: "s-2vcpu-2gb"}}}
}
