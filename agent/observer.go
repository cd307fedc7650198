package agent

import (
	"context"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
)

// eventHistory is how many recent events the socket replays to a new reader.
const eventHistory = 256

// observer collects what the status socket, STATUS= and metrics show: loop
// states, counters, timestamps, problems and the event stream. It logs
// every event too, so the journal and the socket tell the same story.
type observer struct {
	log *slog.Logger
	now func() time.Time

	mu            sync.Mutex
	loops         map[string]*status.Loop
	counts        status.Counts
	lastHeartbeat time.Time
	lastPoll      time.Time
	longPoll      bool
	lastHealth    time.Time
	lastReconcile time.Time
	problems      map[string]status.Problem // by loop ("" for agent-wide)
	pool          status.Pool
	upgrade       *status.Upgrade
	seq           uint64
	history       []status.Event
	subs          map[chan status.Event]struct{}
	changed       chan struct{} // closed and replaced on every change (STATUS= refresh)
}

func newObserver(log *slog.Logger, now func() time.Time) *observer {
	o := &observer{log: log, now: now, loops: map[string]*status.Loop{}, problems: map[string]status.Problem{},
		subs: map[chan status.Event]struct{}{}, changed: make(chan struct{})}
	for _, n := range loopOrder {
		o.loops[n] = &status.Loop{Name: n, State: status.LoopRunning}
	}
	return o
}

// emit records an event and logs it. attrs go to the log only.
func (o *observer) emit(kind, level, loop, cid, msg string, attrs ...any) {
	lvl := slog.LevelInfo
	switch level {
	case status.LevelWarn:
		lvl = slog.LevelWarn
	case status.LevelError:
		lvl = slog.LevelError
	}
	if cid != "" {
		attrs = append(attrs, "contract", cid)
	}
	if loop != "" {
		attrs = append(attrs, "loop", loop)
	}
	o.log.Log(context.Background(), lvl, msg, attrs...)

	o.mu.Lock()
	defer o.mu.Unlock()
	o.seq++
	ev := status.Event{Seq: o.seq, Time: o.now(), Kind: kind, Level: level, Loop: loop, ContractID: cid, Message: msg}
	o.history = append(o.history, ev)
	if len(o.history) > eventHistory {
		o.history = append(o.history[:0], o.history[len(o.history)-eventHistory:]...)
	}
	for ch := range o.subs {
		select {
		case ch <- ev:
		default:
			// A reader that cannot keep up is cut off; it reconnects with ?since.
			delete(o.subs, ch)
			close(ch)
		}
	}
	o.touchLocked()
}

func (o *observer) touchLocked() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// Changed returns a channel closed at the next change.
func (o *observer) Changed() <-chan struct{} {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.changed
}

// subscribe returns the history after since and a channel of new events.
func (o *observer) subscribe(since uint64) ([]status.Event, chan status.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var past []status.Event
	for _, ev := range o.history {
		if ev.Seq > since {
			past = append(past, ev)
		}
	}
	ch := make(chan status.Event, 512)
	o.subs[ch] = struct{}{}
	return past, ch
}

func (o *observer) unsubscribe(ch chan status.Event) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.subs[ch]; ok {
		delete(o.subs, ch)
		close(ch)
	}
}

// closeSubscribers ends every event stream (shutdown).
func (o *observer) closeSubscribers() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for ch := range o.subs {
		delete(o.subs, ch)
		close(ch)
	}
}

// loopOK records a successful round of a loop.
func (o *observer) loopOK(name string) {
	o.mu.Lock()
	l := o.loops[name]
	recovered := l.State == status.LoopBackoff
	now := o.now()
	l.State, l.LastSuccess, l.NextAttempt, l.Failures = status.LoopRunning, &now, nil, 0
	if recovered {
		l.LastError = ""
	}
	delete(o.problems, name)
	o.touchLocked()
	o.mu.Unlock()
	if recovered {
		o.emit(status.EventLoopRecovered, status.LevelInfo, name, "", name+" loop recovered")
	}
}

// loopBackoff records a failed round that will be retried after wait.
func (o *observer) loopBackoff(name string, err error, wait time.Duration, failures int) {
	o.mu.Lock()
	l := o.loops[name]
	next := o.now().Add(wait)
	l.State, l.LastError, l.NextAttempt, l.Failures = status.LoopBackoff, err.Error(), &next, failures
	o.touchLocked()
	o.mu.Unlock()
	// The first failures are worth a line each; after that one in ten.
	if failures <= 3 || failures%10 == 0 {
		o.emit(status.EventLoopBackoff, status.LevelWarn, name, "", name+" failed, retrying", "err", err, "retry_in", wait.Round(time.Millisecond), "failures", failures)
	}
}

// loopStopped records a loop that waits for a human (auth problems).
func (o *observer) loopStopped(name, msg, fix string) {
	o.mu.Lock()
	l := o.loops[name]
	l.State, l.LastError, l.NextAttempt = status.LoopStopped, msg, nil
	o.problems[name] = status.Problem{Loop: name, Message: msg, Fix: fix, Since: o.now()}
	o.touchLocked()
	o.mu.Unlock()
	o.emit(status.EventLoopStopped, status.LevelError, name, "", name+" stopped: "+msg+"; fix: "+fix)
}

// loopResumed clears a stopped loop (after a reload).
func (o *observer) loopResumed(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	l := o.loops[name]
	if l.State == status.LoopStopped {
		l.State, l.LastError = status.LoopRunning, ""
	}
	delete(o.problems, name)
	o.touchLocked()
}

func (o *observer) setProblem(key, msg, fix string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if p, ok := o.problems[key]; ok && p.Message == msg {
		return
	}
	o.problems[key] = status.Problem{Message: msg, Fix: fix, Since: o.now()}
	o.touchLocked()
}

// hasProblem reports whether the problem key is set with msg.
func (o *observer) hasProblem(key, msg string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	p, ok := o.problems[key]
	return ok && p.Message == msg
}

func (o *observer) clearProblem(key string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.problems[key]; ok {
		delete(o.problems, key)
		o.touchLocked()
	}
}

func (o *observer) update(f func(o *observer)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f(o)
	o.touchLocked()
}

// snapshot fills the observer's part of a State.
func (o *observer) snapshot(st *status.State, onlineWindow time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	tp := func(t time.Time) *time.Time {
		if t.IsZero() {
			return nil
		}
		return &t
	}
	st.LastHeartbeat, st.LastPoll, st.LastHealthCheck, st.LastReconcile = tp(o.lastHeartbeat), tp(o.lastPoll), tp(o.lastHealth), tp(o.lastReconcile)
	st.Online = !o.lastHeartbeat.IsZero() && now.Sub(o.lastHeartbeat) < onlineWindow
	st.LongPoll = o.longPoll
	st.Counts = o.counts
	if o.pool.ID != "" {
		p := o.pool
		st.Pool = &p
	}
	if o.upgrade != nil {
		u := *o.upgrade
		st.Upgrade = &u
	}
	for _, n := range loopOrder {
		st.Loops = append(st.Loops, *o.loops[n])
	}
	for _, k := range append([]string{""}, loopOrder...) {
		if p, ok := o.problems[k]; ok {
			st.Problems = append(st.Problems, p)
		}
	}
	var other []string
	for k := range o.problems {
		if k != "" && o.loops[k] == nil {
			other = append(other, k)
		}
	}
	sort.Strings(other)
	for _, k := range other {
		st.Problems = append(st.Problems, o.problems[k])
	}
}
