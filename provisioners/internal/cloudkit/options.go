package cloudkit

import (
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// Options tune the HTTP client of a backend whose retries are the
// Transport's (DigitalOcean, Vultr); zero values are production defaults.
// The waits (action timeout, poll interval) come from the config section.
type Options struct {
	// MaxRetries of a request answered 429 (or a GET answered 502/503/504)
	// (default 4).
	MaxRetries int
	// MaxRateLimitWait caps one wait for a rate limit (default 1 min).
	MaxRateLimitWait time.Duration
	// BackoffMin is the first retry backoff without Retry-After (default
	// 1s; Vultr sends no Retry-After, and asks for exponential backoff).
	BackoffMin time.Duration
	// HTTPClient is the base client (its Transport is wrapped).
	HTTPClient *http.Client
	Now        func() time.Time
	Logger     *slog.Logger
}

// TestOptions are Options for tests and benchmarks against a simulator.
func TestOptions() Options {
	return Options{MaxRetries: 3, MaxRateLimitWait: 50 * time.Millisecond, BackoffMin: time.Millisecond}
}

// Client fills in o's defaults and returns the client for the API library:
// a copy of o.HTTPClient (default: 60 s timeout) whose transport is a
// Transport sending token, retrying per o and pacing with limiter (nil:
// no pacing), also returned.
func (o *Options) Client(token string, limiter *rate.Limiter) (*http.Client, *Transport) {
	if o.MaxRetries == 0 {
		o.MaxRetries = 4
	}
	if o.MaxRateLimitWait <= 0 {
		o.MaxRateLimitWait = time.Minute
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	tr := &Transport{Token: token, Retries: o.MaxRetries, MaxWait: o.MaxRateLimitWait,
		BackoffMin: o.BackoffMin, Now: o.Now, Limiter: limiter}
	return WithTransport(o.HTTPClient, tr), tr
}

// WithTransport returns a copy of base (nil: a client with a 60 s
// timeout) whose requests go through tr, and tr's through base's
// transport.
func WithTransport(base *http.Client, tr *Transport) *http.Client {
	if base == nil {
		base = &http.Client{Timeout: 60 * time.Second}
	}
	tr.Base = base.Transport
	hc := *base
	hc.Transport = tr
	return &hc
}
