package monitor

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

type envMap map[string]string

func (e envMap) Environ() []string {
	var out []string
	for k, v := range e {
		out = append(out, k+"="+v)
	}
	return out
}
func (e envMap) Getenv(k string) string { return e[k] }

// The default renderer follows the terminal's environment: colors on a
// color terminal, none with NO_COLOR or TERM=dumb; the words carry the
// meaning either way.
func TestColorFollowsNO_COLORAndTERM(t *testing.T) {
	for _, tc := range []struct {
		env       envMap
		wantColor bool
	}{
		{envMap{"TERM": "xterm-256color"}, true},
		{envMap{"TERM": "xterm-256color", "NO_COLOR": "1"}, false},
		{envMap{"TERM": "dumb"}, false},
	} {
		o := busyOptions(t)
		o.Renderer = lipgloss.NewRenderer(io.Discard, termenv.WithTTY(true), termenv.WithEnvironment(tc.env), termenv.WithUnsafe())
		m := busyModel(t)
		m.st = newStyles(o.Renderer)
		v := m.View()
		if got := strings.Contains(v, "\x1b["); got != tc.wantColor {
			t.Errorf("env %v: escape sequences in the view = %v, want %v", tc.env, got, tc.wantColor)
		}
		if !strings.Contains(v, "ONLINE") {
			t.Errorf("env %v: the state is not in words:\n%s", tc.env, v)
		}
	}
}

func waitText(t *testing.T, b *testutil.SyncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(b.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("never printed %q; output:\n%s", want, b.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// streamSource replays its events, then sends what the test pushes.
type streamSource struct {
	scripted
	more chan status.Event
}

func (s streamSource) Events(ctx context.Context, since uint64, fn func(status.Event) error) error {
	for _, e := range s.events {
		if e.Seq > since {
			_ = fn(e)
		}
	}
	for {
		select {
		case e := <-s.more:
			_ = fn(e)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// TERM=dumb: the screen is printed as lines once, then each new event as
// a line; r, l, d and q are read as lines.
func TestPlainModeForDumbTerminals(t *testing.T) {
	t.Setenv("TERM", "dumb")
	o := busyOptions(t)
	src := streamSource{scripted: scripted{state: busyState(), events: busyEvents()}, more: make(chan status.Event, 1)}
	o.Status = src
	in, inW := io.Pipe()
	out := &testutil.SyncBuffer{}
	o.Input, o.Output = in, out
	done := make(chan error, 1)
	go func() { done <- Run(context.Background(), o) }()

	waitText(t, out, "keys (then Enter): r refresh")
	if s := out.String(); !strings.Contains(s, "ONLINE   the API sees the provider online") || !strings.Contains(s, "In flight (2)") {
		t.Fatalf("first screen:\n%s", s)
	}
	if strings.ContainsRune(out.String(), 0x1b) {
		t.Errorf("escape sequences on a dumb terminal:\n%q", out.String())
	}
	src.more <- ev(8, 0, status.EventProvisioned, status.LevelInfo, strings.Repeat("c1", 32), "provisioned vm-101 (10.0.0.7) in 1m21s")
	waitText(t, out, "12:00:00 info  c1c1c1c1c1c1… provisioned vm-101 (10.0.0.7) in 1m21s\n")
	io.WriteString(inW, "d\n")
	waitText(t, out, "all checks passed")
	io.WriteString(inW, "q\n")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("q did not end the line mode")
	}
}

// Whatever an event carries, the screen gets no control characters from
// it and stays inside the terminal.
func FuzzEventOnScreen(f *testing.F) {
	f.Add("provisioned vm-101", "c1c1", "info")
	f.Add("\x1b[2J\x1b[Hgotcha\a", "\x1b]0;title\a", "\x9b31m")
	f.Add("tab\there\r\nnew line", "ü漢字🙂", "warn")
	f.Add(string([]byte{0xff, 0xfe, 0x1b}), strings.Repeat("x", 300), "")
	f.Fuzz(func(t *testing.T, msg, cid, level string) {
		m := busyModel(t)
		m = drive(m, fromStream{eventMsg{status.Event{Seq: 99, Time: t0, Kind: status.EventProvisioned, Level: level, ContractID: cid, Message: msg}}})
		st := busyState()
		st.Problems = []status.Problem{{Message: msg, Fix: cid}}
		st.Work[0].Detail = msg
		m = drive(m, stateMsg{state: st})
		for _, scr := range []screen{screenMain, screenLogs} {
			m.screen = scr
			if scr == screenLogs {
				m.setLogs([]string{msg, cid}, nil)
			}
			v := m.View()
			checkFits(t, v, 80, 24)
			for _, r := range v {
				if (r < 0x20 && r != '\n') || (r >= 0x7f && r < 0xa0) {
					t.Fatalf("control character %U on the screen:\n%q", r, v)
				}
			}
		}
	})
}
