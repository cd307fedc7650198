package apiserver_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestDelegationRollback (issue 15, finding 2): an agent keeps every
// signed delegation it was given and may post one with its own key. It
// must not use an old, wider or longer one to replace what the provider
// issued later — neither after the provider narrowed it nor after a
// revoke-and-reissue. (Default profile: the live one has no POST
// …/agent-delegations.)
func TestDelegationRollback(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		ctx := context.Background()
		p := srv.NewProvider("Narrowing Hosting")
		pc := srv.ProviderClient(p)
		agent, _ := identity.GenerateKey()
		agentHex := identity.PublicHex(agent)
		ac := srv.Client(p, agent)
		stored := func() dcapi.DelegationInfo { t.Helper(); return listedDelegation(t, pc, agentHex) }
		narrow := func(d dcapi.DelegationInfo, what string) {
			t.Helper()
			if strings.Join(d.Permissions, ",") != identity.PermHeartbeat || d.ExpiresAtNs == nil || !d.Active {
				t.Fatalf("%s: the stored delegation is %+v, want the provider's narrow one (heartbeat, expiring)", what, d)
			}
		}
		refused := func(err error, what string) {
			t.Helper()
			if dcapi.StatusCode(err) != http.StatusForbidden {
				t.Fatalf("%s: agent re-posting an older delegation: %v, want 403", what, err)
			}
		}

		// The agent registers a wide delegation itself (every permission,
		// no expiry): creating is allowed.
		wide := srv.SignDelegation(p, agentHex)
		if err := ac.RegisterDelegation(ctx, wide); err != nil {
			t.Fatalf("agent registering its first delegation: %v", err)
		}
		// Re-posting the very same one is harmless (a second dc-agent register).
		if err := ac.RegisterDelegation(ctx, wide); err != nil {
			t.Fatalf("agent re-posting the stored delegation: %v", err)
		}

		// The provider narrows it: heartbeat only, for an hour.
		narrowed := srv.SignDelegation(p, agentHex, apitest.Permissions(identity.PermHeartbeat), apitest.ExpiresAt(time.Now().Add(time.Hour)))
		if err := pc.RegisterDelegation(ctx, narrowed); err != nil {
			t.Fatal(err)
		}
		narrow(stored(), "narrowed")
		refused(ac.RegisterDelegation(ctx, wide), "after narrowing")
		narrow(stored(), "after the agent's attempt")
		if _, _, err := ac.PendingContracts(ctx, 0); dcapi.StatusCode(err) != http.StatusForbidden {
			t.Fatalf("the narrowed agent fetched contracts: %v, want 403", err)
		}

		// Revoke and reissue: neither the first nor the second old one
		// comes back.
		if err := pc.RevokeDelegation(ctx, agentHex); err != nil {
			t.Fatal(err)
		}
		reissued := srv.SignDelegation(p, agentHex, apitest.Permissions(identity.PermHeartbeat), apitest.ExpiresAt(time.Now().Add(30*time.Minute)))
		if err := pc.RegisterDelegation(ctx, reissued); err != nil {
			t.Fatal(err)
		}
		refused(ac.RegisterDelegation(ctx, wide), "after revoke-and-reissue (wide)")
		refused(ac.RegisterDelegation(ctx, narrowed), "after revoke-and-reissue (narrowed)")
		d := stored()
		narrow(d, "after revoke-and-reissue")
		if *d.ExpiresAtNs != *reissued.ExpiresAtNs {
			t.Fatalf("stored expiry %d, want the reissued one's %d", *d.ExpiresAtNs, *reissued.ExpiresAtNs)
		}
		if _, err := ac.Heartbeat(ctx, dcapi.Heartbeat{Version: "1.0.0", ProvisionerType: "script"}); err != nil {
			t.Fatalf("the reissued delegation does not work: %v", err)
		}

		// A delegation the provider signs later may be registered by the
		// agent, wider or not.
		later := srv.SignDelegation(p, agentHex)
		if err := ac.RegisterDelegation(ctx, later); err != nil {
			t.Fatalf("agent registering a newer delegation: %v", err)
		}
		if d := stored(); len(d.Permissions) != len(identity.AllPermissions) || d.ExpiresAtNs != nil {
			t.Fatalf("after the newer one: %+v", d)
		}
	})
}

// TestDelegationRollbackOldCodes: codes without issued_at_ns (the older
// form) still register, but never replace a stamped or a different
// unstamped delegation by the agent's key; a setup-token registration is
// stamped with its time; a stamp from the future is refused.
func TestDelegationRollbackOldCodes(t *testing.T) {
	srv := apitest.Start(t)
	ctx := context.Background()
	p := srv.NewProvider("Old Codes")
	pc := srv.ProviderClient(p)
	agent, _ := identity.GenerateKey()
	agentHex := identity.PublicHex(agent)
	ac := srv.Client(p, agent)

	old := srv.SignDelegation(p, agentHex, apitest.Unstamped())
	if err := ac.RegisterDelegation(ctx, old); err != nil {
		t.Fatalf("an old code no longer registers: %v", err)
	}
	if err := ac.RegisterDelegation(ctx, old); err != nil {
		t.Fatalf("re-posting the same old code: %v", err)
	}
	otherOld := srv.SignDelegation(p, agentHex, apitest.Unstamped(), apitest.Label("other"))
	if err := ac.RegisterDelegation(ctx, otherOld); dcapi.StatusCode(err) != http.StatusForbidden || !strings.Contains(err.Error(), "issued later than the stored one") {
		t.Fatalf("another old code over an old one: %v, want 403", err)
	}
	stamped := srv.SignDelegation(p, agentHex, apitest.Permissions(identity.PermHeartbeat))
	if err := ac.RegisterDelegation(ctx, stamped); err != nil {
		t.Fatalf("a stamped code over an old one: %v", err)
	}
	if err := ac.RegisterDelegation(ctx, old); dcapi.StatusCode(err) != http.StatusForbidden ||
		!strings.Contains(err.Error(), "without an issued_at_ns line") {
		t.Fatalf("an old code over a stamped one: %v, want 403 naming the reason", err)
	}
	// The main key may still post anything (the provider decides).
	if err := pc.RegisterDelegation(ctx, old); err != nil {
		t.Fatalf("provider posting an old code: %v", err)
	}

	// A stamp from the future would outrank every later delegation.
	future := srv.SignDelegation(p, agentHex, apitest.IssuedAt(srv.Now().Add(time.Hour)))
	for name, c := range map[string]*dcapi.Client{"agent": ac, "provider": pc} {
		if err := c.RegisterDelegation(ctx, future); dcapi.StatusCode(err) != http.StatusUnprocessableEntity || !strings.Contains(err.Error(), "in the future") {
			t.Fatalf("%s posting a future-stamped delegation: %v, want 422", name, err)
		}
	}

	// Registered by setup token: stamped with the registration time, so
	// an offline code signed before cannot take the agent out of its pool.
	pool := srv.NewPool(p, "Pool A", "europe", "script")
	poolAgent, _ := identity.GenerateKey()
	poolHex := identity.PublicHex(poolAgent)
	before := srv.SignDelegation(p, poolHex, apitest.IssuedAt(srv.Now().Add(-time.Minute)))
	if _, err := srv.Store.UseSetupToken(ctx, srv.SetupToken(pool, time.Hour), poolHex, srv.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	pac := srv.Client(p, poolAgent)
	if err := pac.RegisterDelegation(ctx, before); dcapi.StatusCode(err) != http.StatusForbidden {
		t.Fatalf("an older offline code over a setup-token registration: %v, want 403", err)
	}
	list, err := pc.ListDelegations(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.AgentPubkey == poolHex && (d.PoolID == nil || *d.PoolID != pool.PoolID || d.IssuedAtNs == nil) {
			t.Fatalf("the pool agent's delegation changed: %+v", d)
		}
		if d.AgentPubkey == agentHex && d.IssuedAtNs != nil {
			t.Fatalf("the old code's row shows issuedAtNs %d", *d.IssuedAtNs)
		}
	}
}
