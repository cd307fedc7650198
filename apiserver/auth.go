package apiserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// caller is an authenticated request.
type caller struct {
	key      string // lowercase hex of the signing key
	agent    bool   // X-Agent-Pubkey (delegated) rather than X-Public-Key (provider)
	provider string // the provider the request acts for
	deleg    *store.Delegation
	body     []byte // the exact signed bytes
	nowNs    int64
	tsNs     int64      // X-Timestamp
	nonce    string     // X-Nonce
	ck       *cachedKey // the signing key's cache entry
}

// access says who may call an endpoint.
type access int

const (
	// agentOnly: a delegated agent key with the endpoint's permission.
	agentOnly access = iota
	// providerOnly: the provider's main key (X-Public-Key = {pubkey}).
	providerOnly
	// providerOrSelf: the main key, or the agent key named by {agentPubkey}
	// (reading one's own delegation, revoked or not).
	providerOrSelf
	// registration: the main key, or the agent key named in the body of a
	// self-authenticating signed delegation (PROTOCOL.md §3).
	registration
)

// providerSource says where an endpoint names its provider.
type providerSource int

const (
	fromPath     providerSource = iota // {pubkey}
	fromContract                       // the provider of contract {cid}
	fromAgent                          // the provider delegating the agent key (no provider in the path)
)

type endpoint struct {
	access access
	perm   string
	source providerSource
}

// authedHandler serves an authenticated request.
type authedHandler func(w http.ResponseWriter, r *http.Request, c *caller) error

// signed wraps h with PROTOCOL.md §2 verification and the endpoint's
// authorization. Nothing is parsed or written before the signature verifies.
// The nonce is recorded once the key may act (issue 15, finding 1): after
// authorization, or for an agent's self-registration in the handler, once
// the body's delegation verifies.
func (s *Server) signed(ep endpoint, h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := s.authenticate(r)
		if err == nil {
			err = s.authorize(r, ep, c)
		}
		if err == nil && (ep.access != registration || !c.agent) {
			err = s.spendNonce(r.Context(), c)
		}
		if err == nil {
			err = h(w, r, c)
		}
		if err != nil {
			s.writeError(w, r, err)
		}
	}
}

// authenticate runs steps 1–4 of PROTOCOL.md §2 plus the limits: before
// the body is read, a key the server does not know (no active delegation,
// not a registered provider) takes a token of the global unknown-key limit
// and may send only a small body (issue 15, findings 1 and 8); a known key,
// once its signature verifies, takes one of its own rate limit.
func (s *Server) authenticate(r *http.Request) (*caller, error) {
	h := r.Header
	ts, nonce, sigHex := h.Get(dcapi.HeaderTimestamp), h.Get(dcapi.HeaderNonce), h.Get(dcapi.HeaderSignature)
	agentKey, provKey := h.Get(dcapi.HeaderAgentPubkey), h.Get(dcapi.HeaderPublicKey)

	// 1. Required headers.
	var missing []string
	for _, p := range [][2]string{{dcapi.HeaderTimestamp, ts}, {dcapi.HeaderNonce, nonce}, {dcapi.HeaderSignature, sigHex}} {
		if p[1] == "" {
			missing = append(missing, p[0])
		}
	}
	if agentKey == "" && provKey == "" {
		missing = append(missing, dcapi.HeaderAgentPubkey+" (or "+dcapi.HeaderPublicKey+")")
	}
	if len(missing) > 0 {
		return nil, errorf(http.StatusUnauthorized, "unsigned request: missing header %s (PROTOCOL.md §2)", strings.Join(missing, ", "))
	}
	if agentKey != "" && provKey != "" {
		return nil, errorf(http.StatusBadRequest, "send exactly one of %s (agent key) or %s (provider key), not both", dcapi.HeaderAgentPubkey, dcapi.HeaderPublicKey)
	}

	// 2. Formats.
	keyHex, header := agentKey, dcapi.HeaderAgentPubkey
	if provKey != "" {
		keyHex, header = provKey, dcapi.HeaderPublicKey
	}
	ck := s.keys.get(keyHex)
	cached := ck != nil
	if !cached {
		pub, err := identity.ParsePublicKeyHex(keyHex)
		if err != nil || strings.TrimSpace(keyHex) != keyHex {
			return nil, errorf(http.StatusBadRequest, "%s must be 64 hex characters (the Ed25519 public key)", header)
		}
		ck = &cachedKey{hex: hex.EncodeToString(pub)}
		// A key off the curve verifies nothing: ck.v stays nil and the
		// signature check below refuses the request as any bad signature.
		ck.v, _ = identity.NewVerifier(pub)
	}
	sig, err := identity.ParseSignatureHex(sigHex)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%s must be 128 hex characters (the Ed25519ph signature)", dcapi.HeaderSignature)
	}
	tsNs, err := parseTimestamp(ts)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "%s must be Unix time in nanoseconds (a decimal integer), got %q", dcapi.HeaderTimestamp, clip(ts))
	}
	if !validNonce(nonce) {
		return nil, errorf(http.StatusBadRequest, "%s must be 1..128 printable ASCII characters (a fresh UUIDv4)", dcapi.HeaderNonce)
	}

	// 3. Time window.
	now := s.now()
	nowNs := now.UnixNano()
	if d := nowNs - tsNs; d > dcapi.TimestampWindowNs || d < -dcapi.TimestampWindowNs {
		return nil, errorf(http.StatusUnauthorized, "request timestamp outside the 5 minute window (server time %d, request %d); check the clock", nowNs, tsNs)
	}

	// The key: known, or limited before anything costly.
	known := cached
	if !known {
		if known, err = s.knownKey(r.Context(), ck.hex, agentKey != "", nowNs); err != nil {
			return nil, err
		}
		if !known {
			if err := s.admitUnknown(r, now); err != nil {
				return nil, err
			}
		}
	}

	// 4. Signature, over the exact bytes received.
	body, err := readBody(r)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		return nil, errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if ck.v == nil || !ck.v.VerifyRequest(ts, nonce, r.Method, signedPath(r), body, sig) {
		return nil, errorf(http.StatusUnauthorized, "invalid signature: the request was altered or not signed by %s (signed message: %s ‖ %s ‖ METHOD ‖ PATH without query ‖ BODY, Ed25519ph with context %q)",
			header, dcapi.HeaderTimestamp, dcapi.HeaderNonce, identity.SignatureContext)
	}
	if known && !cached {
		s.keys.put(keyHex, ck)
	}
	key := ck.hex
	info(r.Context()).key = key

	// Rate limit per known key (before the nonce is spent, so a limited
	// client may simply retry). Unknown keys share the global limit.
	if known && s.limiter != nil {
		if wait, ok := s.limiter.allow(key, now); !ok {
			return nil, &apiError{status: http.StatusTooManyRequests, msg: "rate limit exceeded for this key; slow down", retryAfter: wait}
		}
	}
	return &caller{key: key, agent: agentKey != "", body: body, nowNs: nowNs, tsNs: tsNs, nonce: nonce, ck: ck}, nil
}

// spendNonce is step 5, the replay check, for a request whose key may act:
// in this process's cache, then (--replay-cache database) in the one every
// dc-api on the database shares.
func (s *Server) spendNonce(ctx context.Context, c *caller) error {
	replayed := errorf(http.StatusUnauthorized, "replayed request: nonce %q was already used by this key", clip(c.nonce))
	switch s.nonces.add(c.key, c.nonce, c.tsNs, c.nowNs) {
	case nonceReplayed:
		return replayed
	case nonceStale:
		return errorf(http.StatusUnauthorized, "replayed or stale request: signed at %s, no later than a request of this key the server no longer remembers one by one; sign it again (a fresh timestamp and nonce)", fmtNs(c.tsNs))
	}
	if !s.sharedNonces {
		return nil
	}
	if last := s.lastExpire.Load(); c.nowNs-last > int64(time.Minute) && s.lastExpire.CompareAndSwap(last, c.nowNs) {
		if _, err := s.st.ExpireNonces(ctx, c.nowNs-dcapi.TimestampWindowNs); err != nil {
			s.log.WarnContext(ctx, "expire shared nonces", "err", err)
		}
	}
	sum := sha256.Sum256([]byte(c.nonce))
	fresh, err := s.st.RecordNonce(ctx, c.key, hex.EncodeToString(sum[:16]), c.tsNs)
	if err != nil {
		s.log.ErrorContext(ctx, "shared replay cache", "request_id", requestID(ctx), "err", err)
		return &apiError{status: http.StatusServiceUnavailable, msg: "the replay cache (database) is unavailable; retry shortly", retryAfter: 1}
	}
	if !fresh {
		return replayed
	}
	return nil
}

// knownKey reports whether the server knows key: an agent key some
// provider delegates to (actively), or a registered provider's key.
func (s *Server) knownKey(ctx context.Context, key string, agent bool, nowNs int64) (bool, error) {
	if agent {
		return s.st.AgentHasActiveDelegation(ctx, key, nowNs)
	}
	_, err := s.st.GetProvider(ctx, key)
	if store.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// maxUnknownBody bounds the body of a request from a key the server does
// not know, and of the unsigned setup request: what such a request may do
// (register a delegation, create a pool, use a setup token) takes well
// under a kilobyte.
const maxUnknownBody = 16 << 10

// admitUnknown applies the global limit of unknown keys (and unsigned
// setup requests) to r and bounds its body, before it is read.
func (s *Server) admitUnknown(r *http.Request, now time.Time) error {
	if s.unknownLimit != nil {
		if wait, ok := s.unknownLimit.allow("unknown", now); !ok {
			if s.live {
				return &plainError{status: http.StatusTooManyRequests, msg: "Rate limit exceeded. Please try again later.",
					header: http.Header{"Retry-After": {strconv.Itoa(wait)}}}
			}
			return &apiError{status: http.StatusTooManyRequests, retryAfter: wait,
				msg: "too many requests from keys this server does not know (no active delegation, not a registered provider); retry later"}
		}
	}
	if r.ContentLength > maxUnknownBody {
		if s.live {
			return plainf(http.StatusRequestEntityTooLarge, "payload too large")
		}
		return errorf(http.StatusRequestEntityTooLarge, "request body is %d bytes; a key this server does not know may send at most %d", r.ContentLength, maxUnknownBody)
	}
	r.Body = http.MaxBytesReader(nil, r.Body, maxUnknownBody)
	return nil
}

// authorize runs step 6: which key may call this endpoint for which provider.
func (s *Server) authorize(r *http.Request, ep endpoint, c *caller) error {
	ctx := r.Context()
	switch ep.source {
	case fromPath:
		p, err := pathKey(r, "pubkey", "provider key")
		if err != nil {
			return err
		}
		c.provider = p
	case fromContract:
		cid := r.PathValue("cid")
		if !isHex64(cid) {
			return errorf(http.StatusBadRequest, "contract id in the path must be 64 lowercase hex characters, got %q", clip(cid))
		}
		if c.agent {
			// An agent nobody delegates to learns nothing about contracts.
			ok, err := s.st.AgentHasActiveDelegation(ctx, c.key, c.nowNs)
			if err != nil {
				return err
			}
			if !ok {
				return s.delegationError(ctx, "", c)
			}
		}
		ct, err := s.st.GetContract(ctx, cid)
		if err != nil {
			return err
		}
		c.provider = ct.ProviderPubkey
	case fromAgent:
		if !c.agent {
			return errorf(http.StatusForbidden, "this endpoint takes a delegated agent key (%s)", dcapi.HeaderAgentPubkey)
		}
		d, err := s.st.ActiveDelegation(ctx, c.key, c.nowNs)
		if store.IsNotFound(err) {
			return s.delegationError(ctx, "", c)
		}
		if err != nil {
			return err
		}
		c.provider = d.ProviderPubkey
	}

	switch ep.access {
	case agentOnly:
		if !c.agent {
			return errorf(http.StatusForbidden, "this endpoint takes a delegated agent key (%s); the provider's main key (%s) is only for managing delegations", dcapi.HeaderAgentPubkey, dcapi.HeaderPublicKey)
		}
		return s.checkDelegation(ctx, c, ep.perm)
	case providerOnly:
		if c.agent {
			return errorf(http.StatusForbidden, "this endpoint takes the provider's main key (%s); an agent key cannot manage delegations", dcapi.HeaderPublicKey)
		}
		return providerKeyMatches(c)
	case providerOrSelf:
		if !c.agent {
			return providerKeyMatches(c)
		}
		agent, err := pathKey(r, "agentPubkey", "agent key")
		if err != nil {
			return err
		}
		if agent != c.key {
			return errorf(http.StatusForbidden, "an agent key may only read its own delegation")
		}
		return nil
	case registration:
		if !c.agent {
			return providerKeyMatches(c)
		}
		return nil // the handler checks the body names this agent key
	}
	return errors.New("unknown endpoint access")
}

func providerKeyMatches(c *caller) error {
	if c.key != c.provider {
		return errorf(http.StatusUnauthorized, "%s %s is not the provider key in the path (%s)", dcapi.HeaderPublicKey, c.key, c.provider)
	}
	return nil
}

// checkDelegation requires an active delegation from c.provider to the agent
// key, granting perm.
func (s *Server) checkDelegation(ctx context.Context, c *caller, perm string) error {
	d, err := s.st.GetDelegation(ctx, c.provider, c.key)
	if err != nil {
		if store.IsNotFound(err) {
			return s.delegationError(ctx, c.provider, c)
		}
		return err
	}
	switch {
	case d.RevokedAtNs != nil:
		return errorf(http.StatusUnauthorized, "delegation revoked: provider %s revoked agent key %s at %s", short(c.provider), short(c.key), fmtNs(*d.RevokedAtNs))
	case d.Expired(c.nowNs):
		return errorf(http.StatusUnauthorized, "delegation expired at %s for agent key %s; the provider must sign a new one", fmtNs(*d.ExpiresAtNs), short(c.key))
	case perm != "" && !d.Has(perm):
		return errorf(http.StatusForbidden, "permission %q missing: the delegation of agent key %s grants only %s", perm, short(c.key), strings.Join(d.Permissions, ","))
	}
	c.deleg = d
	return nil
}

func (s *Server) delegationError(ctx context.Context, provider string, c *caller) error {
	if provider == "" {
		return errorf(http.StatusUnauthorized, "no active delegation for agent key %s: the provider must delegate it (dc-agent delegation request, then dc-agent register)", short(c.key))
	}
	if _, err := s.st.GetProvider(ctx, provider); store.IsNotFound(err) {
		return errorf(http.StatusUnauthorized, "no delegation for agent key %s: provider %s is not registered on this server", short(c.key), short(provider))
	}
	return errorf(http.StatusUnauthorized, "no delegation for agent key %s from provider %s: register it (dc-agent register)", short(c.key), short(provider))
}

// readBody reads the whole body; with a Content-Length (within the size
// limit) into one buffer of that size.
func readBody(r *http.Request) ([]byte, error) {
	n := r.ContentLength
	if n < 0 || n > 64<<10 {
		return io.ReadAll(r.Body)
	}
	body := make([]byte, n, n+1)
	if _, err := io.ReadFull(r.Body, body); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errors.New("body shorter than its Content-Length")
		}
		return nil, err
	}
	// net/http stops at Content-Length; make sure of it.
	if m, err := r.Body.Read(body[n : n+1]); m > 0 {
		return nil, errors.New("body longer than its Content-Length")
	} else if err != nil && err != io.EOF {
		return nil, err
	}
	return body, nil
}

// signedPath is the path exactly as the client sent it, without the query.
func signedPath(r *http.Request) string {
	if u := r.RequestURI; strings.HasPrefix(u, "/") {
		if i := strings.IndexByte(u, '?'); i >= 0 {
			return u[:i]
		}
		return u
	}
	return r.URL.EscapedPath()
}

func parseTimestamp(s string) (int64, error) {
	if s == "" || len(s) > 20 {
		return 0, errors.New("bad timestamp")
	}
	for i := 0; i < len(s); i++ {
		if (s[i] < '0' || s[i] > '9') && !(i == 0 && s[i] == '-') {
			return 0, errors.New("bad timestamp")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func validNonce(n string) bool {
	if n == "" || len(n) > 128 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] <= ' ' || n[i] > '~' {
			return false
		}
	}
	return true
}

// pathKey reads a 64-hex key from the path.
func pathKey(r *http.Request, name, what string) (string, error) {
	v := r.PathValue(name)
	if !isHex64(v) {
		return "", errorf(http.StatusBadRequest, "%s in the path must be 64 lowercase hex characters, got %q", what, clip(v))
	}
	return v, nil
}

func isHex64(s string) bool { return identity.IsLowerHex64(s) }

// short abbreviates a key for messages.
func short(k string) string {
	if len(k) > 16 {
		return k[:16] + "…"
	}
	return k
}

func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
