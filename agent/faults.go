package agent

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The test suite's ways to break a running agent on purpose. Only the
// dc-agent binary built with -tags testhooks (cmd/dc-agent/testhooks.go)
// uses them; a production binary has no flag that reaches them, and the
// linker leaves them out.

// ParseCrashAt turns "point" or "point:N" into Faults.Crash: it SIGKILLs
// this process (a real kill: no deferred cleanup runs) the N-th time the
// provision passes the named crash point.
func ParseCrashAt(spec string) (func(string), error) {
	if spec == "" {
		return nil, nil
	}
	point, nth := spec, 1
	if p, n, ok := strings.Cut(spec, ":"); ok {
		v, err := strconv.Atoi(n)
		if err != nil || v < 1 {
			return nil, fmt.Errorf("crash point %q: the count after ':' must be a positive number", spec)
		}
		point, nth = p, v
	}
	if all := slices.Concat(CrashPoints, TenantCrashPoints, GatewayCrashPoints); !slices.Contains(all, point) {
		return nil, fmt.Errorf("crash point %q is not one of %s", point, strings.Join(all, ", "))
	}
	var seen atomic.Int64
	return func(p string) {
		if p == point && seen.Add(1) == int64(nth) {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}, nil
}

// HangClock is a Clock that can be hung: once Hang is called, every wait
// never ends by itself (only a wake-up or the end of its context ends it),
// the way deadlocked loops stop keeping their own deadlines. The loops then
// miss their liveness deadlines, the watchdog is withheld and systemd
// restarts the agent (the test binary hangs it on SIGUSR2).
type HangClock struct {
	Clock
	hung atomic.Bool
}

// Hang makes every later wait endless.
func (c *HangClock) Hang() { c.hung.Store(true) }

// After is the wrapped clock's, or a channel that never receives once hung.
func (c *HangClock) After(d time.Duration) <-chan time.Time {
	if c.hung.Load() {
		return nil
	}
	return c.Clock.After(d)
}
