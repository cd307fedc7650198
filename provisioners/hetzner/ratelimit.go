package hetzner

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// rateGate is an http.RoundTripper that honours Hetzner's rate limit
// headers: once a response says RateLimit-Remaining: 0, every request
// waits until RateLimit-Reset (at most maxWait) instead of spending its
// retries on 429s. hcloud-go's own retry (with backoff) handles the 429s
// that still happen; together they make the provisioner back off for as
// long as the API asks, but never longer than maxWait per request.
type rateGate struct {
	base    http.RoundTripper
	maxWait time.Duration
	now     func() time.Time
	sleep   func(ctx context.Context, d time.Duration) error

	mu           sync.Mutex
	blockedUntil time.Time
}

func newRateGate(base http.RoundTripper, maxWait time.Duration, now func() time.Time) *rateGate {
	if base == nil {
		base = http.DefaultTransport
	}
	return &rateGate{base: base, maxWait: maxWait, now: now, sleep: sleepCtx}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func (g *rateGate) RoundTrip(req *http.Request) (*http.Response, error) {
	g.mu.Lock()
	wait := g.blockedUntil.Sub(g.now())
	g.mu.Unlock()
	if wait > 0 {
		if wait > g.maxWait {
			wait = g.maxWait
		}
		if err := g.sleep(req.Context(), wait); err != nil {
			return nil, err
		}
	}
	resp, err := g.base.RoundTrip(req)
	if resp != nil {
		g.observe(resp.Header)
	}
	return resp, err
}

// observe records when the quota is exhausted. Headers come from the
// network: anything unparsable is ignored.
func (g *rateGate) observe(h http.Header) {
	rem := h.Get("RateLimit-Remaining")
	if rem == "" {
		return
	}
	n, err := strconv.Atoi(rem)
	if err != nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if n > 0 {
		g.blockedUntil = time.Time{}
		return
	}
	reset, err := strconv.ParseInt(h.Get("RateLimit-Reset"), 10, 64)
	if err != nil || reset <= 0 {
		return
	}
	g.blockedUntil = time.Unix(reset, 0)
}

// resetIn is how long until the recorded limit resets (0 if not limited).
func (g *rateGate) resetIn() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(0, g.blockedUntil.Sub(g.now()))
}
