package apiserver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// answer is a raw HTTP answer.
type answer struct {
	status int
	header http.Header
	body   string
}

// call sends r (signed when r.key is set; the timestamp and nonce headers
// are sent either way) and returns the answer as is.
func call(t *testing.T, base string, r signedReq) answer {
	t.Helper()
	if r.ts == 0 {
		r.ts = time.Now().UnixNano()
	}
	if r.nonce == "" {
		r.nonce = uuid.NewString()
	}
	ts := strconv.FormatInt(r.ts, 10)
	h := http.Header{}
	h.Set(dcapi.HeaderTimestamp, ts)
	h.Set(dcapi.HeaderNonce, r.nonce)
	if r.key != nil {
		if r.provider {
			h.Set(dcapi.HeaderPublicKey, identity.PublicHex(r.key))
		} else {
			h.Set(dcapi.HeaderAgentPubkey, identity.PublicHex(r.key))
		}
		h.Set(dcapi.HeaderSignature, identity.SignRequest(r.key, ts, r.nonce, r.method, r.path, r.body))
	}
	if r.body != nil {
		h.Set("Content-Type", "application/json")
	}
	if r.mutate != nil {
		r.mutate(h)
	}
	path, body := r.path, r.body
	if r.sendPath != "" {
		path = r.sendPath
	}
	if r.sendBody != nil {
		body = r.sendBody
	}
	req, err := http.NewRequest(r.method, base+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h
	return roundTrip(t, req)
}

// roundTrip sends req and reads the whole answer.
func roundTrip(t *testing.T, req *http.Request) answer {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// expect is one profile's exact answer to a rule's request.
type expect struct {
	status int
	// text, when set, is the whole plain-text body (poem's refusals).
	text       string
	textPrefix bool
	// Otherwise the body is the JSON envelope with success and error
	// (exactly; a prefix when errPrefix), and data checked by data.
	success   bool
	err       string
	errPrefix bool
	data      func(t *testing.T, e *env, data json.RawMessage)
	header    map[string]string
}

func (x expect) check(t *testing.T, e *env, a answer) {
	t.Helper()
	if a.status != x.status {
		t.Fatalf("status %d, want %d; body %s", a.status, x.status, a.body)
	}
	for k, v := range x.header {
		if got := a.header.Get(k); got != v {
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
	if x.text != "" {
		if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("Content-Type %q, want text/plain", ct)
		}
		if a.body != x.text && !(x.textPrefix && strings.HasPrefix(a.body, x.text)) {
			t.Fatalf("body %q\nwant %q", a.body, x.text)
		}
		return
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var env map[string]json.RawMessage
	if err := json.Unmarshal([]byte(a.body), &env); err != nil {
		t.Fatalf("not a JSON envelope: %s", a.body)
	}
	var success bool
	var msg string
	_ = json.Unmarshal(env["success"], &success)
	_ = json.Unmarshal(env["error"], &msg)
	if success != x.success {
		t.Fatalf("success %v, want %v: %s", success, x.success, a.body)
	}
	if msg != x.err && !(x.errPrefix && strings.HasPrefix(msg, x.err)) {
		t.Fatalf("error %q\nwant %q", msg, x.err)
	}
	if !success {
		if _, ok := env["data"]; ok {
			t.Errorf("a refusal carries data: %s", a.body)
		}
	}
	if x.data != nil {
		x.data(t, e, env["data"])
	}
}

// env is a fresh server of one profile with a provider, a pool, an agent
// registered into it by setup token, an agent registered by an
// offline-signed delegation (no pool), and an accepted contract in the pool
// with a requester key.
type env struct {
	srv       *apitest.Server
	prov      *apitest.Provider
	pool      *store.Pool
	agent     ed25519.PrivateKey // in the pool
	legacy    ed25519.PrivateKey // no pool
	requester ed25519.PrivateKey
	cid       string
	live      bool
}

func newEnv(t *testing.T, profile string, opts ...apitest.Option) *env {
	srv := apitest.Start(t, append([]apitest.Option{apitest.WithProfile(profile)}, opts...)...)
	e := &env{srv: srv, prov: srv.NewProvider("Acme"), live: profile == apiserver.ProfileLive}
	e.pool = srv.NewPool(e.prov, "eu", "europe", "docker")
	e.agent = srv.NewPoolAgent(e.pool)
	e.legacy = srv.NewAgent(e.prov)
	e.requester, _ = identity.GenerateKey()
	e.cid = srv.CreateContract(e.prov, apitest.ContractSpec{AgentPoolID: &e.pool.PoolID, RequesterPubkey: apitest.Ptr(identity.PublicHex(e.requester))})
	return e
}

func (e *env) path(format string) string {
	r := strings.NewReplacer("{pk}", e.prov.Pubkey, "{cid}", e.cid, "{pool}", e.pool.PoolID)
	return dcapi.APIPrefix + r.Replace(format)
}

func (e *env) hb(key ed25519.PrivateKey, body string) signedReq {
	return signedReq{method: "POST", path: e.path("/providers/{pk}/heartbeat"), body: []byte(body), key: key}
}

func (e *env) put(status, details string) signedReq {
	b, _ := json.Marshal(map[string]string{"status": status, "instanceDetails": details})
	return signedReq{method: "PUT", path: e.path("/provider/rental-requests/{cid}/provisioning"), body: b, key: e.agent}
}

// must sends r and fails unless it succeeded (a step before the rule's
// request).
func (e *env) must(t *testing.T, r signedReq) {
	t.Helper()
	a := call(t, e.srv.URL, r)
	if a.status != 200 && a.status != 201 || !strings.Contains(a.body, `"success":true`) {
		t.Fatalf("%s %s: %d %s", r.method, r.path, a.status, a.body)
	}
}

func (e *env) provision(t *testing.T) {
	t.Helper()
	e.must(t, e.put("provisioning", ""))
	u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1", IPAddress: "10.0.0.9"})
	e.must(t, e.put("provisioned", u.InstanceDetails))
}

func (e *env) token(t *testing.T, ttl time.Duration) string { return e.srv.SetupToken(e.pool, ttl) }

func setupBody(token, agent string) []byte {
	b, _ := json.Marshal(dcapi.AgentSetupRequest{Token: token, AgentPubkey: agent})
	return b
}

func newKeyHex(t *testing.T) string {
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return identity.PublicHex(k)
}

func keys(t *testing.T, raw json.RawMessage) []string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("data is not an object: %s", raw)
	}
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func wantKeys(t *testing.T, raw json.RawMessage, want ...string) {
	t.Helper()
	slices.Sort(want)
	if got := keys(t, raw); !slices.Equal(got, want) {
		t.Fatalf("data keys %v, want %v: %s", got, want, raw)
	}
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

const hbBody = `{"version":"1.0.0","provisionerType":"docker","capabilities":[],"activeContracts":0}`

// A ResourceInventory (common/src/api_types.rs) in full, and variants with
// one required field missing or mistyped.
const inventory = `{"cpuModel":null,"cpuCores":4,"cpuThreads":8,"memoryTotalMb":8192,"memoryAvailableMb":4096,"storagePools":[],"gpuDevices":[],"templates":[]}`

func hbWith(resources string) string {
	return `{"version":"1.0.0","activeContracts":1,"resources":` + resources + `}`
}

var tokenFormat = regexp.MustCompile(`^apt_europe_[0-9a-f]{16}$`)

func ackData(t *testing.T, e *env, data json.RawMessage) {
	t.Helper()
	var ack dcapi.HeartbeatResponse
	if err := json.Unmarshal(data, &ack); err != nil || !ack.Acknowledged || ack.NextHeartbeatSeconds != 60 ||
		ack.PoolID == nil || *ack.PoolID != e.pool.PoolID || ack.PoolName == nil || *ack.PoolName != "eu" {
		t.Fatalf("heartbeat answer %s", data)
	}
}

// rule is one behaviour of the live API (source: the file it follows),
// with the exact answer of each profile.
type rule struct {
	name   string
	source string
	before func(t *testing.T, e *env)
	req    func(t *testing.T, e *env) signedReq
	after  func(t *testing.T, e *env)
	def    expect
	live   expect
}

const liveParse = "parse request payload error: "

func profileRules() []rule {
	ptrue := func(t *testing.T, e *env, d json.RawMessage) {
		if string(d) != "true" {
			t.Fatalf("data %s, want true", d)
		}
	}
	return []rule{
		{
			name: "setup token registers an agent", source: "api/src/openapi/agents.rs setup_agent",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody(e.token(t, time.Hour), newKeyHex(t))}
			},
			def:  expect{status: 200, success: true, data: setupData},
			live: expect{status: 200, success: true, data: setupData},
		},
		{
			name: "setup token already used", source: "api/src/database/agent_pools.rs validate_and_use_setup_token",
			req: func(t *testing.T, e *env) signedReq {
				tok := e.token(t, time.Hour)
				e.must(t, signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody(tok, newKeyHex(t))})
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody(tok, newKeyHex(t))}
			},
			def:  expect{status: 409, err: "Setup token already used"},
			live: expect{status: 200, err: "Setup token already used"},
		},
		{
			name: "setup token expired", source: "agent_pools.rs validate_and_use_setup_token",
			req: func(t *testing.T, e *env) signedReq {
				tok := e.token(t, time.Minute)
				e.srv.SetClockOffset(2 * time.Minute)
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody(tok, newKeyHex(t))}
			},
			def:  expect{status: 410, err: "Setup token expired"},
			live: expect{status: 200, err: "Setup token expired"},
		},
		{
			name: "setup token unknown", source: "agent_pools.rs validate_and_use_setup_token",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody("apt_europe_0123456789abcdef", newKeyHex(t))}
			},
			def:  expect{status: 404, err: "Invalid setup token"},
			live: expect{status: 200, err: "Invalid setup token"},
		},
		{
			name: "setup without agentPubkey", source: "poem-openapi Object: a String field is required",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: []byte(`{"token":"` + e.token(t, time.Hour) + `"}`)}
			},
			def:  expect{status: 422, err: `agentPubkey must be 64 hex characters (the agent's Ed25519 public key), got ""`},
			live: expect{status: 400, text: liveParse + `Expected input type "string", found null. (occurred while parsing "AgentSetupRequest")`},
		},
		{
			name: "setup with a malformed agentPubkey", source: "agents.rs setup_agent, common.rs decode_pubkey",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/agents/setup"), body: setupBody(e.token(t, time.Hour), "abc")}
			},
			def:  expect{status: 422, err: `agentPubkey must be 64 hex characters (the agent's Ed25519 public key), got "abc"`},
			live: expect{status: 200, err: "Invalid agent_pubkey: Invalid pubkey hex: Odd number of digits (value: abc)"},
		},
		{
			name: "heartbeat: the live Rust agent's own JSON (docker)", source: "dc-agent/src/api_client.rs HeartbeatRequest, provisioner/docker.rs",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, readFile(t, "testdata/live-rust-heartbeat-docker.json"))
			},
			after: func(t *testing.T, e *env) {
				a := call(t, e.srv.URL, signedReq{method: "GET", path: e.path("/providers/{pk}/agent-status")})
				if !strings.Contains(a.body, `"online":true`) || !strings.Contains(a.body, `"activeContracts":2`) || !strings.Contains(a.body, `"cpuCores":4`) {
					t.Fatalf("agent-status after the heartbeat: %s", a.body)
				}
				if e.live && !strings.Contains(a.body, `"memoryTotalMb":8192`) {
					t.Fatalf("live agent-status lost the inventory: %s", a.body)
				}
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 200, success: true, data: ackData},
		},
		{
			name: "agent-status: one status per provider; dc-api lists every agent", source: "api/src/openapi/agents.rs get_agent_status, database/agent_delegations.rs AgentStatus",
			before: func(t *testing.T, e *env) {
				e.must(t, e.hb(e.agent, `{"version":"1.0.0","provisionerType":"docker","capabilities":[],"activeContracts":2}`))
				e.must(t, e.hb(e.legacy, `{"version":"1.0.1","provisionerType":"proxmox","capabilities":[],"activeContracts":3}`))
			},
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/agent-status")}
			},
			// The default profile adds agents (public: key prefix, no
			// version); the live profile answers exactly as the live API.
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				wantKeys(t, d, "providerPubkey", "online", "lastHeartbeatNs", "version", "provisionerType", "capabilities", "activeContracts", "resources", "agents")
				var st struct{ Agents []map[string]any }
				if err := json.Unmarshal(d, &st); err != nil || len(st.Agents) != 2 {
					t.Fatalf("agents %s", d)
				}
				got := map[string]string{}
				for _, a := range st.Agents {
					if _, ok := a["version"]; ok || len(a) != 5 || a["online"] != true {
						t.Fatalf("agent %v: want keyPrefix, online, lastHeartbeatNs, provisionerType, activeContracts", a)
					}
					got[a["keyPrefix"].(string)] = fmt.Sprint(a["provisionerType"], " ", a["activeContracts"])
				}
				want := map[string]string{identity.PublicHex(e.agent)[:8]: "docker 2", identity.PublicHex(e.legacy)[:8]: "proxmox 3"}
				if !maps.Equal(got, want) {
					t.Fatalf("agents %v, want %v", got, want)
				}
			}},
			live: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				wantKeys(t, d, "providerPubkey", "online", "lastHeartbeatNs", "version", "provisionerType", "capabilities", "activeContracts", "resources")
			}},
		},
		{
			name: "heartbeat: the live Rust agent's own JSON (proxmox, GPU, bandwidth)", source: "dc-agent/src/provisioner/proxmox.rs, runtime/mod.rs",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, readFile(t, "testdata/live-rust-heartbeat-proxmox.json"))
			},
			// Both profiles parse the live ResourceInventory (dcapi.Resources).
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 200, success: true, data: ackData},
		},
		{
			name: "heartbeat: resources without cpuThreads", source: "common/src/api_types.rs ResourceInventory",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, hbWith(strings.Replace(inventory, `"cpuThreads":8,`, "", 1)))
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 400, text: liveParse + `Expected input type "integer(uint32)", found null. (occurred while parsing "ResourceInventory") (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: resources without storagePools (a serde-default Vec)", source: "api_types.rs ResourceInventory, poem-openapi ignores serde(default)",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, hbWith(strings.Replace(inventory, `"storagePools":[],`, "", 1)))
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 400, text: liveParse + `Expected input type "[StoragePoolInfo]", found null. (occurred while parsing "ResourceInventory") (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: a storage pool without storageType", source: "api_types.rs StoragePoolInfo",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, hbWith(strings.Replace(inventory, `"storagePools":[]`, `"storagePools":[{"name":"local","totalGb":1,"availableGb":1}]`, 1)))
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 400, text: liveParse + `Expected input type "string", found null. (occurred while parsing "StoragePoolInfo") (occurred while parsing "[StoragePoolInfo]") (occurred while parsing "ResourceInventory") (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: negative cpuCores", source: "api_types.rs ResourceInventory (u32)",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, hbWith(strings.Replace(inventory, `"cpuCores":4`, `"cpuCores":-1`, 1)))
			},
			def:  expect{status: 400, err: `malformed JSON body: field "resources.cpuCores" must be uint32, not a JSON number -1`},
			live: expect{status: 400, text: liveParse + `failed to parse "integer(uint32)": Only integers from 0 to 4294967295 are accepted. (occurred while parsing "ResourceInventory") (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: activeContracts missing", source: "agents.rs HeartbeatRequest (i64, required)",
			req:  func(t *testing.T, e *env) signedReq { return e.hb(e.agent, `{"version":"1.0.0"}`) },
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 400, text: liveParse + `Expected input type "integer(int64)", found null. (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: activeContracts a string", source: "agents.rs HeartbeatRequest",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.agent, `{"version":"1.0.0","activeContracts":"2"}`)
			},
			def:  expect{status: 400, err: `malformed JSON body: field "activeContracts" must be a number, not a JSON string`},
			live: expect{status: 400, text: liveParse + `Expected input type "integer(int64)", found "2". (occurred while parsing "HeartbeatRequest")`},
		},
		{
			name: "heartbeat: without Content-Type", source: "poem-openapi Json payload",
			req: func(t *testing.T, e *env) signedReq {
				r := e.hb(e.agent, hbBody)
				r.mutate = func(h http.Header) { h.Del("Content-Type") }
				return r
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 415, text: "the client request does not include the `Content-Type` header"},
		},
		{
			name: "heartbeat: the permission is missing", source: "api/src/auth.rs require_permission, agents.rs send_heartbeat",
			req: func(t *testing.T, e *env) signedReq {
				return e.hb(e.srv.NewAgent(e.prov, apitest.Permissions(identity.PermFetchContracts)), hbBody)
			},
			def:  expect{status: 403, err: `permission "heartbeat" missing`, errPrefix: true},
			live: expect{status: 200, err: "Agent does not have 'heartbeat' permission"},
		},
		{
			name: "heartbeat: for another provider", source: "agents.rs send_heartbeat",
			req: func(t *testing.T, e *env) signedReq {
				other := e.srv.NewProvider("Other")
				return signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/" + other.Pubkey + "/heartbeat", body: []byte(hbBody), key: e.agent}
			},
			def:  expect{status: 401, err: "no delegation for agent key", errPrefix: true},
			live: expect{status: 200, err: "Agent is not delegated by this provider"},
		},
		{
			name: "auth: no X-Agent-Pubkey", source: "api/src/auth.rs AgentAuthenticatedUser",
			req: func(t *testing.T, e *env) signedReq {
				r := e.hb(e.agent, hbBody)
				r.mutate = func(h http.Header) { h.Del(dcapi.HeaderAgentPubkey) }
				return r
			},
			def:  expect{status: 401, err: "unsigned request: missing header X-Agent-Pubkey (or X-Public-Key) (PROTOCOL.md §2)"},
			live: expect{status: 401, text: "Missing required header: X-Agent-Pubkey"},
		},
		{
			name: "auth: stale timestamp", source: "auth.rs verify_request_signature",
			req: func(t *testing.T, e *env) signedReq {
				r := e.hb(e.agent, hbBody)
				r.ts = time.Now().Add(-6 * time.Minute).UnixNano()
				return r
			},
			def:  expect{status: 401, err: "request timestamp outside the 5 minute window", errPrefix: true},
			live: expect{status: 401, text: "Request timestamp expired (max 5 minutes)"},
		},
		{
			name: "auth: a nonce that is not a UUID", source: "auth.rs verify_request_signature",
			req: func(t *testing.T, e *env) signedReq {
				r := e.hb(e.agent, hbBody)
				r.nonce = "not-a-uuid"
				return r
			},
			def:  expect{status: 200, success: true, data: ackData},
			live: expect{status: 400, text: "Invalid format: Invalid nonce format (must be UUID v4): ", textPrefix: true},
		},
		{
			name: "auth: a replay within the window", source: "auth.rs: no nonce store",
			req: func(t *testing.T, e *env) signedReq {
				r := e.hb(e.agent, hbBody)
				r.nonce = uuid.NewString()
				e.must(t, r)
				return r
			},
			def:  expect{status: 401, err: "replayed request", errPrefix: true},
			live: expect{status: 200, success: true, data: ackData},
		},
		{
			name: "auth: an agent nobody delegates", source: "auth.rs AgentAuthenticatedUser",
			req: func(t *testing.T, e *env) signedReq {
				k, _ := identity.GenerateKey()
				return e.hb(k, hbBody)
			},
			def:  expect{status: 401, err: "no delegation for agent key", errPrefix: true},
			live: expect{status: 401, text: "Invalid signature: No active delegation found for agent key '", textPrefix: true},
		},
		{
			name: "route: POST agent-delegations", source: "removed 2025-12-21; GET on the path remains",
			req: func(t *testing.T, e *env) signedReq {
				sd := e.srv.SignDelegation(e.prov, newKeyHex(t))
				return signedReq{method: "POST", path: e.path("/providers/{pk}/agent-delegations"), key: e.prov.Key, provider: true,
					body: mustJSON(t, dcapi.DelegationRequestBody(sd))}
			},
			def:  expect{status: 201, success: true},
			live: expect{status: 405, text: "method not allowed"},
		},
		{
			name: "route: GET contracts/active", source: "api/src/main.rs route list",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/active"), key: e.agent}
			},
			def:  expect{status: 200, success: true},
			live: expect{status: 404, text: "not found"},
		},
		{
			name: "route: batch health", source: "agents.rs: POST /contracts/{id}/health only",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/providers/{pk}/health"), body: []byte(`{"checks":[]}`), key: e.agent}
			},
			def:  expect{status: 200, success: true},
			live: expect{status: 404, text: "not found"},
		},
		{
			name: "route: unknown path", source: "poem NotFoundError",
			req:  func(t *testing.T, e *env) signedReq { return signedReq{method: "GET", path: e.path("/nothing-here")} },
			def:  expect{status: 404, err: "no endpoint GET /api/v1/nothing-here (see PROTOCOL.md)"},
			live: expect{status: 404, text: "not found"},
		},
		{
			name: "pending-provision: the long-poll query", source: "providers.rs get_pending_provision_contracts (no long-poll)",
			req: func(t *testing.T, e *env) signedReq {
				p := e.path("/providers/{pk}/contracts/pending-provision")
				return signedReq{method: "GET", path: p, sendPath: p + "?waitSeconds=1", key: e.agent}
			},
			def:  expect{status: 200, success: true, data: pendingData(true), header: map[string]string{dcapi.HeaderLongPoll: "1"}},
			live: expect{status: 200, success: true, data: pendingData(false), header: map[string]string{dcapi.HeaderLongPoll: ""}},
		},
		{
			name: "pending-provision: an agent in no pool", source: "providers.rs get_pending_provision_contracts",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-provision"), key: e.legacy}
			},
			def:  expect{status: 200, success: true, data: pendingData(true)},
			live: expect{status: 200, err: "Agent must belong to a pool. Re-register using a setup token."},
		},
		{
			name: "pending-provision: only the pool's contracts", source: "api/src/database/contracts/provisioning.rs get_pending_provision_contracts_for_pool",
			before: func(t *testing.T, e *env) {
				na := e.srv.NewPool(e.prov, "na", "na", "docker")
				e.srv.CreateContract(e.prov, apitest.ContractSpec{AgentPoolID: &na.PoolID})
				e.srv.CreateContract(e.prov, apitest.ContractSpec{DatacenterCountry: apitest.Ptr("US")})
			},
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-provision"), key: e.agent}
			},
			def:  expect{status: 200, success: true, data: pendingData(true)},
			live: expect{status: 200, success: true, data: pendingData(false)},
		},
		{
			name: "provisioning: repeated", source: "common/src/contract_status.rs can_transition_to",
			before: func(t *testing.T, e *env) { e.must(t, e.put("provisioning", "")) },
			req:    func(t *testing.T, e *env) signedReq { return e.put("provisioning", "") },
			def:    expect{status: 200, success: true, data: strData("contract {cid} is provisioning (unchanged)")},
			live:   expect{status: 200, err: "Invalid status transition: provisioning -> provisioning. Valid transitions from 'provisioning': [Provisioned, ProvisioningFailed, Cancelled]"},
		},
		{
			name: "provisioning: provisioned without details", source: "providers.rs normalize_provisioning_details",
			before: func(t *testing.T, e *env) { e.must(t, e.put("provisioning", "")) },
			req:    func(t *testing.T, e *env) signedReq { return e.put("provisioned", " ") },
			def:    expect{status: 422, err: "instanceDetails must be a JSON object string", errPrefix: true},
			live:   expect{status: 200, err: "Instance details are required when marking a contract as provisioned"},
		},
		{
			name: "provisioning: a plaintext root_password", source: "api/src/database/contracts/provisioning.rs add_provisioning_details, api/src/crypto/credential_encryption.rs",
			before: func(t *testing.T, e *env) { e.must(t, e.put("provisioning", "")) },
			req: func(t *testing.T, e *env) signedReq {
				return e.put("provisioned", `{"external_id":"vm-1","ip_address":"10.0.0.9","root_password":"hunter2"}`)
			},
			after: func(t *testing.T, e *env) {
				c := e.srv.Contract(e.cid)
				if !e.live {
					if c.Status != dcapi.StatusProvisioning || c.InstanceDetails != nil {
						t.Fatalf("refused update stored something: %s %v", c.Status, c.InstanceDetails)
					}
					return
				}
				d, _ := e.srv.InstanceDetails(e.cid)
				pw, err := identity.Open(d.RootPassword, e.requester)
				if c.Status != dcapi.StatusProvisioned || strings.Contains(*c.InstanceDetails, "hunter2") || err != nil || string(pw) != "hunter2" {
					t.Fatalf("stored %s %s; the requester opens %q, %v", c.Status, *c.InstanceDetails, pw, err)
				}
			},
			def:  expect{status: 422, err: "instanceDetails.root_password must be a sealed credential", errPrefix: true},
			live: expect{status: 200, success: true, data: strData("Provisioning status updated")},
		},
		{
			name: "provisioning: a sealed root_password is stored as given", source: "PROTOCOL.md §7; docs/dc-api.md (departure)",
			before: func(t *testing.T, e *env) { e.must(t, e.put("provisioning", "")) },
			req: func(t *testing.T, e *env) signedReq {
				sealed, err := identity.Seal([]byte("s3cret"), e.requester.Public().(ed25519.PublicKey), e.cid)
				if err != nil {
					t.Fatal(err)
				}
				u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1", RootPassword: sealed})
				return e.put("provisioned", u.InstanceDetails)
			},
			after: func(t *testing.T, e *env) {
				d, _ := e.srv.InstanceDetails(e.cid)
				if pw, err := identity.Open(d.RootPassword, e.requester); err != nil || string(pw) != "s3cret" {
					t.Fatalf("the requester opens %q, %v", pw, err)
				}
			},
			def:  expect{status: 200, success: true, data: strData("contract {cid} is provisioned")},
			live: expect{status: 200, success: true, data: strData("Provisioning status updated")},
		},
		{
			name: "provisioning: provisioning_failed with retry_possible", source: "providers.rs (mark_provisioning_failed: final, refund)",
			before: func(t *testing.T, e *env) { e.must(t, e.put("provisioning", "")) },
			req: func(t *testing.T, e *env) signedReq {
				u := dcapi.FailedUpdate("no capacity", true)
				return e.put(u.Status, u.InstanceDetails)
			},
			after: func(t *testing.T, e *env) {
				c := e.srv.Contract(e.cid)
				if c.Status != dcapi.StatusProvisioningFailed || (c.OfferAfterNs != nil) == e.live {
					t.Fatalf("after the failure: %s, offered again at %v (live: never)", c.Status, c.OfferAfterNs)
				}
			},
			def:  expect{status: 200, success: true, data: strData("contract {cid} is provisioning_failed")},
			live: expect{status: 200, success: true, data: strData("Provisioning failed — contract closed and refund initiated")},
		},
		{
			name: "provisioning: the provisioning timeout", source: "api/src/database/contracts/timeouts.rs, PROVISIONING_TIMEOUT_SECONDS 3600",
			before: func(t *testing.T, e *env) { e.srv.SetClockOffset(61 * time.Minute) },
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-provision"), key: e.agent, ts: e.srv.Now().UnixNano()}
			},
			after: func(t *testing.T, e *env) {
				want := dcapi.StatusAccepted
				if e.live {
					want = dcapi.StatusProvisioningFailed
				}
				if got := e.srv.ContractStatus(e.cid); got != want {
					t.Fatalf("after an hour accepted: %s, want %s", got, want)
				}
			},
			def:  expect{status: 200, success: true, data: pendingData(true)},
			live: expect{status: 200, success: true, data: emptyList},
		},
		{
			name: "provisioning: a malformed contract id", source: "common.rs decode_hex_path",
			req: func(t *testing.T, e *env) signedReq {
				r := e.put("provisioning", "")
				r.path = dcapi.APIPrefix + "/provider/rental-requests/zz/provisioning"
				return r
			},
			def:  expect{status: 400, err: `contract id in the path must be 64 lowercase hex characters, got "zz"`},
			live: expect{status: 200, err: "Invalid contract id hex: Invalid character 'z' (value: zz)"},
		},
		{
			name: "lock: held by another agent", source: "api/src/openapi/pools.rs acquire_lock",
			before: func(t *testing.T, e *env) {
				e.must(t, signedReq{method: "POST", path: e.path("/providers/{pk}/contracts/{cid}/lock"), key: e.srv.NewPoolAgent(e.pool)})
			},
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/providers/{pk}/contracts/{cid}/lock"), key: e.agent}
			},
			def:  expect{status: 200, success: true, data: lockData},
			live: expect{status: 200, success: true, err: "Contract already locked by another agent", data: lockData},
		},
		{
			name: "unlock: a lock not held", source: "pools.rs release_lock",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "DELETE", path: e.path("/providers/{pk}/contracts/{cid}/lock"), key: e.agent}
			},
			def: expect{status: 200, success: true, data: ptrue},
			live: expect{status: 200, success: true, err: "Lock not held by this agent", data: func(t *testing.T, e *env, d json.RawMessage) {
				if string(d) != "false" {
					t.Fatalf("data %s", d)
				}
			}},
		},
		{
			name: "reconcile: a paused contract", source: "providers.rs reconcile_instances, contracts/dispute.rs",
			before: func(t *testing.T, e *env) {
				e.provision(t)
				if _, err := e.srv.Store.PauseContract(context.Background(), e.cid, "stripe_dispute:du_1", e.srv.Now().UnixNano()); err != nil {
					t.Fatal(err)
				}
			},
			req:  reconcileReq,
			def:  expect{status: 200, success: true, data: reconcileData(`"pause":[{"externalId":"vm-1","contractId":"{cid}","reason":"stripe_dispute:du_1"}]`)},
			live: expect{status: 200, success: true, data: reconcileData(`"pause":[{"externalId":"vm-1","contractId":"{cid}","reason":"stripe_dispute:du_1"}]`)},
		},
		{
			name: "reconcile: keep carries endsAt", source: "common/src/api_types.rs ReconcileKeepInstance",
			before: func(t *testing.T, e *env) { e.provision(t) },
			req:    reconcileReq,
			def:    expect{status: 200, success: true, data: reconcileData(`"keep":[{"externalId":"vm-1","contractId":"{cid}","endsAt":{ends}}]`)},
			live:   expect{status: 200, success: true, data: reconcileData(`"keep":[{"externalId":"vm-1","contractId":"{cid}","endsAt":{ends}}]`)},
		},
		{
			name: "reconcile: an expired contract", source: "providers.rs reconcile_instances",
			before: func(t *testing.T, e *env) {
				e.provision(t)
				ctx, now := context.Background(), e.srv.Now().UnixNano()
				e.srv.Store.PauseContract(ctx, e.cid, "x", now)
				if _, err := e.srv.Store.ExpireContract(ctx, e.cid, now); err != nil {
					t.Fatal(err)
				}
				e.srv.SetClockOffset(time.Second)
			},
			req: reconcileReq,
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				var r dcapi.ReconcileResponse
				if json.Unmarshal(d, &r) != nil || len(r.Terminate) != 1 || !strings.HasPrefix(r.Terminate[0].Reason, "contract expired at ") {
					t.Fatalf("reconcile %s", d)
				}
			}},
			live: expect{status: 200, success: true, data: reconcileData(`"terminate":[{"externalId":"vm-1","contractId":"{cid}","reason":"expired"}]`)},
		},
		{
			name: "terminated: a cancelled contract", source: "api/src/database/contracts/mod.rs mark_contract_terminated",
			before: func(t *testing.T, e *env) { e.provision(t); e.srv.CancelContract(e.cid) },
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "PUT", path: e.path("/providers/{pk}/contracts/{cid}/terminated"), key: e.agent}
			},
			def:  expect{status: 200, success: true, data: ptrue},
			live: expect{status: 200, success: true, data: ptrue},
		},
		{
			name: "terminated: an expired contract", source: "contracts/mod.rs mark_contract_terminated (cancelled only)",
			before: func(t *testing.T, e *env) {
				e.provision(t)
				ctx, now := context.Background(), e.srv.Now().UnixNano()
				e.srv.Store.PauseContract(ctx, e.cid, "x", now)
				e.srv.Store.ExpireContract(ctx, e.cid, now)
			},
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "PUT", path: e.path("/providers/{pk}/contracts/{cid}/terminated"), key: e.agent}
			},
			def:  expect{status: 200, success: true, data: ptrue},
			live: expect{status: 200, err: "Contract not found or not in cancelled status (ID: {cid})"},
		},
		{
			name: "pools: created over the provider API", source: "api/src/openapi/pools.rs create_pool",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/providers/{pk}/pools"), key: e.prov.Key, provider: true,
					body: []byte(`{"name":"us-east","location":"na","provisionerType":"proxmox"}`)}
			},
			def:  expect{status: 200, success: true, data: poolData},
			live: expect{status: 200, success: true, data: poolData},
		},
		{
			name: "pools: an unknown location", source: "api/src/database/agent_pools.rs create_agent_pool, common/src/regions.rs",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/providers/{pk}/pools"), key: e.prov.Key, provider: true,
					body: []byte(`{"name":"x","location":"mars","provisionerType":"proxmox"}`)}
			},
			def:  expect{status: 422, err: "Invalid location 'mars': must be one of: europe, na, latam, apac, mena, ssa, cis"},
			live: expect{status: 200, err: "Invalid location 'mars': must be one of: europe, na, latam, apac, mena, ssa, cis"},
		},
		{
			name: "pools: signed by another provider", source: "pools.rs create_pool, common.rs check_authorization",
			req: func(t *testing.T, e *env) signedReq {
				other, _ := identity.GenerateKey()
				return signedReq{method: "POST", path: e.path("/providers/{pk}/pools"), key: other, provider: true,
					body: []byte(`{"name":"x","location":"na","provisionerType":"proxmox"}`)}
			},
			def:  expect{status: 401, err: "X-Public-Key", errPrefix: true},
			live: expect{status: 200, err: "Unauthorized: request pubkey {pk} does not match authenticated user ", errPrefix: true},
		},
		{
			name: "setup-tokens: created over the provider API", source: "pools.rs create_setup_token, agent_pools.rs create_setup_token",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "POST", path: e.path("/providers/{pk}/pools/{pool}/setup-tokens"), key: e.prov.Key, provider: true,
					body: []byte(`{"label":"worker-01","expiresInHours":2}`)}
			},
			def:  expect{status: 200, success: true, data: tokenData},
			live: expect{status: 200, success: true, data: tokenData},
		},
		{
			name: "setup-tokens: another provider's pool", source: "pools.rs create_setup_token",
			req: func(t *testing.T, e *env) signedReq {
				other := e.srv.NewProvider("Other")
				return signedReq{method: "POST", path: dcapi.APIPrefix + "/providers/" + other.Pubkey + "/pools/" + e.pool.PoolID + "/setup-tokens",
					key: other.Key, provider: true, body: []byte(`{}`)}
			},
			def:  expect{status: 404, err: "Pool not found"},
			live: expect{status: 200, err: "Pool not found"},
		},
	}
}

func setupData(t *testing.T, e *env, d json.RawMessage) {
	t.Helper()
	wantKeys(t, d, "providerPubkey", "poolId", "poolName", "poolLocation", "provisionerType", "permissions")
	var r dcapi.AgentSetupResponse
	_ = json.Unmarshal(d, &r)
	if r.ProviderPubkey != e.prov.Pubkey || r.PoolID != e.pool.PoolID || r.PoolName != "eu" || r.PoolLocation != "europe" || r.ProvisionerType != "docker" ||
		!slices.Equal(r.Permissions, []string{"provision", "health_check", "heartbeat", "fetch_contracts", "dns_manage"}) {
		t.Fatalf("setup answer %s", d)
	}
}

func strData(want string) func(t *testing.T, e *env, d json.RawMessage) {
	return func(t *testing.T, e *env, d json.RawMessage) {
		t.Helper()
		var s string
		if want = strings.ReplaceAll(want, "{cid}", e.cid); json.Unmarshal(d, &s) != nil || s != want {
			t.Fatalf("data %s, want %q", d, want)
		}
	}
}

func emptyList(t *testing.T, e *env, d json.RawMessage) {
	t.Helper()
	if string(d) != "[]" {
		t.Fatalf("data %s, want []", d)
	}
}

// pendingData checks the answer is exactly the env's contract: with our
// fields (requester_pubkey, nulls) in the default profile, with live's
// (ContractWithSpecs: no requester_pubkey, absent fields omitted) in the
// live one.
func pendingData(ours bool) func(t *testing.T, e *env, d json.RawMessage) {
	return func(t *testing.T, e *env, d json.RawMessage) {
		t.Helper()
		var list []json.RawMessage
		if err := json.Unmarshal(d, &list); err != nil || len(list) != 1 {
			t.Fatalf("pending %s, want the one contract", d)
		}
		var c dcapi.PendingContract
		_ = json.Unmarshal(list[0], &c)
		if c.ContractID != e.cid {
			t.Fatalf("pending %s, want %s", d, e.cid)
		}
		if ours {
			if !slices.Contains(keys(t, list[0]), "requester_pubkey") {
				t.Fatalf("default profile without requester_pubkey: %s", list[0])
			}
			return
		}
		wantKeys(t, list[0], "contract_id", "offering_id", "requester_ssh_pubkey")
	}
}

func lockData(t *testing.T, e *env, d json.RawMessage) {
	t.Helper()
	var l dcapi.LockResult
	if err := json.Unmarshal(d, &l); err != nil || l.Acquired || l.ExpiresAtNs <= time.Now().UnixNano() {
		t.Fatalf("lock %s", d)
	}
}

func reconcileReq(t *testing.T, e *env) signedReq {
	return signedReq{method: "POST", path: e.path("/providers/{pk}/reconcile"), key: e.agent, ts: e.srv.Now().UnixNano(),
		body: []byte(`{"runningInstances":[{"externalId":"vm-1","contractId":"` + e.cid + `"}]}`)}
}

// reconcileData wants the answer with the one list given, the others empty.
func reconcileData(list string) func(t *testing.T, e *env, d json.RawMessage) {
	return func(t *testing.T, e *env, d json.RawMessage) {
		t.Helper()
		c := e.srv.Contract(e.cid)
		want := map[string]string{"keep": "[]", "terminate": "[]", "unknown": "[]", "pause": "[]"}
		name, val, _ := strings.Cut(list, ":")
		want[strings.Trim(name, `"`)] = strings.NewReplacer("{cid}", e.cid, "{ends}", strconv.FormatInt(*c.EndsAtNs, 10)).Replace(val)
		var got map[string]json.RawMessage
		if err := json.Unmarshal(d, &got); err != nil || len(got) != 4 {
			t.Fatalf("reconcile %s", d)
		}
		for k, v := range want {
			if string(got[k]) != v {
				t.Fatalf("reconcile %s = %s, want %s", k, got[k], v)
			}
		}
	}
}

func poolData(t *testing.T, e *env, d json.RawMessage) {
	t.Helper()
	wantKeys(t, d, "poolId", "providerPubkey", "name", "location", "provisionerType", "createdAtNs")
	var p store.Pool
	_ = json.Unmarshal(d, &p)
	if !regexp.MustCompile(`^us-east-[0-9a-f]{8}$`).MatchString(p.PoolID) || p.ProviderPubkey != e.prov.Pubkey || p.Location != "na" {
		t.Fatalf("pool %s", d)
	}
	if _, err := e.srv.Store.GetPool(context.Background(), p.PoolID); err != nil {
		t.Fatalf("pool not stored: %v", err)
	}
}

func tokenData(t *testing.T, e *env, d json.RawMessage) {
	t.Helper()
	var tok store.SetupToken
	if err := json.Unmarshal(d, &tok); err != nil || !tokenFormat.MatchString(tok.Token) || tok.PoolID != e.pool.PoolID ||
		tok.ExpiresAtNs-tok.CreatedAtNs != int64(2*time.Hour) || tok.Label == nil || *tok.Label != "worker-01" {
		t.Fatalf("token %s", d)
	}
	if _, err := e.srv.Store.UseSetupToken(context.Background(), tok.Token, newKeyHex(t), e.srv.Now().UnixNano()); err != nil {
		t.Fatalf("the token does not register an agent: %v", err)
	}
}

// TestProfileRules: every rule of the live API dc-api imitates, with the
// request and the exact answer of both profiles (PostgreSQL runs the
// pool and token rules too: TestSetupTokenOverHTTP).
func TestProfileRules(t *testing.T) {
	for _, r := range append(profileRules(), tenantRules()...) {
		for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
			t.Run(r.name+"/"+profile, func(t *testing.T) {
				t.Parallel()
				e := newEnv(t, profile)
				if r.before != nil {
					r.before(t, e)
				}
				req := r.req(t, e)
				a := call(t, e.srv.URL, req)
				want := r.def
				if e.live {
					want = r.live
				}
				sub := strings.NewReplacer("{pk}", e.prov.Pubkey, "{cid}", e.cid)
				want.err, want.text = sub.Replace(want.err), sub.Replace(want.text)
				want.check(t, e, a)
				if r.after != nil {
					r.after(t, e)
				}
			})
		}
	}
}

// TestSetupTokenOverHTTP: two agents race one token over HTTP, on SQLite
// and PostgreSQL, in both profiles: one is registered, the other told the
// token is used; then an expired token.
func TestSetupTokenOverHTTP(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		eachServer(t, func(t *testing.T, srv *apitest.Server) {
			prov := srv.NewProvider("Acme")
			pool := srv.NewPool(prov, "eu", "europe", "proxmox")
			tok := srv.SetupToken(pool, time.Hour)
			url := srv.URL + dcapi.APIPrefix + "/agents/setup"
			agents := []string{newKeyHex(t), newKeyHex(t)}
			answers := make(chan answer, 2)
			start := make(chan struct{})
			for _, a := range agents {
				go func() {
					<-start
					resp, err := http.Post(url, "application/json", bytes.NewReader(setupBody(tok, a)))
					if err != nil {
						answers <- answer{status: -1, body: err.Error()}
						return
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					answers <- answer{status: resp.StatusCode, body: string(b)}
				}()
			}
			close(start)
			won, lost := 0, 0
			usedStatus := 409
			if profile == apiserver.ProfileLive {
				usedStatus = 200
			}
			for range agents {
				a := <-answers
				switch {
				case a.status == 200 && strings.HasPrefix(a.body, `{"success":true`):
					won++
				case a.status == usedStatus && a.body == `{"success":false,"error":"Setup token already used"}`:
					lost++
				default:
					t.Fatalf("answer %d %s", a.status, a.body)
				}
			}
			if won != 1 || lost != 1 {
				t.Fatalf("%d registered, %d refused; want 1 and 1", won, lost)
			}
			registered := 0
			for _, a := range agents {
				if d, err := srv.Store.GetDelegation(context.Background(), prov.Pubkey, a); err == nil && d.PoolID != nil && *d.PoolID == pool.PoolID {
					registered++
				}
			}
			if registered != 1 {
				t.Fatalf("%d delegations stored", registered)
			}
			short := srv.SetupToken(pool, time.Minute)
			srv.SetClockOffset(time.Minute)
			resp, err := http.Post(url, "application/json", bytes.NewReader(setupBody(short, newKeyHex(t))))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := `{"success":false,"error":"Setup token expired"}`; string(b) != want {
				t.Fatalf("expired token: %d %s", resp.StatusCode, b)
			}
		}, apitest.WithProfile(profile))
	})
}

// TestLiveRateLimit: per client IP, 60 writes and 120 reads a minute, then
// 429 with Retry-After: 60 until the minute is over (api/src/rate_limit.rs).
func TestLiveRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, apiserver.ProfileLive, apitest.WithRateLimit(50, 200))
	// The window is the server's minute, however long the test takes; and
	// newEnv's requests did not go through HTTP: it is fresh.
	e.srv.FreezeClock()
	for i := 0; i < 60; i++ {
		if a := call(t, e.srv.URL, e.hb(e.agent, hbBody)); a.status != 200 {
			t.Fatalf("write %d: %d %s", i+1, a.status, a.body)
		}
	}
	limited := expect{status: 429, text: "Rate limit exceeded. Please try again later.", header: map[string]string{"Retry-After": "60", "X-Ratelimit-Tier": "standard"}}
	limited.check(t, e, call(t, e.srv.URL, e.hb(e.agent, hbBody)))
	// Reads have their own 120.
	pending := signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-provision"), key: e.agent}
	for i := 0; i < 120; i++ {
		if a := call(t, e.srv.URL, pending); a.status != 200 {
			t.Fatalf("read %d: %d %s", i+1, a.status, a.body)
		}
	}
	limited.header["X-Ratelimit-Tier"] = "relaxed"
	limited.check(t, e, call(t, e.srv.URL, pending))
	// The dashboard is not counted; a new minute is a new window.
	if a := call(t, e.srv.URL, signedReq{method: "GET", path: "/"}); a.status != 200 {
		t.Fatalf("dashboard: %d", a.status)
	}
	e.srv.SetClockOffset(61 * time.Second)
	hb := e.hb(e.agent, hbBody)
	hb.ts = e.srv.Now().UnixNano()
	if a := call(t, e.srv.URL, hb); a.status != 200 {
		t.Fatalf("after a minute: %d %s", a.status, a.body)
	}
}

// TestProfileOnDashboardOnly: the dashboard names the profile; no API
// answer does.
func TestProfileOnDashboardOnly(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		t.Parallel()
		e := newEnv(t, profile)
		if got := e.srv.API.Profile(); got != profile {
			t.Fatalf("Profile() = %q", got)
		}
		a := call(t, e.srv.URL, signedReq{method: "GET", path: "/"})
		if a.status != 200 || !strings.Contains(a.body, `profile <span id="profile">`+profile+`</span>`) {
			t.Fatalf("dashboard does not name profile %s", profile)
		}
		for _, r := range []signedReq{
			e.hb(e.agent, hbBody),
			{method: "GET", path: e.path("/providers/{pk}/contracts/pending-provision"), key: e.agent},
			{method: "GET", path: e.path("/providers/{pk}/agent-status")},
			{method: "GET", path: e.path("/providers/{pk}/pools"), key: e.prov.Key, provider: true},
		} {
			if a := call(t, e.srv.URL, r); strings.Contains(strings.ToLower(a.body), "profile") {
				t.Fatalf("%s %s names the profile: %s", r.method, r.path, a.body)
			}
		}
	})
}

// TestDashboardShowsPausedAndExpired: the dashboard counts paused and
// expired contracts and lists them with their state.
func TestDashboardShowsPausedAndExpired(t *testing.T) {
	t.Parallel()
	e := newEnv(t, apiserver.ProfileDefault)
	e.provision(t)
	ctx, now := context.Background(), e.srv.Now().UnixNano()
	if _, err := e.srv.Store.PauseContract(ctx, e.cid, "stripe_dispute:du_1", now); err != nil {
		t.Fatal(err)
	}
	a := call(t, e.srv.URL, signedReq{method: "GET", path: "/"})
	if !strings.Contains(a.body, `data-role="paused">1 · 0<`) || !strings.Contains(a.body, `<span class="pill paused">paused</span>`) {
		t.Fatalf("dashboard does not show the paused contract:\n%s", a.body)
	}
	if _, err := e.srv.Store.ExpireContract(ctx, e.cid, now); err != nil {
		t.Fatal(err)
	}
	e.srv.SetClockOffset(apiserver.DashboardSnapshotAge) // the next snapshot
	a = call(t, e.srv.URL, signedReq{method: "GET", path: "/"})
	if !strings.Contains(a.body, `data-role="paused">0 · 1<`) || !strings.Contains(a.body, `<span class="pill expired">expired</span>`) {
		t.Fatalf("dashboard does not show the expired contract:\n%s", a.body)
	}
}
