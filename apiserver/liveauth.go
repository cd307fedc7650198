package apiserver

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Authentication and the rate limit of the live profile, as api/src/auth.rs
// and api/src/rate_limit.rs have them: failures are plain-text answers
// (poem errors), in live's order and words; no nonce is remembered (a
// replay within the ±5 minute window is accepted, as live does); the nonce
// must be a UUID.

// plainError is answered as text/plain with its status in every profile:
// the live profile's authentication, body-parsing, routing and rate-limit
// refusals (poem's own errors, not the handler's JSON envelope).
type plainError struct {
	status int
	msg    string
	header http.Header
}

func (e *plainError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func plainf(status int, format string, a ...any) *plainError {
	return &plainError{status: status, msg: fmt.Sprintf(format, a...)}
}

// liveAuth says which keys a live endpoint takes (the poem extractor).
type liveAuth int

const (
	// liveAgent: AgentAuthenticatedUser, X-Agent-Pubkey with an active
	// delegation.
	liveAgent liveAuth = iota
	// liveProvider: ApiAuthenticatedUser, X-Public-Key.
	liveProvider
	// liveEither: ProviderOrAgentAuth; the agent key when both are sent.
	liveEither
)

// signedLive wraps a live endpoint's handler with live's authentication.
func (s *Server) signedLive(kind liveAuth, h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticateLive(r, kind)
		if err == nil {
			err = h(w, r, c)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

// authenticateLive is verify_request_signature and the extractors of
// api/src/auth.rs.
func (s *Server) authenticateLive(r *http.Request, kind liveAuth) (*caller, error) {
	h := r.Header
	agentKey, provKey := h.Get(dcapi.HeaderAgentPubkey), h.Get(dcapi.HeaderPublicKey)
	var keyHex string
	agent := false
	switch {
	case kind == liveAgent:
		if agentKey == "" {
			return nil, missingHeader(dcapi.HeaderAgentPubkey)
		}
		keyHex, agent = agentKey, true
	case kind == liveProvider:
		if provKey == "" {
			return nil, missingHeader(dcapi.HeaderPublicKey)
		}
		keyHex = provKey
	case agentKey != "":
		keyHex, agent = agentKey, true
	case provKey != "":
		keyHex = provKey
	default:
		return nil, missingHeader(dcapi.HeaderPublicKey + " or " + dcapi.HeaderAgentPubkey)
	}
	for _, name := range []string{dcapi.HeaderSignature, dcapi.HeaderTimestamp, dcapi.HeaderNonce} {
		if h.Get(name) == "" {
			return nil, missingHeader(name)
		}
	}
	ts, nonce, sigHex := h.Get(dcapi.HeaderTimestamp), h.Get(dcapi.HeaderNonce), h.Get(dcapi.HeaderSignature)
	// Before the body is read (not in live, which reads it first): a key
	// the server does not know takes a token of the global unknown-key
	// limit and may send only a small body (issue 15, findings 1 and 8).
	ck := s.keys.get(keyHex)
	cached := ck != nil
	known := cached
	if !known {
		if pub, err := hex.DecodeString(keyHex); err == nil && len(pub) == 32 {
			if known, err = s.knownKey(r.Context(), hex.EncodeToString(pub), agent, s.now().UnixNano()); err != nil {
				return nil, err
			}
		}
		if !known {
			if err := s.admitUnknown(r, s.now()); err != nil {
				return nil, err
			}
		}
	}
	body, err := readBody(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, plainf(http.StatusRequestEntityTooLarge, "payload too large")
		}
		return nil, plainf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if !cached {
		pub, err := hex.DecodeString(keyHex)
		if err != nil {
			return nil, plainf(http.StatusBadRequest, "Invalid format: Invalid public key hex encoding: %s", store.RustHexError(err))
		}
		if len(pub) != 32 {
			return nil, plainf(http.StatusBadRequest, "Invalid format: Public key must be 32 bytes, got %d", len(pub))
		}
		ck = &cachedKey{hex: hex.EncodeToString(pub)}
		ck.v, _ = identity.NewVerifier(pub)
	}
	sigBytes, err := hex.DecodeString(sigHex)
	if err != nil {
		return nil, plainf(http.StatusBadRequest, "Invalid format: Invalid signature hex encoding: %s", store.RustHexError(err))
	}
	if len(sigBytes) != 64 {
		return nil, plainf(http.StatusBadRequest, "Invalid format: Signature must be 64 bytes, got %d", len(sigBytes))
	}
	tsNs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, plainf(http.StatusBadRequest, "Invalid format: Invalid timestamp: %s", rustIntErr(ts, err))
	}
	nowNs := s.now().UnixNano()
	if d := nowNs - tsNs; d > dcapi.TimestampWindowNs || d < -dcapi.TimestampWindowNs {
		return nil, plainf(http.StatusUnauthorized, "Request timestamp expired (max 5 minutes)")
	}
	// uuid.Parse takes the forms uuid::Uuid::parse_str takes: 32 hex
	// digits, 8-4-4-4-12, that in braces, or with a urn:uuid: prefix.
	if _, err := uuid.Parse(nonce); err != nil {
		return nil, plainf(http.StatusBadRequest, "Invalid format: Invalid nonce format (must be UUID v4): %v", err)
	}
	sig, _ := identity.ParseSignatureHex(strings.ToLower(sigHex))
	if ck.v == nil || !ck.v.VerifyRequest(ts, nonce, r.Method, signedPath(r), body, sig) {
		return nil, plainf(http.StatusUnauthorized, "Invalid signature: Signature verification failed: signature error")
	}
	if known && !cached {
		s.keys.put(keyHex, ck)
	}
	info(r.Context()).key = ck.hex
	c := &caller{key: ck.hex, agent: agent, body: body, nowNs: nowNs, ck: ck, provider: ck.hex}
	if !agent {
		return c, nil
	}
	d, err := s.liveDelegation(r, c)
	if err != nil {
		return nil, err
	}
	c.deleg, c.provider = d, d.ProviderPubkey
	return c, nil
}

// liveDelegation is get_active_delegation: live keeps one delegation per
// agent key; dc-api keeps one per provider and agent, and takes the one
// from the provider in the path (or of the contract in the path) when
// there is one.
func (s *Server) liveDelegation(r *http.Request, c *caller) (*store.Delegation, error) {
	ctx := r.Context()
	p := strings.ToLower(r.PathValue("pubkey"))
	if cid := strings.ToLower(r.PathValue("cid")); p == "" && isHex64(cid) {
		if ct, err := s.st.GetContract(ctx, cid); err == nil {
			p = ct.ProviderPubkey
		}
	}
	if isHex64(p) {
		d, err := s.st.GetDelegation(ctx, p, c.key)
		if err == nil && d.Active(c.nowNs) {
			return d, nil
		}
		if err != nil && !store.IsNotFound(err) {
			return nil, err
		}
	}
	d, err := s.st.ActiveDelegation(ctx, c.key, c.nowNs)
	if store.IsNotFound(err) {
		return nil, plainf(http.StatusUnauthorized, "Invalid signature: No active delegation found for agent key '%s'", c.key)
	}
	return d, err
}

func missingHeader(name string) error {
	return plainf(http.StatusUnauthorized, "Missing required header: %s", name)
}

// rustIntErr words a strconv.ParseInt error as Rust's ParseIntError.
func rustIntErr(s string, err error) string {
	switch {
	case s == "":
		return "cannot parse integer from empty string"
	case errors.Is(err, strconv.ErrRange) && strings.HasPrefix(s, "-"):
		return "number too small to fit in target type"
	case errors.Is(err, strconv.ErrRange):
		return "number too large to fit in target type"
	}
	return "invalid digit found in string"
}

// Live's per-IP rate limit (api/src/rate_limit.rs): a fixed window of a
// minute per client IP and tier, 120 requests for GET/HEAD/OPTIONS
// ("relaxed"), 60 for the rest ("standard"); beyond it 429 "Rate limit
// exceeded. Please try again later." with Retry-After: 60. The dashboard
// and /healthz are not counted (live skips / and /api/v1/health).
const (
	liveRateWindow   = time.Minute
	liveReadsPerMin  = 120
	liveWritesPerMin = 60
	liveRateMaxKeys  = 50_000
	liveRateSweep    = 500
)

type ipLimiter struct {
	mu      sync.Mutex
	entries map[string]*ipWindow
	seen    int
}

type ipWindow struct {
	n     int
	start time.Time
}

func newIPLimiter() *ipLimiter { return &ipLimiter{entries: map[string]*ipWindow{}} }

// check counts r and refuses it when its window is full.
func (l *ipLimiter) check(r *http.Request, now time.Time) error {
	if r.URL.Path == "/" || r.URL.Path == "/healthz" {
		return nil
	}
	tier, max := "standard", liveWritesPerMin
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		tier, max = "relaxed", liveReadsPerMin
	}
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = "unknown"
	}
	key := ip + ":" + tier
	l.mu.Lock()
	l.seen++
	if l.seen >= liveRateSweep || len(l.entries) > liveRateMaxKeys {
		l.seen = 0
		for k, e := range l.entries {
			if now.Sub(e.start) >= liveRateWindow {
				delete(l.entries, k)
			}
		}
	}
	e := l.entries[key]
	if e == nil || now.Sub(e.start) >= liveRateWindow {
		e = &ipWindow{start: now}
		l.entries[key] = e
	}
	e.n++
	ok := e.n <= max
	l.mu.Unlock()
	if ok {
		return nil
	}
	return &plainError{status: http.StatusTooManyRequests, msg: "Rate limit exceeded. Please try again later.",
		header: http.Header{"Retry-After": {"60"}, "X-Ratelimit-Tier": {tier}}}
}
