package apiserver

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// countingReader counts the bytes the server reads of a body.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// request signs method path body with key (agent header unless provider)
// and serves it; the body is read through a countingReader. chunked sends
// it without a Content-Length.
func (e *fuzzEnv) request(t *testing.T, key ed25519.PrivateKey, provider bool, method, path string, body []byte, chunked bool) (*httptest.ResponseRecorder, *countingReader) {
	t.Helper()
	ts, nonce := strconv.FormatInt(time.Now().UnixNano(), 10), uuid.NewString()
	cr := &countingReader{r: bytes.NewReader(body)}
	req := httptest.NewRequest(method, path, cr)
	req.ContentLength = int64(len(body))
	if chunked {
		req.ContentLength = -1
	}
	req.Header.Set(dcapi.HeaderTimestamp, ts)
	req.Header.Set(dcapi.HeaderNonce, nonce)
	h := dcapi.HeaderAgentPubkey
	if provider {
		h = dcapi.HeaderPublicKey
	}
	req.Header.Set(h, identity.PublicHex(key))
	req.Header.Set(dcapi.HeaderSignature, identity.SignRequest(key, ts, nonce, method, path, body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	return rec, cr
}

// TestBodyReadBeforeKeyKnown (issue 15, finding 8): dc-api read up to 2
// MiB of body before it knew anything about the key. A key the server
// does not know may send only a small body: refused by its Content-Length
// before a byte is read, or after 16 KiB without one; a known agent's
// large body is still read. Both profiles.
func TestBodyReadBeforeKeyKnown(t *testing.T) {
	for _, profile := range []string{ProfileDefault, ProfileLive} {
		t.Run(profile, func(t *testing.T) {
			e := newProfileEnv(t, profile)
			stranger, _ := identity.GenerateKey()
			path := dcapi.APIPrefix + "/providers/" + e.provider + "/heartbeat"
			big := append([]byte(`{"version":"1.0.0","provisionerType":"script","activeContracts":0,"pad":"`), bytes.Repeat([]byte("x"), 1<<20)...)
			big = append(big, `"}`...)

			rec, cr := e.request(t, stranger, false, "POST", path, big, false)
			if rec.Code != http.StatusRequestEntityTooLarge || cr.n != 0 {
				t.Fatalf("unknown key, 1 MiB with Content-Length: %d after reading %d bytes, want 413 before reading any", rec.Code, cr.n)
			}
			rec, cr = e.request(t, stranger, false, "POST", path, big, true)
			if rec.Code != http.StatusRequestEntityTooLarge || cr.n > 64<<10 {
				t.Fatalf("unknown key, 1 MiB chunked: %d after reading %d bytes, want 413 after at most 64 KiB", rec.Code, cr.n)
			}
			rec, cr = e.request(t, stranger, true, "POST", dcapi.APIPrefix+"/providers/"+identity.PublicHex(stranger)+"/pools", big, false)
			if rec.Code != http.StatusRequestEntityTooLarge || cr.n != 0 {
				t.Fatalf("unregistered provider key, 1 MiB: %d after reading %d bytes, want 413 before reading any", rec.Code, cr.n)
			}
			setup := httptest.NewRequest("POST", dcapi.APIPrefix+"/agents/setup", &countingReader{r: bytes.NewReader(big)})
			setup.Header.Set("Content-Type", "application/json")
			rec = httptest.NewRecorder()
			e.srv.ServeHTTP(rec, setup)
			if rec.Code != http.StatusRequestEntityTooLarge {
				t.Fatalf("unsigned setup, 1 MiB: %d, want 413", rec.Code)
			}
			// The known agent's large body is read (and refused for what it
			// says, not for its size).
			rec, cr = e.request(t, e.agent, false, "POST", path, big, false)
			if rec.Code == http.StatusRequestEntityTooLarge || cr.n != len(big) {
				t.Fatalf("known agent, 1 MiB: %d after reading %d of %d bytes", rec.Code, cr.n, len(big))
			}
		})
	}
}

// TestReplayCacheOnlyKnownKeys (issue 15, finding 1): a nonce is recorded
// only for a key that may act — never for a made-up key, nor for an agent
// registering itself with a delegation that does not verify; a
// registration records it once its delegation checks out.
func TestReplayCacheOnlyKnownKeys(t *testing.T) {
	e := newFuzzEnv(t)
	hb := []byte(`{"version":"1.0.0","provisionerType":"script","capabilities":null,"activeContracts":0}`)
	path := dcapi.APIPrefix + "/providers/" + e.provider + "/heartbeat"
	for range 50 {
		stranger, _ := identity.GenerateKey()
		if rec, _ := e.request(t, stranger, false, "POST", path, hb, false); rec.Code != http.StatusUnauthorized {
			t.Fatalf("made-up key: %d %s", rec.Code, rec.Body)
		}
	}
	if n := e.srv.nonces.len(); n != 0 {
		t.Fatalf("made-up keys took %d replay-cache entries", n)
	}

	// Self-registration: a body whose delegation does not verify records
	// nothing; one that does records the request's nonce.
	newcomer, _ := identity.GenerateKey()
	sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(newcomer), ProviderPubkey: e.provider, Permissions: identity.AllPermissions}.Sign(e.provKey)
	reg := dcapi.CreateDelegationRequest{AgentPubkey: sd.AgentPubkey, Permissions: sd.Permissions, Signature: strings.Repeat("ab", 64)}
	bad, _ := json.Marshal(reg)
	regPath := dcapi.APIPrefix + "/providers/" + e.provider + "/agent-delegations"
	if rec, _ := e.request(t, newcomer, false, "POST", regPath, bad, false); rec.Code != http.StatusUnprocessableEntity {
		t.Fatalf("registration with a bad delegation signature: %d %s", rec.Code, rec.Body)
	}
	if n := e.srv.nonces.len(); n != 0 {
		t.Fatalf("a registration whose delegation did not verify took %d entries", n)
	}
	reg.Signature = sd.SignatureHex()
	good, _ := json.Marshal(reg)
	if rec, _ := e.request(t, newcomer, false, "POST", regPath, good, false); rec.Code != http.StatusCreated {
		t.Fatalf("registration: %d %s", rec.Code, rec.Body)
	}
	if n := e.srv.nonces.len(); n != 1 {
		t.Fatalf("after a registration: %d entries, want 1", n)
	}
	// Known agents' requests are recorded, and their replays refused.
	rec, _ := e.request(t, e.agent, false, "POST", path, hb, false)
	if rec.Code != http.StatusOK || e.srv.nonces.len() != 2 {
		t.Fatalf("known agent: %d, %d entries", rec.Code, e.srv.nonces.len())
	}
}
