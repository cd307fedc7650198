package dcapi

import (
	"context"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// A Pacer spaces one agent's requests to stay inside the API's rate limits:
// reads (GET) at most ReadsPerMinute in any minute, and after a 429 no
// request of the same tier until the server's Retry-After has passed. The
// live API limits each client IP to 120 reads and 60 writes a minute
// (fixed window) and answers 429 with Retry-After: 60 beyond that
// (api/src/rate_limit.rs); an agent that keeps its reads at half of it
// leaves room for the provider's other machines behind the same address.
//
// One Pacer outlives the clients built on it (a config reload builds a new
// client), so the budget holds across reloads. Safe for concurrent use.
type Pacer struct {
	reads *rate.Limiter
	burst int

	mu    sync.Mutex
	until [2]time.Time // per tier (tierRead, tierWrite): no request before
	now   func() time.Time
}

const (
	tierRead  = 0
	tierWrite = 1
)

// pacerBurst is how many reads may go at once: B + r·60 s ≤ the budget
// in any minute, so the rate is the budget less the burst.
const pacerBurst = 4

// NewPacer paces reads to at most readsPerMinute in any minute (≤ 0: not
// paced; 429s are honoured either way). every, if > 0, is the minute the
// budget is counted over (tests scale it down; production passes 0).
func NewPacer(readsPerMinute int, minute time.Duration) *Pacer {
	p := &Pacer{now: time.Now}
	p.SetReadBudget(readsPerMinute, minute)
	return p
}

// SetReadBudget changes the read budget (a config reload).
func (p *Pacer) SetReadBudget(readsPerMinute int, minute time.Duration) {
	if minute <= 0 {
		minute = time.Minute
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if readsPerMinute <= 0 {
		p.reads = nil
		return
	}
	burst := min(pacerBurst, max(1, readsPerMinute/4))
	r := rate.Limit(float64(readsPerMinute-burst) / minute.Seconds())
	if readsPerMinute <= burst {
		r = rate.Limit(float64(readsPerMinute) / minute.Seconds())
		burst = 1
	}
	if p.reads == nil || p.burst != burst {
		p.reads = rate.NewLimiter(r, burst)
		p.burst = burst
		return
	}
	p.reads.SetLimit(r)
}

func tierOf(method string) int {
	if method == http.MethodGet || method == http.MethodHead {
		return tierRead
	}
	return tierWrite
}

// wait blocks until a request with method may go, or ctx ends.
func (p *Pacer) wait(ctx context.Context, method string) error {
	tier := tierOf(method)
	p.mu.Lock()
	until, lim := p.until[tier], p.reads
	p.mu.Unlock()
	if d := until.Sub(p.now()); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	if tier == tierRead && lim != nil {
		return lim.Wait(ctx)
	}
	return nil
}

// hold stops requests of method's tier for d (a 429's Retry-After; at
// least a second when the server named none).
func (p *Pacer) hold(method string, d time.Duration) {
	d = max(d, time.Second)
	tier := tierOf(method)
	p.mu.Lock()
	defer p.mu.Unlock()
	if u := p.now().Add(d); u.After(p.until[tier]) {
		p.until[tier] = u
	}
}

// WithPacer paces the client's requests with p (shared by every client of
// one agent).
func WithPacer(p *Pacer) Option { return func(c *Client) { c.pacer = p } }
