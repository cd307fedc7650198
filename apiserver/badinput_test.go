package apiserver_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestBadInput: malformed and out-of-range input of every endpoint gets a
// 4xx with an envelope naming the problem — never a 5xx — and changes
// nothing in the store.
func TestBadInput(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		ctx := context.Background()
		prov := srv.NewProvider("P")
		agent := srv.NewAgent(prov)
		c := srv.Client(prov, agent)
		accepted := srv.CreateContract(prov, apitest.ContractSpec{})
		live := srv.CreateContract(prov, apitest.ContractSpec{})
		if err := c.UpdateProvisioning(ctx, live, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
			t.Fatal(err)
		}
		up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1"})
		if err := c.UpdateProvisioning(ctx, live, up); err != nil {
			t.Fatal(err)
		}
		unknown := store.NewContractID()
		unregistered, _ := identity.GenerateKey()
		p := dcapi.APIPrefix + "/providers/" + prov.Pubkey
		prov404 := dcapi.APIPrefix + "/providers/" + identity.PublicHex(unregistered)
		rr := dcapi.APIPrefix + "/provider/rental-requests/"
		now := time.Now().UnixNano()
		js := func(v any) []byte { return mustJSON(t, v) }
		agentReq := func(method, path string, body string) signedReq {
			var b []byte
			if body != "" {
				b = []byte(body)
			}
			return signedReq{method: method, path: path, body: b, key: agent}
		}
		checks := func(n int) string {
			var cs []dcapi.HealthCheck
			for i := 0; i < n; i++ {
				cs = append(cs, dcapi.HealthCheck{ContractID: live, CheckedAt: now - int64(i), Status: "healthy"})
			}
			return string(js(dcapi.HealthBatch{Checks: cs}))
		}
		badPerm := dcapi.DelegationRequestBody(srv.SignDelegation(prov, identity.PublicHex(agent)))
		badPerm.Permissions = []string{"dns_manage"}
		badSig := dcapi.DelegationRequestBody(srv.SignDelegation(prov, identity.PublicHex(agent)))
		badSig.Signature = "xyz"
		badAgent := dcapi.DelegationRequestBody(srv.SignDelegation(prov, identity.PublicHex(agent)))
		badAgent.AgentPubkey = "not-a-key"
		unregSD, _ := identity.Delegation{AgentPubkey: identity.PublicHex(agent), ProviderPubkey: identity.PublicHex(unregistered), Permissions: identity.AllPermissions}.Sign(unregistered)

		cases := []struct {
			name   string
			req    signedReq
			status int
			msg    string
		}{
			{"heartbeat: malformed JSON", agentReq("POST", p+"/heartbeat", `{"version":`), 400, "malformed JSON"},
			{"heartbeat: not an object", agentReq("POST", p+"/heartbeat", `[1,2]`), 400, "malformed JSON"},
			{"heartbeat: wrong type", agentReq("POST", p+"/heartbeat", `{"version":1}`), 400, `field "version" must be a string`},
			{"heartbeat: trailing garbage", agentReq("POST", p+"/heartbeat", `{"version":"1"} x`), 400, "after the JSON value"},
			{"heartbeat: empty body", agentReq("POST", p+"/heartbeat", ``), 400, "body is empty"},
			{"heartbeat: no version", agentReq("POST", p+"/heartbeat", `{}`), 422, "version is required"},
			{"heartbeat: negative count", agentReq("POST", p+"/heartbeat", `{"version":"1","activeContracts":-1}`), 422, "activeContracts"},
			{"heartbeat: control characters", agentReq("POST", p+"/heartbeat", `{"version":"1\n2"}`), 422, "control characters"},
			{"heartbeat: oversized body", agentReq("POST", p+"/heartbeat", `{"version":"`+strings.Repeat("x", 3<<20)+`"}`), 413, "larger than"},
			{"provisioning: unknown status", agentReq("PUT", rr+accepted+"/provisioning", `{"status":"active","instanceDetails":""}`), 422, "status must be"},
			{"provisioning: unknown contract", agentReq("PUT", rr+unknown+"/provisioning", `{"status":"provisioning","instanceDetails":""}`), 404, "not found"},
			{"provisioning: non-hex contract id", agentReq("PUT", rr+"1234/provisioning", `{"status":"provisioning","instanceDetails":""}`), 400, "contract id"},
			{"provisioning: illegal transition", agentReq("PUT", rr+accepted+"/provisioning", string(js(up))), 409, "illegal status transition"},
			{"provisioning: back to provisioning", agentReq("PUT", rr+live+"/provisioning", `{"status":"provisioning","instanceDetails":""}`), 409, "illegal status transition"},
			{"provisioning: plaintext password", agentReq("PUT", rr+live+"/provisioning", string(js(dcapi.ProvisioningUpdate{Status: "provisioned",
				InstanceDetails: `{"external_id":"vm-1","root_password":"hunter2"}`}))), 422, "never a plaintext password"},
			{"provisioning: details not JSON", agentReq("PUT", rr+live+"/provisioning", `{"status":"provisioned","instanceDetails":"vm-1"}`), 422, "JSON object"},
			{"provisioning: failure details not JSON", agentReq("PUT", rr+accepted+"/provisioning", `{"status":"provisioning_failed","instanceDetails":"boom"}`), 422, "retry_possible"},
			{"lock: unknown contract", agentReq("POST", p+"/contracts/"+unknown+"/lock", ""), 404, "not found"},
			{"lock: non-hex contract id", agentReq("POST", p+"/contracts/zz/lock", ""), 400, "contract id"},
			{"lock: provisioned contract", agentReq("POST", p+"/contracts/"+live+"/lock", ""), 409, "only accepted"},
			{"terminated: live contract", agentReq("PUT", p+"/contracts/"+live+"/terminated", ""), 409, "only cancelled or ended"},
			{"terminated: unknown contract", agentReq("PUT", p+"/contracts/"+unknown+"/terminated", ""), 404, "not found"},
			{"health: unknown status", agentReq("POST", dcapi.APIPrefix+"/contracts/"+live+"/health", fmt.Sprintf(`{"checkedAt":%d,"status":"fine"}`, now)), 422, "status must be"},
			{"health: no time", agentReq("POST", dcapi.APIPrefix+"/contracts/"+live+"/health", `{"status":"healthy"}`), 422, "checkedAt"},
			{"health: future", agentReq("POST", dcapi.APIPrefix+"/contracts/"+live+"/health", fmt.Sprintf(`{"checkedAt":%d,"status":"healthy"}`, now+int64(time.Hour))), 422, "in the future"},
			{"health: time as string", agentReq("POST", dcapi.APIPrefix+"/contracts/"+live+"/health", `{"checkedAt":"now","status":"healthy"}`), 400, `field "checkedAt" must be a number`},
			{"health: not provisioned", agentReq("POST", dcapi.APIPrefix+"/contracts/"+accepted+"/health", fmt.Sprintf(`{"checkedAt":%d,"status":"healthy"}`, now)), 409, "no instance"},
			{"health: unknown contract", agentReq("POST", dcapi.APIPrefix+"/contracts/"+unknown+"/health", fmt.Sprintf(`{"checkedAt":%d,"status":"healthy"}`, now)), 404, "not found"},
			{"health batch: too many", agentReq("POST", p+"/health", checks(1001)), 422, "at most 1000"},
			{"health batch: no checks", agentReq("POST", p+"/health", `{}`), 422, "checks"},
			{"health batch: one unknown contract", agentReq("POST", p+"/health", string(js(dcapi.HealthBatch{Checks: []dcapi.HealthCheck{
				{ContractID: live, CheckedAt: now, Status: "healthy"}, {ContractID: unknown, CheckedAt: now, Status: "healthy"}}}))), 404, "not found"},
			{"health batch: one bad check", agentReq("POST", p+"/health", string(js(dcapi.HealthBatch{Checks: []dcapi.HealthCheck{
				{ContractID: live, CheckedAt: now, Status: "healthy"}, {ContractID: live, CheckedAt: now - 1, Status: "sick"}}}))), 422, "checks[1]"},
			{"reconcile: no list", agentReq("POST", p+"/reconcile", `{}`), 422, "runningInstances"},
			{"reconcile: bad contract id", agentReq("POST", p+"/reconcile", `{"runningInstances":[{"externalId":"x","contractId":"../etc"}]}`), 422, "contractId"},
			{"reconcile: empty external id", agentReq("POST", p+"/reconcile", `{"runningInstances":[{"externalId":"","contractId":""}]}`), 422, "externalId"},
			{"pending: bad waitSeconds", agentReq("GET", p+"/contracts/pending-provision?waitSeconds=soon", ""), 400, "waitSeconds"},
			{"pending: negative waitSeconds", agentReq("GET", p+"/contracts/pending-provision?waitSeconds=-1", ""), 400, "waitSeconds"},
			{"delegation: unknown permission", signedReq{method: "POST", path: p + "/agent-delegations", body: js(badPerm), key: prov.Key, provider: true}, 422, "unknown permission"},
			{"delegation: bad signature", signedReq{method: "POST", path: p + "/agent-delegations", body: js(badSig), key: prov.Key, provider: true}, 422, "signature"},
			{"delegation: bad agent key", signedReq{method: "POST", path: p + "/agent-delegations", body: js(badAgent), key: prov.Key, provider: true}, 422, "agentPubkey"},
			{"delegation: unregistered provider", signedReq{method: "POST", path: prov404 + "/agent-delegations", body: js(dcapi.DelegationRequestBody(unregSD)), key: unregistered, provider: true}, 404, "not registered"},
			{"revoke: unknown agent", signedReq{method: "DELETE", path: p + "/agent-delegations/" + identity.PublicHex(unregistered), key: prov.Key, provider: true}, 404, "no delegation"},
			{"revoke: non-hex agent", signedReq{method: "DELETE", path: p + "/agent-delegations/agent-1", key: prov.Key, provider: true}, 400, "agent key in the path"},
			{"agent-status: unknown provider", signedReq{method: "GET", path: prov404 + "/agent-status"}, 404, "not registered"},
			{"agent-status: non-hex provider", signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/xyz/agent-status"}, 400, "provider key in the path"},
			{"health-summary: days=0", signedReq{method: "GET", path: p + "/health-summary?days=0"}, 400, "days must be"},
			{"health-summary: days=abc", signedReq{method: "GET", path: p + "/health-summary?days=abc"}, 400, "days must be"},
			{"health-summary: days=9999", signedReq{method: "GET", path: p + "/health-summary?days=9999"}, 400, "days must be"},
			{"unknown endpoint", signedReq{method: "GET", path: dcapi.APIPrefix + "/contracts"}, 404, "no endpoint"},
			{"wrong method", signedReq{method: "PATCH", path: p + "/heartbeat"}, 405, "not allowed"},
		}
		for _, tc := range cases {
			before := snapshot(t, srv)
			got := send(t, srv.URL, tc.req)
			if got.status != tc.status || got.env.Success || !strings.Contains(got.env.Error, tc.msg) {
				t.Errorf("%s: %d %q; want %d mentioning %q", tc.name, got.status, clipStr(got.env.Error), tc.status, tc.msg)
			}
			if after := snapshot(t, srv); after != before {
				t.Errorf("%s: the refused request changed the store", tc.name)
			}
		}
		// The contracts are exactly as they were set up.
		if s := srv.ContractStatus(accepted); s != dcapi.StatusAccepted {
			t.Errorf("accepted contract is %s", s)
		}
		if len(srv.HealthChecks(live)) != 0 {
			t.Error("a refused health report was stored")
		}
	})
}

func clipStr(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// TestGracefulShutdownEndsLongPolls: a graceful stop answers waiting
// long-polls at once with an empty list instead of holding the stop for up
// to 30 s, lets in-flight requests finish, and Serve returns cleanly.
func TestGracefulShutdownEndsLongPolls(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), "sqlite:"+t.TempDir()+"/x.db", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	api, err := apiserver.New(apiserver.Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- api.Serve(ctx, ln, 10*time.Second) }()

	prov, _ := identity.GenerateKey()
	agent, _ := identity.GenerateKey()
	st.AddProvider(context.Background(), identity.PublicHex(prov), "", time.Now().UnixNano())
	sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(agent), ProviderPubkey: identity.PublicHex(prov), Permissions: identity.AllPermissions}.Sign(prov)
	st.PutDelegation(context.Background(), sd, false, time.Now().UnixNano())
	c, _ := dcapi.New("http://"+ln.Addr().String(), identity.PublicHex(prov), agent)
	type res struct {
		n   int
		lp  bool
		err error
	}
	done := make(chan res, 1)
	go func() {
		l, lp, err := c.PendingContracts(context.Background(), 30*time.Second)
		done <- res{len(l), lp, err}
	}()
	time.Sleep(200 * time.Millisecond) // let the poll start waiting
	start := time.Now()
	cancel()
	r := <-done
	if r.err != nil || r.n != 0 || !r.lp {
		t.Fatalf("long-poll during shutdown = %+v; want an empty answer", r)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("graceful stop took %s with a long-poll waiting", d)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("still listening after stop")
	}
}
