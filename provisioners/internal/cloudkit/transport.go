package cloudkit

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Transport is an http.RoundTripper for a cloud API that honours its rate
// limits:
//
//   - once a response says RateLimit-Remaining: 0 (Hetzner, DigitalOcean),
//     every request waits until RateLimit-Reset instead of spending its
//     retries on 429s;
//   - Limiter, if set, paces requests ahead of time (Vultr documents 30
//     requests per second and sends no rate limit headers);
//   - with Retries > 0, a 429 is retried after Retry-After (seconds or an
//     HTTP date; DigitalOcean's burst limit sends it), else the reset time,
//     else exponential backoff, and a 502/503/504 of a GET is retried with
//     backoff. A request whose body cannot be replayed is not retried.
//
// No wait is longer than MaxWait: a limit that resets in an hour fails the
// request (the caller's own retry comes later) rather than stalling it.
type Transport struct {
	Base http.RoundTripper
	// Token, if set, is sent as "Authorization: Bearer <Token>".
	Token      string
	Retries    int
	MaxWait    time.Duration
	Limiter    *rate.Limiter
	BackoffMin time.Duration // first backoff (default 500ms), doubling, jittered

	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error

	mu           sync.Mutex
	blockedUntil time.Time
}

func (t *Transport) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

func (t *Transport) sleep(ctx context.Context, d time.Duration) error {
	if t.Sleep != nil {
		return t.Sleep(ctx, d)
	}
	return Sleep(ctx, d)
}

func (t *Transport) base() http.RoundTripper {
	if t.Base != nil {
		return t.Base
	}
	return http.DefaultTransport
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		if err := t.gate(ctx); err != nil {
			return nil, err
		}
		r := req
		if attempt > 0 || t.Token != "" {
			var err error
			if r, err = rewind(req, attempt > 0); err != nil {
				return nil, err
			}
			if t.Token != "" {
				r.Header.Set("Authorization", "Bearer "+t.Token)
			}
		}
		resp, err := t.base().RoundTrip(r)
		if resp != nil {
			t.observe(resp.Header)
			recordStatus(ctx, resp.StatusCode)
		}
		if err != nil || attempt >= t.Retries || !retryable(req, resp.StatusCode) || !replayable(req) {
			return resp, err
		}
		wait := t.retryWait(resp, attempt)
		if wait > t.MaxWait && t.MaxWait > 0 {
			return resp, nil // the caller sees the 429 and its headers
		}
		drain(resp)
		if err := t.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

// gate waits for a recorded rate-limit reset and for the limiter.
func (t *Transport) gate(ctx context.Context) error {
	t.mu.Lock()
	wait := t.blockedUntil.Sub(t.now())
	t.mu.Unlock()
	if wait > 0 {
		if t.MaxWait > 0 && wait > t.MaxWait {
			wait = t.MaxWait
		}
		if err := t.sleep(ctx, wait); err != nil {
			return err
		}
	}
	if t.Limiter != nil {
		if err := t.Limiter.Wait(ctx); err != nil {
			if _, ok := ctx.Deadline(); ok && ctx.Err() == nil {
				// "would exceed context deadline": the request cannot be
				// made in time, which is what the deadline says.
				<-ctx.Done()
				return ctx.Err()
			}
			return err
		}
	}
	return nil
}

func retryable(req *http.Request, status int) bool {
	switch status {
	case http.StatusTooManyRequests:
		return true // not processed: safe for every method
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return req.Method == http.MethodGet || req.Method == http.MethodHead
	}
	return false
}

func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// rewind clones req (a RoundTripper must not change the caller's request),
// with a fresh body for a retry.
func rewind(req *http.Request, retry bool) (*http.Request, error) {
	r := req.Clone(req.Context())
	if retry && req.GetBody != nil {
		b, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = b
	}
	return r, nil
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// retryWait is how long to wait before retrying after resp.
func (t *Transport) retryWait(resp *http.Response, attempt int) time.Duration {
	if d, ok := RetryAfter(resp.Header, t.now()); ok {
		return d
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		if d := t.ResetIn(); d > 0 {
			return d
		}
	}
	base := t.BackoffMin
	if base <= 0 {
		base = 500 * time.Millisecond
	}
	d := base << min(attempt, 10)
	return d/2 + rand.N(d/2+1) //nolint:gosec // jitter, not a secret
}

// RetryAfter parses a Retry-After header: delay seconds or an HTTP date.
// Headers come from the network: anything unparsable or negative is ignored.
func RetryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := h.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 || n > 86400 {
			return 0, false
		}
		return time.Duration(n) * time.Second, true
	}
	if at, err := http.ParseTime(v); err == nil {
		return max(0, at.Sub(now)), true
	}
	return 0, false
}

// observe records when the quota is exhausted (RateLimit-Remaining: 0 with
// a RateLimit-Reset Unix time). Anything unparsable is ignored.
func (t *Transport) observe(h http.Header) {
	rem := h.Get("RateLimit-Remaining")
	if rem == "" {
		return
	}
	n, err := strconv.Atoi(rem)
	if err != nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n > 0 {
		t.blockedUntil = time.Time{}
		return
	}
	reset, err := strconv.ParseInt(h.Get("RateLimit-Reset"), 10, 64)
	if err != nil || reset <= 0 || reset > 1<<40 {
		return
	}
	t.blockedUntil = time.Unix(reset, 0)
}

// ResetIn is how long until the recorded rate limit resets (0 if not limited).
func (t *Transport) ResetIn() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	return max(0, t.blockedUntil.Sub(t.now()))
}

// Status holds the HTTP status of the last response to a request made with
// a context from WithStatus, for client libraries whose errors drop it.
type Status struct {
	mu   sync.Mutex
	code int
}

// Code returns the recorded status (0: no response).
func (s *Status) Code() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.code
}

type statusKey struct{}

// WithStatus returns a context whose requests through a Transport record
// their response status in the returned Status.
func WithStatus(ctx context.Context) (context.Context, *Status) {
	s := &Status{}
	return context.WithValue(ctx, statusKey{}, s), s
}

func recordStatus(ctx context.Context, code int) {
	if s, ok := ctx.Value(statusKey{}).(*Status); ok {
		s.mu.Lock()
		s.code = code
		s.mu.Unlock()
	}
}
