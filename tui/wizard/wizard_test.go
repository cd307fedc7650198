package wizard

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
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

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// The model tests play the flow: they send its questions and plan events
// as messages and check the screens and the answers. The flow itself is
// tested in setup; the two together in TestWizardFlow* and end to end in
// cmd/dc-agent (tmux).

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

var fixedChecks = []setup.Check{
	{Name: "config", OK: true, Text: fixedDir + "/dc-agent.toml will be written"},
	{Name: "service", OK: true, Text: "systemd found: the dc-agent service will be installed and started"},
	{Name: "ssh", OK: true, Text: "SSH key " + fixedDir + "/id_ed25519"},
}

var pinsPath = filepath.Join(fixedDir, "state", setup.KnownHostsFile)

// newTestModel is a wizard on a fresh host with a frozen clock and no
// API polling; its flow is not started (the test plays it).
func newTestModel(t *testing.T) *Model {
	t.Helper()
	if err := os.MkdirAll(fixedDir, 0o700); err != nil {
		t.Fatal(err)
	}
	_ = os.Remove(filepath.Join(fixedDir, "dc-agent.toml"))
	if err := os.WriteFile(filepath.Join(fixedDir, "id_ed25519"), []byte("key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: filepath.Join(fixedDir, "dc-agent.toml"), StateDir: filepath.Join(fixedDir, "state"), UserAgent: "dc-agent/test"},
		SSH:     setup.SSHAnswer{IdentityFile: filepath.Join(fixedDir, "id_ed25519")},
		Request: setup.DelegationAnswers{Label: "pve-agent"},
		Service: &service.Options{Root: filepath.Join(fixedDir, "root")},
		Now:     frozen,
	}, StatusEvery: -1})
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

// deliver sends msg and everything its commands lead to.
func deliver(t *testing.T, m *Model, msg tea.Msg) {
	t.Helper()
	_, cmd := m.Update(msg)
	pump(t, m, cmd)
}

// press sends keys, one at a time.
func press(t *testing.T, m *Model, keys ...string) {
	t.Helper()
	for _, k := range keys {
		deliver(t, m, key(k))
	}
}

// typeText types s one key at a time.
func typeText(t *testing.T, m *Model, s string) {
	t.Helper()
	for _, r := range s {
		deliver(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
}

func pasteText(t *testing.T, m *Model, s string) {
	t.Helper()
	deliver(t, m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s), Paste: true})
}

// pump runs cmd and everything it leads to (but no timers), feeding the
// messages to m, until nothing is left.
func pump(t *testing.T, m *Model, cmd tea.Cmd) {
	t.Helper()
	queue := []tea.Cmd{cmd}
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		if c == nil {
			continue
		}
		switch msg := c().(type) {
		case nil, tickMsg, tea.QuitMsg:
		case tea.BatchMsg:
			queue = append(queue, msg...)
		default:
			_, next := m.Update(msg)
			queue = append(queue, next)
		}
	}
}

// ask is the flow asking q; the answer comes on the returned channel.
func ask(t *testing.T, m *Model, q any) chan answerMsg {
	t.Helper()
	ch := make(chan answerMsg, 1)
	deliver(t, m, askMsg{q: q, reply: ch})
	return ch
}

// answered is the model's answer (the test fails without one).
func answered(t *testing.T, ch chan answerMsg) answerMsg {
	t.Helper()
	select {
	case a := <-ch:
		return a
	default:
		t.Fatal("the model did not answer")
		return answerMsg{}
	}
}

func notAnswered(t *testing.T, ch chan answerMsg, what string) {
	t.Helper()
	select {
	case a := <-ch:
		t.Fatalf("%s answered %+v", what, a)
	default:
	}
}

// runPlan plays a plan of phase: started, each step's events, then the
// flow's question what next.
func runPlan(t *testing.T, m *Model, phase setup.Phase, ans setup.ProxmoxAnswers, steps []setup.Step, events []setup.Event, err error) chan answerMsg {
	t.Helper()
	deliver(t, m, startedMsg{phase: phase, steps: steps, ans: ans})
	for _, e := range events {
		e.Phase, e.Total, e.Time = phase, len(steps), t0
		deliver(t, m, eventMsg{e})
	}
	return ask(t, m, endedQ{phase: phase, err: err})
}

func titled(titles ...string) []setup.Step {
	var s []setup.Step
	for _, t := range titles {
		s = append(s, setup.Step{Title: t})
	}
	return s
}

// Walk helpers: each takes the model one screen further.

func toAPI(t *testing.T, m *Model) chan answerMsg {
	t.Helper()
	ch := ask(t, m, prereqQ{checks: fixedChecks})
	press(t, m, "enter")
	if a := answered(t, ch); a.err != nil || a.v != false {
		t.Fatalf("welcome: %+v", a)
	}
	return ask(t, m, setup.APIQuestion{Answer: setup.APIAnswer{Endpoint: "https://api.decent-cloud.org"}, Methods: []setup.RegistrationMethod{setup.MethodDelegation}})
}

// toAPIBoth is the API question as the flow asks it: both methods, the
// setup token first.
func toAPIBoth(t *testing.T, m *Model, a setup.APIAnswer, qerr error) chan answerMsg {
	t.Helper()
	ch := ask(t, m, prereqQ{checks: fixedChecks})
	press(t, m, "enter")
	answered(t, ch)
	return ask(t, m, setup.APIQuestion{Answer: a, Methods: []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}, Err: qerr})
}

// TestAPIScreenMethods: the setup token is offered first and asked for
// (masked, checked as typed); the other method asks for the provider key;
// a kept registration lets the token be empty; a refused token focuses
// the token field with the reason.
func TestAPIScreenMethods(t *testing.T) {
	m := newTestModel(t)
	ch := toAPIBoth(t, m, setup.APIAnswer{Endpoint: "https://api.decent-cloud.org"}, nil)
	press(t, m, "tab", "tab")
	typeText(t, m, providerHex)
	if v := m.View(); !strings.Contains(v, "not a setup token") || strings.Contains(v, providerHex[:16]) {
		t.Fatalf("a key in the token field is not refused as typed, or is shown:\n%s", v)
	}
	press(t, m, "enter")
	notAnswered(t, ch, "a key as the token")
	press(t, m, "ctrl+u")
	typeText(t, m, "apt_europe_0123456789abcdef")
	press(t, m, "enter")
	a := answered(t, ch)
	if got, ok := a.v.(setup.APIAnswer); !ok || got.Method != setup.MethodSetupToken || got.SetupToken != "apt_europe_0123456789abcdef" || got.Provider != "" {
		t.Fatalf("token answer: %+v", a)
	}
	if m.env.method != setup.MethodSetupToken {
		t.Fatal("the wizard does not know the method")
	}

	// The other method: the provider key.
	ch = ask(t, m, setup.APIQuestion{Answer: setup.APIAnswer{Endpoint: "https://api.decent-cloud.org"}, Methods: []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}})
	press(t, m, "tab", " ")
	if v := m.View(); strings.Contains(v, "Setup token") || !strings.Contains(v, "Provider key") {
		t.Fatalf("the delegation method does not ask for the provider key:\n%s", v)
	}
	press(t, m, "tab")
	typeText(t, m, providerHex)
	press(t, m, "enter")
	a = answered(t, ch)
	if got, ok := a.v.(setup.APIAnswer); !ok || got.Method != setup.MethodDelegation || got.Provider != providerHex || got.SetupToken != "" {
		t.Fatalf("delegation answer: %+v", a)
	}

	// Registered already: the token may stay empty.
	kept := &setup.Pool{ID: "eu-1", Name: "eu-proxmox", Location: "europe"}
	ch = ask(t, m, setup.APIQuestion{Answer: setup.APIAnswer{Endpoint: "https://api.decent-cloud.org", Method: setup.MethodSetupToken},
		Methods: []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}, Kept: kept})
	if !strings.Contains(m.View(), "keep pool eu-proxmox") {
		t.Fatalf("the kept registration is not offered:\n%s", m.View())
	}
	press(t, m, "enter")
	if got, ok := answered(t, ch).v.(setup.APIAnswer); !ok || got.Method != setup.MethodSetupToken || got.SetupToken != "" {
		t.Fatalf("kept answer: %+v", got)
	}

	// Refused by the API: the reason, the fix, the token field focused.
	refused := &setup.AnswerError{Field: "setup-token", Err: &setup.TokenError{Reason: "expired", Err: setup.Fixf(setup.TokenFix, "the setup token has expired")}}
	ask(t, m, setup.APIQuestion{Answer: setup.APIAnswer{Endpoint: "https://api.decent-cloud.org", Method: setup.MethodSetupToken, SetupToken: "apt_x_1"},
		Methods: []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}, Err: refused})
	v := m.View()
	if !strings.Contains(v, "has expired") || !strings.Contains(v, "Agents > your pool > Add Agent") || m.screens[scrAPI].(*apiScreen).form.focus != apiToken {
		t.Fatalf("a refused token:\n%s", v)
	}
}

func toHost(t *testing.T, m *Model) chan answerMsg {
	t.Helper()
	ch := toAPI(t, m)
	press(t, m, "tab")
	typeText(t, m, providerHex)
	press(t, m, "enter")
	if a := answered(t, ch); a.err != nil {
		t.Fatalf("api: %+v\n%s", a, m.View())
	}
	return ask(t, m, setup.SSHQuestion{Answer: setup.SSHAnswer{Port: 22, User: "root", IdentityFile: filepath.Join(fixedDir, "id_ed25519")}})
}

var testHostKey = setup.HostKeyInfo{Addr: "pve.example.com:22", Type: "ssh-ed25519", Fingerprint: "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"}

func toHostKey(t *testing.T, m *Model) chan answerMsg {
	t.Helper()
	ch := toHost(t, m)
	typeText(t, m, "pve.example.com")
	press(t, m, "enter")
	if a := answered(t, ch); a.err != nil {
		t.Fatalf("host: %+v\n%s", a, m.View())
	}
	return ask(t, m, setup.HostKeyQuestion{Info: testHostKey, PinsPath: pinsPath})
}

func testDiscovery() *setup.Discovery {
	return &setup.Discovery{Version: setup.PVEVersion{Version: "9.1.1"}, Node: "pve1", VirtCustomize: true,
		Storages: []setup.StorageInfo{{ID: "fast", Type: "zfspool", Avail: 90 << 30}, {ID: "bulk", Type: "lvmthin", Avail: 400 << 30}},
		Bridges:  []setup.BridgeInfo{{Name: "vmbr0", CIDR: "192.0.2.2/24"}, {Name: "vmbr1", CIDR: "10.0.0.1/24"}},
		VMs:      []setup.VMInfo{{VMID: 9001, Template: true, Tags: []string{setup.TagOS("debian-12")}}}}
}

// testQuestion is what the flow asks on testDiscovery: neither local-lvm
// nor a single storage, so the storage must be chosen.
var testQuestion = setup.ChoiceQuestion{Discovery: testDiscovery(), Choices: setup.Choices{Bridge: "vmbr0", Templates: []string{"ubuntu-24.04"}}}

func toDiscovery(t *testing.T, m *Model) chan answerMsg {
	t.Helper()
	ch := toHostKey(t, m)
	press(t, m, "y")
	if a := answered(t, ch); a.err != nil || a.v != true {
		t.Fatalf("host key: %+v", a)
	}
	ended := runPlan(t, m, setup.PhaseConnect, testAnswers(), titled("Connect to root@pve.example.com", "Discover the node"), nil, nil)
	if a := answered(t, ended); a.err != nil || a.v != false {
		t.Fatalf("a connect plan that worked did not go on: %+v", a)
	}
	ch = ask(t, m, testQuestion)
	if m.screen != scrDiscovery {
		t.Fatal("not on the discovery screen")
	}
	return ch
}

// testAnswers are the answers the flow builds for pve.example.com.
func testAnswers() setup.ProxmoxAnswers {
	a := setup.ProxmoxAnswers{ConfigPath: filepath.Join(fixedDir, "dc-agent.toml"), StateDir: filepath.Join(fixedDir, "state"),
		APIEndpoint: "https://api.example.org", ProviderPubkey: providerHex, Storage: "fast", Bridge: "vmbr0", Templates: []string{"ubuntu-24.04"}}
	a.FillDefaults(nil, "pve.example.com")
	return a
}

// chooseAll picks the first storage and bridge and keeps the default template.
func chooseAll(t *testing.T, m *Model) {
	press(t, m, " ", "tab", " ")
}

func request(t *testing.T) setup.DelegationQuestion {
	t.Helper()
	d, code, err := setup.DelegationRequest(agentHex, setup.DelegationAnswers{Provider: providerHex, Label: "pve-agent"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	return setup.DelegationQuestion{Request: d, Code: code, File: filepath.Join(fixedDir, "dc-agent.delegation-request"),
		Check: func(s string) (identity.SignedDelegation, []string, error) {
			return setup.AcceptDelegation(s, agentHex, providerHex, t0)
		}}
}

func toRequest(t *testing.T, m *Model) chan answerMsg {
	t.Helper()
	ch := toDiscovery(t, m)
	chooseAll(t, m)
	press(t, m, "enter")
	answered(t, ch)
	ended := runPlan(t, m, setup.PhaseNode, testAnswers(), titled("Agent key"), []setup.Event{
		{Kind: setup.EventStarted, Index: 1}, {Kind: setup.EventDone, Index: 1, Text: "created"}}, nil)
	press(t, m, "enter")
	if a := answered(t, ended); a.err != nil || a.v != false {
		t.Fatalf("progress: %+v", a)
	}
	ch = ask(t, m, request(t))
	if m.screen != scrRequest {
		t.Fatalf("on %s", m.Screen())
	}
	return ch
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
	press(t, m, "enter")
	if m.screen != scrWelcome || !strings.Contains(m.View(), "checking…") {
		t.Fatal("enter before the checks ran left the welcome screen")
	}
	ch := ask(t, m, prereqQ{checks: []setup.Check{{Name: "permissions", Text: "cannot write /etc/dc-agent", Fix: "run as root (sudo dc-agent)"}}})
	press(t, m, "enter")
	notAnswered(t, ch, "enter on a failed check")
	if m.screen != scrWelcome || !strings.Contains(m.View(), "fix: run as root") {
		t.Fatalf("a failed check did not block:\n%s", m.View())
	}
	press(t, m, "r")
	if a := answered(t, ch); a.v != true {
		t.Fatalf("r did not ask for the checks again: %+v", a)
	}
	ch = ask(t, m, prereqQ{checks: fixedChecks})
	press(t, m, "enter")
	if a := answered(t, ch); a.v != false || a.err != nil {
		t.Fatalf("passed checks: %+v", a)
	}
}

func TestAPIScreenChecksAsTyped(t *testing.T) {
	m := newTestModel(t)
	ch := toAPI(t, m)
	press(t, m, "tab")
	typeText(t, m, "abc")
	if !strings.Contains(m.View(), "64 hex") {
		t.Fatalf("a bad provider key is not explained as typed:\n%s", m.View())
	}
	press(t, m, "enter")
	notAnswered(t, ch, "enter with a bad provider key")
	press(t, m, "shift+tab", "ctrl+u")
	typeText(t, m, "ftp://nope")
	press(t, m, "tab", "ctrl+u")
	typeText(t, m, strings.ToUpper(providerHex))
	press(t, m, "enter")
	notAnswered(t, ch, "a bad endpoint")
	if !strings.Contains(m.View(), "ftp://nope") {
		t.Fatalf("a bad endpoint is not shown:\n%s", m.View())
	}
	if m.screens[scrAPI].(*apiScreen).form.focus != 0 {
		t.Fatal("enter did not show the field that needs an answer")
	}
	press(t, m, "ctrl+u")
	typeText(t, m, "https://api.example.org")
	press(t, m, "enter")
	a := answered(t, ch)
	if got, ok := a.v.(setup.APIAnswer); !ok || got.Endpoint != "https://api.example.org" || got.Provider != providerHex {
		t.Fatalf("answers: %+v", a)
	}
	// The flow refuses an answer: shown with its fix, asked again.
	ch = ask(t, m, setup.APIQuestion{Answer: a.v.(setup.APIAnswer), Err: setup.Fixf("check the endpoint", "the API is not there")})
	if !strings.Contains(m.View(), "the API is not there") || !strings.Contains(m.View(), "Fix: check the endpoint") {
		t.Fatalf("a refusal is not shown:\n%s", m.View())
	}
	press(t, m, "esc")
	if a := answered(t, ch); !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("esc did not go back: %+v", a)
	}
	ch = ask(t, m, setup.SSHQuestion{})
	press(t, m, "esc")
	if a := answered(t, ch); !errors.Is(a.err, setup.ErrBack) {
		t.Fatal("esc on the host screen did not go back")
	}
}

func TestHostScreenConfirmsTheHostKey(t *testing.T) {
	m := newTestModel(t)
	ch := toHost(t, m)
	typeText(t, m, "pve;rm -rf /")
	press(t, m, "enter")
	notAnswered(t, ch, "a hostile host name")
	if !strings.Contains(m.View(), "not a host name") {
		t.Fatalf("a hostile host name is not explained:\n%s", m.View())
	}
	press(t, m, "ctrl+u")
	typeText(t, m, "pve.example.com")
	press(t, m, "enter")
	a := answered(t, ch)
	if got := a.v.(setup.SSHAnswer); got.Host != "pve.example.com" || got.Port != 22 || got.User != "root" || got.IdentityFile != filepath.Join(fixedDir, "id_ed25519") {
		t.Fatalf("answer: %+v", got)
	}
	if !strings.Contains(m.View(), "reading the host key of pve.example.com") {
		t.Fatalf("no sign of the scan:\n%s", m.View())
	}
	ch = ask(t, m, setup.SSHQuestion{Answer: a.v.(setup.SSHAnswer), Err: setup.Fixf("check the host name and port", "connect to pve.example.com:22: connection refused")})
	if !strings.Contains(m.View(), "Fix: check the host name") {
		t.Fatalf("a scan error is not explained:\n%s", m.View())
	}
	press(t, m, "enter")
	answered(t, ch)
	ch = ask(t, m, setup.HostKeyQuestion{Info: testHostKey, PinsPath: pinsPath})
	v := m.View()
	if !strings.Contains(v, testHostKey.Fingerprint) || !strings.Contains(v, "ssh-keygen -lf") || !strings.Contains(v, pinsPath) {
		t.Fatalf("the host key is not shown to confirm:\n%s", v)
	}
	press(t, m, "n")
	if a := answered(t, ch); a.v == true || !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("n: %+v", a)
	}
	// A changed key comes as the reason to ask again: shown, and nothing
	// accepts it.
	e := &setup.HostKeyChangedError{Addr: testHostKey.Addr, Got: testHostKey.Fingerprint, Type: testHostKey.Type, File: pinsPath}
	ch = ask(t, m, setup.SSHQuestion{Answer: a.v.(setup.SSHAnswer), Err: setup.WithFix(e, e.Fix())})
	press(t, m, "y", "enter")
	notAnswered(t, ch, "a changed host key")
	if !strings.Contains(m.View(), "HOST KEY CHANGED") {
		t.Fatalf("a changed host key is not shown:\n%s", m.View())
	}
	press(t, m, "esc")
	if !strings.Contains(m.View(), "how does it log in") {
		t.Fatalf("esc did not go back to the answers:\n%s", m.View())
	}
}

func TestHostScreenAnswersWhatIsTyped(t *testing.T) {
	m := newTestModel(t)
	ch := toHost(t, m)
	typeText(t, m, "pve.example.com")
	press(t, m, "tab", "tab", "tab", "tab")
	typeText(t, m, "s3cret")
	press(t, m, "enter")
	if a := answered(t, ch).v.(setup.SSHAnswer); a.Password != "s3cret" || a.IdentityFile != filepath.Join(fixedDir, "id_ed25519") {
		t.Fatalf("a typed password is not answered with the key: %+v", a)
	}
	// A password file from --password-file shows as file:PATH.
	ch = ask(t, m, setup.SSHQuestion{Answer: setup.SSHAnswer{Host: "pve.example.com", PasswordFile: "/etc/pw"}})
	press(t, m, "enter")
	if a := answered(t, ch).v.(setup.SSHAnswer); a.PasswordFile != "/etc/pw" || a.Password != "" {
		t.Fatalf("password file: %+v", a)
	}
	// A key file that is not there is said as typed (looked for in a Cmd).
	ch = ask(t, m, setup.SSHQuestion{Answer: setup.SSHAnswer{Host: "pve.example.com"}})
	press(t, m, "tab", "tab", "tab")
	typeText(t, m, "/nonexistent/key")
	if !strings.Contains(m.View(), "no key file at /nonexistent/key") {
		t.Fatalf("a missing key file is not said:\n%s", m.View())
	}
	press(t, m, "enter")
	notAnswered(t, ch, "a missing key file")
	// No way to log in: the flow asks for a password, the screen says what to enter.
	ch = ask(t, m, passwordQ{user: "root", host: "pve.example.com"})
	if a := answered(t, ch); a.err == nil || setup.FixOf(a.err) != "enter an SSH key file or the password" {
		t.Fatalf("password question: %+v", a)
	}
}

func TestDiscoveryChoices(t *testing.T) {
	m := newTestModel(t)
	ch := toDiscovery(t, m)
	s := m.screens[scrDiscovery].(*discoveryScreen)
	// The flow preselected the bridge, not the storage.
	if s.storage != -1 || s.bridge != 0 {
		t.Fatalf("preselection: storage %d bridge %d", s.storage, s.bridge)
	}
	press(t, m, "enter")
	notAnswered(t, ch, "no storage")
	if !strings.Contains(m.View(), "choose the storage") {
		t.Fatalf("enter without a storage went on:\n%s", m.View())
	}
	press(t, m, "down", " ")                     // bulk
	press(t, m, "tab", "down", " ")              // vmbr1
	press(t, m, "tab", " ", "down", "down", " ") // ubuntu-24.04 off, debian-12 on
	if !strings.Contains(m.View(), "exists (VMID 9001): reused") {
		t.Fatalf("an existing template is not shown:\n%s", m.View())
	}
	press(t, m, " ")
	press(t, m, "enter")
	notAnswered(t, ch, "no template")
	if !strings.Contains(m.View(), "at least one template") {
		t.Fatalf("no template:\n%s", m.View())
	}
	press(t, m, " ", "enter")
	c := answered(t, ch).v.(setup.Choices)
	if c.Storage != "bulk" || c.Bridge != "vmbr1" || strings.Join(c.Templates, ",") != "debian-12" {
		t.Fatalf("choices: %+v", c)
	}
	// r looks at the node again; esc goes back to the host.
	ch = ask(t, m, testQuestion)
	press(t, m, "r")
	if a := answered(t, ch); !a.v.(setup.Choices).Rediscover {
		t.Fatalf("r: %+v", a)
	}
	ch = ask(t, m, testQuestion)
	press(t, m, "esc")
	if a := answered(t, ch); !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("esc: %+v", a)
	}
	// A node without storage: the flow's reason, with its fix.
	d := testDiscovery()
	d.Storages = nil
	ch = ask(t, m, setup.ChoiceQuestion{Discovery: d, Err: setup.Fixf("add one (content: images) on the node, then look again", "node pve1 has no storage that can hold VM disks")})
	press(t, m, "enter")
	notAnswered(t, ch, "a node without storage")
	if v := m.View(); !strings.Contains(v, "no storage that can hold VM disks") || !strings.Contains(v, "r looks again") {
		t.Fatalf("no storage:\n%s", v)
	}
}

func TestProgressFailureShowsFixAndRetries(t *testing.T) {
	m := newTestModel(t)
	ch := toDiscovery(t, m)
	chooseAll(t, m)
	press(t, m, "enter")
	answered(t, ch)
	steps := titled("Agent key", "Template ubuntu-24.04")
	ok := []setup.Event{{Kind: setup.EventStarted, Index: 1}, {Kind: setup.EventOutput, Index: 1, Text: "working on agent-key"},
		{Kind: setup.EventDone, Index: 1, Text: "created"}, {Kind: setup.EventStarted, Index: 2}}
	fail := append(ok, setup.Event{Kind: setup.EventOutput, Index: 2, Stream: "stderr", Text: "qemu-img: write failed"},
		setup.Event{Kind: setup.EventFailed, Index: 2, Text: "import the disk: no space left on device", Fix: "free space on storage bulk, then retry"})
	ended := runPlan(t, m, setup.PhaseNode, testAnswers(), steps, fail, &setup.StepError{Step: "template", Title: "Template ubuntu-24.04"})
	v := m.View()
	if !strings.Contains(v, "no space left") || !strings.Contains(v, "Fix: free space on storage bulk") || !strings.Contains(v, "qemu-img: write failed") {
		t.Fatalf("the failure is not explained with its fix and output:\n%s", v)
	}
	press(t, m, "enter")
	notAnswered(t, ended, "enter after a failure")
	press(t, m, "r")
	if a := answered(t, ended); a.v != true {
		t.Fatalf("r did not retry: %+v", a)
	}
	ended = runPlan(t, m, setup.PhaseNode, testAnswers(), steps, append(ok, setup.Event{Kind: setup.EventDone, Index: 2, Text: "built template 9000"}), nil)
	if !strings.Contains(m.View(), "The node is ready") {
		t.Fatalf("done:\n%s", m.View())
	}
	press(t, m, "o")
	if !strings.Contains(m.View(), "working on agent-key") {
		t.Fatalf("o does not show the output:\n%s", m.View())
	}
	press(t, m, "enter")
	if a := answered(t, ended); a.v != false || a.err != nil {
		t.Fatalf("enter: %+v", a)
	}
	// esc after a failure goes back to the choices.
	ended = runPlan(t, m, setup.PhaseNode, testAnswers(), steps, fail, errors.New("failed"))
	press(t, m, "esc")
	if a := answered(t, ended); !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("esc: %+v", a)
	}
}

func TestCtrlCDuringAPlanStopsItFirst(t *testing.T) {
	m := newTestModel(t)
	ch := toDiscovery(t, m)
	chooseAll(t, m)
	press(t, m, "enter")
	answered(t, ch)
	deliver(t, m, startedMsg{phase: setup.PhaseNode, steps: titled("Template ubuntu-24.04", "Pool dc-agent")})
	deliver(t, m, eventMsg{setup.Event{Kind: setup.EventStarted, Phase: setup.PhaseNode, Index: 1, Total: 2, Time: t0}})
	press(t, m, "ctrl+c")
	if m.quitting || !m.stopping || m.ctx.Err() == nil {
		t.Fatalf("the first ctrl+c did not just stop the flow: quitting %v stopping %v", m.quitting, m.stopping)
	}
	if !strings.Contains(m.View(), "stopping") {
		t.Fatalf("no stopping state:\n%s", m.View())
	}
	// The plan ends (cancelled): the wizard quits with what to re-run.
	deliver(t, m, flowDoneMsg{err: context.Canceled, stage: setup.StagePlan, hint: "Stopped during the node setup."})
	if !m.quitting || m.Hint() != "Stopped during the node setup." {
		t.Fatalf("quitting %v, hint %q", m.quitting, m.Hint())
	}
}

func TestCtrlCHints(t *testing.T) {
	m := newTestModel(t)
	toAPI(t, m)
	press(t, m, "ctrl+c")
	if !m.quitting || !strings.Contains(m.Hint(), "nothing was changed") {
		t.Fatalf("ctrl+c on the API screen: %q", m.Hint())
	}
	m = newTestModel(t)
	toRequest(t, m)
	press(t, m, "q")
	if !m.quitting {
		t.Fatal("q on the request screen did not quit")
	}
}

func TestRequestScreenShowsEverythingToSign(t *testing.T) {
	m := newTestModel(t)
	toRequest(t, m)
	q := request(t)
	flat := strings.ReplaceAll(strings.ReplaceAll(m.View(), "\n", ""), " ", "")
	for _, want := range []string{agentHex, providerHex, "pve-agent", q.Code, "dc-agentdelegationsign--identity~/.dcc/identity/<name>/private.pem'" + q.Code + "'"} {
		if !strings.Contains(flat, want) {
			t.Errorf("the request screen lacks %q:\n%s", want, m.View())
		}
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
			ch := toRequest(t, m)
			press(t, m, "enter")
			if m.screen != scrPaste {
				t.Fatalf("request: enter led to %s", m.Screen())
			}
			pasteText(t, m, c.code)
			v := m.View()
			if !strings.Contains(v, c.want) {
				t.Fatalf("want %q:\n%s", c.want, v)
			}
			if !c.ok && !strings.Contains(v, "Fix: ") {
				t.Errorf("no fix:\n%s", v)
			}
			press(t, m, "enter")
			if !c.ok {
				notAnswered(t, ch, "a bad delegation")
				return
			}
			if a := answered(t, ch); a.v != c.code {
				t.Fatalf("answer: %+v", a)
			}
		})
	}
}

func TestRegisterServiceSummary(t *testing.T) {
	m := newTestModel(t)
	ch := toRequest(t, m)
	press(t, m, "enter")
	code := sign(t, providerKey, agentHex, nil)
	pasteText(t, m, code)
	press(t, m, "enter")
	answered(t, ch)
	// The registration fails with a fix; esc goes back to the paste.
	ended := runPlan(t, m, setup.PhaseRegister, testAnswers(), titled("Register the delegation"), []setup.Event{
		{Kind: setup.EventStarted, Index: 1},
		{Kind: setup.EventFailed, Index: 1, Text: "the API is unreachable", Fix: "check the network and api.endpoint"}}, errors.New("unreachable"))
	if m.screen != scrRegister || !strings.Contains(m.View(), "Fix:") {
		t.Fatalf("register against nothing:\n%s", m.View())
	}
	press(t, m, "esc")
	if a := answered(t, ended); !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("esc: %+v", a)
	}
	ch = ask(t, m, request(t))
	if m.screen != scrPaste || !strings.Contains(m.View(), "Valid:") {
		t.Fatalf("asked again: on %s\n%s", m.Screen(), m.View())
	}
	press(t, m, "enter")
	if a := answered(t, ch); a.v != code {
		t.Fatalf("the same delegation again: %+v", a)
	}
	ended = runPlan(t, m, setup.PhaseRegister, testAnswers(), titled("Register the delegation"), []setup.Event{
		{Kind: setup.EventStarted, Index: 1}, {Kind: setup.EventDone, Index: 1, Text: "registered agent"}}, nil)
	if !strings.Contains(m.View(), "The API at https://api.example.org accepts this agent") {
		t.Fatalf("registered:\n%s", m.View())
	}
	press(t, m, "enter")
	answered(t, ended)
	ended = runPlan(t, m, setup.PhaseService, testAnswers(), titled("Install the dc-agent service files"), []setup.Event{
		{Kind: setup.EventStarted, Index: 1}, {Kind: setup.EventDone, Index: 1, Text: "wrote " + fixedDir + "/root/etc/systemd/system/dc-agent.service"}}, nil)
	if v := m.View(); m.screen != scrService || !strings.Contains(v, "Installing the service · done") || !strings.Contains(strings.ReplaceAll(v, "\n", " "), "systemctl was not run") {
		t.Fatalf("service:\n%s", v)
	}
	press(t, m, "esc")
	notAnswered(t, ended, "esc on the service screen")
	press(t, m, "enter")
	answered(t, ended)
	deliver(t, m, flowDoneMsg{stage: setup.StageInstalled, hint: "dc-agent is set up and its service is installed.",
		summary: setup.Summary{Answers: testAnswers(), Key: &setup.KeyStatus{Pubkey: agentHex, Key: agentKey}, Discovery: testDiscovery(),
			Templates: map[string]int{"ubuntu-24.04": 9000}, Service: service.Result{UnitPath: "/etc/systemd/system/dc-agent.service"}}})
	if m.screen != scrSummary || !m.Finished() {
		t.Fatalf("flow done: on %s", m.Screen())
	}
	hb := t0.Add(-3 * time.Second).UnixNano()
	deliver(t, m, agentStatusMsg{st: dcapi.AgentStatus{Online: true, LastHeartbeatNs: &hb}, at: t0})
	if !strings.Contains(m.View(), "online, last heartbeat 3s ago") || !strings.Contains(m.View(), "ubuntu-24.04 (VMID 9000)") {
		t.Fatalf("summary:\n%s", m.View())
	}
	// No monitor wired: enter quits with how to watch the service.
	press(t, m, "enter")
	if !m.quitting || !strings.Contains(m.Hint(), "service is installed") {
		t.Fatalf("summary enter: hint %q", m.Hint())
	}
}

func TestAFailedFlowShowsItsErrorAndQuits(t *testing.T) {
	m := newTestModel(t)
	toAPI(t, m)
	deliver(t, m, flowDoneMsg{err: setup.Fixf("correct --expires", "expires: \"soon\" is not never or a duration"), hint: "Stopped; nothing was changed."})
	if v := m.View(); !strings.Contains(v, "is not never or a duration") || !strings.Contains(v, "Fix: correct --expires") {
		t.Fatalf("the flow's error is not shown:\n%s", v)
	}
	press(t, m, "q")
	if !m.quitting || m.Hint() != "Stopped; nothing was changed." {
		t.Fatalf("q: quitting %v hint %q", m.quitting, m.Hint())
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
	deliver(t, m, flowDoneMsg{stage: setup.StageInstalled, summary: setup.Summary{Answers: testAnswers()}})
	press(t, m, "enter")
	if m.screen != scrMonitor || m.View() != "monitor" {
		t.Fatalf("enter on the summary: %s", m.Screen())
	}
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
		press(t, m, "tab")
		typeText(t, m, providerHex)
		press(t, m, "enter")
		ask(t, m, setup.SSHQuestion{})
		check()
		typeText(t, m, "pve.example.com")
		press(t, m, "enter")
		ask(t, m, setup.HostKeyQuestion{Info: testHostKey, PinsPath: pinsPath})
		check()
		ask(t, m, testQuestion)
		check()
		runPlan(t, m, setup.PhaseNode, testAnswers(), titled("Agent key"), []setup.Event{{Kind: setup.EventStarted, Index: 1}, {Kind: setup.EventDone, Index: 1, Text: "created"}}, nil)
		check()
		ask(t, m, request(t))
		check()
		press(t, m, "enter")
		pasteText(t, m, "dcds1:x")
		check()
	}
}

// TestCloudScreensAnswer: the backend screen answers the chosen backend;
// the cloud screen answers the typed token file, then the region under
// the cursor; esc goes back.
func TestCloudScreensAnswer(t *testing.T) {
	m := newTestModel(t)
	toCloud(t, m)
	if m.Screen() != "Backend" || m.position() != "3/10" {
		t.Errorf("screen %s at %s", m.Screen(), m.position())
	}
	ch := ask(t, m, setup.CloudQuestion{Type: config.TypeDigitalOcean})
	press(t, m, "enter")
	notAnswered(t, ch, "an empty token file")
	typeText(t, m, "/root/do-token")
	press(t, m, "enter")
	if a := answered(t, ch); a.err != nil || a.v.(setup.CloudChoice).TokenFile != "/root/do-token" {
		t.Fatalf("token answer %+v", a)
	}
	if !strings.Contains(m.View(), "checking the token with the DigitalOcean API") {
		t.Errorf("no progress while the token is checked:\n%s", m.View())
	}
	ch = ask(t, m, setup.CloudQuestion{Type: config.TypeDigitalOcean, Answer: setup.CloudChoice{TokenFile: "/root/do-token", Region: "ams3"}, Catalog: testCatalog()})
	press(t, m, "down", "enter")
	if a := answered(t, ch); a.err != nil || a.v.(setup.CloudChoice).Region != "fra1" {
		t.Fatalf("region answer %+v", a)
	}
	ch = ask(t, m, setup.CloudQuestion{Type: config.TypeDigitalOcean, Catalog: testCatalog()})
	press(t, m, "esc")
	if a := answered(t, ch); !errors.Is(a.err, setup.ErrBack) {
		t.Fatalf("esc: %+v", a)
	}
	if m.Screen() != "Cloud account" || m.position() != "4/10" {
		t.Errorf("screen %s at %s", m.Screen(), m.position())
	}
}
