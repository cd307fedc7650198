package wizard

import (
	"context"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/decent-stuff/dc-agent/setup"
)

// A plan runs in its own goroutine; its events come back one message at a
// time through a channel read by a tea.Cmd, so nothing is dropped and the
// plan waits when the screen falls behind.

type planEventMsg struct {
	gen int
	ev  setup.Event
	ch  <-chan tea.Msg
}

type planDoneMsg struct {
	gen int
	err error
}

type tickMsg struct{ gen int }

type stepRow struct {
	title   string
	status  setup.EventKind // "" pending, started, done, skipped, failed
	text    string
	fix     string
	warns   []string
	start   time.Time
	elapsed time.Duration
}

// progressScreen shows a running plan: a spinner on the current step,
// elapsed times, output on demand, and on failure the error with its fix.
type progressScreen struct {
	title      string
	gen        int
	rows       []stepRow
	output     []string
	showOutput bool
	running    bool
	done       bool
	err        error
	failed     int // index of the failed row, -1 none
	started    time.Time
	ended      time.Time
	cancelFn   context.CancelFunc
}

const maxOutput = 200

func newProgressScreen(title string) progressScreen {
	return progressScreen{title: title, failed: -1}
}

func (p *progressScreen) cancel() {
	if p.cancelFn != nil {
		p.cancelFn()
	}
}

// start runs plan in the background and returns the commands that feed
// its events to Update.
// gen numbers the run so a message from an older run is ignored.
func (p *progressScreen) start(ctx context.Context, gen int, plan *setup.Plan, now func() time.Time) tea.Cmd {
	p.reset(gen, plan, now)
	ctx, cancel := context.WithCancel(ctx)
	p.cancelFn = cancel
	plan.Now = now
	ch := make(chan tea.Msg, 64)
	go func() {
		defer cancel()
		_, err := plan.Run(ctx, func(e setup.Event) { ch <- planEventMsg{gen: gen, ev: e, ch: ch} })
		ch <- planDoneMsg{gen: gen, err: err}
		close(ch)
	}()
	return tea.Batch(waitFor(ch), tick(gen))
}

// reset shows plan's steps as pending, running.
func (p *progressScreen) reset(gen int, plan *setup.Plan, now func() time.Time) {
	rows := make([]stepRow, len(plan.Steps))
	for i, s := range plan.Steps {
		rows[i] = stepRow{title: clean(s.Title)}
	}
	*p = progressScreen{title: p.title, gen: gen, rows: rows, showOutput: p.showOutput, running: true, failed: -1, started: now()}
}

func waitFor(ch <-chan tea.Msg) tea.Cmd {
	return func() tea.Msg {
		msg, ok := <-ch
		if !ok {
			return nil
		}
		return msg
	}
}

func tick(gen int) tea.Cmd {
	return tea.Tick(100*time.Millisecond, func(time.Time) tea.Msg { return tickMsg{gen: gen} })
}

// update applies plan messages; finished is true when the plan ended with
// this message.
func (p *progressScreen) update(msg tea.Msg, now func() time.Time) (cmd tea.Cmd, finished bool) {
	switch msg := msg.(type) {
	case planEventMsg:
		if msg.gen != p.gen {
			return nil, false
		}
		p.apply(msg.ev)
		return waitFor(msg.ch), false
	case planDoneMsg:
		if msg.gen != p.gen {
			return nil, false
		}
		p.running = false
		p.ended = now()
		p.err = msg.err
		p.done = msg.err == nil
		return nil, true
	case tickMsg:
		if msg.gen == p.gen && p.running {
			return tick(p.gen), false
		}
	case tea.KeyMsg:
		if msg.String() == "o" {
			p.showOutput = !p.showOutput
		}
	}
	return nil, false
}

// apply records one event (tests feed events directly).
func (p *progressScreen) apply(e setup.Event) {
	e.Text, e.Fix, e.Title = clean(e.Text), clean(e.Fix), clean(e.Title)
	i := e.Index - 1
	if i < 0 || i >= len(p.rows) {
		return
	}
	r := &p.rows[i]
	switch e.Kind {
	case setup.EventStarted:
		r.status, r.start = setup.EventStarted, e.Time
	case setup.EventCommand:
		p.addOutput("$ " + e.Text)
	case setup.EventOutput:
		p.addOutput(e.Text)
	case setup.EventWarning:
		r.warns = append(r.warns, e.Text)
		p.addOutput("warning: " + e.Text)
	case setup.EventDone, setup.EventSkipped:
		r.status, r.text, r.elapsed = e.Kind, e.Text, e.Elapsed
	case setup.EventFailed:
		r.status, r.text, r.fix, r.elapsed = e.Kind, e.Text, e.Fix, e.Elapsed
		p.failed = i
	}
}

func (p *progressScreen) addOutput(l string) {
	p.output = append(p.output, l)
	if len(p.output) > maxOutput {
		p.output = p.output[len(p.output)-maxOutput:]
	}
}

// clean keeps text from outside (remote output, API messages) from
// driving the terminal: control characters go, tabs become spaces.
func clean(s string) string {
	if len(s) > 4096 {
		s = s[:4096] + "…"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0:
			return -1
		}
		return r
	}, s)
}

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// spin picks the spinner frame from the clock, so a fixed clock draws a
// fixed frame.
func spin(now time.Time) string {
	return spinnerFrames[int(now.UnixMilli()/100)%len(spinnerFrames)]
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "0.0s"
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
}

// view renders the step list, and output or the failure below it, in
// width w and at most h lines.
func (p *progressScreen) view(m *Model, w, h int) string {
	now := m.now()
	var b strings.Builder
	el := now.Sub(p.started)
	if !p.running && !p.ended.IsZero() {
		el = p.ended.Sub(p.started)
	}
	state := "running"
	switch {
	case p.done:
		state = m.st.ok.Render("done")
	case p.err != nil && m.stopping:
		state = m.st.warn.Render("stopped")
	case p.err != nil:
		state = m.st.bad.Render("failed")
	case m.stopping:
		state = m.st.warn.Render("stopping…")
	}
	fmt.Fprintf(&b, "%s · %s · elapsed %s\n", p.title, state, fmtDur(el))
	titleW := 0
	for _, r := range p.rows {
		titleW = max(titleW, ansi.StringWidth(r.title))
	}
	titleW = min(titleW, 30)
	for _, r := range p.rows {
		mark, text, dur := m.st.dim.Render(markTodo), "", ""
		switch r.status {
		case setup.EventStarted:
			mark = spin(now)
			if p.running {
				dur = fmtDur(now.Sub(r.start))
			}
			text = "…"
		case setup.EventDone:
			mark, text, dur = m.st.ok.Render(markOK), r.text, fmtDur(r.elapsed)
		case setup.EventSkipped:
			mark, text, dur = m.st.dim.Render(markSkip), "unchanged: "+r.text, fmtDur(r.elapsed)
		case setup.EventFailed:
			mark, text, dur = m.st.bad.Render(markBad), "failed", fmtDur(r.elapsed)
		}
		if len(r.warns) > 0 && r.status != setup.EventFailed {
			mark = m.st.warn.Render(markWarn)
		}
		title := ansi.Truncate(r.title, titleW, "…")
		line := fmt.Sprintf("%s %-*s %s", mark, titleW, title, text)
		room := w - 1 - ansi.StringWidth(dur)
		line = ansi.Truncate(line, room, "…")
		pad := room - ansi.StringWidth(line)
		b.WriteString(line + strings.Repeat(" ", max(pad, 0)+1) + m.st.dim.Render(dur) + "\n")
	}
	used := len(p.rows) + 1
	if p.failed >= 0 && p.err != nil {
		r := p.rows[p.failed]
		b.WriteString("\n" + m.st.bad.Render(markBad+" "+r.title+" failed: ") + r.text + "\n")
		if r.fix != "" {
			b.WriteString(m.st.key.Render("Fix: ") + r.fix + "\n")
		}
		used += 4
	} else if p.err != nil {
		b.WriteString("\n" + m.st.bad.Render(markBad+" ") + p.err.Error() + "\n")
		used += 2
	}
	for _, r := range p.rows {
		for _, wn := range r.warns {
			b.WriteString(m.st.warn.Render(markWarn+" warning: ") + wn + "\n")
			used++
		}
	}
	if p.showOutput || (p.err != nil && !m.stopping && len(p.output) > 0) {
		room := h - used - 2
		if room > 0 {
			b.WriteString(m.st.dim.Render("output (last lines):") + "\n")
			out := p.output
			if len(out) > room {
				out = out[len(out)-room:]
			}
			for _, l := range out {
				b.WriteString(m.st.dim.Render(ansi.Truncate("  | "+l, w, "…")) + "\n")
			}
		}
	}
	return b.String()
}

// progressKeys is the footer of a progress screen.
func (p *progressScreen) keys(next string) string {
	out := "show output"
	if p.showOutput {
		out = "hide output"
	}
	switch {
	case p.running:
		return keyHelp("o", out, "ctrl+c", "stop (safe: re-run continues)")
	case p.err != nil:
		return keyHelp("r", "retry", "o", out, "esc", "back", "ctrl+c", "quit")
	}
	return keyHelp("enter", next, "o", out, "ctrl+c", "quit")
}
