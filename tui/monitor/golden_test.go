package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/doctor"
)

// scripted is a status socket that answers with a fixed state and events,
// then holds the stream open: the screens' content is known exactly. (The
// real socket is exercised by TestLiveAgent.)
type scripted struct {
	state  status.State
	events []status.Event
}

func (s scripted) State(context.Context) (status.State, error) { return s.state, nil }
func (s scripted) Events(ctx context.Context, since uint64, fn func(status.Event) error) error {
	for _, e := range s.events {
		if e.Seq > since {
			if err := fn(e); err != nil {
				return err
			}
		}
	}
	<-ctx.Done()
	return ctx.Err()
}

// runGolden runs the monitor as a program at 80x24 with a fixed (ASCII)
// color profile and a frozen clock, waits for want on the terminal, sends
// keys, waits for after, quits and compares the last frame with the golden
// file.
func runGolden(t *testing.T, o Options, want string, keys string, after string) {
	t.Helper()
	m := New(o)
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(80, 24))
	waitOut(t, tm, want)
	for _, k := range keys {
		tm.Send(key(string(k)))
	}
	if after != "" {
		waitOut(t, tm, after)
	}
	tm.Send(key("ctrl+c"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(10*time.Second)).(*Model)
	view := fm.View()
	checkFits(t, view, 80, 24)
	golden.RequireEqual(t, []byte(view+"\n"))
}

// waitOut waits until the terminal has shown every one of want.
func waitOut(t *testing.T, tm *teatest.TestModel, want ...string) {
	t.Helper()
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
		for _, w := range want {
			if !bytes.Contains(b, []byte(w)) {
				return false
			}
		}
		return true
	}, teatest.WithDuration(10*time.Second), teatest.WithCheckInterval(5*time.Millisecond))
}

func busyOptions(t *testing.T) Options {
	o := testOptions(t)
	o.Status = scripted{state: busyState(), events: busyEvents()}
	a := onlineAPI()
	o.API = fixedAPI{st: a.status, hs: a.health}
	return o
}

func TestGoldenOnlineWithWorkInFlight(t *testing.T) {
	runGolden(t, busyOptions(t), "heartbeat accepted; next in 30s", "", "")
}

func TestGoldenAgentNotRunning(t *testing.T) {
	o := testOptions(t)
	// The real client on a socket nobody listens on.
	o.Status = status.NewClient(filepath.Join(t.TempDir(), "status.sock"))
	o.ReconnectMin, o.ReconnectMax = time.Second, time.Second
	o.API = fixedAPI{err: errors.New(`GET https://api.example/api/v1/providers/197f…8d61/agent-status: dial tcp 203.0.113.7:443: connect: connection refused`)}
	runGolden(t, o, "try in 1s", "", "")
}

func TestGoldenLogsView(t *testing.T) {
	o := busyOptions(t)
	o.Logs = func(_ context.Context, n int) ([]string, error) {
		var lines []string
		for i := range 40 {
			lines = append(lines, fmt.Sprintf("2026-12-05T11:%02d:00+0000 host dc-agent[4242]: level=INFO msg=\"heartbeat accepted\" seq=%d next=30s", 20+i, i))
		}
		lines = append(lines, `2026-12-05T11:59:48+0000 host dc-agent[4242]: level=WARN msg="provisioning failed: template 9001 not found on node pve1; the agent retries after the cool-down (set provisioner.proxmox.templates)"`)
		return lines, nil
	}
	runGolden(t, o, "heartbeat accepted; next in 30s", "l", "set provisioner.proxmox.templates")
}

func TestGoldenDoctorView(t *testing.T) {
	o := busyOptions(t)
	o.Doctor = func(context.Context) doctor.Report {
		return doctor.Report{Findings: []doctor.Finding{
			{Check: "config", Status: doctor.OK, Message: "/etc/dc-agent/dc-agent.toml is valid"},
			{Check: "agent key", Status: doctor.OK, Message: "/etc/dc-agent/agent.key (mode 0600), public key abababab…abab"},
			{Check: "delegation", Status: doctor.Warn, Message: "the delegation expires in 5 days (2026-12-10)", Fix: "dc-agent delegation request, sign it offline with the main key, then dc-agent delegation install"},
			{Check: "proxmox", Status: doctor.OK, Message: "https://pve1:8006 answers with the pinned certificate; token dc-agent@pve!agent has the needed privileges"},
			{Check: "templates", Status: doctor.Fail, Message: "template 9001 (debian-12) is not on node pve1", Fix: "dc-agent setup proxmox --templates debian-12 (rebuilds missing templates)"},
			{Check: "clock", Status: doctor.OK, Message: "within 1s of the API's clock"},
			{Check: "api", Status: doctor.OK, Message: "https://api.example accepted a signed request from agent key abababab…abab (3 active contracts)"},
		}}
	}
	runGolden(t, o, "heartbeat accepted; next in 30s", "d", "took 0s")
}

// The golden files are plain text: no escape sequence may hide in them.
func TestGoldenFilesArePlain(t *testing.T) {
	for _, name := range []string{"TestGoldenOnlineWithWorkInFlight", "TestGoldenAgentNotRunning", "TestGoldenLogsView", "TestGoldenDoctorView", "TestGoldenProblems", "TestGoldenSeveralAgents"} {
		b := readGolden(t, name)
		if bytes.ContainsRune(b, 0x1b) {
			t.Errorf("%s.golden has escape sequences", name)
		}
		if n := strings.Count(string(b), "\n"); n != 24 {
			t.Errorf("%s.golden has %d lines, want the 24 of the terminal", name, n)
		}
	}
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name+".golden"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An agent that cannot reach the API: the problem with its fix, the loops
// in backoff, the API's view (offline) beside the agent's.
func TestGoldenProblems(t *testing.T) {
	o := testOptions(t)
	st := busyState()
	st.Online, st.Work = false, nil
	st.Counts.Provisioning, st.Counts.Queued, st.Counts.Outbox = 0, 0, 2
	hb := t0.Add(-7 * time.Minute)
	st.LastHeartbeat = &hb
	next := t0.Add(20 * time.Second)
	st.Loops = []status.Loop{
		{Name: "contracts", State: status.LoopBackoff, Failures: 6, LastError: "GET /providers/…/contracts/pending-provision: dial tcp: lookup api.decent-cloud.org: no such host", NextAttempt: &next},
		{Name: "heartbeat", State: status.LoopStopped, LastError: "401: delegation expired"},
		{Name: "health", State: status.LoopRunning},
	}
	st.Problems = []status.Problem{{Loop: "heartbeat", Message: "the API refuses the agent's delegation: it expired on 2026-12-01", Fix: "dc-agent delegation request, sign it offline, then dc-agent register --delegation file:PATH", Since: t0.Add(-7 * time.Minute)}}
	o.Status = scripted{state: st, events: []status.Event{
		ev(1, 9*time.Minute, status.EventStarted, status.LevelInfo, "", "dc-agent starting"),
		ev(2, 7*time.Minute, status.EventLoopStopped, status.LevelError, "", "heartbeat stopped: 401: delegation expired"),
		ev(3, 6*time.Minute, status.EventLoopBackoff, status.LevelWarn, "", "contracts: API unreachable, retrying with backoff"),
	}}
	o.API = fixedAPI{st: dcapi.AgentStatus{ProviderPubkey: testProvider, Online: false, LastHeartbeatNs: ptr(hb.UnixNano()), ActiveContracts: 3},
		hs: dcapi.HealthSummary{TotalChecks: 1200, HealthyChecks: 1100, UptimePercent: 91.67, ContractsMonitored: 4}}
	runGolden(t, o, "API unreachable, retrying", "", "")
}

// An agent of the live API: its pool, an upgrade the API asks for, a
// contract's end and a paused contract's stopped instance.
func TestGoldenLiveAgent(t *testing.T) {
	o := testOptions(t)
	st := busyState()
	st.Work = nil
	ends := t0.Add(50 * time.Hour)
	st.Pool = &status.Pool{ID: "eu-proxmox-1a2b3c4d", Name: "eu-proxmox"}
	st.Upgrade = &status.Upgrade{Version: "0.6.1", State: status.UpgradeOffered, Note: "auto_update is off: install it with sudo dc-agent upgrade --version 0.6.1"}
	st.Ending = []status.Contract{{ContractID: strings.Repeat("e1", 32), ExternalID: "pve1/101", EndsAt: &ends}, {ContractID: strings.Repeat("e2", 32), ExternalID: "pve1/102"}}
	st.Paused = []status.PausedInstance{{ContractID: strings.Repeat("d1", 32), ExternalID: "pve1/103", Reason: "stripe_dispute:du_1", Since: t0.Add(-3 * time.Minute)}}
	o.Status = scripted{state: st}
	a := onlineAPI()
	o.API = fixedAPI{st: a.status, hs: a.health}
	runGolden(t, o, "Paused", "", "")
}

// Several agents of one provider (dc-api's agents list): the monitor lists
// them, this agent marked. (Without the list, as the live API answers,
// TestGoldenOnlineWithWorkInFlight shows no such line.)
func TestGoldenSeveralAgents(t *testing.T) {
	o := busyOptions(t)
	a := onlineAPI()
	a.status.Agents = []dcapi.ProviderAgent{
		{KeyPrefix: "abababab", Online: true, LastHeartbeatNs: t0.Add(-14 * time.Second).UnixNano(), ProvisionerType: ptr("proxmox"), ActiveContracts: 3},
		{KeyPrefix: "0123abcd", Online: true, LastHeartbeatNs: t0.Add(-40 * time.Second).UnixNano(), ProvisionerType: ptr("proxmox"), ActiveContracts: 2},
		{KeyPrefix: "ffee0011", LastHeartbeatNs: t0.Add(-17 * time.Minute).UnixNano(), ProvisionerType: ptr("proxmox\x1b[2J")},
	}
	o.API = fixedAPI{st: a.status, hs: a.health}
	// The socket's state (this agent's key), its last event and the API's
	// list, which arrive in any order.
	m := New(o)
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(80, 24))
	waitOut(t, tm, "(this agent)", "heartbeat accepted; next in 30s")
	tm.Send(key("ctrl+c"))
	view := tm.FinalModel(t, teatest.WithFinalTimeout(10*time.Second)).(*Model).View()
	checkFits(t, view, 80, 24)
	golden.RequireEqual(t, []byte(view+"\n"))
}
