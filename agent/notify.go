package agent

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) messages. SystemdNotifier is the real one;
// a nil Notifier in Options means "not under systemd".
type Notifier interface {
	Notify(state string) error
	// WatchdogInterval is the unit's WatchdogSec (0: no watchdog).
	WatchdogInterval() time.Duration
}

// SystemdNotifier talks to $NOTIFY_SOCKET through go-systemd.
type SystemdNotifier struct{}

// Notify sends state; without $NOTIFY_SOCKET it does nothing.
func (SystemdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// WatchdogInterval reads $WATCHDOG_USEC (checking $WATCHDOG_PID).
func (SystemdNotifier) WatchdogInterval() time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		return 0
	}
	return d
}

// liveness tracks whether each loop is doing what it said it would: before
// a blocking step a loop declares how long it may take (expect); a loop
// past its own deadline is stuck. The systemd watchdog is fed only while no
// loop is stuck, so systemd restarts a wedged agent, while an API outage
// (loops sleeping in backoff, on schedule) never triggers a restart.
type liveness struct {
	mu        sync.Mutex
	now       func() time.Time
	slack     time.Duration
	deadlines map[string]time.Time
}

func newLiveness(now func() time.Time, slack time.Duration) *liveness {
	return &liveness{now: now, slack: slack, deadlines: map[string]time.Time{}}
}

// expect says name will check in again within d.
func (l *liveness) expect(name string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deadlines[name] = l.now().Add(d + l.slack)
}

// idle says name is legitimately waiting without a deadline (for work, or
// for a human to fix a delegation).
func (l *liveness) idle(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.deadlines, name)
}

// stuck lists loops past their deadline, sorted.
func (l *liveness) stuck() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var out []string
	for n, d := range l.deadlines {
		if now.After(d) {
			out = append(out, fmt.Sprintf("%s (%s overdue)", n, now.Sub(d).Round(time.Second)))
		}
	}
	sort.Strings(out)
	return out
}

// statusLine renders the one-line summary for STATUS= and `dc-agent status`:
// "online · 3 active · 1 provisioning · last poll 2 s ago".
func statusLine(phase string, online bool, offlineWhy string, active, queued, provisioning, outbox int, lastPoll time.Time, now time.Time, problem string) string {
	var parts []string
	switch {
	case phase == "stopping":
		parts = append(parts, "stopping")
	case problem != "":
		parts = append(parts, "STOPPED: "+problem)
	case phase == "starting":
		parts = append(parts, "starting")
	case online:
		parts = append(parts, "online")
	case offlineWhy != "":
		parts = append(parts, "offline ("+offlineWhy+")")
	default:
		parts = append(parts, "connecting")
	}
	parts = append(parts, fmt.Sprintf("%d active", active))
	if provisioning > 0 || queued == 0 {
		parts = append(parts, fmt.Sprintf("%d provisioning", provisioning))
	}
	if queued > 0 {
		parts = append(parts, fmt.Sprintf("%d queued", queued))
	}
	if outbox > 0 {
		parts = append(parts, fmt.Sprintf("%d reports pending", outbox))
	}
	if lastPoll.IsZero() {
		parts = append(parts, "not polled yet")
	} else {
		parts = append(parts, "last poll "+ago(now.Sub(lastPoll)))
	}
	return strings.Join(parts, " · ")
}

// ago renders a duration the way people read it in `systemctl status`.
func ago(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	default:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	}
}
