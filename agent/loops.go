package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// Loop names.
const (
	loopContracts = "contracts"
	loopHeartbeat = "heartbeat"
	loopHealth    = "health"
	loopReconcile = "reconcile"
	loopOutbox    = "outbox"
	loopTenant    = "tenant"
)

var loopOrder = []string{loopContracts, loopHeartbeat, loopHealth, loopReconcile, loopOutbox, loopTenant}

// untilWoken is the wait of a round that has nothing to do until its wake
// channel fires: no deadline (the loop is idle, not late).
const untilWoken time.Duration = math.MinInt64

// repeat runs a loop: round after round until ctx ends or the API refuses
// the agent (auth: repeat returns the *authStop, runLoop holds the loop
// until a reload). After a round that worked it waits what the round
// asked for (untilWoken: no deadline; a wait ≤ 0: none); after a failed
// one, the jittered, growing backoff (the server's Retry-After honoured up
// to its cap). wake (nil: never) cuts either wait short. The loop's state,
// its liveness deadline and the backoff are kept here, for every loop
// alike.
func (a *Agent) repeat(ctx context.Context, name string, round func(context.Context) (wait time.Duration, wake <-chan struct{}, err error)) error {
	r := a.newRetrier(name)
	for {
		wait, wake, err := round(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil && dcapi.IsAuth(err):
			return newAuthStop(err)
		case err != nil:
			wait = r.backoff(err)
		default:
			r.ok()
		}
		if wait == untilWoken {
			a.live.idle(name)
			select {
			case <-ctx.Done():
				return nil
			case <-wake:
			}
			continue
		}
		wait = max(wait, 0)
		a.live.expect(name, wait)
		if a.wait(ctx, wait, wake) != nil {
			return nil
		}
	}
}

// retrier is one loop's backoff and its state in the observer.
type retrier struct {
	a    *Agent
	name string
	bo   *Backoff
}

func (a *Agent) newRetrier(name string) *retrier {
	return &retrier{a: a, name: name, bo: a.newBackoff()}
}

func (a *Agent) newBackoff() *Backoff {
	t := a.timing()
	return &Backoff{Base: t.BackoffBase, Max: t.BackoffMax, Rand: a.rand}
}

// ok records a round that worked.
func (r *retrier) ok() {
	r.bo.Reset()
	r.a.obs.loopOK(r.name)
}

// backoff records a failed round and returns how long to wait before the
// next: the jittered backoff, raised to the server's Retry-After (up to
// the cap).
func (r *retrier) backoff(err error) time.Duration {
	wait := r.bo.Next(retryAfter(err))
	r.a.obs.loopBackoff(r.name, err, wait, r.bo.Failures())
	r.a.live.expect(r.name, wait)
	return wait
}

// authStop is returned by a loop that must wait for a human: the API
// refused the agent's key or delegation (err, a dcapi auth error).
type authStop struct {
	err error
	fix string
}

func (e *authStop) Error() string { return e.err.Error() }
func (e *authStop) Unwrap() error { return e.err }

func newAuthStop(err error) *authStop {
	return &authStop{err: err, fix: dcapi.AuthHint(err)}
}

// runLoop runs fn until ctx ends: after an auth refusal it holds the loop
// stopped until a reload; after any other error (a bug: loops handle API
// errors themselves) it restarts it after a backoff, loudly. It returns
// nil when the loop ended with ctx, or the error the loop was stopped by
// (or backing off from) when ctx ended: Run joins them.
func (a *Agent) runLoop(ctx context.Context, name string, fn func(context.Context) error) error {
	r := a.newRetrier(name)
	for {
		err := fn(ctx)
		if ctx.Err() != nil {
			a.live.idle(name)
			return nil
		}
		var as *authStop
		switch {
		case errors.As(err, &as):
			a.live.idle(name)
			a.obs.loopStopped(name, as.Error(), as.fix+"; then reload the agent: systemctl reload dc-agent")
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s loop stopped: %w (%s)", name, err, as.fix)
			case <-a.resumeChan():
				a.obs.loopResumed(name)
			}
		case err != nil:
			if a.wait(ctx, r.backoff(err), nil) != nil {
				return fmt.Errorf("%s loop failed: %w", name, err)
			}
		default:
			return nil
		}
	}
}
