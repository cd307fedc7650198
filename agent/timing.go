package agent

import (
	"cmp"
	"context"
	"math/rand/v2"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Timing holds every duration the agent uses: how often its loops run, how
// long they wait and how long the backends may take. It comes from the
// config (TimingFromConfig); tests give the agent a shorter one
// (Options.Timing) so it does in milliseconds what takes minutes in
// production. Nothing else changes with it.
type Timing struct {
	PollInterval      time.Duration // pending-provision polling without long-poll (at most ShortPoll)
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
	LockRenew         time.Duration // the longest wait between two renewals of a held contract lock
	RetryCooldown     time.Duration // first wait before retrying a failed contract
	RetryCooldownMax  time.Duration
	ShutdownGrace     time.Duration // SIGTERM waits this long for provisions
	OutboxFlush       time.Duration // then this long for the last reports to go out
	StatusEvery       time.Duration // STATUS= refresh
	HealthCheckTime   time.Duration // timeout of one backend health check
	ListTime          time.Duration // timeout of one backend List
	TerminateTime     time.Duration // timeout of one Terminate
	LivenessSlack     time.Duration // added to every liveness expectation
	InventoryEvery    time.Duration // refresh of the backend inventory the heartbeat carries
	InventoryTime     time.Duration // timeout of one inventory call
	BatchRetry        time.Duration // how long a server without batch health (or an active list) is believed
	// ProvisionRetry is the budget for retrying a transient backend
	// failure locally (from the contract's first attempt), ProvisionRetryBase
	// the first wait between tries (doubling, at most ProvisionRetryMax).
	ProvisionRetry     time.Duration
	ProvisionRetryBase time.Duration
	ProvisionRetryMax  time.Duration
	// ReadsPerMinute bounds the agent's GET requests in any ReadMinute (a
	// minute; scaled in tests): 0 does not pace them.
	ReadsPerMinute int
	ReadMinute     time.Duration
	// HealthWritesPerMinute spaces health checks sent one request each
	// (in ReadMinute): half the live API's per-IP write limit; ≤ 5: not
	// spaced.
	HealthWritesPerMinute int
	// Tenant requests (tenant.go): how often the pending lists are read
	// (the reset list only every TenantPollStreamed while the event stream
	// runs), how long a request's transient failures are retried before
	// the tenant is told, how long a request the API keeps listing after
	// a reported failure waits before it is tried again (doubling, at most
	// a day), the timeout of one backend call, and how long the event
	// stream may stay silent (not scaled: the server's keep-alive is not).
	TenantPoll, TenantPollStreamed, TenantRetry, TenantCooldown, TenantCallTime, StreamIdle time.Duration
	// Backend bounds the backends' own long waits (provisioners.Deps).
	Backend provisioners.Timeouts
}

// ShortPoll is the longest wait between two polls of a server that does
// not hold the request (the live API has no long-poll): a new contract is
// picked up within it (p50 half of it, a second), for 30 reads a minute —
// a quarter of the live API's per-IP read limit (api/src/rate_limit.rs).
// The Rust agent polls every 30 s (p50 15 s). A smaller
// polling.interval_seconds polls more often, within max_reads_per_minute.
const ShortPoll = 2 * time.Second

// TimingFromConfig derives the timing from a loaded config.
func TimingFromConfig(cfg *config.Config) Timing {
	sec := func(n int) time.Duration { return time.Duration(n) * time.Second }
	retry := config.DefaultProvisionRetrySeconds
	if cfg.Agent.ProvisionRetrySeconds != nil {
		retry = *cfg.Agent.ProvisionRetrySeconds
	}
	t := Timing{
		PollInterval:      min(sec(cfg.Polling.IntervalSeconds), ShortPoll),
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
		LockRenew:         100 * time.Second, // a third of the API's 5 minute lock TTL; shorter locks are renewed sooner
		RetryCooldown:     30 * time.Second,
		RetryCooldownMax:  30 * time.Minute,
		ShutdownGrace:     sec(cfg.Agent.ShutdownGraceSeconds),
		OutboxFlush:       5 * time.Second,
		StatusEvery:       2 * time.Second,
		HealthCheckTime:   60 * time.Second,
		ListTime:          2 * time.Minute,
		TerminateTime:     10 * time.Minute,
		LivenessSlack:     30 * time.Second,
		InventoryEvery:    5 * time.Minute,
		InventoryTime:     10 * time.Second,
		BatchRetry:        time.Hour,
		Backend:           provisioners.DefaultTimeouts,

		ProvisionRetry:     sec(retry),
		ProvisionRetryBase: 15 * time.Second,
		ProvisionRetryMax:  2 * time.Minute,
		ReadsPerMinute:     cmp.Or(cfg.Polling.MaxReadsPerMinute, config.DefaultMaxReadsPerMinute),
		ReadMinute:         time.Minute,

		HealthWritesPerMinute: 30,
		// 2 reads a minute at most, of the live API's 120 per IP.
		TenantPoll: time.Minute, TenantPollStreamed: 5 * time.Minute, TenantRetry: 10 * time.Minute,
		TenantCooldown: time.Hour, TenantCallTime: 5 * time.Minute, StreamIdle: 90 * time.Second,
	}
	if cfg.Polling.LongPoll != nil && !*cfg.Polling.LongPoll {
		t.LongPollWait = 0
	}
	return t
}

// Scaled multiplies every interval and the backends' waits by f (0 < f),
// keeping each at least 1 ms. Deadlines stay: timeouts of single backend
// calls, and the shutdown grace the config sets (a test that holds a
// provision across a stop must not race it). The test suite's dc-agent
// binary uses it (--time-scale, built with -tags testhooks); production
// binaries never call it.
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
		&t.RetryCooldown, &t.RetryCooldownMax, &t.OutboxFlush, &t.StatusEvery, &t.LivenessSlack,
		&t.InventoryEvery, &t.BatchRetry, &t.Backend.Task, &t.Backend.Create, &t.Backend.RetryWait,
		&t.ProvisionRetry, &t.ProvisionRetryBase, &t.ProvisionRetryMax, &t.ReadMinute,
		&t.TenantPoll, &t.TenantPollStreamed, &t.TenantRetry, &t.TenantCooldown} {
		s(d)
	}
	// Long-poll waits are whole seconds on the wire; a scaled wait below one
	// second would turn long-polling off, which is not what a test wants.
	if t.LongPollWait > 0 && t.LongPollWait < time.Second {
		t.LongPollWait = time.Second
	}
	return t
}

// Clock is the agent's time: every loop reads the time and waits through
// it, nothing in the package calls time.Now, time.After or time.Sleep, so
// a test can watch every wait (or hang them all) in one place. Deadlines of
// single calls (context timeouts) are real time.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the production Clock.
type RealClock struct{}

// Now is time.Now.
func (RealClock) Now() time.Time { return time.Now() }

// After is time.After.
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// wait blocks for d on the agent's clock, or until wake fires (nil: never)
// or ctx ends; then it returns ctx's error.
func (a *Agent) wait(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-wake:
		return nil
	case <-a.clock.After(d):
		return nil
	}
}

func (a *Agent) now() time.Time { return a.clock.Now() }

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
