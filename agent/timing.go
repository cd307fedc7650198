package agent

import (
	"context"
	"math/rand/v2"
	"time"

	"github.com/decent-stuff/dc-agent/config"
)

// Timing holds every interval the agent uses. It comes from the config;
// tests and benchmarks scale it down so the agent does in milliseconds what
// takes minutes in production.
type Timing struct {
	PollInterval      time.Duration // pending-provision polling without long-poll
	LongPollWait      time.Duration // waitSeconds asked of long-poll servers
	MinRepoll         time.Duration // least time between two polls that found nothing new
	HealthInterval    time.Duration
	ReconcileInterval time.Duration
	OrphanGrace       time.Duration // unknown instances are removed only after this
	HeartbeatDefault  time.Duration // until the server names an interval
	HeartbeatMin      time.Duration
	HeartbeatMax      time.Duration
	BackoffBase       time.Duration
	BackoffMax        time.Duration // the cap of every retry wait (60 s)
	LockRenew         time.Duration // renew a held contract lock this often
	RetryCooldown     time.Duration // first wait before retrying a failed contract
	RetryCooldownMax  time.Duration
	ShutdownGrace     time.Duration // SIGTERM waits this long for provisions
	OutboxFlush       time.Duration // then this long for the last reports to go out
	StatusEvery       time.Duration // STATUS= refresh
	HealthCheckTime   time.Duration // timeout of one backend health check
	ListTime          time.Duration // timeout of one backend List
	TerminateTime     time.Duration // timeout of one Terminate
	LivenessSlack     time.Duration // added to every liveness expectation
}

// TimingFromConfig derives the timing from a loaded config.
func TimingFromConfig(cfg *config.Config) Timing {
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	t := Timing{
		PollInterval:      sec(cfg.Polling.IntervalSeconds),
		LongPollWait:      30 * time.Second,
		MinRepoll:         time.Second,
		HealthInterval:    sec(cfg.Polling.HealthCheckIntervalSeconds),
		ReconcileInterval: sec(cfg.Polling.ReconcileIntervalSeconds),
		OrphanGrace:       sec(cfg.Polling.OrphanGracePeriodSeconds),
		HeartbeatDefault:  60 * time.Second,
		HeartbeatMin:      5 * time.Second,
		HeartbeatMax:      240 * time.Second, // stays inside the API's 5 minute online window
		BackoffBase:       time.Second,
		BackoffMax:        60 * time.Second,
		LockRenew:         100 * time.Second, // a third of the API's 5 minute lock TTL
		RetryCooldown:     30 * time.Second,
		RetryCooldownMax:  30 * time.Minute,
		ShutdownGrace:     sec(cfg.Agent.ShutdownGraceSeconds),
		OutboxFlush:       5 * time.Second,
		StatusEvery:       2 * time.Second,
		HealthCheckTime:   60 * time.Second,
		ListTime:          2 * time.Minute,
		TerminateTime:     10 * time.Minute,
		LivenessSlack:     30 * time.Second,
	}
	if cfg.Polling.LongPoll != nil && !*cfg.Polling.LongPoll {
		t.LongPollWait = 0
	}
	return t
}

// Scaled multiplies every interval by f (0 < f), keeping each at least 1 ms.
// Only tests and benchmarks use it (dc-agent run --time-scale, hidden).
func (t Timing) Scaled(f float64) Timing {
	if f <= 0 || f == 1 {
		return t
	}
	s := func(d *time.Duration) {
		if *d == 0 {
			return
		}
		*d = max(time.Duration(float64(*d)*f), time.Millisecond)
	}
	for _, d := range []*time.Duration{&t.PollInterval, &t.LongPollWait, &t.MinRepoll, &t.HealthInterval, &t.ReconcileInterval,
		&t.OrphanGrace, &t.HeartbeatDefault, &t.HeartbeatMin, &t.HeartbeatMax, &t.BackoffBase, &t.BackoffMax, &t.LockRenew,
		&t.RetryCooldown, &t.RetryCooldownMax, &t.ShutdownGrace, &t.OutboxFlush, &t.StatusEvery, &t.LivenessSlack} {
		s(d)
	}
	// Long-poll waits are whole seconds on the wire; a scaled wait below one
	// second would turn long-polling off, which is not what a test wants.
	if t.LongPollWait > 0 && t.LongPollWait < time.Second {
		t.LongPollWait = time.Second
	}
	return t
}

// Sleeper waits d or until ctx ends (then it returns ctx's error).
type Sleeper func(ctx context.Context, d time.Duration) error

// realSleep is the production Sleeper.
func realSleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff is jittered exponential backoff: the n-th consecutive failure
// waits a random duration in [d/2, d] with d = min(Base·2ⁿ, Max). Reset
// after a success. Not safe for concurrent use (each loop owns one).
type Backoff struct {
	Base, Max time.Duration
	// Rand returns a number in [0,1); nil means math/rand.
	Rand     func() float64
	failures int
}

// Next returns the wait after one more failure. A server's Retry-After
// raises the wait, but never above Max.
func (b *Backoff) Next(retryAfter time.Duration) time.Duration {
	d := b.Base
	for i := 0; i < b.failures && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	b.failures++
	r := rand.Float64
	if b.Rand != nil {
		r = b.Rand
	}
	w := d/2 + time.Duration(r()*float64(d/2))
	if retryAfter > w {
		w = min(retryAfter, b.Max)
	}
	return w
}

// Reset forgets past failures.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of consecutive failures.
func (b *Backoff) Failures() int { return b.failures }

// jitter spreads d by ±10 % so a fleet of agents does not poll in lockstep.
func jitter(d time.Duration, r func() float64) time.Duration {
	if r == nil {
		r = rand.Float64
	}
	return time.Duration(float64(d) * (0.9 + 0.2*r()))
}
