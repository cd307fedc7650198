package apiserver

import (
	"math"
	"sync"
	"time"
)

// rateLimiter is a token bucket per authenticated key.
type rateLimiter struct {
	mu        sync.Mutex
	rate      float64
	burst     float64
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), buckets: map[string]*bucket{}}
}

// allow takes a token for key; when none is left it returns the seconds
// until one is.
func (l *rateLimiter) allow(key string, now time.Time) (retryAfter int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > time.Minute {
		// Forget keys whose bucket has refilled: they cost nothing to recreate.
		full := time.Duration(l.burst / l.rate * float64(time.Second))
		for k, b := range l.buckets {
			if now.Sub(b.last) > full {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b := l.buckets[key]
	if b == nil {
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = math.Min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return max(1, int(math.Ceil((1-b.tokens)/l.rate))), false
}

// hub wakes long-polls per provider: waiters take the provider's current
// channel, and notify closes it.
type hub struct {
	mu    sync.Mutex
	chans map[string]*hubEntry
}

type hubEntry struct {
	ch      chan struct{}
	waiters int
}

func newHub() *hub { return &hub{chans: map[string]*hubEntry{}} }

// subscribe returns a channel closed at the provider's next notify, and a
// func to call when done waiting.
func (h *hub) subscribe(provider string) (<-chan struct{}, func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.chans[provider]
	if e == nil {
		e = &hubEntry{ch: make(chan struct{})}
		h.chans[provider] = e
	}
	e.waiters++
	return e.ch, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		e.waiters--
		if e.waiters == 0 && h.chans[provider] == e {
			delete(h.chans, provider)
		}
	}
}

func (h *hub) notify(provider string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.chans[provider]; e != nil {
		close(e.ch)
		delete(h.chans, provider)
	}
}

func (h *hub) notifyAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for p, e := range h.chans {
		close(e.ch)
		delete(h.chans, p)
	}
}
