package monitor

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
	"github.com/muesli/termenv"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/doctor"
)

// t0 is the frozen clock of the model tests.
var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

const testProvider = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"

func plainRenderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(nil)
	r.SetColorProfile(termenv.Ascii)
	return r
}

// noAPI is an API that always answers with err (or the given answers).
type fixedAPI struct {
	st  dcapi.AgentStatus
	hs  dcapi.HealthSummary
	err error
}

func (f fixedAPI) AgentStatus(context.Context) (dcapi.AgentStatus, error) { return f.st, f.err }
func (f fixedAPI) HealthSummary(context.Context, int) (dcapi.HealthSummary, error) {
	return f.hs, f.err
}

// testOptions: a frozen clock, no ticking, a socket that does not exist,
// an ASCII renderer and a config that names the provider.
func testOptions(t *testing.T) Options {
	t.Helper()
	return Options{
		ConfigPath:   filepath.Join(t.TempDir(), "dc-agent.toml"),
		Config:       &config.Config{API: config.APIConfig{Endpoint: "https://api.example", ProviderPubkey: testProvider}},
		StatusSocket: filepath.Join(t.TempDir(), "none.sock"),
		API:          fixedAPI{err: errors.New("not used")},
		Logs:         func(context.Context, int) ([]string, error) { return nil, errors.New("no journal in tests") },
		Doctor:       func(context.Context) doctor.Report { return doctor.Report{} },
		Now:          func() time.Time { return t0 },
		Tick:         -1,
		Renderer:     plainRenderer(),
	}
}

func ptr[T any](v T) *T { return &v }

// busyState is an online agent with two provisions in flight.
func busyState() status.State {
	hb := t0.Add(-12 * time.Second)
	return status.State{
		Version: "0.5.0", PID: 4242, StartedAt: t0.Add(-62 * time.Minute), Now: t0, Phase: status.PhaseRunning,
		Endpoint: "https://api.example", Provider: testProvider, AgentPubkey: strings.Repeat("ab", 32),
		Online: true, LastHeartbeat: &hb,
		Counts:       status.Counts{Active: 3, Provisioning: 1, Queued: 1, Outbox: 0, Provisioned: 5, Failed: 1, HealthChecks: 120},
		Provisioners: []status.Provisioner{{Type: "proxmox", Default: true, MaxConcurrent: 2, InFlight: 1, Features: []string{"terminate", "list", "health"}}},
		Work: []status.Work{
			{ContractID: strings.Repeat("c1", 32), Provisioner: "proxmox", Step: status.StepProvisioning, Detail: "cloning template 9000", StartedAt: t0.Add(-80 * time.Second), UpdatedAt: t0},
			{ContractID: strings.Repeat("c2", 32), Provisioner: "proxmox", Step: status.StepQueued, StartedAt: t0.Add(-5 * time.Second), UpdatedAt: t0},
		},
	}
}

func onlineAPI() apiMsg {
	return apiMsg{
		status: dcapi.AgentStatus{ProviderPubkey: testProvider, Online: true, LastHeartbeatNs: ptr(t0.Add(-14 * time.Second).UnixNano()), Version: ptr("0.5.0"), ProvisionerType: ptr("proxmox"), ActiveContracts: 3},
		health: dcapi.HealthSummary{TotalChecks: 1200, HealthyChecks: 1190, UnhealthyChecks: 10, UptimePercent: 99.17, ContractsMonitored: 4, AvgLatencyMs: ptr(12.0)},
	}
}

func ev(seq uint64, ago time.Duration, kind, level, cid, msg string) status.Event {
	return status.Event{Seq: seq, Time: t0.Add(-ago), Kind: kind, Level: level, ContractID: cid, Message: msg}
}

func busyEvents() []status.Event {
	return []status.Event{
		ev(1, 62*time.Minute, status.EventStarted, status.LevelInfo, "", "dc-agent 0.5.0 started"),
		ev(2, 62*time.Minute, status.EventReady, status.LevelInfo, "", "ready: proxmox"),
		ev(3, 10*time.Minute, status.EventProvisioned, status.LevelInfo, strings.Repeat("a1", 32), "provisioned in 1m52s"),
		ev(4, 4*time.Minute, status.EventProvisionFailed, status.LevelError, strings.Repeat("b2", 32), "provisioning failed: template 9001 not found; will retry"),
		ev(5, 80*time.Second, status.EventContractReceived, status.LevelInfo, strings.Repeat("c1", 32), "new contract: 2 vCPU, 4 GiB, 40 GiB"),
		ev(6, 79*time.Second, status.EventProvisionStep, status.LevelInfo, strings.Repeat("c1", 32), "provisioning: cloning template 9000"),
		ev(7, 12*time.Second, status.EventHeartbeat, status.LevelInfo, "", "heartbeat accepted; next in 30s"),
	}
}

// drive feeds msgs to m in order, as the program would.
func drive(m *Model, msgs ...tea.Msg) *Model {
	for _, msg := range msgs {
		nm, _ := m.Update(msg)
		m = nm.(*Model)
	}
	return m
}

func key(s string) tea.KeyMsg {
	switch s {
	case "esc":
		return tea.KeyMsg{Type: tea.KeyEsc}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func busyModel(t *testing.T) *Model {
	m := New(testOptions(t))
	t.Cleanup(m.Close)
	msgs := []tea.Msg{tea.WindowSizeMsg{Width: 80, Height: 24}, fromStream{stateMsg{state: busyState()}}, fromStream{streamUpMsg{}}, onlineAPI()}
	for _, e := range busyEvents() {
		msgs = append(msgs, fromStream{eventMsg{e}})
	}
	return drive(m, append(msgs, stateMsg{state: busyState()})...)
}

// checkFits fails when a view is larger than the terminal.
func checkFits(t *testing.T, view string, w, h int) {
	t.Helper()
	lines := strings.Split(view, "\n")
	if len(lines) > h {
		t.Errorf("view has %d lines on a %d-line terminal:\n%s", len(lines), h, view)
	}
	for i, l := range lines {
		if n := ansi.StringWidth(l); n > w {
			t.Errorf("line %d is %d columns wide on a %d-column terminal: %q", i+1, n, w, l)
		}
	}
}

func TestMainScreenShowsBothSourcesWorkAndResults(t *testing.T) {
	m := busyModel(t)
	v := m.View()
	checkFits(t, v, 80, 24)
	for _, want := range []string{
		"ONLINE   the API sees the provider online",
		"API       online, last heartbeat 14s ago, v0.5.0, 3 active",
		"local     running 1h02m, pid 4242, v0.5.0, heartbeat accepted 12s ago",
		"Provisioner proxmox, 1/2 in flight",
		"3 active, 1 provisioning, 1 queued, 0 reports pending",
		"99.2% healthy (1190 of 1200 checks, 4 contracts, avg 12 ms)",
		"In flight (2)",
		"c1c1c1c1c1c1…  proxmox  provisioning: cloning templat… 1m20s",
		"queued",
		"Recent results",
		"provisioned in 1m52s",
		"provisioning failed: template 9001",
		"heartbeat accepted; next in 30s",
		"q quit (the service keeps running)",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("main screen lacks %q:\n%s", want, v)
		}
	}
}

func TestAPIAndLocalDisagreeSaysWhichSaidWhat(t *testing.T) {
	m := busyModel(t)
	off := onlineAPI()
	off.status.Online = false
	m = drive(m, off)
	v := m.View()
	if !strings.Contains(v, "OFFLINE  the API has had no heartbeat") || !strings.Contains(v, "API       offline") || !strings.Contains(v, "heartbeat accepted 12s ago") {
		t.Errorf("disagreement not shown per source:\n%s", v)
	}
	// The API unreachable: the verdict comes from the local agent, and says so.
	m = drive(m, apiMsg{statusErr: errors.New("GET /agent-status: connection refused"), healthErr: errors.New("connection refused")})
	v = m.View()
	if !strings.Contains(v, "ONLINE   per the local agent") || !strings.Contains(v, "unreachable: GET /agent-status: connection refused") {
		t.Errorf("API outage not explained:\n%s", v)
	}
}

func TestAgentNotRunningShowsHowToStartIt(t *testing.T) {
	m := New(testOptions(t))
	t.Cleanup(m.Close)
	err := fmt.Errorf("%w (no agent listening on /run/dc-agent/status.sock); start it with: systemctl start dc-agent", status.ErrNotRunning)
	m = drive(m, tea.WindowSizeMsg{Width: 80, Height: 24}, fromStream{stateMsg{err: err}}, fromStream{streamDownMsg{err: err, retryIn: time.Second}},
		apiMsg{statusErr: errors.New("connection refused"), healthErr: errors.New("connection refused")})
	v := m.View()
	checkFits(t, v, 80, 24)
	for _, want := range []string{"OFFLINE  the agent is not answering", "agent not running", "sudo systemctl start dc-agent"} {
		if !strings.Contains(v, want) {
			t.Errorf("lacks %q:\n%s", want, v)
		}
	}
	// It comes back: the screen follows.
	m = drive(m, fromStream{stateMsg{state: busyState()}}, fromStream{streamUpMsg{}})
	if v := m.View(); strings.Contains(v, "not running") || !strings.Contains(v, "running 1h02m") {
		t.Errorf("did not recover:\n%s", v)
	}
}

func TestKeys(t *testing.T) {
	m := busyModel(t)
	// l: the log view, falling back to events with the reason.
	nm, cmd := m.Update(key("l"))
	m = nm.(*Model)
	if m.screen != screenLogs || cmd == nil {
		t.Fatalf("l did not open the logs (screen %d)", m.screen)
	}
	m = drive(m, cmd())
	v := m.View()
	checkFits(t, v, 80, 24)
	if !strings.Contains(v, "service log unavailable (no journal in tests)") || !strings.Contains(v, "heartbeat accepted; next in 30s") {
		t.Errorf("log view:\n%s", v)
	}
	m = drive(m, key("esc"))
	if m.screen != screenMain {
		t.Fatal("esc did not go back")
	}
	// d: doctor in a command; results shown.
	m.o.Doctor = func(context.Context) doctor.Report {
		return doctor.Report{Findings: []doctor.Finding{{Check: "config", Status: doctor.OK, Message: "loaded"}, {Check: "delegation", Status: doctor.Fail, Message: "expired", Fix: "dc-agent delegation request"}}}
	}
	nm, cmd = m.Update(key("d"))
	m = nm.(*Model)
	if m.screen != screenDoctor || !m.docBusy || !strings.Contains(m.View(), "running the checks") {
		t.Fatalf("d did not start doctor:\n%s", m.View())
	}
	m = drive(m, runBatch(cmd)...)
	v = m.View()
	if !strings.Contains(v, "FAIL  delegation  expired") || !strings.Contains(v, "fix: dc-agent delegation request") || !strings.Contains(v, "1 failed") {
		t.Errorf("doctor view:\n%s", v)
	}
	// q in a sub-view goes back; q on the main screen quits.
	m = drive(m, key("q"))
	if m.screen != screenMain {
		t.Fatal("q in doctor did not go back")
	}
	_, cmd = m.Update(key("q"))
	if cmd == nil || cmd() != tea.Quit() {
		t.Fatal("q did not quit")
	}
	if m.ctx.Err() == nil {
		t.Fatal("quitting did not stop the watcher")
	}
}

// runBatch runs cmd (and a batch's parts) and returns the messages that
// are not ticks.
func runBatch(cmd tea.Cmd) []tea.Msg {
	if cmd == nil {
		return nil
	}
	msg := cmd()
	if b, ok := msg.(tea.BatchMsg); ok {
		var out []tea.Msg
		for _, c := range b {
			out = append(out, runBatch(c)...)
		}
		return out
	}
	if _, ok := msg.(interface{ Tag() int }); ok {
		return nil
	}
	return []tea.Msg{msg}
}

func TestResizeKeepsEveryScreenInside(t *testing.T) {
	m := busyModel(t)
	for _, sz := range [][2]int{{80, 24}, {40, 12}, {120, 40}, {20, 5}, {80, 24}} {
		m = drive(m, tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		checkFits(t, m.View(), sz[0], sz[1])
	}
}

// Wrapped lines keep their indentation and styling, in color too.
func TestWrapKeepsIndentWithColor(t *testing.T) {
	r := lipgloss.NewRenderer(nil)
	r.SetColorProfile(termenv.ANSI256)
	m := busyModel(t)
	m.st = newStyles(r)
	m = drive(m, tea.WindowSizeMsg{Width: 60, Height: 24})
	v := ansi.Strip(m.View())
	if !strings.Contains(v, "\n  local     running 1h02m, pid 4242, v0.5.0, heartbeat\n            accepted 12s ago\n") {
		t.Errorf("wrapped line lost its indent:\n%s", v)
	}
	checkFits(t, m.View(), 60, 24)
}

func TestWordWrap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		w    int
		want []string
	}{
		{"a bb ccc", 4, []string{"a bb", "ccc"}},
		{"  indented text here", 10, []string{"  indented", "text here"}},
		{"dc-agent setup proxmox --templates x", 20, []string{"dc-agent setup", "proxmox --templates", "x"}},
		{"abcdefghij", 4, []string{"abcd", "efgh", "ij"}},
		{"\x1b[1m  label\x1b[0m value", 13, []string{"\x1b[1m  label\x1b[0m value"}},
	} {
		got := wordWrap(tc.in, tc.w)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") {
			t.Errorf("wordWrap(%q, %d) = %q, want %q", tc.in, tc.w, got, tc.want)
		}
	}
}

// A heartbeat event makes the monitor ask the API again at once (the
// API's view changed), also when an answer is in flight.
func TestHeartbeatEventRefreshesTheAPI(t *testing.T) {
	m := busyModel(t)
	calls := 0
	m.o.API = countingAPI{fixedAPI: fixedAPI{st: onlineAPI().status}, n: &calls}
	// busyModel's ready and heartbeat events left an API request "in
	// flight" and one to repeat (drive does not run commands): their
	// answers arrive first.
	m = drive(m, onlineAPI(), onlineAPI())
	if m.apiBusy || m.apiAgain {
		t.Fatal("API requests still pending")
	}
	hb := eventMsg{ev(20, 0, status.EventHeartbeat, status.LevelInfo, "", "heartbeat accepted")}
	nm, cmd := m.Update(hb)
	m = nm.(*Model)
	msgs := runBatch(cmd)
	if calls != 1 || !m.apiBusy {
		t.Fatalf("heartbeat event: %d API calls, busy %v", calls, m.apiBusy)
	}
	// Another heartbeat while that answer is in flight: asked again after it.
	nm, cmd = m.Update(hb)
	m = nm.(*Model)
	runBatch(cmd)
	if calls != 1 || !m.apiAgain {
		t.Fatalf("second heartbeat while busy: %d calls, again %v", calls, m.apiAgain)
	}
	for _, msg := range msgs {
		if am, ok := msg.(apiMsg); ok {
			_, cmd = m.Update(am)
			runBatch(cmd)
		}
	}
	if calls != 2 {
		t.Fatalf("the API was not asked again after the answer in flight: %d calls", calls)
	}
}

type countingAPI struct {
	fixedAPI
	n *int
}

func (c countingAPI) AgentStatus(ctx context.Context) (dcapi.AgentStatus, error) {
	*c.n++
	return c.fixedAPI.AgentStatus(ctx)
}

// The VMs behind the gateway show with their name and SSH command; a
// gateway not yet complete says its state.
func TestMainScreenShowsGateways(t *testing.T) {
	m := New(testOptions(t))
	t.Cleanup(m.Close)
	st := busyState()
	st.Work = nil
	st.Gateways = []status.Gateway{
		{ContractID: strings.Repeat("d1", 32), Subdomain: "k7m2p4.dc-lk.gw.decent-cloud.org", PublicIP: "198.51.100.7", SSHPort: 20000, PortStart: 20000, PortEnd: 20009, State: "active"},
		{ContractID: strings.Repeat("e2", 32), PublicIP: "198.51.100.7", SSHPort: 20010, PortStart: 20010, PortEnd: 20019, State: "allocated"},
	}
	m = drive(m, tea.WindowSizeMsg{Width: 100, Height: 30}, fromStream{stateMsg{state: st}}, fromStream{streamUpMsg{}}, onlineAPI())
	v := m.View()
	checkFits(t, v, 100, 30)
	for _, want := range []string{"Gateway (2)", "k7m2p4.dc-lk.gw.decent-cloud.org", "ssh -p 20000 198.51.100.7", "ssh -p 20010 198.51.100.7 (allocated)"} {
		if !strings.Contains(v, want) {
			t.Errorf("main screen lacks %q:\n%s", want, v)
		}
	}
}
