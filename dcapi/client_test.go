package dcapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/identity"
)

var (
	agentKey    = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xa1}, 32))
	providerKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0xb2}, 32))
	providerHex = identity.PublicHex(providerKey)
	contractID  = strings.Repeat("c1", 32)
	fixedNow    = time.Unix(1700000000, 123456789)
)

// seen is one request as the server received it, after verification.
type seen struct {
	Method, Path, Query, Body, ContentType string
	Agent, Public, Nonce, Timestamp        string
}

var (
	nonceRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	tsRe    = regexp.MustCompile(`^[0-9]{19}$`)
)

// verifyingServer checks every request as PROTOCOL.md §2 says a server
// must, answering 401 with a plain-text reason when something is wrong, and
// otherwise calls h.
func verifyingServer(t *testing.T, h func(w http.ResponseWriter, r *http.Request, s seen)) (*httptest.Server, func() []seen) {
	t.Helper()
	var mu sync.Mutex
	var all []seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		s := seen{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.RawQuery, Body: string(body),
			ContentType: r.Header.Get("Content-Type"), Agent: r.Header.Get(HeaderAgentPubkey),
			Public: r.Header.Get(HeaderPublicKey), Nonce: r.Header.Get(HeaderNonce), Timestamp: r.Header.Get(HeaderTimestamp)}
		fail := func(msg string) {
			t.Errorf("server: %s %s: %s", r.Method, r.URL, msg)
			http.Error(w, "Unauthorized: "+msg, http.StatusUnauthorized)
		}
		keyHex := s.Agent
		if (s.Agent == "") == (s.Public == "") {
			fail("exactly one of X-Agent-Pubkey / X-Public-Key must be sent")
			return
		}
		if keyHex == "" {
			keyHex = s.Public
		}
		if !tsRe.MatchString(s.Timestamp) || !nonceRe.MatchString(s.Nonce) {
			fail("bad timestamp or nonce: " + s.Timestamp + " " + s.Nonce)
			return
		}
		pub, err := identity.ParsePublicKeyHex(keyHex)
		if err != nil {
			fail(err.Error())
			return
		}
		sig, err := identity.ParseSignatureHex(r.Header.Get(HeaderSignature))
		if err != nil {
			fail(err.Error())
			return
		}
		// The message is built here from the raw parts, independent of
		// identity.RequestMessage: the path as sent, without the query.
		msg := []byte(s.Timestamp + s.Nonce + r.Method + r.URL.EscapedPath() + string(body))
		if !identity.Verify(pub, msg, sig) {
			fail("invalid signature")
			return
		}
		if (len(body) > 0) != (s.ContentType == "application/json") {
			fail("Content-Type must be application/json exactly when there is a body, got " + s.ContentType)
			return
		}
		mu.Lock()
		all = append(all, s)
		mu.Unlock()
		h(w, r, s)
	}))
	t.Cleanup(srv.Close)
	return srv, func() []seen { mu.Lock(); defer mu.Unlock(); return append([]seen(nil), all...) }
}

func writeEnvelope(w http.ResponseWriter, status int, data any, errMsg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	env := map[string]any{"success": errMsg == ""}
	if data != nil {
		env["data"] = data
	}
	if errMsg != "" {
		env["error"] = errMsg
	}
	_ = json.NewEncoder(w).Encode(env)
}

func newClient(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := New(url, providerHex, agentKey, append([]Option{WithClock(func() time.Time { return fixedNow })}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestClientSignsEveryRequest(t *testing.T) {
	srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		switch {
		case strings.HasSuffix(s.Path, "/pending-provision"):
			writeEnvelope(w, 200, []map[string]any{{"contract_id": contractID, "offering_id": "o1", "requester_ssh_pubkey": "ssh-ed25519 AAAA", "unknown_field": 1}}, "")
		case strings.HasSuffix(s.Path, "/lock") && r.Method == http.MethodPost:
			writeEnvelope(w, 200, LockResult{Acquired: true, ExpiresAtNs: 42}, "")
		case strings.HasSuffix(s.Path, "/heartbeat"):
			writeEnvelope(w, 200, HeartbeatResponse{Acknowledged: true, NextHeartbeatSeconds: 60}, "")
		case strings.HasSuffix(s.Path, "/health-summary"):
			writeEnvelope(w, 200, HealthSummary{TotalChecks: 3}, "")
		default:
			writeEnvelope(w, 200, true, "")
		}
	})
	c := newClient(t, srv.URL+"/")
	ctx := context.Background()

	pending, _, err := c.PendingContracts(ctx, 45*time.Second)
	if err != nil || len(pending) != 1 || pending[0].ContractID != contractID || pending[0].RequesterSSHPubkey != "ssh-ed25519 AAAA" {
		t.Fatalf("pending: %+v %v", pending, err)
	}
	lock, err := c.LockContract(ctx, contractID)
	if err != nil || !lock.Acquired || lock.ExpiresAtNs != 42 {
		t.Fatalf("lock: %+v %v", lock, err)
	}
	hb, err := c.Heartbeat(ctx, Heartbeat{Version: "1.0", ProvisionerType: "proxmox"})
	if err != nil || !hb.Acknowledged || hb.NextHeartbeatSeconds != 60 {
		t.Fatalf("heartbeat: %+v %v", hb, err)
	}
	update, err := ProvisionedUpdate(InstanceDetails{ExternalID: "pve-101", IPAddress: "203.0.113.9", SSHPort: 22})
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return c.UnlockContract(ctx, contractID) },
		func() error { return c.UpdateProvisioning(ctx, contractID, update) },
		func() error { return c.MarkTerminated(ctx, contractID) },
		func() error { _, err := c.HealthSummary(ctx, 30); return err },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	got := requests()
	if len(got) != 7 {
		t.Fatalf("server saw %d requests, want 7", len(got))
	}
	nonces := map[string]bool{}
	for _, s := range got {
		if s.Agent != identity.PublicHex(agentKey) || s.Public != "" {
			t.Errorf("%s %s: agent mode must send only X-Agent-Pubkey", s.Method, s.Path)
		}
		if s.Timestamp != "1700000000123456789" {
			t.Errorf("timestamp %s, want the injected clock in ns", s.Timestamp)
		}
		if nonces[s.Nonce] {
			t.Errorf("nonce %s reused", s.Nonce)
		}
		nonces[s.Nonce] = true
		if !strings.HasPrefix(s.Path, "/api/v1/") {
			t.Errorf("path %s lacks /api/v1", s.Path)
		}
	}
	if got[0].Query != "waitSeconds=30" {
		t.Errorf("long-poll query %q, want waitSeconds capped at 30", got[0].Query)
	}
	if got[0].Path != "/api/v1/providers/"+providerHex+"/contracts/pending-provision" {
		t.Errorf("pending path %s", got[0].Path)
	}
	if got[1].Method != "POST" || got[1].Body != "" || got[1].ContentType != "" {
		t.Errorf("lock: %+v (no body, no Content-Type)", got[1])
	}
	if got[4].Method != "PUT" || got[4].Path != "/api/v1/provider/rental-requests/"+contractID+"/provisioning" {
		t.Errorf("provisioning update: %+v", got[4])
	}
	var pu ProvisioningUpdate
	if err := json.Unmarshal([]byte(got[4].Body), &pu); err != nil || pu.Status != StatusProvisioned || !strings.Contains(pu.InstanceDetails, `"external_id":"pve-101"`) {
		t.Errorf("provisioning body %s", got[4].Body)
	}
	if got[6].Query != "days=30" {
		t.Errorf("health-summary query %q", got[6].Query)
	}
}

func TestClientProviderMode(t *testing.T) {
	srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		writeEnvelope(w, 200, []DelegationInfo{{AgentPubkey: identity.PublicHex(agentKey), Active: true}}, "")
	})
	c, err := New(srv.URL, providerHex, providerKey, WithProviderMode())
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.ListDelegations(context.Background())
	if err != nil || len(list) != 1 || !list[0].Active {
		t.Fatalf("list: %+v %v", list, err)
	}
	s := requests()[0]
	if s.Public != providerHex || s.Agent != "" {
		t.Fatalf("provider mode headers: %+v", s)
	}
	// The timestamp comes from the real clock by default: within a minute.
	if ts := s.Timestamp; len(ts) != 19 || ts < "1700000000000000000" {
		t.Fatalf("timestamp %s", ts)
	}
}

func TestClientErrorKinds(t *testing.T) {
	type reply struct {
		status  int
		header  map[string]string
		body    string
		isJSON  bool
		kind    Kind
		message string
		retry   time.Duration
	}
	retryDate := fixedNow.Add(90 * time.Second).UTC().Format(http.TimeFormat)
	dateWait := fixedNow.Add(90 * time.Second).Truncate(time.Second).Sub(fixedNow) // HTTP dates have whole seconds
	cases := map[string]reply{
		"200 success:false not found":  {200, nil, `{"success":false,"error":"Contract not found"}`, true, KindNotFound, "Contract not found", 0},
		"200 success:false expired":    {200, nil, `{"success":false,"error":"Agent delegation expired"}`, true, KindAuth, "Agent delegation expired", 0},
		"200 success:false db locked":  {200, nil, `{"success":false,"error":"database is locked"}`, true, KindRetryable, "database is locked", 0},
		"200 success:false refusal":    {200, nil, `{"success":false,"error":"invalid status transition"}`, true, KindPermanent, "invalid status transition", 0},
		"200 success:false no message": {200, nil, `{"success":false}`, true, KindPermanent, "without an error message", 0},
		"plain-text 401":               {401, map[string]string{"Content-Type": "text/plain"}, "Unauthorized: Invalid signature\n", false, KindAuth, "Unauthorized: Invalid signature", 0},
		"plain-text 400":               {400, map[string]string{"Content-Type": "text/plain"}, "Bad Request: X-Timestamp is not a number", false, KindPermanent, "X-Timestamp is not a number", 0},
		"envelope 403":                 {403, nil, `{"success":false,"error":"delegation lacks permission provision"}`, true, KindAuth, "lacks permission", 0},
		"404 no body":                  {404, nil, "", false, KindNotFound, "Not Found", 0},
		"503 retry-after seconds":      {503, map[string]string{"Retry-After": "7"}, `{"success":false,"error":"maintenance"}`, true, KindRetryable, "maintenance", 7 * time.Second},
		"429 retry-after date":         {429, map[string]string{"Retry-After": retryDate}, "slow down", false, KindRetryable, "slow down", dateWait},
		"500 html":                     {500, map[string]string{"Content-Type": "text/html"}, "<html>\x1b[31mboom</html>", false, KindRetryable, "<html> [31mboom</html>", 0},
		"502 huge retry-after":         {502, map[string]string{"Retry-After": "999999999"}, "", false, KindRetryable, "Bad Gateway", time.Hour},
		"200 not an envelope":          {200, nil, `[1,2,3]`, false, KindPermanent, "not a JSON envelope", 0},
		"200 wrong data type":          {200, nil, `{"success":true,"data":"yes"}`, true, KindPermanent, "unexpected response data", 0},
		"409 envelope":                 {409, nil, `{"success":false,"error":"locked by another agent"}`, true, KindPermanent, "locked by another agent", 0},
		// The live API's permission and pool refusals are HTTP 200 (api/src/auth.rs, providers.rs).
		"live 200 permission":      {200, nil, `{"success":false,"error":"Agent does not have 'provision' permission"}`, true, KindAuth, "does not have 'provision' permission", 0},
		"live 200 no pool":         {200, nil, `{"success":false,"error":"Agent must belong to a pool. Re-register using a setup token."}`, true, KindAuth, "must belong to a pool", 0},
		"live 200 other provider":  {200, nil, `{"success":false,"error":"Agent is not delegated by this provider"}`, true, KindAuth, "not delegated", 0},
		"live 200 wrong contracts": {200, nil, `{"success":false,"error":"Unauthorized: can only access your delegated provider's contracts"}`, true, KindAuth, "Unauthorized", 0},
		"live 200 transition":      {200, nil, `{"success":false,"error":"Invalid status transition: provisioning -> provisioning. Valid transitions from 'provisioning': [Provisioned, ProvisioningFailed, Cancelled]"}`, true, KindPermanent, "Invalid status transition", 0},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(c.status)
				_, _ = io.WriteString(w, c.body)
			})
			cl := newClient(t, srv.URL)
			_, err := cl.LockContract(context.Background(), contractID)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v (%T) is not *dcapi.Error", err, err)
			}
			if e.Kind != c.kind || e.StatusCode != c.status {
				t.Errorf("kind %v status %d, want %v %d (%v)", e.Kind, e.StatusCode, c.kind, c.status, err)
			}
			if !strings.Contains(err.Error(), c.message) || !strings.Contains(err.Error(), "POST /providers/") {
				t.Errorf("message %q does not contain %q and the request", err, c.message)
			}
			if e.RetryAfter != c.retry {
				t.Errorf("RetryAfter %v, want %v", e.RetryAfter, c.retry)
			}
			if IsAuth(err) != (c.kind == KindAuth) || IsRetryable(err) != (c.kind == KindRetryable) ||
				IsNotFound(err) != (c.kind == KindNotFound) || IsPermanent(err) != (c.kind == KindPermanent) {
				t.Errorf("Is* helpers disagree with kind %v", e.Kind)
			}
			if (AuthHint(err) != "") != (c.kind == KindAuth) {
				t.Errorf("AuthHint %q for kind %v", AuthHint(err), c.kind)
			}
		})
	}
}

func TestAuthHints(t *testing.T) {
	for msg, want := range map[string]string{
		"delegation revoked":                            "revoked",
		"Agent delegation expired":                      "expired",
		"request timestamp outside the 5 minute window": "clock",
		"No active delegation for agent":                "register",
		"Invalid signature":                             "doctor --verify-api",
	} {
		err := &Error{StatusCode: 401, Kind: KindAuth, Message: msg}
		if h := AuthHint(err); !strings.Contains(h, want) {
			t.Errorf("%q: hint %q lacks %q", msg, h, want)
		}
	}
	if h := AuthHint(&Error{StatusCode: 403, Kind: KindAuth, Message: "forbidden"}); !strings.Contains(h, "--permissions") {
		t.Errorf("403 hint %q", h)
	}
	// The live API's refusals as HTTP 200 point at a setup token.
	for _, msg := range []string{"Agent must belong to a pool. Re-register using a setup token.", "Agent does not have 'heartbeat' permission",
		"Agent is not delegated by this provider"} {
		if h := AuthHint(&Error{StatusCode: 200, Kind: KindAuth, Message: msg}); !strings.Contains(h, "dc-agent register --setup-token") || strings.Contains(h, "--permissions") {
			t.Errorf("%q: hint %q", msg, h)
		}
	}
	if AuthHint(errors.New("x")) != "" || StatusCode(errors.New("x")) != 0 {
		t.Error("non-API errors")
	}
}

func TestLongPollDetection(t *testing.T) {
	for _, honours := range []bool{true, false} {
		srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
			if honours && r.URL.Query().Get("waitSeconds") != "" {
				w.Header().Set(HeaderLongPoll, r.URL.Query().Get("waitSeconds"))
			}
			writeEnvelope(w, 200, []PendingContract{}, "")
		})
		c := newClient(t, srv.URL)
		got, longPoll, err := c.PendingContracts(context.Background(), 10*time.Second)
		if err != nil || got == nil {
			t.Fatalf("pending: %v %v", got, err)
		}
		if longPoll != honours {
			t.Errorf("server honours long-poll=%v, client detected %v", honours, longPoll)
		}
		// Without a wait no long-poll is requested.
		if _, lp, err := c.PendingContracts(context.Background(), 0); err != nil || lp {
			t.Errorf("no-wait poll: long-poll %v, %v", lp, err)
		}
		if q := requests()[1].Query; q != "" {
			t.Errorf("no-wait poll sent query %q", q)
		}
	}
}

func TestLongPollTimeoutCoversWait(t *testing.T) {
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		time.Sleep(150 * time.Millisecond) // a server holding the poll open
		writeEnvelope(w, 200, []PendingContract{}, "")
	})
	c := newClient(t, srv.URL, WithTimeout(100*time.Millisecond))
	if _, _, err := c.PendingContracts(context.Background(), 0); !IsRetryable(err) {
		t.Fatalf("plain poll beyond the timeout: %v, want a retryable timeout", err)
	}
	// A 1 s long-poll extends the deadline by the wait.
	if _, _, err := c.PendingContracts(context.Background(), time.Second); err != nil {
		t.Fatalf("long-poll within timeout+wait: %v", err)
	}
}

func TestResponseSizeLimit(t *testing.T) {
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		n := 1024
		if r.URL.Query().Get("days") == "2" {
			n = 4096
		}
		pad := strings.Repeat("x", n-len(`{"success":true,"data":{},"pad":""}`))
		_, _ = io.WriteString(w, `{"success":true,"data":{},"pad":"`+pad+`"}`)
	})
	c := newClient(t, srv.URL, WithMaxResponseBytes(1024))
	if _, err := c.HealthSummary(context.Background(), 1); err != nil {
		t.Fatalf("response of exactly the limit: %v", err)
	}
	_, err := c.HealthSummary(context.Background(), 2)
	if !IsPermanent(err) || !strings.Contains(err.Error(), "larger than 1024 bytes") {
		t.Fatalf("oversized response: %v", err)
	}
}

func TestTransportErrorsAreRetryable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c := newClient(t, url)
	_, err := c.Heartbeat(context.Background(), Heartbeat{})
	var e *Error
	if !IsRetryable(err) || !errors.As(err, &e) || e.Err == nil || e.StatusCode != 0 {
		t.Fatalf("closed server: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Heartbeat(ctx, Heartbeat{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v does not wrap context.Canceled", err)
	}
}

func TestBadPathSegmentsNeverSent(t *testing.T) {
	srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) { writeEnvelope(w, 200, true, "") })
	c := newClient(t, srv.URL)
	for _, id := range []string{"", "..", ".", "a/b", "a?b=1", "a#b", "a%2Fb", "a b", "a\nb", `a\b`} {
		if _, err := c.LockContract(context.Background(), id); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("contract id %q: %v", id, err)
		}
	}
	if n := len(requests()); n != 0 {
		t.Fatalf("%d requests reached the server", n)
	}
}

func TestNewValidates(t *testing.T) {
	for _, c := range []struct{ endpoint, provider, want string }{
		{"ftp://x", providerHex, "must start with https://"},
		{"https://", providerHex, "has no host"},
		{"https://x/?a=1", providerHex, "must not have a query"},
		{"https://x", "abc", "provider public key"},
	} {
		if _, err := New(c.endpoint, c.provider, agentKey); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.endpoint, c.provider, err, c.want)
		}
	}
	if _, err := New("https://x", providerHex, nil); err == nil {
		t.Error("nil key accepted")
	}
	c, err := New(" https://api.example.net/base/ ", strings.ToUpper(providerHex), agentKey)
	if err != nil || c.Endpoint() != "https://api.example.net/base" || c.Provider() != providerHex || c.KeyHex() != identity.PublicHex(agentKey) {
		t.Fatalf("normalisation: %v %+v", err, c)
	}
}

// The logger sees methods, paths and statuses, never keys, signatures,
// nonces or bodies, even at debug level and on errors.
func TestNoSecretsInLogs(t *testing.T) {
	const rootPassword = "s3cr3t-R00T-pa55word"
	var sigs []string
	var mu sync.Mutex
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		mu.Lock()
		sigs = append(sigs, r.Header.Get(HeaderSignature), s.Nonce)
		mu.Unlock()
		if r.Method == http.MethodPut {
			http.Error(w, "Unauthorized: echo "+s.Body, http.StatusUnauthorized)
			return
		}
		writeEnvelope(w, 200, true, "")
	})
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := newClient(t, srv.URL, WithLogger(logger))
	sealed, err := identity.Seal([]byte(rootPassword), agentKey.Public().(ed25519.PublicKey), contractID)
	if err != nil {
		t.Fatal(err)
	}
	update, _ := ProvisionedUpdate(InstanceDetails{ExternalID: "x", RootPassword: sealed})
	_ = c.UpdateProvisioning(context.Background(), contractID, update) // 401 echoing the body
	_ = c.UpdateProvisioning(context.Background(), contractID, FailedUpdate(rootPassword, false))
	if err := c.UnlockContract(context.Background(), contractID); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "/lock") || !strings.Contains(out, "status=401") {
		t.Fatalf("logger saw nothing useful:\n%s", out)
	}
	secrets := append([]string{identity.SeedHex(agentKey), rootPassword, sealed[:40], "instanceDetails"}, sigs...)
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("log contains secret %q:\n%s", s, out)
		}
	}
}

func TestNoContent(t *testing.T) {
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) { w.WriteHeader(http.StatusNoContent) })
	if err := newClient(t, srv.URL).UnlockContract(context.Background(), contractID); err != nil {
		t.Fatalf("204: %v", err)
	}
}

// TestPacerHonours429 checks that a 429 holds every request of its tier
// (reads or writes) for the server's Retry-After, not only the caller's.
func TestPacerHonours429(t *testing.T) {
	var mu sync.Mutex
	var at []time.Time
	limited := true
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodGet {
			_, _ = io.WriteString(w, `{"success":true,"data":{"acquired":true,"expiresAtNs":1}}`)
			return
		}
		at = append(at, time.Now())
		if limited {
			limited = false
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, "Rate limit exceeded. Please try again later.")
			return
		}
		_, _ = io.WriteString(w, `{"success":true,"data":[]}`)
	})
	p := NewPacer(0, 0)
	cl := newClient(t, srv.URL, WithPacer(p))
	cl.now = time.Now
	_, _, err := cl.PendingContracts(context.Background(), 0)
	if StatusCode(err) != http.StatusTooManyRequests || !IsRetryable(err) {
		t.Fatalf("first read: %v", err)
	}
	// A write is not held by a read's 429 (live counts them apart)...
	if _, err := cl.LockContract(context.Background(), contractID); err != nil {
		t.Fatalf("write after a read's 429: %v", err)
	}
	// ...a read is, until Retry-After passed.
	if _, _, err := cl.PendingContracts(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(at) != 2 || at[1].Sub(at[0]) < time.Second {
		t.Fatalf("second read %v after the 429, want ≥ 1s (Retry-After)", at[1].Sub(at[0]))
	}
	// A cancelled wait is a retryable error, not a request.
	p.hold(http.MethodGet, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := cl.PendingContracts(ctx, 0); !IsRetryable(err) || len(at) != 2 {
		t.Fatalf("read while held: %v (%d requests)", err, len(at))
	}
}

// TestPacerReadBudget checks that reads never exceed the budget in any
// window of one (scaled) minute, however fast the callers ask. Times are
// taken when each wait returns, so a late wake-up can only make a window
// look fuller by the one read it delayed: hence budget+1.
func TestPacerReadBudget(t *testing.T) {
	const budget = 12
	minute := 300 * time.Millisecond
	p := NewPacer(budget, minute)
	var sent []time.Time
	for range 3 * budget {
		if err := p.wait(context.Background(), http.MethodGet); err != nil {
			t.Fatal(err)
		}
		sent = append(sent, time.Now())
	}
	for i := range sent {
		n := 0
		for j := i; j < len(sent) && sent[j].Sub(sent[i]) < minute; j++ {
			n++
		}
		if n > budget+1 {
			t.Fatalf("%d reads within one minute starting at read %d, budget %d", n, i, budget)
		}
	}
	// Writes are never paced: a write does not even wait for a done context.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.wait(ctx, http.MethodPost); err != nil {
		t.Fatalf("a write waited: %v", err)
	}
	if err := p.wait(ctx, http.MethodGet); err == nil {
		t.Fatal("a read after the budget was spent did not wait")
	}
}
