package agent

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"
)

// hangOnSIGUSR2 is a test-only trigger (dc-agent run --debug-hang-on-sigusr2,
// hidden): after SIGUSR2 every loop that goes to sleep never wakes up again,
// ignoring its context, the way a deadlocked loop would. The loops then miss
// their liveness deadlines, systemdLoop withholds WATCHDOG=1, and systemd
// restarts the agent. Without the flag SIGUSR2 is not even listened for, so
// production agents cannot be hung this way.
func hangOnSIGUSR2(log func(msg string)) (Sleeper, func()) {
	var hung atomic.Bool
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGUSR2)
	done := make(chan struct{})
	go func() {
		select {
		case <-sig:
			hung.Store(true)
			log("SIGUSR2 (--debug-hang-on-sigusr2): every loop now hangs at its next sleep")
		case <-done:
		}
	}()
	sleep := func(ctx context.Context, d time.Duration) error {
		if hung.Load() {
			select {} // the hang: nothing wakes it
		}
		return realSleep(ctx, d)
	}
	return sleep, func() { signal.Stop(sig); close(done) }
}
