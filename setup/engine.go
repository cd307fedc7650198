// Package setup turns a bare Proxmox VE node into a complete dc-agent
// configuration, and holds the key, delegation and registration steps the
// TUI wizard and `dc-agent setup proxmox --no-tui` share.
//
// Work is a Plan of idempotent Steps. Running a step emits Events (started,
// command, output line, done/skipped, failed with a fix) to a sink: the
// TUI renders them, --no-tui prints them as plain lines (Printer). Running
// a plan again is always safe: each step looks at the current state first
// and changes only what differs.
//
// The wizard, its accessible mode and `setup proxmox --no-tui` all run one
// Flow (flow.go), which owns the order (scan the host key, connect,
// discover, choose, the node plan, registration, service), the checks and
// what is already done, and asks its UI only the questions.
//
// A failed step's error carries a one-line fix (FixOf); re-running the
// plan is the retry.
package setup

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// EventKind says what happened.
type EventKind string

// Event kinds.
const (
	EventStarted EventKind = "started"
	EventCommand EventKind = "command" // a remote command is about to run (Text: the quoted command line)
	EventOutput  EventKind = "output"  // one line of output (Stream: stdout/stderr/note)
	EventDone    EventKind = "done"    // the step changed something (Text: summary)
	EventSkipped EventKind = "skipped" // nothing to do: already in the desired state (Text: why)
	EventWarning EventKind = "warning" // the step goes on, but someone should look (Text, Fix)
	EventFailed  EventKind = "failed"  // Text: the error, Fix: one-line fix
)

// Event is one progress report of a plan.
type Event struct {
	Kind EventKind `json:"kind"`
	// Phase is the part of the setup flow the plan is ("" outside a Flow).
	Phase   Phase         `json:"phase,omitempty"`
	Step    string        `json:"step"`
	Title   string        `json:"title"`
	Index   int           `json:"index"` // 1-based position of the step
	Total   int           `json:"total"`
	Text    string        `json:"text,omitempty"`
	Stream  string        `json:"stream,omitempty"`
	Fix     string        `json:"fix,omitempty"`
	Elapsed time.Duration `json:"elapsed,omitempty"`
	Time    time.Time     `json:"time"`
}

// Sink receives events. It is called from the goroutine running the plan,
// one event at a time; it must not block for long.
type Sink func(Event)

// ChanSink sends events to ch (for a TUI reading them in a tea.Cmd). It
// drops nothing: a full channel blocks the plan until the reader catches up.
func ChanSink(ch chan<- Event) Sink { return func(e Event) { ch <- e } }

// Step is one idempotent unit of work.
type Step struct {
	ID    string
	Title string
	// Run does the work, reporting through r. It returns nil when the
	// desired state holds afterwards; r.Skip marks "nothing was needed".
	Run func(ctx context.Context, r *Reporter) error
}

// Plan is an ordered list of steps.
type Plan struct {
	Steps []Step
	// Now is the clock for event times (nil: time.Now).
	Now func() time.Time
}

// Outcome is how a step ended.
type Outcome struct {
	Step    string
	Changed bool
	Skipped bool
	Summary string
	Err     error
	Elapsed time.Duration
}

// Result summarises a run.
type Result struct {
	Outcomes []Outcome
}

// Changed reports whether any step changed something.
func (r Result) Changed() bool {
	for _, o := range r.Outcomes {
		if o.Changed {
			return true
		}
	}
	return false
}

// StepError is the error of a failed plan: which step, why, and the fix.
type StepError struct {
	Step  string
	Title string
	Err   error
}

func (e *StepError) Error() string { return fmt.Sprintf("%s: %v", e.Title, e.Err) }
func (e *StepError) Unwrap() error { return e.Err }

// Run executes the steps in order and stops at the first failure, which it
// returns as a *StepError. A cancelled ctx stops the plan between steps and
// inside remote commands.
func (p *Plan) Run(ctx context.Context, sink Sink) (Result, error) {
	now := p.Now
	if now == nil {
		now = time.Now
	}
	if sink == nil {
		sink = func(Event) {}
	}
	var res Result
	for i, s := range p.Steps {
		r := &Reporter{step: s, index: i + 1, total: len(p.Steps), sink: sink, now: now}
		start := now()
		r.emit(Event{Kind: EventStarted})
		var err error
		if err = ctx.Err(); err == nil {
			err = s.Run(ctx, r)
		}
		el := now().Sub(start)
		o := Outcome{Step: s.ID, Elapsed: el, Summary: r.summary}
		if err != nil {
			o.Err = err
			res.Outcomes = append(res.Outcomes, o)
			r.emit(Event{Kind: EventFailed, Text: err.Error(), Fix: FixOf(err), Elapsed: el})
			return res, &StepError{Step: s.ID, Title: s.Title, Err: err}
		}
		if r.skipped && !r.changed {
			o.Skipped = true
			r.emit(Event{Kind: EventSkipped, Text: r.summary, Elapsed: el})
		} else {
			o.Changed = r.changed
			r.emit(Event{Kind: EventDone, Text: r.summary, Elapsed: el})
		}
		res.Outcomes = append(res.Outcomes, o)
	}
	return res, nil
}

// Reporter is a running step's voice: output lines, the commands it runs,
// and how it ended.
type Reporter struct {
	step         Step
	index, total int
	sink         Sink
	now          func() time.Time

	mu      sync.Mutex
	changed bool
	skipped bool
	summary string
	tail    []string
}

// tailLines is how much recent output a failure keeps for context.
const tailLines = 20

func (r *Reporter) emit(e Event) {
	e.Step, e.Title, e.Index, e.Total, e.Time = r.step.ID, r.step.Title, r.index, r.total, r.now()
	r.sink(e)
}

// Command announces a command line about to run.
func (r *Reporter) Command(line string) { r.emit(Event{Kind: EventCommand, Text: line}) }

// Output reports one line of output. stream is "stdout", "stderr" or "note".
func (r *Reporter) Output(stream, line string) {
	r.mu.Lock()
	r.tail = append(r.tail, line)
	if len(r.tail) > tailLines {
		r.tail = r.tail[len(r.tail)-tailLines:]
	}
	r.mu.Unlock()
	r.emit(Event{Kind: EventOutput, Stream: stream, Text: line})
}

// Notef reports a line of the step's own narration.
func (r *Reporter) Notef(format string, args ...any) { r.Output("note", fmt.Sprintf(format, args...)) }

// Warn reports something the provider should look at without failing.
func (r *Reporter) Warn(text, fix string) { r.emit(Event{Kind: EventWarning, Text: text, Fix: fix}) }

// Changed records that the step changed something, with a summary.
func (r *Reporter) Changed(format string, args ...any) {
	r.changed = true
	r.summary = fmt.Sprintf(format, args...)
}

// Summarize sets the step's one-line result without saying whether it
// changed anything (reads, like discovery).
func (r *Reporter) Summarize(format string, args ...any) {
	if !r.changed {
		r.summary = fmt.Sprintf(format, args...)
	}
}

// Skip records that nothing was needed, and why.
func (r *Reporter) Skip(format string, args ...any) {
	r.skipped = true
	if !r.changed {
		r.summary = fmt.Sprintf(format, args...)
	}
}

// Tail returns the last lines of output (for failure screens).
func (r *Reporter) Tail() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.tail...)
}

// fixError attaches a one-line fix to an error.
type fixError struct {
	err error
	fix string
}

func (e *fixError) Error() string { return e.err.Error() }
func (e *fixError) Unwrap() error { return e.err }

// WithFix attaches a one-line fix to err (nil stays nil).
func WithFix(err error, fix string) error {
	if err == nil {
		return nil
	}
	return &fixError{err: err, fix: fix}
}

// Fixf is WithFix(fmt.Errorf(...), fix).
func Fixf(fix, format string, args ...any) error {
	return &fixError{err: fmt.Errorf(format, args...), fix: fix}
}

// FixOf returns the outermost fix attached to err, or "".
func FixOf(err error) string {
	var fe *fixError
	if errors.As(err, &fe) {
		return fe.fix
	}
	return ""
}

// oneLine flattens a multi-line message for a single event line.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}
