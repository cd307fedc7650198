package apiserver_test

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// signedReq describes one raw request: what is signed, and what is sent.
type signedReq struct {
	method   string
	path     string // signed (and sent, unless sendPath is set)
	body     []byte // signed (and sent, unless sendBody is set)
	key      ed25519.PrivateKey
	provider bool // X-Public-Key instead of X-Agent-Pubkey
	ts       int64
	nonce    string
	sendPath string
	sendBody []byte
	mutate   func(h http.Header)
}

type reply struct {
	status int
	env    struct {
		Success bool            `json:"success"`
		Data    json.RawMessage `json:"data"`
		Error   string          `json:"error"`
	}
	raw string
}

func send(t *testing.T, base string, r signedReq) reply {
	t.Helper()
	a := call(t, base, r)
	out := reply{status: a.status, raw: a.body}
	if err := json.Unmarshal([]byte(a.body), &out.env); err != nil {
		t.Fatalf("%s %s: answer is not a JSON envelope: %q", r.method, r.path, a.body)
	}
	return out
}

// snapshot renders every table, so a test can prove a request wrote nothing.
func snapshot(t *testing.T, srv *apitest.Server) string {
	t.Helper()
	var b strings.Builder
	for _, table := range []string{"providers", "provider_agent_delegations", "provider_agent_status", "agent_heartbeats", "contracts",
		"contract_health_checks", "provider_health_hourly", "contract_events"} {
		rows, err := srv.Store.DB().Query("SELECT * FROM " + table)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprint(vals...))
		}
		rows.Close()
		slices.Sort(lines)
		fmt.Fprintf(&b, "%s:%s\n", table, strings.Join(lines, "|"))
	}
	return b.String()
}

// TestAuthMatrix: every way a signed request can be wrong, over real HTTP,
// with the status and message PROTOCOL.md §2 asks for, and nothing written.
func TestAuthMatrix(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		provA, provB := srv.NewProvider("A"), srv.NewProvider("B")
		agent := srv.NewAgent(provA)
		agentB := srv.NewAgent(provB)
		fetchOnly := srv.NewAgent(provA, apitest.Permissions(identity.PermFetchContracts))
		revoked := srv.NewAgent(provA)
		srv.RevokeDelegation(provA, identity.PublicHex(revoked))
		expired := srv.NewAgent(provA, apitest.ExpiresAt(time.Now().Add(-time.Minute)))
		stranger, _ := identity.GenerateKey()
		cid := srv.CreateContract(provA, apitest.ContractSpec{})

		hbPath := dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/heartbeat"
		hbBody := []byte(`{"version":"1.0.0","provisionerType":"docker","capabilities":[],"activeContracts":0}`)
		hb := func(key ed25519.PrivateKey) signedReq {
			return signedReq{method: "POST", path: hbPath, body: hbBody, key: key}
		}
		with := func(r signedReq, f func(*signedReq)) signedReq { f(&r); return r }
		other, _ := identity.GenerateKey()

		cases := []struct {
			name   string
			req    signedReq
			status int
			msg    string
		}{
			{"wrong key (signed by another key)", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) {
					h.Set(dcapi.HeaderSignature, identity.SignRequest(other, h.Get(dcapi.HeaderTimestamp), h.Get(dcapi.HeaderNonce), "POST", hbPath, hbBody))
				}
			}), 401, "invalid signature"},
			{"tampered body", with(hb(agent), func(r *signedReq) {
				r.sendBody = bytes.Replace(hbBody, []byte("1.0.0"), []byte("6.6.6"), 1)
			}), 401, "invalid signature"},
			{"tampered path", with(hb(agent), func(r *signedReq) {
				r.sendPath = dcapi.APIPrefix + "/providers/" + provB.Pubkey + "/heartbeat"
			}), 401, "invalid signature"},
			{"tampered method", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) {
					h.Set(dcapi.HeaderSignature, identity.SignRequest(agent, h.Get(dcapi.HeaderTimestamp), h.Get(dcapi.HeaderNonce), "PUT", hbPath, hbBody))
				}
			}), 401, "invalid signature"},
			{"stale timestamp", with(hb(agent), func(r *signedReq) { r.ts = time.Now().Add(-6 * time.Minute).UnixNano() }), 401, "outside the 5 minute window"},
			{"future timestamp", with(hb(agent), func(r *signedReq) { r.ts = time.Now().Add(6 * time.Minute).UnixNano() }), 401, "outside the 5 minute window"},
			{"timestamp in seconds", with(hb(agent), func(r *signedReq) { r.ts = time.Now().Unix() }), 401, "outside the 5 minute window"},
			{"revoked delegation", hb(revoked), 401, "revoked"},
			{"expired delegation", hb(expired), 401, "expired"},
			{"no delegation at all", hb(stranger), 401, "no delegation"},
			{"permission missing", hb(fetchOnly), 403, `permission "heartbeat" missing`},
			{"agent of provider B on provider A's path", hb(agentB), 401, "no delegation"},
			{"agent of provider B on provider A's contract", signedReq{method: "PUT", path: dcapi.APIPrefix + "/provider/rental-requests/" + cid + "/provisioning",
				body: []byte(`{"status":"provisioning","instanceDetails":""}`), key: agentB}, 401, "no delegation"},
			{"unknown agent on a contract path", signedReq{method: "PUT", path: dcapi.APIPrefix + "/provider/rental-requests/" + cid + "/provisioning",
				body: []byte(`{"status":"provisioning","instanceDetails":""}`), key: stranger}, 401, "no active delegation"},
			{"provider key on an agent-only path", with(hb(provA.Key), func(r *signedReq) { r.provider = true }), 403, "delegated agent key"},
			{"provider key on a contract path", signedReq{method: "PUT", path: dcapi.APIPrefix + "/provider/rental-requests/" + cid + "/provisioning",
				body: []byte(`{"status":"provisioning","instanceDetails":""}`), key: provA.Key, provider: true}, 403, "delegated agent key"},
			{"agent key on a provider-only path", signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations", key: agent}, 403, "main key"},
			{"agent key revoking a delegation", signedReq{method: "DELETE", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations/" + identity.PublicHex(agent), key: agent}, 403, "main key"},
			{"provider B's key on provider A's path", signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations", key: provB.Key, provider: true}, 401, "not the provider key in the path"},
			{"missing signature", with(hb(agent), func(r *signedReq) { r.mutate = func(h http.Header) { h.Del(dcapi.HeaderSignature) } }), 401, "missing header X-Signature"},
			{"missing nonce", with(hb(agent), func(r *signedReq) { r.mutate = func(h http.Header) { h.Del(dcapi.HeaderNonce) } }), 401, "missing header X-Nonce"},
			{"missing key", with(hb(agent), func(r *signedReq) { r.mutate = func(h http.Header) { h.Del(dcapi.HeaderAgentPubkey) } }), 401, "missing header X-Agent-Pubkey"},
			{"unsigned", signedReq{method: "POST", path: hbPath, body: hbBody}, 401, "unsigned request"},
			{"both key headers", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderPublicKey, provA.Pubkey) }
			}), 400, "exactly one of"},
			{"non-hex key", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderAgentPubkey, strings.Repeat("zz", 32)) }
			}), 400, "X-Agent-Pubkey must be 64 hex"},
			{"key not on the curve", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderAgentPubkey, "02"+strings.Repeat("00", 31)) }
			}), 401, "invalid signature"},
			{"short key", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderAgentPubkey, identity.PublicHex(agent)[:62]) }
			}), 400, "X-Agent-Pubkey must be 64 hex"},
			{"short signature", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderSignature, h.Get(dcapi.HeaderSignature)[:126]) }
			}), 400, "X-Signature must be 128 hex"},
			{"base64 signature", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderSignature, strings.Repeat("A", 86)+"==") }
			}), 400, "X-Signature must be 128 hex"},
			{"timestamp not a number", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) { h.Set(dcapi.HeaderTimestamp, "2024-01-01T00:00:00Z") }
			}), 400, "X-Timestamp must be Unix time in nanoseconds"},
			{"nonce with spaces", with(hb(agent), func(r *signedReq) { r.nonce = "a b" }), 400, "X-Nonce"},
			{"non-hex provider in path", signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/ACME/heartbeat", body: hbBody, key: agent}, 400, "provider key in the path"},
			{"agent registering another agent's delegation", signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations",
				body: mustJSON(t, dcapi.DelegationRequestBody(srv.SignDelegation(provA, identity.PublicHex(other)))), key: agent}, 403, "only register a delegation of itself"},
			{"revoked agent re-posting its old signed delegation", signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations",
				body: mustJSON(t, dcapi.DelegationRequestBody(srv.SignDelegation(provA, identity.PublicHex(revoked)))), key: revoked}, 403, "revoked"},
			{"delegation signed by another key", signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations",
				body: forgedDelegation(t, provA.Pubkey, identity.PublicHex(other), other), key: provA.Key, provider: true}, 422, "does not verify"},
		}
		for _, tc := range cases {
			before := snapshot(t, srv)
			got := send(t, srv.URL, tc.req)
			if got.status != tc.status || got.env.Success || !strings.Contains(got.env.Error, tc.msg) {
				t.Errorf("%s: %d %q; want %d mentioning %q", tc.name, got.status, got.env.Error, tc.status, tc.msg)
			}
			if after := snapshot(t, srv); after != before {
				t.Errorf("%s: the rejected request changed the store:\nbefore %s\nafter  %s", tc.name, before, after)
			}
		}

		// The valid request, and its replay.
		ok := hb(agent)
		ok.nonce = uuid.NewString()
		ok.ts = time.Now().UnixNano()
		if got := send(t, srv.URL, ok); got.status != 200 || !got.env.Success {
			t.Fatalf("valid agent request: %d %s", got.status, got.raw)
		}
		if st := srv.AgentStatus(provA); !st.Online || *st.Version != "1.0.0" {
			t.Fatalf("valid heartbeat not stored: %+v", st)
		}
		before := snapshot(t, srv)
		if got := send(t, srv.URL, ok); got.status != 401 || !strings.Contains(got.env.Error, "replayed request") {
			t.Fatalf("replay: %d %q", got.status, got.env.Error)
		}
		if snapshot(t, srv) != before {
			t.Fatal("the replay changed the store")
		}
		// Now that the server knows the agent's key (dc-api keeps decoded
		// keys), its signature is still checked on every request.
		for _, tc := range []struct {
			name string
			req  signedReq
		}{
			{"known key, signed by another key", with(hb(agent), func(r *signedReq) {
				r.mutate = func(h http.Header) {
					h.Set(dcapi.HeaderSignature, identity.SignRequest(other, h.Get(dcapi.HeaderTimestamp), h.Get(dcapi.HeaderNonce), "POST", hbPath, hbBody))
				}
			})},
			{"known key, tampered body", with(hb(agent), func(r *signedReq) {
				r.sendBody = bytes.Replace(hbBody, []byte("1.0.0"), []byte("6.6.6"), 1)
			})},
		} {
			before := snapshot(t, srv)
			if got := send(t, srv.URL, tc.req); got.status != 401 || !strings.Contains(got.env.Error, "invalid signature") {
				t.Errorf("%s: %d %q; want 401 invalid signature", tc.name, got.status, got.env.Error)
			}
			if snapshot(t, srv) != before {
				t.Errorf("%s: the rejected request changed the store", tc.name)
			}
		}
		// The key in uppercase hex is the same key.
		upper := with(hb(agent), func(r *signedReq) {
			r.mutate = func(h http.Header) { h.Set(dcapi.HeaderAgentPubkey, strings.ToUpper(identity.PublicHex(agent))) }
		})
		if got := send(t, srv.URL, upper); got.status != 200 {
			t.Fatalf("key in uppercase hex: %d %s", got.status, got.raw)
		}
		// A query string is not part of the signed message.
		q := hb(agent)
		q.sendPath = hbPath + "?trace=1"
		if got := send(t, srv.URL, q); got.status != 200 {
			t.Fatalf("with a query string: %d %s", got.status, got.raw)
		}
		// The provider key may manage delegations; the agent may read its own.
		if got := send(t, srv.URL, signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations", key: provA.Key, provider: true}); got.status != 200 {
			t.Fatalf("provider lists delegations: %d %s", got.status, got.raw)
		}
		if got := send(t, srv.URL, signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/" + provA.Pubkey + "/agent-delegations/" + identity.PublicHex(revoked), key: revoked}); got.status != 200 ||
			!strings.Contains(string(got.env.Data), `"active":false`) {
			t.Fatalf("revoked agent reads its own delegation: %d %s", got.status, got.raw)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgedDelegation is a delegation for provider signed by some other key.
func forgedDelegation(t *testing.T, provider, agentHex string, signer ed25519.PrivateKey) []byte {
	d := identity.Delegation{AgentPubkey: agentHex, ProviderPubkey: provider, Permissions: identity.AllPermissions}
	text, err := d.CanonicalText()
	if err != nil {
		t.Fatal(err)
	}
	return mustJSON(t, dcapi.CreateDelegationRequest{AgentPubkey: agentHex, Permissions: d.Permissions, Signature: hex.EncodeToString(identity.Sign(signer, text))})
}

// TestProtocolVector: the request of PROTOCOL.md §9, byte for byte, is
// accepted by the server (whose clock is set to the vector's time).
func TestProtocolVector(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t)
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x2a}, 32))
	prov := srv.AddProvider(key, "vector")
	if prov.Pubkey != "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61" {
		t.Fatalf("vector key = %s", prov.Pubkey)
	}
	srv.Delegate(prov, prov.Pubkey) // the provider delegates to its own key
	srv.SetClockOffset(time.Until(time.Unix(0, 1700000000000000000)))
	body := `{"version":"0.4.21","provisionerType":"proxmox","capabilities":null,"activeContracts":0}`
	req, _ := http.NewRequest("POST", srv.URL+"/api/v1/providers/"+prov.Pubkey+"/heartbeat", strings.NewReader(body))
	req.Header.Set("X-Timestamp", "1700000000000000000")
	req.Header.Set("X-Nonce", "123e4567-e89b-42d3-a456-426614174000")
	req.Header.Set("X-Agent-Pubkey", prov.Pubkey)
	req.Header.Set("X-Signature", "6b38a0d970fb82163469bcff6461210741bccb2541b82088f0cc5e26e280ae4a9ab721599c4124188ca144728d4b5062bbf066f8338782973db0de8f4e6ab400")
	req.Header.Set("Content-Type", "application/json")
	if a := roundTrip(t, req); a.status != 200 || !strings.Contains(a.body, `"acknowledged":true`) {
		t.Fatalf("PROTOCOL.md §9 vector refused: %d %s", a.status, a.body)
	}
}

// TestRateLimit: a key over its budget gets 429 with Retry-After; another
// key is unaffected.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.WithRateLimit(1, 3))
	prov := srv.NewProvider("")
	a, b := srv.NewAgent(prov), srv.NewAgent(prov)
	path := dcapi.APIPrefix + "/providers/" + prov.Pubkey + "/contracts/active"
	var limited reply
	for i := 0; i < 5; i++ {
		limited = send(t, srv.URL, signedReq{method: "GET", path: path, key: a})
	}
	if limited.status != 429 || !strings.Contains(limited.env.Error, "rate limit") {
		t.Fatalf("6th request in a burst of 3: %d %s", limited.status, limited.raw)
	}
	if got := send(t, srv.URL, signedReq{method: "GET", path: path, key: b}); got.status != 200 {
		t.Fatalf("other key: %d", got.status)
	}
	c := srv.Client(prov, a)
	_, err := c.ActiveContracts(t.Context())
	var de *dcapi.Error
	if !dcapi.IsRetryable(err) || !errors.As(err, &de) || de.RetryAfter <= 0 {
		t.Fatalf("client sees %v; want retryable with Retry-After", err)
	}
}
