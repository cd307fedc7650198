package apiserver

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"sync"
	"time"
)

// nonceCache remembers (key, nonce) pairs long enough to refuse replays:
// a request is accepted only within ±window/2 of its timestamp, so an entry
// kept for window (10 minutes) after it was first seen covers every moment
// the same signed request could still be valid. Entries live in shards, each
// a set plus a FIFO in arrival order; since all entries live equally long,
// the FIFO is also expiry order and sweeping is O(expired). Memory is
// bounded: when a shard is full of live entries, new requests are refused
// (503) rather than forgetting a nonce early.
type nonceCache struct {
	shards   [64]nonceShard
	perShard int
	ttl      time.Duration
}

type nonceEntry struct {
	id      [16]byte
	expires int64
}

type nonceShard struct {
	mu   sync.Mutex
	set  map[[16]byte]struct{}
	fifo []nonceEntry // ring buffer
	head int
	n    int
}

type nonceResult int

const (
	nonceNew nonceResult = iota
	nonceReplayed
	nonceFull
)

func newNonceCache(size int, ttl time.Duration) *nonceCache {
	c := &nonceCache{perShard: max(size/64, 16), ttl: ttl}
	for i := range c.shards {
		c.shards[i].set = make(map[[16]byte]struct{})
	}
	return c
}

// add records (key, nonce) and reports whether it was new.
func (c *nonceCache) add(key, nonce string, now time.Time) nonceResult {
	var buf [256]byte // key (64) + 0 + nonce (≤ 128): no allocation
	sum := sha256.Sum256(append(append(append(buf[:0], key...), 0), nonce...))
	var id [16]byte
	copy(id[:], sum[:])
	sh := &c.shards[binary.LittleEndian.Uint64(id[8:])%uint64(len(c.shards))]
	nowNs := now.UnixNano()
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// Sweep expired entries from the front.
	for sh.n > 0 && sh.fifo[sh.head].expires <= nowNs {
		delete(sh.set, sh.fifo[sh.head].id)
		sh.head = (sh.head + 1) % len(sh.fifo)
		sh.n--
	}
	if _, ok := sh.set[id]; ok {
		return nonceReplayed
	}
	if sh.n >= c.perShard {
		return nonceFull
	}
	if sh.n == len(sh.fifo) {
		grown := make([]nonceEntry, max(2*len(sh.fifo), 64))
		for i := 0; i < sh.n; i++ {
			grown[i] = sh.fifo[(sh.head+i)%len(sh.fifo)]
		}
		sh.fifo, sh.head = grown, 0
	}
	sh.fifo[(sh.head+sh.n)%len(sh.fifo)] = nonceEntry{id: id, expires: nowNs + int64(c.ttl)}
	sh.n++
	sh.set[id] = struct{}{}
	return nonceNew
}

// len is the number of remembered nonces (tests).
func (c *nonceCache) len() int {
	n := 0
	for i := range c.shards {
		c.shards[i].mu.Lock()
		n += c.shards[i].n
		c.shards[i].mu.Unlock()
	}
	return n
}

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
