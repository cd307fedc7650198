package apiserver_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// requestReset provisions the env's contract and has its tenant ask for a
// password reset.
func requestReset(t *testing.T, e *env) {
	t.Helper()
	e.provision(t)
	if _, err := e.srv.Store.RequestPasswordReset(context.Background(), e.cid, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
}

func requestRotation(t *testing.T, e *env) string {
	t.Helper()
	e.provision(t)
	key := apitest.NewSSHPubkey(t)
	if _, err := e.srv.Store.RequestKeyRotation(context.Background(), e.cid, key, time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	return key
}

func (e *env) pwPut(body string) signedReq {
	return signedReq{method: "PUT", path: e.path("/provider/rental-requests/{cid}/password"), body: []byte(body), key: e.agent}
}

// openedPassword is the root password in the contract's details, opened
// with the requester's key.
func openedPassword(t *testing.T, e *env) string {
	t.Helper()
	d, ok := e.srv.InstanceDetails(e.cid)
	if !ok || d.RootPassword == "" {
		t.Fatalf("no root password in %v", d)
	}
	pw, err := identity.Open(d.RootPassword, e.requester)
	if err != nil {
		t.Fatalf("the tenant cannot open the password: %v", err)
	}
	return string(pw)
}

func pending(t *testing.T, e *env, kind string) int {
	t.Helper()
	l, err := e.srv.Store.PendingTenantRequests(context.Background(), e.prov.Pubkey, kind)
	if err != nil {
		t.Fatal(err)
	}
	return len(l)
}

// tenantRules are the tenant request endpoints, rows of TestProfileRules:
// each request with both profiles' exact answers (live:
// api/src/openapi/providers.rs).
func tenantRules() []rule {
	sealed := func(e *env, pw string) string {
		s, _ := identity.Seal([]byte(pw), e.requester.Public().(ed25519.PublicKey), e.cid)
		return s
	}
	return []rule{
		{
			name: "pending-password-reset lists a requested reset", source: "providers.rs get_pending_password_reset_contracts",
			before: requestReset,
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-password-reset"), key: e.agent}
			},
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				var l []map[string]any
				if json.Unmarshal(d, &l) != nil || len(l) != 1 || l[0]["contract_id"] != e.cid || l[0]["seal_to"] != identity.PublicHex(e.requester) || l[0]["requested_at_ns"] == nil {
					t.Fatalf("data %s", d)
				}
			}},
			live: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				var l []map[string]any
				if json.Unmarshal(d, &l) != nil || len(l) != 1 || l[0]["contract_id"] != e.cid || l[0]["requester_pubkey"] != identity.PublicHex(e.requester) ||
					l[0]["status"] != "provisioned" || l[0]["seal_to"] != nil || l[0]["requested_at_ns"] != nil {
					t.Fatalf("data %s", d)
				}
			}},
		},
		{
			name: "pending-password-reset of another provider", source: "providers.rs get_pending_password_reset_contracts",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: dcapi.APIPrefix + "/providers/" + newKeyHex(t) + "/contracts/pending-password-reset", key: e.agent}
			},
			def:  expect{status: 401, err: "no delegation for agent key", errPrefix: true},
			live: expect{status: 200, err: "Unauthorized: can only access your own provider's contracts"},
		},
		{
			name: "a plaintext new password", source: "providers.rs update_contract_password, provisioning.rs update_encrypted_credentials",
			before: requestReset,
			req:    func(t *testing.T, e *env) signedReq { return e.pwPut(`{"newPassword":"Plain-Text-Pw-123"}`) },
			def:    expect{status: 422, err: "newPassword must be a sealed credential for this contract", errPrefix: true},
			live: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				if string(d) != `"Password updated successfully"` || openedPassword(t, e) != "Plain-Text-Pw-123" || pending(t, e, store.RequestPasswordReset) != 0 {
					t.Fatalf("data %s, pending %d", d, pending(t, e, store.RequestPasswordReset))
				}
			}},
		},
		{
			name: "a sealed new password", source: "providers.rs update_contract_password (dc-api stores a sealed one as given)",
			before: requestReset,
			req: func(t *testing.T, e *env) signedReq {
				b, _ := json.Marshal(map[string]string{"newPassword": sealed(e, "Sealed-Pw-456")})
				return e.pwPut(string(b))
			},
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				if openedPassword(t, e) != "Sealed-Pw-456" || pending(t, e, store.RequestPasswordReset) != 0 {
					t.Fatal("password not stored or the request still pending")
				}
			}},
			live: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				if openedPassword(t, e) != "Sealed-Pw-456" {
					t.Fatal("password not stored as given")
				}
			}},
		},
		{
			name: "a failure report", source: "PROTOCOL.md (live has none: UpdatePasswordRequest needs newPassword)",
			before: requestReset,
			req:    func(t *testing.T, e *env) signedReq { return e.pwPut(`{"error":"the VM has no guest agent"}`) },
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				l, _ := e.srv.Store.TenantRequests(context.Background(), e.cid)
				if len(l) != 1 || l[0].Error == nil || *l[0].Error != "the VM has no guest agent" || l[0].DoneAtNs == nil {
					t.Fatalf("requests %+v", l)
				}
			}},
			live: expect{status: 400, text: liveParse + `Expected input type "string", found null. (occurred while parsing "UpdatePasswordRequest")`},
		},
		{
			name: "password of an unknown contract", source: "providers.rs update_contract_password",
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "PUT", path: dcapi.APIPrefix + "/provider/rental-requests/" + strings.Repeat("ab", 32) + "/password",
					body: []byte(`{"newPassword":"x"}`), key: e.agent}
			},
			def:  expect{status: 404, err: "contract " + strings.Repeat("ab", 32) + " not found", errPrefix: true},
			live: expect{status: 200, err: "Contract not found"},
		},
		{
			name: "key rotation completed", source: "providers.rs complete_ssh_key_rotation",
			before: func(t *testing.T, e *env) { requestRotation(t, e) },
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "PUT", path: e.path("/provider/rental-requests/{cid}/ssh-key-rotation"), key: e.agent}
			},
			def:  expect{status: 200, success: true},
			live: expect{status: 200, success: true},
			after: func(t *testing.T, e *env) {
				l, _ := e.srv.Store.TenantRequests(context.Background(), e.cid)
				if len(l) != 1 || l[0].DoneAtNs == nil || e.srv.Contract(e.cid).RequesterSSHPubkey != *l[0].SSHPubkey || pending(t, e, store.RequestKeyRotation) != 0 {
					t.Fatalf("rotation not applied: %+v", l)
				}
			},
		},
		{
			name: "key rotation without one pending", source: "provisioning.rs complete_ssh_key_rotation",
			before: func(t *testing.T, e *env) { e.provision(t) },
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "PUT", path: e.path("/provider/rental-requests/{cid}/ssh-key-rotation"), key: e.agent}
			},
			def:  expect{status: 409, err: "No pending SSH key rotation found"},
			live: expect{status: 200, err: "No pending SSH key rotation found"},
		},
		{
			name: "pending-ssh-key-rotation lists the new key", source: "providers.rs get_pending_ssh_key_rotation_contracts",
			before: func(t *testing.T, e *env) { requestRotation(t, e) },
			req: func(t *testing.T, e *env) signedReq {
				return signedReq{method: "GET", path: e.path("/providers/{pk}/contracts/pending-ssh-key-rotation"), key: e.agent}
			},
			def: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				var l []map[string]any
				if json.Unmarshal(d, &l) != nil || len(l) != 1 || l[0]["contract_id"] != e.cid || !strings.HasPrefix(l[0]["requester_ssh_pubkey"].(string), "ssh-ed25519 ") || l[0]["requested_at_ns"] == nil {
					t.Fatalf("data %s", d)
				}
			}},
			live: expect{status: 200, success: true, data: func(t *testing.T, e *env, d json.RawMessage) {
				var l []map[string]any
				if json.Unmarshal(d, &l) != nil || len(l) != 1 || len(l[0]) != 2 || l[0]["contract_id"] != e.cid {
					t.Fatalf("data %s", d)
				}
			}},
		},
	}
}

// The password-reset event stream sends the pending resets at once and
// whenever they change: a tenant's request (made through the store, as
// `dc-api contract reset-password` in another process does) and the
// agent's report.
func TestPasswordResetEventStream(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		e := newEnv(t, profile)
		e.provision(t)
		c := e.srv.Client(e.prov, e.agent)
		events := make(chan dcapi.PasswordResetEvent, 10)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- c.PasswordResetEvents(ctx, time.Minute, func(ev dcapi.PasswordResetEvent) { events <- ev })
		}()
		next := func(count int) {
			t.Helper()
			select {
			case ev := <-events:
				if ev.Count != count || len(ev.ContractIDs) != count || count == 1 && ev.ContractIDs[0] != e.cid {
					t.Fatalf("event %+v, want %d pending", ev, count)
				}
			case err := <-done:
				t.Fatalf("stream ended: %v", err)
			case <-time.After(30 * time.Second):
				t.Fatalf("no event with %d pending", count)
			}
		}
		next(0)
		if _, err := e.srv.Store.RequestPasswordReset(context.Background(), e.cid, time.Now().UnixNano()); err != nil {
			t.Fatal(err)
		}
		next(1)
		pw, _ := identity.Seal([]byte("new-pw"), e.requester.Public().(ed25519.PublicKey), e.cid)
		if err := c.ReportPassword(context.Background(), e.cid, dcapi.PasswordUpdate{NewPassword: &pw}); err != nil {
			t.Fatal(err)
		}
		next(0)
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("stream end: %v", err)
		}
		// Another provider's stream is refused in plain text.
		other := e.srv.NewProvider("Other")
		err := e.srv.Client(other, e.agent).PasswordResetEvents(context.Background(), time.Minute, func(dcapi.PasswordResetEvent) {})
		if !dcapi.IsAuth(err) {
			t.Fatalf("other provider's stream: %v", err)
		}
	})
}

// The tenant's side: only provisioned and active contracts, a key that
// looks like one (live's regex); asking again replaces the request.
func TestRequestRules(t *testing.T) {
	e := newEnv(t, apiserver.ProfileDefault)
	srv, cid, ctx := e.srv, e.cid, context.Background()
	if _, err := srv.Store.RequestPasswordReset(ctx, cid, 1); err == nil || !strings.Contains(err.Error(), "only be requested for provisioned or active contracts") {
		t.Fatalf("accepted contract: %v", err)
	}
	e.provision(t)
	for key, want := range map[string]string{"": "cannot be empty", "ssh-foo AAAA": "Invalid SSH public key format", "ssh-ed25519 !!!": "Invalid SSH public key format"} {
		if _, err := srv.Store.RequestKeyRotation(ctx, cid, key, 2); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %q: %v, want %q", key, err, want)
		}
	}
	for i := range 2 {
		if _, err := srv.Store.RequestKeyRotation(ctx, cid, "ssh-ed25519 AAAA"+strings.Repeat("B", i), int64(3+i)); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := srv.Store.PendingTenantRequests(ctx, e.prov.Pubkey, store.RequestKeyRotation)
	if len(l) != 1 || *l[0].SSHPubkey != "ssh-ed25519 AAAAB" || l[0].RequestedAtNs != 4 {
		t.Fatalf("pending %+v", l)
	}
}

// The dashboard shows each provider's tenant requests: pending and failed,
// counts only (the page is public; the tenant's failure message is not on
// it).
func TestDashboardTenantRequests(t *testing.T) {
	e := newEnv(t, apiserver.ProfileDefault)
	requestReset(t, e)
	page := func() string {
		a := call(t, e.srv.URL, signedReq{method: "GET", path: "/"})
		if a.status != 200 {
			t.Fatalf("dashboard: %d", a.status)
		}
		return a.body
	}
	if b := page(); !strings.Contains(b, `data-role="tenant-requests">1 pending</div>`) {
		t.Fatalf("dashboard without the pending reset:\n%s", b)
	}
	if err := e.srv.Store.FailTenantRequest(context.Background(), e.prov.Pubkey, e.cid, store.RequestPasswordReset, "no guest agent", time.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	e.srv.SetClockOffset(apiserver.DashboardSnapshotAge) // the next snapshot
	if b := page(); !strings.Contains(b, `data-role="tenant-requests">0 pending · 1 failed</div>`) || strings.Contains(b, "no guest agent") {
		t.Fatalf("dashboard without the failure:\n%s", b)
	}
}
