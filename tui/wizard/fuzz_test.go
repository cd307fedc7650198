package wizard

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"

	"github.com/decent-stuff/dc-agent/setup"
)

// FuzzProgressView: whatever a host or an API says (step output, errors,
// fixes) is drawn inside 80x24 and cannot drive the terminal.
func FuzzProgressView(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b[2J\x1b[31mred", "tab\there", "wide 界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界界",
		strings.Repeat("x", 5000), "line\nbreak\r\nand\x07bell", "\u009b31m"} {
		f.Add(s, s)
	}
	f.Fuzz(func(t *testing.T, text, fix string) {
		m := New(Options{Flow: setup.FlowOptions{Answers: setup.ProxmoxAnswers{ConfigPath: "/nonexistent/dc-agent.toml"}, Now: func() time.Time { return t0 }}, StatusEvery: -1})
		m.Update(startedMsg{phase: setup.PhaseNode, steps: titled("Step "+text, "Next")})
		m.Update(key("o"))
		for _, e := range []setup.Event{
			{Kind: setup.EventStarted, Index: 1},
			{Kind: setup.EventCommand, Index: 1, Text: text},
			{Kind: setup.EventOutput, Index: 1, Text: text},
			{Kind: setup.EventWarning, Index: 1, Text: text, Fix: fix},
			{Kind: setup.EventFailed, Index: 1, Text: text, Fix: fix},
		} {
			e.Phase = setup.PhaseNode
			m.Update(eventMsg{e})
		}
		m.Update(askMsg{q: endedQ{phase: setup.PhaseNode, err: setup.Fixf(fix, "%s", text)}, reply: make(chan answerMsg, 1)})
		v := m.View()
		if strings.ContainsAny(v, "\x1b\x07\r\u009b") {
			t.Fatalf("control characters on screen: %q", v)
		}
		lines := strings.Split(v, "\n")
		if len(lines) > 24 {
			t.Fatalf("%d lines", len(lines))
		}
		for _, l := range lines {
			if lipgloss.Width(l) > 80 {
				t.Fatalf("line of %d cells: %q", lipgloss.Width(l), l)
			}
		}
	})
}
