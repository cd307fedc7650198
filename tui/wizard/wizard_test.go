package wizard

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

func TestMain(m *testing.M) {
	// Goldens are plain text: a fixed profile without colors.
	lipgloss.SetColorProfile(termenv.Ascii)
	// fixedDir is one path for every run on the machine: two runs at once
	// take turns instead of trampling each other's files.
	lock, err := os.OpenFile(fixedDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	lock.Close()
	os.Exit(code)
}

// t0 is the frozen clock of every test.
var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

func frozen() time.Time { return t0 }

// fixedDir is where model tests put their (few) files: a fixed path, so
// the paths on screen, and so the goldens, do not change between runs.
const fixedDir = "/tmp/dc-agent-wizard-test"

var (
	providerKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	otherKey    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	agentKey    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	providerHex = identity.PublicHex(providerKey)
	agentHex    = identity.PublicHex(agentKey)
)

var fixedChecks = []Check{
	{Name: "config", OK: true, Text: fixedDir + "/dc-agent.toml will be written"},
	{Name: "service", OK: true, Text: "systemd found: the dc-agent service will be installed and started"},
	{Name: "ssh", OK: true, Text: "SSH key " + fixedDir + "/id_ed25519"},
}

// newTestModel is a wizard on a fresh host with a frozen clock and no
// API polling.
func newTestModel(t *testing.T) *Model {
	t.Helper()
	if err := os.MkdirAll(fixedDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(fixedDir, "dc-agent.toml"))
	if err := os.WriteFile(filepath.Join(fixedDir, "id_ed25519"), []byte("key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{
		Answers: setup.ProxmoxAnswers{ConfigPath: filepath.Join(fixedDir, "dc-agent.toml"), StateDir: filepath.Join(fixedDir, "state"), UserAgent: "dc-agent/test"},
		SSH:     SSHAnswers{IdentityFile: filepath.Join(fixedDir, "id_ed25519")},
		Request: setup.DelegationAnswers{Label: "pve-agent"},
		Service: service.Options{Root: filepath.Join(fixedDir, "root")},
		Now:     frozen, StatusEvery: -1,
		Prereqs: func() []Check { return fixedChecks },
	}
	m := New(o)
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	return m
}

// key turns a key name into its message.
func key(k string) tea.KeyMsg {
	switch k {
	case "enter":
		return tea.KeyMsg{Type: tea.KeyEnter}
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	case "ctrl+u":
		return tea.KeyMsg{Type: tea.KeyCtrlU}
	case "up":
		return tea.KeyMsg{Type: tea.KeyUp}
	case "down":
		return tea.KeyMsg{Type: tea.KeyDown}
	case " ":
		return tea.KeyMsg{Type: tea.KeySpace, Runes: []rune{' '}}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
}

// press sends keys and returns the last command.
func press(m *Model, keys ...string) tea.Cmd {
	var cmd tea.Cmd
	for _, k := range keys {
		_, cmd = m.Update(key(k))
	}
	return cmd
}

// typeText types s one key at a time.
func typeText(m *Model, s string) {
	for _, r := range s {
		m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

// pump runs cmd and everything it leads to (but not the ticks' next
// ticks), feeding the messages to m, until nothing is left.
func pump(t *testing.T, m *Model, cmd tea.Cmd) {
	t.Helper()
	queue := []tea.Cmd{cmd}
	deadline := time.Now().Add(20 * time.Second)
	for len(queue) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("commands did not settle")
		}
		c := queue[0]
		queue = queue[1:]
		if c == nil {
			continue
		}
		msg := c()
		switch msg := msg.(type) {
		case nil:
		case tea.BatchMsg:
			queue = append(queue, msg...)
		case tickMsg:
			m.Update(msg)
		case tea.QuitMsg:
		default:
			_, next := m.Update(msg)
			queue = append(queue, next)
		}
	}
}

func isQuit(cmd tea.Cmd) bool {
	if cmd == nil {
		return false
	}
	_, ok := cmd().(tea.QuitMsg)
	return ok
}

// Walk helpers: each takes the model one screen further by keys.

func toAPI(t *testing.T, m *Model) {
	t.Helper()
	m.Update(prereqMsg{checks: fixedChecks})
	press(m, "enter")
	if m.screen != scrAPI {
		t.Fatalf("welcome: enter led to %s", m.Screen())
	}
}

func toHost(t *testing.T, m *Model) {
	t.Helper()
	toAPI(t, m)
	press(m, "tab")
	typeText(m, providerHex)
	press(m, "enter")
	if m.screen != scrHost {
		t.Fatalf("api: enter led to %s\n%s", m.Screen(), m.View())
	}
}

var testHostKey = setup.HostKeyInfo{Addr: "pve.example.com:22", Type: "ssh-ed25519", Fingerprint: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}

func toHostKey(t *testing.T, m *Model, info setup.HostKeyInfo) {
	t.Helper()
	toHost(t, m)
	typeText(m, "pve.example.com")
	if cmd := press(m, "enter"); cmd == nil || m.hostScr.state != hostScanning {
		t.Fatalf("host: enter did not scan the host key (state %d)\n%s", m.hostScr.state, m.View())
	}
	m.Update(hostKeyMsg{info: info})
}

func testDiscovery() *setup.Discovery {
	return &setup.Discovery{Version: setup.PVEVersion{Version: "9.1.1"}, Node: "pve1", VirtCustomize: true,
		Storages: []setup.StorageInfo{{ID: "fast", Type: "zfspool", Avail: 90 << 30}, {ID: "bulk", Type: "lvmthin", Avail: 400 << 30}},
		Bridges:  []setup.BridgeInfo{{Name: "vmbr0", CIDR: "192.0.2.2/24"}, {Name: "vmbr1", CIDR: "10.0.0.1/24"}},
		VMs:      []setup.VMInfo{{VMID: 9001, Template: true, Tags: []string{setup.TagOS("debian-12")}}}}
}

func toDiscovery(t *testing.T, m *Model) {
	t.Helper()
	toHostKey(t, m, testHostKey)
	m.discovered(testDiscovery())
	if m.screen != scrDiscovery {
		t.Fatal("not on the discovery screen")
	}
}

// testRun is a node plan of test steps on the real engine.
func testRun(steps ...setup.Step) *setup.ProxmoxRun {
	return &setup.ProxmoxRun{Plan: setup.Plan{Steps: steps}, Result: &setup.ProxmoxResult{Templates: map[string]int{"ubuntu-24.04": 9000}},
		Key: &setup.KeyStatus{Path: filepath.Join(fixedDir, "agent.key"), Pubkey: agentHex, Key: agentKey}}
}

func okStep(id, title, summary string) setup.Step {
	return setup.Step{ID: id, Title: title, Run: func(ctx context.Context, r *setup.Reporter) error {
		r.Notef("working on %s", id)
		r.Changed("%s", summary)
		return nil
	}}
}

// chooseAll picks the first storage and bridge and keeps the default template.
func chooseAll(m *Model) {
	press(m, " ", "tab", " ")
}

func toRequest(t *testing.T, m *Model) {
	t.Helper()
	toDiscovery(t, m)
	chooseAll(m)
	m.newPlan = func() (*setup.ProxmoxRun, error) { return testRun(okStep("agent-key", "Agent key", "created")), nil }
	pump(t, m, press(m, "enter"))
	if !m.progress.done {
		t.Fatalf("the plan did not finish:\n%s", m.View())
	}
	press(m, "enter")
	if m.screen != scrRequest {
		t.Fatalf("progress: enter led to %s", m.Screen())
	}
}

func sign(t *testing.T, main ed25519.PrivateKey, agent string, expires *int64) string {
	t.Helper()
	d := identity.Delegation{AgentPubkey: agent, ProviderPubkey: identity.PublicHex(main), Permissions: identity.AllPermissions, ExpiresAtNs: expires, Label: "pve-agent"}
	sd, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	code, err := sd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestWelcomeWaitsForChecksAndBlocksOnFailure(t *testing.T) {
	m := newTestModel(t)
	press(m, "enter")
	if m.screen != scrWelcome {
		t.Fatal("enter before the checks ran left the welcome screen")
	}
	m.Update(prereqMsg{checks: []Check{{Name: "permissions", Text: "cannot write /etc/dc-agent", Fix: "run as root (sudo dc-agent)"}}})
	press(m, "enter")
	if m.screen != scrWelcome || !strings.Contains(m.View(), "fix: run as root") {
		t.Fatalf("a failed check did not block:\n%s", m.View())
	}
	m.Update(prereqMsg{checks: fixedChecks})
	press(m, "enter")
	if m.screen != scrAPI {
		t.Fatalf("passed checks: enter led to %s", m.Screen())
	}
}

func TestAPIScreenChecksAsTyped(t *testing.T) {
	m := newTestModel(t)
	toAPI(t, m)
	press(m, "tab")
	typeText(m, "abc")
	if !strings.Contains(m.View(), "64 hex") {
		t.Fatalf("a bad provider key is not explained as typed:\n%s", m.View())
	}
	press(m, "enter")
	if m.screen != scrAPI {
		t.Fatal("enter with a bad provider key went on")
	}
	press(m, "shift+tab", "ctrl+u")
	typeText(m, "ftp://nope")
	press(m, "tab", "ctrl+u")
	typeText(m, strings.ToUpper(providerHex))
	press(m, "enter")
	if m.screen != scrAPI || !strings.Contains(m.View(), "ftp://nope") {
		t.Fatalf("a bad endpoint went through:\n%s", m.View())
	}
	if m.api.focus != 0 {
		t.Fatal("enter did not show the field that needs an answer")
	}
	press(m, "ctrl+u")
	typeText(m, "https://api.example.org")
	press(m, "enter")
	if m.screen != scrHost {
		t.Fatalf("valid answers: on %s\n%s", m.Screen(), m.View())
	}
	if m.api.endpoint() != "https://api.example.org" || m.api.provider() != providerHex {
		t.Fatalf("answers: %q %q", m.api.endpoint(), m.api.provider())
	}
	press(m, "esc")
	if m.screen != scrAPI {
		t.Fatal("esc on the host screen did not go back")
	}
}

func TestHostScreenConfirmsTheHostKey(t *testing.T) {
	m := newTestModel(t)
	toHost(t, m)
	typeText(m, "pve;rm -rf /")
	press(m, "enter")
	if m.hostScr.state != hostEdit || !strings.Contains(m.View(), "not a host name") {
		t.Fatalf("a hostile host name was accepted:\n%s", m.View())
	}
	press(m, "ctrl+u")
	typeText(m, "pve.example.com")
	press(m, "enter")
	if m.hostScr.state != hostScanning {
		t.Fatal("enter did not read the host key")
	}
	// The answers are the --no-tui ones: FillDefaults with the host.
	if m.answers.ProxmoxAPIURL != "https://pve.example.com:8006" || m.answers.ProviderPubkey != providerHex ||
		m.answers.KeyPath != filepath.Join(fixedDir, "agent.key") || m.answers.TokenFile != filepath.Join(fixedDir, "proxmox-token") {
		t.Fatalf("answers: %+v", m.answers)
	}
	m.Update(hostKeyMsg{err: setup.Fixf("check the host name and port", "connect to pve.example.com:22: connection refused")})
	if m.hostScr.state != hostEdit || !strings.Contains(m.View(), "Fix: check the host name") {
		t.Fatalf("a scan error is not explained:\n%s", m.View())
	}
	press(m, "enter")
	m.Update(hostKeyMsg{info: testHostKey})
	v := m.View()
	if m.hostScr.state != hostConfirm || !strings.Contains(v, testHostKey.Fingerprint) || !strings.Contains(v, "ssh-keygen -lf") {
		t.Fatalf("the host key is not shown to confirm:\n%s", v)
	}
	press(m, "n")
	if m.hostScr.state != hostEdit {
		t.Fatal("n did not go back")
	}
	// A changed key cannot be accepted.
	press(m, "enter")
	changed := testHostKey
	changed.Changed = true
	m.Update(hostKeyMsg{info: changed})
	if cmd := press(m, "y"); cmd != nil || m.hostScr.state != hostConfirm || !strings.Contains(m.View(), "HOST KEY CHANGED") {
		t.Fatalf("a changed host key could be accepted:\n%s", m.View())
	}
}

func TestSSHOptionsFromTheAnswers(t *testing.T) {
	m := newTestModel(t)
	toHostKey(t, m, testHostKey)
	o, err := m.sshOptions()
	if err != nil {
		t.Fatal(err)
	}
	if o.Host != "pve.example.com" || o.Port != 22 || o.User != "root" || o.IdentityFile != filepath.Join(fixedDir, "id_ed25519") ||
		o.HostKeyFingerprint != testHostKey.Fingerprint || o.Pins.Path != filepath.Join(fixedDir, "state", setup.KnownHostsFile) {
		t.Fatalf("ssh options: %+v", o)
	}
	m.hostScr.fields[4].input.SetValue("s3cret")
	if o, _ := m.sshOptions(); o.Password != "s3cret" || o.IdentityFile != "" {
		t.Fatalf("a typed password is not used: %+v", o)
	}
}

func TestDiscoveryChoices(t *testing.T) {
	m := newTestModel(t)
	toDiscovery(t, m)
	// Neither local-lvm nor vmbr0-only: the provider must choose storage.
	if m.discScr.storage != -1 || m.discScr.bridge != 0 {
		t.Fatalf("preselection: storage %d bridge %d", m.discScr.storage, m.discScr.bridge)
	}
	press(m, "enter")
	if m.screen != scrDiscovery || !strings.Contains(m.View(), "choose the storage") {
		t.Fatalf("enter without a storage went on:\n%s", m.View())
	}
	press(m, "down", " ")                     // bulk
	press(m, "tab", "down", " ")              // vmbr1
	press(m, "tab", " ", "down", "down", " ") // ubuntu-24.04 off, debian-12 on
	if !strings.Contains(m.View(), "exists (VMID 9001): reused") {
		t.Fatalf("an existing template is not shown:\n%s", m.View())
	}
	if err := m.choose(); err != nil {
		t.Fatal(err)
	}
	if m.answers.Storage != "bulk" || m.answers.Bridge != "vmbr1" || strings.Join(m.answers.Templates, ",") != "debian-12" {
		t.Fatalf("choices: %s %s %v", m.answers.Storage, m.answers.Bridge, m.answers.Templates)
	}
	press(m, " ")
	if err := m.choose(); err == nil || !strings.Contains(err.Error(), "at least one template") {
		t.Fatalf("no template: %v", err)
	}
}

func TestProgressFailureShowsFixAndRetries(t *testing.T) {
	m := newTestModel(t)
	toDiscovery(t, m)
	chooseAll(m)
	attempts := 0
	m.newPlan = func() (*setup.ProxmoxRun, error) {
		return testRun(okStep("agent-key", "Agent key", "created"), setup.Step{ID: "template", Title: "Template ubuntu-24.04", Run: func(ctx context.Context, r *setup.Reporter) error {
			attempts++
			r.Output("stderr", "qemu-img: write failed")
			if attempts == 1 {
				return setup.Fixf("free space on storage bulk, then retry", "import the disk: no space left on device")
			}
			r.Changed("built template 9000")
			return nil
		}}), nil
	}
	pump(t, m, press(m, "enter"))
	v := m.View()
	if m.progress.err == nil || !strings.Contains(v, "no space left") || !strings.Contains(v, "Fix: free space on storage bulk") ||
		!strings.Contains(v, "qemu-img: write failed") {
		t.Fatalf("the failure is not explained with its fix and output:\n%s", v)
	}
	if m.stage != stagePlan {
		t.Fatalf("stage %d", m.stage)
	}
	pump(t, m, press(m, "r"))
	if !m.progress.done || attempts != 2 {
		t.Fatalf("retry: done %v attempts %d\n%s", m.progress.done, attempts, m.View())
	}
	press(m, "o")
	if !strings.Contains(m.View(), "working on agent-key") {
		t.Fatalf("o does not show the output:\n%s", m.View())
	}
	if m.stage != stageNodeReady || m.reqCode == "" {
		t.Fatal("the node plan's end did not build the request")
	}
}

func TestCtrlCDuringThePlanStopsItAndSaysWhatToRerun(t *testing.T) {
	m := newTestModel(t)
	toDiscovery(t, m)
	chooseAll(m)
	started := make(chan struct{})
	m.newPlan = func() (*setup.ProxmoxRun, error) {
		return testRun(setup.Step{ID: "template", Title: "Template ubuntu-24.04", Run: func(ctx context.Context, r *setup.Reporter) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}}, okStep("pool", "Pool dc-agent", "created")), nil
	}
	cmd := press(m, "enter")
	<-started
	if c := press(m, "ctrl+c"); c != nil || !m.stopping {
		t.Fatal("the first ctrl+c did not just stop the plan")
	}
	if !strings.Contains(m.View(), "stopping") {
		t.Fatalf("no stopping state:\n%s", m.View())
	}
	pump(t, m, cmd)
	if !m.quitting || !strings.Contains(m.Hint(), "Stopped during the node setup") || !strings.Contains(m.Hint(), "run dc-agent again") {
		t.Fatalf("quitting %v, hint %q", m.quitting, m.Hint())
	}
	if m.progress.rows[1].status != "" {
		t.Fatal("a step after the interrupted one ran")
	}
}

func TestCtrlCHints(t *testing.T) {
	m := newTestModel(t)
	toAPI(t, m)
	if cmd := press(m, "ctrl+c"); !isQuit(cmd) || !strings.Contains(m.Hint(), "nothing was changed") {
		t.Fatalf("ctrl+c on the API screen: %q", m.Hint())
	}
	m = newTestModel(t)
	toRequest(t, m)
	if cmd := press(m, "ctrl+c"); !isQuit(cmd) {
		t.Fatal("ctrl+c on the request screen did not quit")
	}
	for _, want := range []string{"not registered yet", m.reqCode, "dc-agent delegation sign --identity", "register --delegation", "service install"} {
		if !strings.Contains(m.Hint(), want) {
			t.Errorf("the hint after the node setup lacks %q:\n%s", want, m.Hint())
		}
	}
	if b, err := os.ReadFile(m.reqFile); err != nil || strings.TrimSpace(string(b)) != m.reqCode {
		t.Errorf("the request file: %v %q", err, b)
	}
}

func TestRequestScreenShowsEverythingToSign(t *testing.T) {
	m := newTestModel(t)
	toRequest(t, m)
	flat := strings.ReplaceAll(strings.ReplaceAll(m.View(), "\n", ""), " ", "")
	for _, want := range []string{agentHex, providerHex, "pve-agent", m.reqCode, "dc-agentdelegationsign--identity~/.dcc/identity/<name>/private.pem'" + m.reqCode + "'"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the request screen lacks %q:\n%s", want, m.View())
		}
	}
	d, err := identity.DecodeRequest(m.reqCode)
	if err != nil || d.AgentPubkey != agentHex || d.ProviderPubkey != providerHex || d.Label != "pve-agent" || d.ExpiresAtNs != nil {
		t.Fatalf("the request: %+v %v", d, err)
	}
	if strings.Contains(m.View(), "█") {
		t.Error("a QR code at 80x24 (it cannot fit)")
	}
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 80})
	if !strings.Contains(m.View(), "█") {
		t.Errorf("no QR code in a big terminal:\n%s", m.View())
	}
	for _, l := range strings.Split(m.View(), "\n") {
		if lipgloss.Width(l) > 100 {
			t.Fatalf("line wider than the terminal: %q", l)
		}
	}
}

func TestPasteIsCheckedLive(t *testing.T) {
	past := t0.Add(-time.Hour).UnixNano()
	cases := []struct {
		name, code, want string
		ok               bool
	}{
		{"malformed", "dcds1:not-a-code", "Not a signed delegation", false},
		{"request instead", "dcdr1:abc", "this is the delegation request", false},
		{"wrong provider", sign(t, otherKey, agentHex, nil), "Wrong provider", false},
		{"other agent", sign(t, providerKey, identity.PublicHex(otherKey), nil), "For another agent", false},
		{"expired", sign(t, providerKey, agentHex, &past), "Expired", false},
		{"valid", sign(t, providerKey, agentHex, nil), "Valid: signed by provider", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newTestModel(t)
			toRequest(t, m)
			press(m, "enter")
			if m.screen != scrPaste {
				t.Fatalf("request: enter led to %s", m.Screen())
			}
			m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(c.code), Paste: true})
			v := m.View()
			if !strings.Contains(v, c.want) {
				t.Fatalf("want %q:\n%s", c.want, v)
			}
			if !c.ok && !strings.Contains(v, "Fix: ") {
				t.Errorf("no fix:\n%s", v)
			}
			ok, _ := m.checkPasted()
			if ok != c.ok {
				t.Fatalf("accepted %v", ok)
			}
			if !c.ok {
				press(m, "enter")
				if m.screen != scrPaste {
					t.Fatal("enter registered a bad delegation")
				}
			}
		})
	}
}

func TestRegisterServiceSummary(t *testing.T) {
	m := newTestModel(t)
	toRequest(t, m)
	press(m, "enter")
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(sign(t, providerKey, agentHex, nil)), Paste: true})
	// The endpoint answers nothing: registering fails with a fix, and
	// esc goes back to the paste.
	m.answers.APIEndpoint = "http://127.0.0.1:1"
	pump(t, m, press(m, "enter"))
	if m.screen != scrRegister || m.reg.err == nil || !strings.Contains(m.View(), "Fix:") {
		t.Fatalf("register against nothing:\n%s", m.View())
	}
	if m.stage != stageNodeReady {
		t.Fatalf("stage %d after a failed registration", m.stage)
	}
	// The delegation was kept beside the key even so.
	if _, err := setup.LoadDelegation(identity.DelegationPath(filepath.Join(fixedDir, "agent.key"))); err != nil {
		t.Fatal(err)
	}
	// Pretend the registration went through, and install into the root.
	m.stage = stageRegistered
	if err := os.RemoveAll(filepath.Join(fixedDir, "root")); err != nil {
		t.Fatal(err)
	}
	pump(t, m, m.startService())
	if !m.svc.done {
		t.Fatalf("service install into the root:\n%s", m.View())
	}
	if _, err := os.Stat(filepath.Join(fixedDir, "root/etc/systemd/system/dc-agent.service")); err != nil {
		t.Fatal(err)
	}
	press(m, "enter")
	if m.screen != scrSummary || !m.Finished() {
		t.Fatalf("service: enter led to %s", m.Screen())
	}
	hb := t0.Add(-3 * time.Second).UnixNano()
	m.Update(agentStatusMsg{st: dcapi.AgentStatus{Online: true, LastHeartbeatNs: &hb}, at: t0})
	if !strings.Contains(m.View(), "online, last heartbeat 3s ago") {
		t.Fatalf("summary:\n%s", m.View())
	}
	// No monitor wired: enter quits with how to watch the service.
	if cmd := press(m, "enter"); !isQuit(cmd) || !strings.Contains(m.Hint(), "service is installed") {
		t.Fatalf("summary enter: hint %q", m.Hint())
	}
}

// stubMonitor stands for tui/monitor.
type stubMonitor struct {
	size   tea.WindowSizeMsg
	closed bool
}

func (s *stubMonitor) Init() tea.Cmd { return nil }
func (s *stubMonitor) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	if w, ok := msg.(tea.WindowSizeMsg); ok {
		s.size = w
	}
	return s, nil
}
func (s *stubMonitor) View() string { return "monitor" }
func (s *stubMonitor) Close()       { s.closed = true }

func TestSummaryHandsOffToTheMonitor(t *testing.T) {
	m := newTestModel(t)
	mon := &stubMonitor{}
	m.o.Monitor = func() tea.Model { return mon }
	m.screen = scrSummary
	cmd := press(m, "enter")
	if m.screen != scrMonitor || m.View() != "monitor" {
		t.Fatalf("enter on the summary: %s", m.Screen())
	}
	pump(t, m, cmd)
	if mon.size.Width != 80 || mon.size.Height != 24 {
		t.Fatalf("the monitor did not get the size: %+v", mon.size)
	}
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	if mon.size.Width != 120 {
		t.Fatal("a resize did not reach the monitor")
	}
	m.Close()
	if !mon.closed {
		t.Fatal("Close did not stop the monitor")
	}
}

func TestEveryScreenFitsAndResizes(t *testing.T) {
	for _, size := range [][2]int{{80, 24}, {60, 20}, {132, 43}} {
		m := newTestModel(t)
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		check := func() {
			t.Helper()
			v := m.View()
			lines := strings.Split(v, "\n")
			if len(lines) > size[1] {
				t.Errorf("%s at %dx%d: %d lines:\n%s", m.Screen(), size[0], size[1], len(lines), v)
			}
			for _, l := range lines {
				if lipgloss.Width(l) > size[0] {
					t.Errorf("%s at %dx%d: line of %d cells: %q", m.Screen(), size[0], size[1], lipgloss.Width(l), l)
				}
			}
		}
		check()
		toAPI(t, m)
		check()
		press(m, "tab")
		typeText(m, providerHex)
		press(m, "enter")
		check()
		typeText(m, "pve.example.com")
		press(m, "enter")
		m.Update(hostKeyMsg{info: testHostKey})
		check()
		m.discovered(testDiscovery())
		check()
		chooseAll(m)
		m.newPlan = func() (*setup.ProxmoxRun, error) { return testRun(okStep("agent-key", "Agent key", "created")), nil }
		pump(t, m, press(m, "enter"))
		check()
		press(m, "enter")
		check()
		press(m, "enter")
		m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("dcds1:x"), Paste: true})
		check()
	}
}
