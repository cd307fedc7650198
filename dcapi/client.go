package dcapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/safeurl"
)

// DefaultMaxResponseBytes bounds how much of a response body is read.
const DefaultMaxResponseBytes = 16 << 20

// DefaultTimeout is the per-request timeout unless WithTimeout says otherwise.
const DefaultTimeout = 30 * time.Second

// Client talks to a Decent Cloud API, signing every request with its key.
// In agent mode (the default) the key is a delegated agent key; in provider
// mode it is the provider's main key.
type Client struct {
	base         *url.URL
	provider     string
	key          ed25519.PrivateKey
	keyHex       string
	providerMode bool
	hc           *http.Client
	timeout      time.Duration
	userAgent    string
	now          func() time.Time
	log          *slog.Logger
	maxResponse  int64
	pacer        *Pacer
}

// Option configures a Client.
type Option func(*Client)

// WithProviderMode signs with X-Public-Key (the key is the provider's main key).
func WithProviderMode() Option { return func(c *Client) { c.providerMode = true } }

// WithHTTPClient replaces the HTTP client (its Timeout should be 0: the
// client applies per-request timeouts itself).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithTimeout sets the per-request timeout (long-polls add their wait).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithUserAgent sets the User-Agent header.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithClock injects the clock used for X-Timestamp (tests).
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithLogger logs one debug line per request: method, path, status,
// duration. Headers and bodies are never logged.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.log = l } }

// WithMaxResponseBytes changes the response size limit (default 16 MiB); a
// larger response is a permanent error, never read into memory whole.
func WithMaxResponseBytes(n int64) Option { return func(c *Client) { c.maxResponse = n } }

// New returns a client for endpoint (e.g. https://api.decent-cloud.org),
// acting for provider (hex) with key.
func New(endpoint, provider string, key ed25519.PrivateKey, opts ...Option) (*Client, error) {
	u, err := ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	p, err := identity.NormalizePublicKeyHex(provider)
	if err != nil {
		return nil, fmt.Errorf("provider public key: %w", err)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("signing key is missing or malformed")
	}
	c := unsignedClient(u, opts)
	c.provider, c.key, c.keyHex = p, key, identity.PublicHex(key)
	return c, nil
}

// unsignedClient is a client for u with opts applied, not yet signing.
func unsignedClient(u *url.URL, opts []Option) *Client {
	c := &Client{
		base:        u,
		hc:          &http.Client{Transport: http.DefaultTransport},
		timeout:     DefaultTimeout,
		userAgent:   "dc-agent",
		now:         time.Now,
		log:         slog.New(slog.DiscardHandler),
		maxResponse: DefaultMaxResponseBytes,
	}
	for _, o := range opts {
		o(c)
	}
	// Signed headers must never be re-sent to wherever a redirect points
	// (Go's client would, to any host): the redirect comes back as the
	// answer and DoRaw turns it into an error. A copy, so an injected
	// client is left as it was.
	hc := *c.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.hc = &hc
	return c
}

// ParseEndpoint validates an API endpoint URL.
func ParseEndpoint(endpoint string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(endpoint))
	if err != nil {
		return nil, fmt.Errorf("API endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("API endpoint %q must start with https:// (or http:// for a server on this machine)", endpoint)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("API endpoint %q has no host", endpoint)
	}
	if err := safeurl.Check(u); err != nil {
		return nil, fmt.Errorf("API endpoint %q uses plain http to another machine, where anyone on the path could read and answer the agent's requests; use https:// (http:// only for a loopback address such as http://127.0.0.1:8080)", endpoint)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("API endpoint %q must not have a query or fragment", endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// Provider is the provider key (hex) the client acts for.
func (c *Client) Provider() string { return c.provider }

// KeyHex is the public key the client signs with.
func (c *Client) KeyHex() string { return c.keyHex }

// Endpoint is the base URL.
func (c *Client) Endpoint() string { return c.base.String() }

// Response carries what a caller may want from a raw Do beyond the data.
type Response struct {
	StatusCode int
	Header     http.Header
}

// Do sends a signed request to APIPrefix+path with an optional query and
// JSON body, and decodes the envelope's data into out (if non-nil).
// timeout 0 means the client's default.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any, out any, timeout time.Duration) (*Response, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encode %s %s body: %w", method, path, err)
		}
	}
	return c.DoRaw(ctx, method, path, query, raw, out, timeout)
}

// DoRaw is Do with a pre-encoded body (signed exactly as given).
func (c *Client) DoRaw(ctx context.Context, method, path string, query url.Values, raw []byte, out any, timeout time.Duration) (*Response, error) {
	if timeout <= 0 {
		timeout = c.timeout
	}
	if err := checkPath(path); err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if c.pacer != nil {
		if err := c.pacer.wait(ctx, method); err != nil {
			return nil, &Error{Method: method, Path: path, Kind: KindRetryable, Err: fmt.Errorf("waiting for the request budget: %w", err)}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	u := *c.base
	u.Path = c.base.Path + APIPrefix + path
	u.RawQuery = query.Encode()
	signedPath := u.EscapedPath()

	var rd io.Reader
	if raw != nil {
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, fmt.Errorf("build %s %s: %w", method, path, err)
	}
	c.sign(req.Header, method, signedPath, raw)
	if raw != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	r, data, err := c.roundTrip(req, method, path)
	if err != nil {
		return r, err
	}
	return r, decodeResponse(method, path, r.StatusCode, r.Header, data, out, c.now)
}

// roundTrip sends req and reads the answer's body, within the size limit;
// a transport failure, a redirect or an oversized body is an *Error.
func (c *Client) roundTrip(req *http.Request, method, path string) (*Response, []byte, error) {
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)

	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.log.Debug("api request failed", "method", method, "path", path, "err", err, "duration", time.Since(start))
		return nil, nil, &Error{Method: method, Path: path, Kind: KindRetryable, Err: err}
	}
	defer resp.Body.Close()
	r := &Response{StatusCode: resp.StatusCode, Header: resp.Header}
	if resp.StatusCode >= 300 && resp.StatusCode <= 399 {
		// Not followed (New): say where it pointed and what to change. Retryable,
		// so nothing queued is dropped while the endpoint is being fixed.
		where := "elsewhere"
		if loc, err := resp.Location(); err == nil {
			where = "to " + safeurl.Redact(loc)
		}
		return r, nil, &Error{Method: method, Path: path, StatusCode: resp.StatusCode, Kind: KindRetryable,
			Message: fmt.Sprintf("the API redirects %s; signed requests are never sent on to a redirect's target: set api.endpoint to the address the API answers on itself", where)}
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, c.maxResponse+1))
	c.log.Debug("api request", "method", method, "path", path, "status", resp.StatusCode, "duration", time.Since(start))
	if resp.StatusCode == http.StatusTooManyRequests && c.pacer != nil {
		// Every request of this tier waits, not only the loop that got it.
		c.pacer.hold(method, retryAfter(resp.Header.Get("Retry-After"), c.now))
	}
	if err != nil {
		return r, nil, &Error{Method: method, Path: path, StatusCode: resp.StatusCode, Kind: KindRetryable, Err: fmt.Errorf("read response: %w", err)}
	}
	if int64(len(data)) > c.maxResponse {
		return r, nil, &Error{Method: method, Path: path, StatusCode: resp.StatusCode, Kind: KindPermanent,
			Message: fmt.Sprintf("response larger than %d bytes; refusing to read it", c.maxResponse)}
	}
	return r, data, nil
}

// sign sets the signed-request headers (PROTOCOL.md §2) for method,
// signedPath (the escaped path as sent, with the API prefix) and body raw.
func (c *Client) sign(h http.Header, method, signedPath string, raw []byte) {
	ts := strconv.FormatInt(c.now().UnixNano(), 10)
	nonce := uuid.NewString()
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderNonce, nonce)
	if c.providerMode {
		h.Set(HeaderPublicKey, c.keyHex)
	} else {
		h.Set(HeaderAgentPubkey, c.keyHex)
	}
	h.Set(HeaderSignature, identity.SignRequest(c.key, ts, nonce, method, signedPath, raw))
}

// checkPath refuses path segments that would change which endpoint is
// addressed (contract ids and keys come from the network): "..", ".",
// empty segments, and characters with meaning in a URL.
func checkPath(path string) error {
	if !strings.HasPrefix(path, "/") {
		return errors.New("path must start with /")
	}
	for _, seg := range strings.Split(path[1:], "/") {
		if err := checkSegment(seg); err != nil {
			return err
		}
	}
	return nil
}

func checkSegment(seg string) error {
	if seg == "" || seg == "." || seg == ".." || strings.ContainsFunc(seg, func(r rune) bool {
		return r <= ' ' || r == 0x7f || strings.ContainsRune("/?#%\\", r)
	}) {
		return fmt.Errorf("path segment %q is not allowed (a malformed id?)", seg)
	}
	return nil
}

// idPath joins path parts, refusing an id that would span or escape a segment.
func idPath(prefix, id, suffix string) (string, error) {
	if err := checkSegment(id); err != nil {
		return "", err
	}
	return prefix + id + suffix, nil
}

// decodeResponse turns a status and body into data or a typed error. It
// understands both the live service's style (HTTP 200 with success:false,
// plain-text auth errors) and proper status codes with an envelope.
func decodeResponse(method, path string, status int, header http.Header, data []byte, out any, now func() time.Time) error {
	fail := func(kind Kind, msg string) error {
		return &Error{Method: method, Path: path, StatusCode: status, Kind: kind, Message: msg,
			RetryAfter: retryAfter(header.Get("Retry-After"), now)}
	}
	if status == http.StatusNoContent && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	var env struct {
		Success *bool           `json:"success"`
		Data    json.RawMessage `json:"data"`
		Error   string          `json:"error"`
	}
	isJSON := json.Unmarshal(data, &env) == nil && env.Success != nil
	if status < 200 || status > 299 {
		msg := ""
		if isJSON {
			msg = env.Error
		} else {
			msg = plainMessage(data)
		}
		return fail(classify(status), msg)
	}
	if !isJSON {
		return fail(KindPermanent, "response is not a JSON envelope: "+plainMessage(data))
	}
	if !*env.Success {
		msg := env.Error
		if msg == "" {
			msg = "request failed (success:false without an error message)"
		}
		return fail(classifyMessage(msg), msg)
	}
	if out == nil || len(env.Data) == 0 || string(env.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fail(KindPermanent, fmt.Sprintf("unexpected response data: %v", err))
	}
	return nil
}

// maxRetryAfter caps what a server may ask the agent to wait.
const maxRetryAfter = time.Hour

// retryAfter parses a Retry-After value: delay-seconds or an HTTP date.
func retryAfter(v string, now func() time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		d = time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now())
	}
	return max(0, min(d, maxRetryAfter))
}

// classifyMessage guesses the kind of a success:false error from the live
// service, which answers handler errors with HTTP 200 — permission and
// ownership refusals too (require_permission in api/src/auth.rs, the
// provider checks of api/src/openapi/*.rs), and "Agent must belong to a
// pool" for a delegation without a pool (providers.rs): those are auth
// problems, fixed by a human, not refusals of one request.
func classifyMessage(msg string) Kind {
	m := strings.ToLower(msg)
	switch {
	case strings.Contains(m, "unauthorized"),
		strings.Contains(m, "delegation") && (strings.Contains(m, "revoked") || strings.Contains(m, "expired") || strings.Contains(m, "no active")),
		strings.Contains(m, "does not have '") && strings.Contains(m, "permission"),
		strings.Contains(m, "must belong to a pool"),
		strings.Contains(m, "not delegated by this provider"):
		return KindAuth
	case strings.Contains(m, "not found"):
		return KindNotFound
	case strings.Contains(m, "timeout") || strings.Contains(m, "temporar") || strings.Contains(m, "database is locked"):
		return KindRetryable
	default:
		return KindPermanent
	}
}

// plainMessage renders a non-JSON body as a short, printable message.
func plainMessage(data []byte) string {
	s := strings.TrimSpace(string(data))
	if !utf8.ValidString(s) {
		return fmt.Sprintf("(%d bytes of non-text response)", len(data))
	}
	if len(s) > 300 {
		cut := 300
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' {
			return ' '
		}
		return r
	}, s)
}

func (c *Client) providerPath(suffix string) string {
	return "/providers/" + c.provider + suffix
}

// PendingContracts fetches contracts ready to provision, oldest first. With
// wait > 0 it asks for a long-poll; longPoll reports whether the server
// honoured it (if not, the caller should fall back to interval polling).
func (c *Client) PendingContracts(ctx context.Context, wait time.Duration) (contracts []PendingContract, longPoll bool, err error) {
	var q url.Values
	timeout := c.timeout
	if wait > 0 {
		secs := min(int(wait/time.Second), MaxWaitSeconds)
		q = url.Values{"waitSeconds": {strconv.Itoa(secs)}}
		timeout += time.Duration(secs) * time.Second
	}
	resp, err := c.Do(ctx, http.MethodGet, c.providerPath("/contracts/pending-provision"), q, nil, &contracts, timeout)
	if err != nil {
		return nil, false, err
	}
	return contracts, resp.Header.Get(HeaderLongPoll) != "", nil
}

// LockContract acquires (or renews) the provisioning lock.
func (c *Client) LockContract(ctx context.Context, contractID string) (LockResult, error) {
	var out LockResult
	p, err := idPath(c.providerPath("/contracts/"), contractID, "/lock")
	if err != nil {
		return out, err
	}
	_, err = c.Do(ctx, http.MethodPost, p, nil, nil, &out, 0)
	return out, err
}

// UnlockContract releases the provisioning lock.
func (c *Client) UnlockContract(ctx context.Context, contractID string) error {
	p, err := idPath(c.providerPath("/contracts/"), contractID, "/lock")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodDelete, p, nil, nil, nil, 0)
	return err
}

// UpdateProvisioning PUTs a status transition (PROTOCOL.md §6).
func (c *Client) UpdateProvisioning(ctx context.Context, contractID string, u ProvisioningUpdate) error {
	p, err := idPath("/provider/rental-requests/", contractID, "/provisioning")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodPut, p, nil, u, nil, 0)
	return err
}

// ProvisionedUpdate builds the success update.
func ProvisionedUpdate(d InstanceDetails) (ProvisioningUpdate, error) {
	b, err := json.Marshal(d)
	if err != nil {
		return ProvisioningUpdate{}, err
	}
	return ProvisioningUpdate{Status: StatusProvisioned, InstanceDetails: string(b)}, nil
}

// FailedUpdate builds the failure update.
func FailedUpdate(msg string, retryPossible bool) ProvisioningUpdate {
	b, _ := json.Marshal(FailureDetails{Error: msg, RetryPossible: retryPossible})
	return ProvisioningUpdate{Status: StatusProvisioningFailed, InstanceDetails: string(b)}
}

// Heartbeat reports the agent alive.
func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatResponse, error) {
	var out HeartbeatResponse
	_, err := c.Do(ctx, http.MethodPost, c.providerPath("/heartbeat"), nil, hb, &out, 0)
	return out, err
}

// ReportHealth posts one health check.
func (c *Client) ReportHealth(ctx context.Context, contractID string, h HealthCheck) error {
	h.ContractID = ""
	p, err := idPath("/contracts/", contractID, "/health")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodPost, p, nil, h, nil, 0)
	return err
}

// ReportHealthBatch posts up to MaxHealthBatch checks at once (extension).
// A server without batch support answers 404: IsNotFound(err) is then true.
func (c *Client) ReportHealthBatch(ctx context.Context, checks []HealthCheck) (int, error) {
	var out HealthBatchResult
	_, err := c.Do(ctx, http.MethodPost, c.providerPath("/health"), nil, HealthBatch{Checks: checks}, &out, 0)
	return out.Accepted, err
}

// ActiveContracts lists the provider's live contracts.
func (c *Client) ActiveContracts(ctx context.Context) ([]ActiveContract, error) {
	var out []ActiveContract
	_, err := c.Do(ctx, http.MethodGet, c.providerPath("/contracts/active"), nil, nil, &out, 0)
	return out, err
}

// Reconcile asks which running instances to keep or terminate.
func (c *Client) Reconcile(ctx context.Context, running []ReconcileInstance) (ReconcileResponse, error) {
	var out ReconcileResponse
	if running == nil {
		running = []ReconcileInstance{}
	}
	_, err := c.Do(ctx, http.MethodPost, c.providerPath("/reconcile"), nil, ReconcileRequest{RunningInstances: running}, &out, 0)
	return out, err
}

// MarkTerminated reports that a contract's instance is gone.
func (c *Client) MarkTerminated(ctx context.Context, contractID string) error {
	p, err := idPath(c.providerPath("/contracts/"), contractID, "/terminated")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodPut, p, nil, nil, nil, 0)
	return err
}

// DelegationRequestBody converts a signed delegation to the API body.
func DelegationRequestBody(sd identity.SignedDelegation) CreateDelegationRequest {
	var label *string
	if sd.Label != "" {
		l := sd.Label
		label = &l
	}
	return CreateDelegationRequest{
		AgentPubkey: sd.AgentPubkey,
		Permissions: sd.Permissions,
		ExpiresAtNs: sd.ExpiresAtNs,
		IssuedAtNs:  sd.IssuedAtNs,
		Label:       label,
		Signature:   sd.SignatureHex(),
	}
}

// RegisterDelegation posts a signed delegation. In agent mode the request is
// signed by the agent key the delegation names (PROTOCOL.md §3).
func (c *Client) RegisterDelegation(ctx context.Context, sd identity.SignedDelegation) error {
	_, err := c.Do(ctx, http.MethodPost, c.providerPath("/agent-delegations"), nil, DelegationRequestBody(sd), nil, 0)
	return err
}

// ListDelegations lists the provider's delegations (provider mode).
func (c *Client) ListDelegations(ctx context.Context) ([]DelegationInfo, error) {
	var out []DelegationInfo
	_, err := c.Do(ctx, http.MethodGet, c.providerPath("/agent-delegations"), nil, nil, &out, 0)
	return out, err
}

// GetDelegation reads one delegation (extension of the reference server:
// the provider's main key, or the delegated agent key itself, may read it;
// servers without it answer 404).
func (c *Client) GetDelegation(ctx context.Context, agentPubkey string) (DelegationInfo, error) {
	var out DelegationInfo
	_, err := c.Do(ctx, http.MethodGet, c.providerPath("/agent-delegations/"+agentPubkey), nil, nil, &out, 0)
	return out, err
}

// RevokeDelegation revokes an agent key (provider mode).
func (c *Client) RevokeDelegation(ctx context.Context, agentPubkey string) error {
	p, err := idPath(c.providerPath("/agent-delegations/"), agentPubkey, "")
	if err != nil {
		return err
	}
	_, err = c.Do(ctx, http.MethodDelete, p, nil, nil, nil, 0)
	return err
}

// AgentStatus reads the public agent status (with dc-api's Agents list
// when the server gives one; Validate checks it).
func (c *Client) AgentStatus(ctx context.Context) (AgentStatus, error) {
	var out AgentStatus
	p := c.providerPath("/agent-status")
	if _, err := c.Do(ctx, http.MethodGet, p, nil, nil, &out, 0); err != nil {
		return out, err
	}
	if err := out.Validate(); err != nil {
		return AgentStatus{}, &Error{Method: http.MethodGet, Path: p, StatusCode: http.StatusOK, Kind: KindPermanent, Message: err.Error()}
	}
	return out, nil
}

// HealthSummary reads the public uptime summary over days.
func (c *Client) HealthSummary(ctx context.Context, days int) (HealthSummary, error) {
	var out HealthSummary
	_, err := c.Do(ctx, http.MethodGet, c.providerPath("/health-summary"), url.Values{"days": {strconv.Itoa(days)}}, nil, &out, 0)
	return out, err
}
