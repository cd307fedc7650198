package apiserver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

type fuzzEnv struct {
	srv      *Server
	provider string
	provKey  ed25519.PrivateKey
	agent    ed25519.PrivateKey
	contract string
}

func newFuzzEnv(t testing.TB) *fuzzEnv { return newProfileEnv(t, ProfileDefault) }

// newProfileEnv is a server of profile with a provider, its delegated
// agent and a contract.
func newProfileEnv(t testing.TB, profile string) *fuzzEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "fuzz.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := New(Config{Store: st, RateLimit: -1, Profile: profile})
	if err != nil {
		t.Fatal(err)
	}
	e := &fuzzEnv{srv: srv}
	e.provKey, _ = identity.GenerateKey()
	e.agent, _ = identity.GenerateKey()
	e.provider = identity.PublicHex(e.provKey)
	now := time.Now().UnixNano()
	st.AddProvider(ctx, e.provider, "fuzz", now)
	sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(e.agent), ProviderPubkey: e.provider, Permissions: identity.AllPermissions}.Sign(e.provKey)
	if _, _, err := st.PutDelegation(ctx, sd, false, now); err != nil {
		t.Fatal(err)
	}
	c, err := st.CreateContract(ctx, store.NewContract{ProviderPubkey: e.provider, RequesterSSHPubkey: "ssh-ed25519 AAAA fuzz"}, now)
	if err != nil {
		t.Fatal(err)
	}
	e.contract = c.ContractID
	return e
}

func (e *fuzzEnv) serve(t *testing.T, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	if rec.Code >= 500 {
		t.Fatalf("%s %s: %d %s", req.Method, req.URL.Path, rec.Code, rec.Body.String())
	}
	if strings.HasPrefix(req.URL.Path, "/api/") {
		var env struct {
			Success *bool `json:"success"`
		}
		if json.Unmarshal(rec.Body.Bytes(), &env) != nil || env.Success == nil {
			t.Fatalf("%s %s: not an envelope: %q", req.Method, req.URL.Path, rec.Body.String())
		}
		if rec.Code >= 400 && *env.Success {
			t.Fatalf("%d with success:true", rec.Code)
		}
	}
	return rec
}

// FuzzSignedRequest sends validly signed agent requests with arbitrary
// bodies (and path tails) to every agent endpoint: whatever the input, the
// answer is an envelope and never a 5xx.
func FuzzSignedRequest(f *testing.F) {
	f.Add(uint8(0), "", []byte(`{"version":"1","provisionerType":"docker","capabilities":[],"activeContracts":1}`))
	f.Add(uint8(1), "", []byte(`{"status":"provisioning","instanceDetails":""}`))
	f.Add(uint8(1), "", []byte(`{"status":"provisioned","instanceDetails":"{\"external_id\":\"x\",\"root_password\":\"{}\"}"}`))
	f.Add(uint8(2), "", []byte(`{"checkedAt":1,"status":"healthy","latencyMs":-1}`))
	f.Add(uint8(3), "", []byte(`{"checks":[{"contractId":"00","checkedAt":1,"status":"unknown"}]}`))
	f.Add(uint8(4), "", []byte(`{"runningInstances":[{"externalId":"a","contractId":""}]}`))
	f.Add(uint8(5), "?waitSeconds=0", []byte(nil))
	f.Add(uint8(6), "", []byte(`{"agentPubkey":"","permissions":null,"expiresAtNs":-5,"label":null,"signature":""}`))
	f.Add(uint8(7), "", []byte(nil))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, which uint8, tail string, body []byte) {
		p := dcapi.APIPrefix + "/providers/" + e.provider
		routes := []struct{ method, path string }{
			{"POST", p + "/heartbeat"},
			{"PUT", dcapi.APIPrefix + "/provider/rental-requests/" + e.contract + "/provisioning"},
			{"POST", dcapi.APIPrefix + "/contracts/" + e.contract + "/health"},
			{"POST", p + "/health"},
			{"POST", p + "/reconcile"},
			{"GET", p + "/contracts/pending-provision"},
			{"POST", p + "/agent-delegations"},
			{"POST", p + "/contracts/" + e.contract + "/lock"},
			{"PUT", p + "/contracts/" + e.contract + "/terminated"},
			{"GET", p + "/contracts/active"},
		}
		r := routes[int(which)%len(routes)]
		if strings.ContainsAny(tail, " \r\n#") || len(tail) > 200 {
			return
		}
		if strings.Contains(tail, "waitSeconds") {
			tail = "?waitSeconds=0" // never wait in a fuzz run
		}
		target := "http://dc-api" + strings.ReplaceAll(r.path+tail, "%", "%25")
		if _, err := url.ParseRequestURI(target); err != nil {
			return // not a request a client could send
		}
		req := httptest.NewRequest(r.method, target, bytes.NewReader(body))
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		nonce := "n-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.Itoa(int(which))
		req.Header.Set(dcapi.HeaderTimestamp, ts)
		req.Header.Set(dcapi.HeaderNonce, nonce)
		req.Header.Set(dcapi.HeaderAgentPubkey, identity.PublicHex(e.agent))
		req.Header.Set(dcapi.HeaderSignature, identity.SignRequest(e.agent, ts, nonce, r.method, signedPath(req), body))
		e.serve(t, req)
	})
}

// FuzzAuthHeaders sends arbitrary signing headers: the server refuses with
// 400/401/413 (or accepts a valid signature), never a 5xx or a panic.
func FuzzAuthHeaders(f *testing.F) {
	f.Add("1700000000000000000", "123e4567-e89b-42d3-a456-426614174000", "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61",
		"6b38a0d970fb82163469bcff6461210741bccb2541b82088f0cc5e26e280ae4a9ab721599c4124188ca144728d4b5062bbf066f8338782973db0de8f4e6ab400", false, []byte(`{}`))
	f.Add("-1", "", "zz", "", true, []byte(nil))
	f.Add("99999999999999999999999", "\x00", strings.Repeat("0", 64), strings.Repeat("f", 128), false, []byte(`[`))
	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, ts, nonce, key, sig string, provider bool, body []byte) {
		req := httptest.NewRequest("POST", "http://dc-api"+dcapi.APIPrefix+"/providers/"+e.provider+"/heartbeat", bytes.NewReader(body))
		for k, v := range map[string]string{dcapi.HeaderTimestamp: ts, dcapi.HeaderNonce: nonce, dcapi.HeaderSignature: sig} {
			if v != "" {
				req.Header[k] = []string{v}
			}
		}
		if key != "" {
			h := dcapi.HeaderAgentPubkey
			if provider {
				h = dcapi.HeaderPublicKey
			}
			req.Header[h] = []string{key}
		}
		rec := e.serve(t, req)
		switch rec.Code {
		case 200, 400, 401, 403, 413, 422:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body.String())
		}
	})
}
