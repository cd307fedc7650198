package wizard

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"

	"github.com/decent-stuff/dc-agent/internal/termtext"
	"github.com/decent-stuff/dc-agent/setup"
)

// A plan runs in the flow's goroutine; its events come one message at a
// time (startedMsg, eventMsg, then the flow's endedQ asking what next), so
// nothing is dropped and the plan waits when the screen falls behind.

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

// progressKind is what a plan screen says and does after its plan.
type progressKind struct {
	// note is said under a plan that succeeded.
	note func(p *progressScreen) string
	// next is what enter does then.
	next string
	// back: esc after a failure goes back to the question before.
	back bool
}

var (
	nodeDone = &progressKind{next: "continue", back: true, note: func(p *progressScreen) string {
		next := "Next: the agent's delegation."
		if p.env.method == setup.MethodSetupToken {
			next = "The agent is registered. Next: install and start the dc-agent service."
		}
		what := "node is ready"
		if name, ok := setup.CloudNames[p.env.backend]; ok {
			what = name + " backend is ready"
		}
		return fmt.Sprintf("\n%s The %s and the config is written to %s.\n%s\n",
			st.ok.Render(markOK), what, p.env.o.Flow.Answers.ConfigPath, next)
	}}
	registerDone = &progressKind{next: "install the service", back: true, note: func(p *progressScreen) string {
		return fmt.Sprintf("\n%s The API at %s accepts this agent for your provider.\nNext: install and start the dc-agent service.\n",
			st.ok.Render(markOK), p.ans.APIEndpoint)
	}}
	gatewayDone = &progressKind{next: "install the service", back: true, note: func(p *progressScreen) string {
		return fmt.Sprintf("\n%s The gateway is set up on the node and [gateway] is in %s.\nNext: install and start the dc-agent service.\n",
			st.ok.Render(markOK), p.env.o.Flow.Answers.ConfigPath)
	}}
	serviceDone = &progressKind{next: "finish", note: func(p *progressScreen) string {
		s := fmt.Sprintf("\n%s %s\n", st.ok.Render(markOK), p.rows[0].text)
		if svc := p.env.o.Flow.Service; svc != nil && svc.Root != "" {
			s += "The files are written under " + svc.Root + "; systemctl was not run.\n"
		}
		return s
	}}
)

// progressScreen shows a running plan: a spinner on the current step,
// elapsed times, output on demand, and on failure the error with its fix.
type progressScreen struct {
	env        *env
	ans        setup.ProxmoxAnswers // the plan runs with
	kind       *progressKind        // nil: a part of another screen
	title      string
	gen        int
	rows       []stepRow
	output     []string
	showOutput bool
	running    bool
	stopping   bool
	done       bool
	err        error
	failed     int // index of the failed row, -1 none
	started    time.Time
	ended      time.Time
}

const maxOutput = 200

func newProgressScreen(e *env, title string, kind *progressKind) *progressScreen {
	return &progressScreen{env: e, title: title, kind: kind, failed: -1}
}

func (p *progressScreen) focus() tea.Cmd { return nil }

// reset shows steps as pending, running.
func (p *progressScreen) reset(steps []setup.Step) {
	rows := make([]stepRow, len(steps))
	for i, s := range steps {
		rows[i] = stepRow{title: clean(s.Title)}
	}
	*p = progressScreen{env: p.env, kind: p.kind, title: p.title, gen: p.gen + 1, rows: rows, showOutput: p.showOutput,
		running: true, stopping: p.stopping, failed: -1, started: p.env.now()}
}

func tick(gen int) tea.Cmd {
	return tea.Tick(100*time.Millisecond, func(time.Time) tea.Msg { return tickMsg{gen: gen} })
}

// update applies the plan's messages and, once it ended, the keys that
// answer the flow: retry, back, go on.
func (p *progressScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case startedMsg:
		p.reset(msg.steps)
		p.ans = msg.ans
		return tick(p.gen)
	case eventMsg:
		p.apply(msg.ev)
	case endedQ:
		p.running = false
		p.ended = p.env.now()
		p.err = msg.err
		p.done = msg.err == nil
	case tickMsg:
		if msg.gen == p.gen && p.running {
			return tick(p.gen)
		}
	case stoppingMsg:
		p.stopping = true
	case tea.KeyMsg:
		k := msg.String()
		switch {
		case k == "o":
			p.showOutput = !p.showOutput
		case p.running || p.kind == nil:
		case k == "r" && p.err != nil:
			return answer(true, nil)
		case k == "esc" && p.err != nil && p.kind.back:
			return answer(false, setup.ErrBack)
		case k == "enter" && p.done:
			return answer(false, nil)
		}
	}
	return nil
}

func (p *progressScreen) view(w, h int) (string, string) {
	body := p.plan(w, h)
	if p.done && p.kind != nil {
		body += p.kind.note(p)
	}
	next := ""
	if p.kind != nil {
		next = p.kind.next
	}
	return body, p.keys(next)
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
// driving the terminal.
func clean(s string) string { return termtext.Clean(s) }

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

// plan renders the step list, and output or the failure below it, in
// width w and at most h lines.
func (p *progressScreen) plan(w, h int) string {
	now := p.env.now()
	var b strings.Builder
	el := now.Sub(p.started)
	if !p.running && !p.ended.IsZero() {
		el = p.ended.Sub(p.started)
	}
	state := "running"
	switch {
	case p.done:
		state = st.ok.Render("done")
	case p.err != nil && p.stopping:
		state = st.warn.Render("stopped")
	case p.err != nil:
		state = st.bad.Render("failed")
	case p.stopping:
		state = st.warn.Render("stopping…")
	}
	fmt.Fprintf(&b, "%s · %s · elapsed %s\n", p.env.title(p.title), state, fmtDur(el))
	titleW := 0
	for _, r := range p.rows {
		titleW = max(titleW, ansi.StringWidth(r.title))
	}
	titleW = min(titleW, 30)
	for _, r := range p.rows {
		mark, text, dur := st.dim.Render(markTodo), "", ""
		switch r.status {
		case setup.EventStarted:
			mark = spin(now)
			if p.running {
				dur = fmtDur(now.Sub(r.start))
			}
			text = "…"
		case setup.EventDone:
			mark, text, dur = st.ok.Render(markOK), r.text, fmtDur(r.elapsed)
		case setup.EventSkipped:
			mark, text, dur = st.dim.Render(markSkip), "unchanged: "+r.text, fmtDur(r.elapsed)
		case setup.EventFailed:
			mark, text, dur = st.bad.Render(markBad), "failed", fmtDur(r.elapsed)
		}
		if len(r.warns) > 0 && r.status != setup.EventFailed {
			mark = st.warn.Render(markWarn)
		}
		title := ansi.Truncate(r.title, titleW, "…")
		line := fmt.Sprintf("%s %-*s %s", mark, titleW, title, text)
		room := w - 1 - ansi.StringWidth(dur)
		line = ansi.Truncate(line, room, "…")
		pad := room - ansi.StringWidth(line)
		b.WriteString(line + strings.Repeat(" ", max(pad, 0)+1) + st.dim.Render(dur) + "\n")
	}
	used := len(p.rows) + 1
	if p.failed >= 0 && p.err != nil {
		r := p.rows[p.failed]
		b.WriteString("\n" + st.bad.Render(markBad+" "+r.title+" failed: ") + r.text + "\n")
		if r.fix != "" {
			b.WriteString(st.key.Render("Fix: ") + r.fix + "\n")
		}
		used += 4
	} else if p.err != nil {
		b.WriteString("\n" + st.bad.Render(markBad+" ") + p.err.Error() + "\n")
		used += 2
	}
	for _, r := range p.rows {
		for _, wn := range r.warns {
			b.WriteString(st.warn.Render(markWarn+" warning: ") + wn + "\n")
			used++
		}
	}
	if p.showOutput || (p.err != nil && !p.stopping && len(p.output) > 0) {
		room := h - used - 2
		if room > 0 {
			b.WriteString(st.dim.Render("output (last lines):") + "\n")
			out := p.output
			if len(out) > room {
				out = out[len(out)-room:]
			}
			for _, l := range out {
				b.WriteString(st.dim.Render(ansi.Truncate("  | "+l, w, "…")) + "\n")
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
