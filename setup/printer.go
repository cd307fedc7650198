package setup

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Printer renders events as plain lines for --no-tui: one line when a step
// starts and one when it ends; with verbose also every command and output
// line. A failure prints the step's recent output and the fix.
type Printer struct {
	w       io.Writer
	verbose bool

	mu   sync.Mutex
	tail map[string][]string
}

// NewPrinter returns a printer writing to w.
func NewPrinter(w io.Writer, verbose bool) *Printer {
	return &Printer{w: w, verbose: verbose, tail: map[string][]string{}}
}

// Sink is the printer as an event sink.
func (p *Printer) Sink() Sink { return p.Print }

// Print renders one event.
func (p *Printer) Print(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pos := fmt.Sprintf("[%d/%d]", e.Index, e.Total)
	switch e.Kind {
	case EventStarted:
		fmt.Fprintf(p.w, "%s %s ...\n", pos, e.Title)
	case EventCommand:
		if p.verbose {
			fmt.Fprintf(p.w, "    $ %s\n", e.Text)
		}
	case EventOutput:
		if p.verbose {
			fmt.Fprintf(p.w, "    | %s\n", e.Text)
		} else {
			t := append(p.tail[e.Step], e.Text)
			if len(t) > tailLines {
				t = t[len(t)-tailLines:]
			}
			p.tail[e.Step] = t
		}
	case EventWarning:
		fmt.Fprintf(p.w, "    warning: %s\n", e.Text)
		if e.Fix != "" {
			fmt.Fprintf(p.w, "    fix: %s\n", e.Fix)
		}
	case EventDone:
		fmt.Fprintf(p.w, "%s %s: %s (%s)\n", pos, e.Title, cmp.Or(strings.TrimSpace(e.Text), "done"), roundDur(e.Elapsed))
		delete(p.tail, e.Step)
	case EventSkipped:
		fmt.Fprintf(p.w, "%s %s: unchanged, %s\n", pos, e.Title, cmp.Or(strings.TrimSpace(e.Text), "already done"))
		delete(p.tail, e.Step)
	case EventFailed:
		fmt.Fprintf(p.w, "%s %s: FAILED: %s\n", pos, e.Title, e.Text)
		if t := p.tail[e.Step]; len(t) > 0 {
			fmt.Fprintf(p.w, "    last output:\n")
			for _, l := range t {
				fmt.Fprintf(p.w, "    | %s\n", l)
			}
		}
		if e.Fix != "" {
			fmt.Fprintf(p.w, "    fix: %s\n", e.Fix)
		}
		delete(p.tail, e.Step)
	}
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(100 * time.Millisecond)
	default:
		return d.Round(time.Millisecond)
	}
}
