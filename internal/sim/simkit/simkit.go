// Package simkit holds what the cloud API simulators (DigitalOcean,
// Hetzner Cloud, Vultr) share: the request log, injected 429s and
// placement failures, serving on loopback, and the MD5 key fingerprint
// both DigitalOcean and Hetzner report.
package simkit

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// Faults is the request log and the faults a test injects into a
// simulator, which embeds it. Its methods are safe for concurrent use.
type Faults struct {
	mu          sync.Mutex
	requests    []string
	rateLimited int
	placement   map[string]bool
}

// Record adds r to the request log.
func (f *Faults) Record(r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, r.Method+" "+r.URL.RequestURI())
}

// Requests returns "METHOD /path?query" of every request so far.
func (f *Faults) Requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.requests...)
}

// RateLimitNext answers the next n authenticated requests with 429.
func (f *Faults) RateLimitNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rateLimited = n
}

// TakeRateLimited reports whether this request is one RateLimitNext asked
// to refuse, and counts it.
func (f *Faults) TakeRateLimited() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rateLimited > 0 {
		f.rateLimited--
		return true
	}
	return false
}

// FailPlacement makes creation of a machine type (size, server type, plan)
// in a location fail although the catalogue still offers it there
// (capacity ran out between list and create, as happens on the real APIs).
// Each simulator's package doc says how it answers.
func (f *Faults) FailPlacement(machineType, location string, fail bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.placement == nil {
		f.placement = map[string]bool{}
	}
	f.placement[machineType+"/"+location] = fail
}

// PlacementFails reports whether FailPlacement is on for this type and
// location.
func (f *Faults) PlacementFails(machineType, location string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.placement[machineType+"/"+location]
}

// Serve serves h on a loopback httptest server, closed at the end of the
// test, and returns its URL.
func Serve(t interface{ Cleanup(func()) }, h http.Handler) string {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts.URL
}

// Fingerprint is the MD5 fingerprint the APIs report for an
// authorized_keys line ("aa:bb:..."), or "" if it does not parse.
func Fingerprint(publicKey string) string {
	pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(publicKey))
	if err != nil {
		return ""
	}
	return ssh.FingerprintLegacyMD5(pk)
}

// Clock is a simulator clock a test moves forward; safe for concurrent
// use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock standing at t.
func NewClock(t time.Time) *Clock { return &Clock{t: t} }

// Now is the clock's time (an Options.Now).
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Add moves the clock forward by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Defaults fills in what a simulator's options leave unset: the token
// clients must send ("sim-token"), the clock (time.Now), and the time an
// operation takes (20ms), from which a power action's (half of it) and a
// deletion's (a quarter) follow; power and del may be nil.
func Defaults(token *string, now *func() time.Time, op, power, del *time.Duration) {
	if *token == "" {
		*token = "sim-token"
	}
	if *now == nil {
		*now = time.Now
	}
	if *op == 0 {
		*op = 20 * time.Millisecond
	}
	if power != nil && *power == 0 {
		*power = *op / 2
	}
	if del != nil && *del == 0 {
		*del = *op / 4
	}
}
