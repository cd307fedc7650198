package agent

import (
	"context"
	"errors"
	"fmt"
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
)

var loopOrder = []string{loopContracts, loopHeartbeat, loopHealth, loopReconcile, loopOutbox}

// retrier is what every loop does after a round: on success reset the
// backoff and say so; on failure stop for a human (auth) or wait out a
// jittered, growing backoff, in the observer and in the loop's liveness.
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

// failed records a round that failed with err. An auth refusal stops the
// loop: failed returns it (an *authStop) for the loop to return. Anything
// else waits out the backoff (the server's Retry-After honoured up to its
// cap), cut short by wake (nil: never); failed returns ctx's error if ctx
// ends meanwhile (the loop returns it too), else nil (try again).
func (r *retrier) failed(ctx context.Context, err error, wake <-chan struct{}) error {
	if dcapi.IsAuth(err) {
		return newAuthStop(err)
	}
	return r.a.wait(ctx, r.backoff(err), wake)
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
// refused the agent's key or delegation.
type authStop struct {
	msg, fix string
}

func (e *authStop) Error() string { return e.msg }

func newAuthStop(err error) *authStop {
	return &authStop{msg: err.Error(), fix: dcapi.AuthHint(err)}
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
			a.obs.loopStopped(name, as.msg, as.fix+"; then reload the agent: systemctl reload dc-agent")
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
