package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// A lease is the agent's ownership of one contract: created when a worker
// claims the contract (or the agent resumes it from disk), closed exactly
// once when the work ends: when the API accepted the report, or refused it
// for good, or the work stopped without one. While it is open it holds the
// contract's API lock and renews it from the lock's own expiry, through the
// backend call and for as long as the report waits in the outbox, so an
// API outage that delays the report never lets the lock lapse under a
// living agent (another agent of the provider would then start the same
// contract). Closing it stops the renewal, releases the lock or lets it
// lapse, and sets the contract's cool-down from the outcome.
//
// A lease's contract is busy: the contracts loop does not start it again
// and reconcile does not touch its instances.
//
// What the lease leaves room for: a start the live server refuses because
// it was accepted before (crash resume) and local retries of a transient
// backend failure happen inside one lease (attempt counts them, the report
// Result says how it ended); adopting a half-made instance after another
// agent's lock lapsed starts from lockLost/lockNone at claim; pausing a
// provisioned contract concerns contracts that have no lease any more.
type lease struct {
	a       *Agent
	cid     string
	c       dcapi.PendingContract
	typ     string
	resumed bool
	attempt int       // previous attempts (from the journal)
	since   time.Time // the first attempt's start (from the journal; zero: now)
	pwMode  string    // the password's way out decided before a restart (from the journal)

	mu       sync.Mutex
	step     string
	detail   string
	started  time.Time
	updated  time.Time
	lock     lockState
	expires  time.Time               // the held lock's expiry, as the server set it
	stop     context.CancelFunc      // ends the renewal
	abandonW context.CancelCauseFunc // ends the provision when the lock is gone (workCtx)
	renewing chan struct{}           // closed when the renewal has ended
	closed   bool
}

// lockState is where a lease stands with its contract's API lock.
type lockState int

const (
	lockNone        lockState = iota // not taken (yet)
	lockHeld                         // held; renewed until the lease closes
	lockUnsupported                  // the server has no locks (404): nothing to renew or release
	lockLost                         // another agent took it (ours had lapsed)
	lockEnded                        // the server no longer locks the contract: it moved on (reported, cancelled)
)

// outcome is how work on a contract ended; it sets the contract's cool-down.
type outcome int

const (
	outcomeDone    outcome = iota // reported (provisioned or failed for good)
	outcomeRetry                  // failed, may succeed later
	outcomeBusy                   // another agent holds the lock
	outcomeRefused                // the API refused to start it (cancelled, not ours)
	outcomeStopped                // the agent is stopping or waits for a human
)

// What a closing lease does with a held lock.
const (
	release = true  // give it back: the work on the contract is over
	lapse   = false // stop renewing and let it expire, so the contract is offered again then
)

// claim opens a lease on a contract; false if the agent already holds one.
func (a *Agent) claim(c dcapi.PendingContract, typ, step string, resumed bool, attempt int) (*lease, bool) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	if _, busy := a.leases[c.ContractID]; busy {
		return nil, false
	}
	now := a.now()
	l := &lease{a: a, cid: c.ContractID, c: c, typ: typ, resumed: resumed, attempt: attempt, step: step, started: now, updated: now}
	a.leases[c.ContractID] = l
	return l, true
}

// leaseOf returns the open lease on cid, or nil.
func (a *Agent) leaseOf(cid string) *lease {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	return a.leases[cid]
}

func (l *lease) set(step, detail string) {
	now := l.a.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.step, l.detail, l.updated = step, detail, now
}

func (l *lease) snapshot() status.Work {
	l.mu.Lock()
	defer l.mu.Unlock()
	return status.Work{ContractID: l.cid, Provisioner: l.typ, Step: l.step, Detail: l.detail, StartedAt: l.started, UpdatedAt: l.updated, Resumed: l.resumed}
}

// acquire takes the contract's lock (retrying transient API errors until
// ctx ends) and, once held, renews it until the lease closes or renewCtx
// ends. held is false when another agent holds it; a server without locks
// (404) counts as held.
func (l *lease) acquire(ctx, renewCtx context.Context, e *env) (held bool, err error) {
	var res dcapi.LockResult
	err = l.a.callAPI(ctx, "lock", l.cid, func(ctx context.Context) error {
		var err error
		res, err = e.client.LockContract(ctx, l.cid)
		return err
	})
	switch {
	case dcapi.IsNotFound(err):
		l.setLock(lockUnsupported, time.Time{})
		return true, nil
	case err != nil:
		return false, err
	case !res.Acquired:
		return false, nil
	}
	l.a.obs.clearProblem(problemProvision)
	l.hold(renewCtx, time.Unix(0, res.ExpiresAtNs))
	return true, nil
}

// hold marks the lock held until expires (zero: unknown, renew at once)
// and starts renewing it.
func (l *lease) hold(ctx context.Context, expires time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || l.stop != nil {
		return
	}
	l.lock, l.expires = lockHeld, expires
	ctx, l.stop = context.WithCancel(ctx)
	l.renewing = make(chan struct{})
	l.a.renewals.Add(1)
	go func() {
		defer l.a.renewals.Done()
		defer close(l.renewing)
		l.renew(ctx, expires)
	}()
}

func (l *lease) setLock(s lockState, expires time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lock, l.expires = s, expires
}

func (l *lease) lockStatus() lockState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lock
}

// workCtx is the context of the lease's provision, derived from parent:
// the renewal cancels it, with provisioners.ErrAbandoned as the cause,
// once the lock is gone (abandon). stop releases it.
func (l *lease) workCtx(parent context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	l.mu.Lock()
	l.abandonW = cancel
	l.mu.Unlock()
	return ctx, func() { cancel(nil) }
}

// abandon stops the lease's provision (if one runs) because the lock is
// gone: another agent may be finishing the contract with what this one
// made, so this one stops touching it and removes nothing.
func (l *lease) abandon(why string) {
	l.mu.Lock()
	cancel := l.abandonW
	l.mu.Unlock()
	if cancel != nil {
		cancel(fmt.Errorf("%w: %s", provisioners.ErrAbandoned, why))
	}
}

// lapseMargin is how long before a lock that cannot be renewed runs out
// the agent stops working on the contract: a sixth of the lock's life, so
// the provision has stopped before another agent can take the lock.
func lapseMargin(life time.Duration) time.Duration { return life / 6 }

// renew keeps the lock: each renewal is due at a third of the lock's
// remaining life (at most Timing.LockRenew, which also bounds the harm of
// an agent clock behind the server's), so two more attempts fit before it
// runs out even when one fails. A failed renewal is retried with backoff,
// sooner than that if the lock would run out first. Renewing ends when the
// lease closes, when another agent holds the lock (ours lapsed: it is not
// taken back), or when the server refuses to lock the contract any more
// (its report was accepted, or it was cancelled).
//
// The provision stops (abandon) when another agent holds the lock, and
// when renewals keep failing until the lock is within lapseMargin of
// running out (the API is unreachable): after that, another agent may
// take the contract at any moment. A report already queued stays queued
// and renewal goes on: the API refuses it if another agent took over.
func (l *lease) renew(ctx context.Context, expires time.Time) {
	a := l.a
	bo := a.newBackoff()
	failed, abandoned := false, false
	margin := lapseMargin(expires.Sub(a.now()))
	for {
		t := a.timing()
		wait := min(expires.Sub(a.now())/3, t.LockRenew)
		if failed {
			if next := bo.Next(0); wait <= 0 || next < wait {
				wait = next
			}
			if stopAt := expires.Add(-margin).Sub(a.now()); !expires.IsZero() && !abandoned && stopAt < wait {
				wait = stopAt
			}
		}
		if a.wait(ctx, max(wait, t.BackoffBase/4), nil) != nil {
			return
		}
		if failed && !abandoned && !expires.IsZero() && !a.now().Before(expires.Add(-margin)) {
			abandoned = true
			if l.snapshot().Step != status.StepReporting {
				a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, "the contract's lock runs out and the API cannot be reached to renew it; stopping work on the contract so that another agent can take it over")
			}
			l.abandon("the lock ran out while the API was unreachable")
		}
		e := a.acquireEnv()
		res, err := e.client.LockContract(ctx, l.cid)
		a.releaseEnv(e)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err)):
			if !failed || bo.Failures()%10 == 0 {
				a.log.Warn("renewing the contract's lock failed; retrying", "contract", l.cid, "err", err, "lock_expires", expires)
			}
			failed = true
		case dcapi.IsNotFound(err):
			l.setLock(lockUnsupported, time.Time{})
			return
		case err != nil:
			a.log.Debug("the API no longer locks the contract; renewal ends", "contract", l.cid, "err", err)
			l.setLock(lockEnded, time.Time{})
			return
		case !res.Acquired:
			l.setLock(lockLost, time.Time{})
			a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, "lost the contract's lock to another agent (ours lapsed before it could be renewed); stopping work on the contract and leaving what it made to that agent")
			l.abandon("another agent holds the lock")
			return
		default:
			failed = false
			bo.Reset()
			expires = time.Unix(0, res.ExpiresAtNs)
			margin = lapseMargin(expires.Sub(a.now()))
			l.setLock(lockHeld, expires)
		}
	}
}

// close ends the lease, once: the renewal stops, a held lock is released
// (release) or left to lapse (lapse), and the contract's cool-down is set
// from the outcome. Later calls do nothing.
func (l *lease) close(o outcome, releaseLock bool) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	stop, renewing := l.stop, l.renewing
	l.mu.Unlock()
	if stop != nil {
		stop()
		<-renewing
	}
	// A lock the server stopped renewing (lockEnded: the contract moved on)
	// may still be recorded under this agent: the live API keeps it on a
	// provisioned contract, which it no longer locks but still releases
	// (release_provisioning_lock, api/src/database/contracts/provisioning.rs).
	if st := l.lockStatus(); releaseLock && (st == lockHeld || st == lockEnded) {
		l.a.unlock(l.cid)
	}
	l.a.finish(l.cid, o)
}

// unlock releases a lock, best effort: it expires by itself anyway.
func (a *Agent) unlock(cid string) {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	ctx, cancel := context.WithTimeout(context.Background(), e.reqTimeout)
	defer cancel()
	if err := e.client.UnlockContract(ctx, cid); err != nil && !dcapi.IsNotFound(err) {
		a.log.Debug("unlock failed (the lock expires by itself)", "contract", cid, "err", err)
	}
}

// finish forgets a closed lease and sets the contract's cool-down.
func (a *Agent) finish(cid string, o outcome) {
	defer a.progressed()
	a.workMu.Lock()
	defer a.workMu.Unlock()
	delete(a.leases, cid)
	now := a.now()
	a.doneAt[cid] = now
	t := a.timing()
	switch o {
	case outcomeDone:
		delete(a.cooldown, cid)
	case outcomeRetry, outcomeRefused:
		cd := a.cooldown[cid]
		cd.failures++
		wait := t.RetryCooldown
		for i := 1; i < cd.failures && wait < t.RetryCooldownMax; i++ {
			wait *= 2
		}
		cd.until = now.Add(min(wait, t.RetryCooldownMax))
		a.cooldown[cid] = cd
	case outcomeBusy, outcomeStopped:
		cd := a.cooldown[cid]
		cd.until = now.Add(t.RetryCooldown)
		a.cooldown[cid] = cd
	}
}
