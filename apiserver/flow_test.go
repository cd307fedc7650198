package apiserver_test

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedPostgres()
	os.Exit(code)
}

// eachServer runs fn against a server on SQLite and one on PostgreSQL.
func eachServer(t *testing.T, fn func(t *testing.T, srv *apitest.Server), opts ...apitest.Option) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, apitest.Start(t, opts...))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, apitest.Start(t, append([]apitest.Option{apitest.WithDB(testutil.PostgresDB(t))}, opts...)...))
	})
}

// eachProfile runs fn as a subtest for the default and the live profile.
func eachProfile(t *testing.T, fn func(t *testing.T, profile string)) {
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		t.Run(profile, func(t *testing.T) { fn(t, profile) })
	}
}

// TestAgentFlowOverHTTP drives the whole agent protocol with the dcapi
// client: long-poll woken by a new contract, lock, provisioning, sealed
// credentials, heartbeat, health (single and batch), active contracts,
// cancel, reconcile, terminated, status and summary.
func TestAgentFlowOverHTTP(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		ctx := context.Background()
		prov := srv.NewProvider("Acme")
		key := srv.NewAgent(prov)
		c := srv.Client(prov, key)

		// Long-poll: no contract yet, the request waits; a new contract wakes it.
		type res struct {
			list     []dcapi.PendingContract
			longPoll bool
			err      error
			took     time.Duration
		}
		got := make(chan res, 1)
		start := time.Now()
		go func() {
			l, lp, err := c.PendingContracts(ctx, 20*time.Second)
			got <- res{l, lp, err, time.Since(start)}
		}()
		time.Sleep(50 * time.Millisecond) // let the poll arrive first (if not, it answers at once: still correct)
		requester, _ := identity.GenerateKey()
		cid := srv.CreateContract(prov, apitest.ContractSpec{
			RequesterPubkey: apitest.Ptr(identity.PublicHex(requester)),
			CPUCores:        apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB"), StorageCapacity: apitest.Ptr("40 GB"),
			ProvisionerType: apitest.Ptr("script"), DatacenterCity: apitest.Ptr("Zurich"),
		})
		r := <-got
		if r.err != nil || !r.longPoll || len(r.list) != 1 || r.list[0].ContractID != cid || *r.list[0].MemoryAmount != "4 GB" {
			t.Fatalf("long-poll = %+v", r)
		}
		if r.took > 10*time.Second {
			t.Fatalf("long-poll was not woken by the new contract (took %s)", r.took)
		}

		lr, err := c.LockContract(ctx, cid)
		if err != nil || !lr.Acquired {
			t.Fatalf("lock = %+v, %v", lr, err)
		}
		if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
			t.Fatalf("repeated provisioning must be idempotent: %v", err)
		}
		sealed, err := identity.Seal([]byte("s3cret"), requester.Public().(ed25519.PublicKey), cid)
		if err != nil {
			t.Fatal(err)
		}
		up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-101", IPAddress: "192.0.2.10", SSHPort: 22, RootPassword: sealed})
		if err := c.UpdateProvisioning(ctx, cid, up); err != nil {
			t.Fatal(err)
		}
		if err := c.UnlockContract(ctx, cid); err != nil {
			t.Fatal(err)
		}
		details, ok := srv.InstanceDetails(cid)
		if !ok || details.ExternalID != "vm-101" {
			t.Fatalf("instance details = %+v", details)
		}
		pw, err := identity.Open(details.RootPassword, requester)
		if err != nil || string(pw) != "s3cret" {
			t.Fatalf("requester cannot open the stored credential: %q %v", pw, err)
		}

		hb, err := c.Heartbeat(ctx, dcapi.Heartbeat{Version: "0.9.0", ProvisionerType: "script", Capabilities: []string{"vm"}, ActiveContracts: 1})
		if err != nil || !hb.Acknowledged || hb.NextHeartbeatSeconds != 60 {
			t.Fatalf("heartbeat = %+v, %v", hb, err)
		}
		st, err := c.AgentStatus(ctx)
		if err != nil || !st.Online || *st.Version != "0.9.0" || st.ActiveContracts != 1 {
			t.Fatalf("agent status = %+v, %v", st, err)
		}

		now := time.Now().UnixNano()
		if err := c.ReportHealth(ctx, cid, dcapi.HealthCheck{CheckedAt: now - 2e9, Status: dcapi.HealthHealthy, LatencyMs: apitest.Ptr(12)}); err != nil {
			t.Fatal(err)
		}
		n, err := c.ReportHealthBatch(ctx, []dcapi.HealthCheck{
			{ContractID: cid, CheckedAt: now - 1e9, Status: dcapi.HealthUnhealthy, Details: "ssh timeout"},
			{ContractID: cid, CheckedAt: now, Status: dcapi.HealthHealthy},
		})
		if err != nil || n != 2 {
			t.Fatalf("batch = %d, %v", n, err)
		}
		if got := srv.HealthChecks(cid); len(got) != 3 || got[1].Details != "ssh timeout" {
			t.Fatalf("stored checks = %+v", got)
		}
		if s := srv.ContractStatus(cid); s != dcapi.StatusActive {
			t.Fatalf("status after healthy check = %s", s)
		}
		sum, err := c.HealthSummary(ctx, 30)
		if err != nil || sum.TotalChecks != 3 || sum.HealthyChecks != 2 || sum.ContractsMonitored != 1 {
			t.Fatalf("summary = %+v, %v", sum, err)
		}

		act, err := c.ActiveContracts(ctx)
		if err != nil || len(act) != 1 || act[0].Status != dcapi.StatusActive || *act[0].ExternalInstanceID != "vm-101" {
			t.Fatalf("active = %+v, %v", act, err)
		}
		srv.CancelContract(cid)
		rec, err := c.Reconcile(ctx, []dcapi.ReconcileInstance{{ExternalID: "vm-101", ContractID: cid}, {ExternalID: "pets"}})
		if err != nil || len(rec.Terminate) != 1 || rec.Terminate[0].ExternalID != "vm-101" || len(rec.Unknown) != 1 || rec.Keep == nil {
			t.Fatalf("reconcile = %+v, %v", rec, err)
		}
		if err := c.MarkTerminated(ctx, cid); err != nil {
			t.Fatal(err)
		}
		if act, _ := c.ActiveContracts(ctx); len(act) != 0 {
			t.Fatalf("active after terminated = %+v", act)
		}
		if srv.Contract(cid).TerminatedAtNs == nil {
			t.Fatal("terminated not recorded")
		}
	})
}

// TestLongPollTimesOutEmpty: with nothing to offer the server answers []
// after waitSeconds and announces the long-poll.
func TestLongPollTimesOutEmpty(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t)
	prov := srv.NewProvider("")
	c := srv.Client(prov, srv.NewAgent(prov))
	start := time.Now()
	list, lp, err := c.PendingContracts(context.Background(), time.Second)
	if err != nil || !lp || len(list) != 0 {
		t.Fatalf("= %v %v %v", list, lp, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("answered after %s, before waitSeconds", d)
	}
	// Without waitSeconds: immediate, no long-poll header.
	list, lp, err = c.PendingContracts(context.Background(), 0)
	if err != nil || lp || list == nil {
		t.Fatalf("plain poll = %v %v %v", list, lp, err)
	}
}

// TestLongPollWokenByRetryCooldown: a failed contract comes back to a
// waiting agent when its cool-down ends, without a new contract.
func TestLongPollWokenByRetryCooldown(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.WithRetryCooldown(300*time.Millisecond))
	prov := srv.NewProvider("")
	c := srv.Client(prov, srv.NewAgent(prov))
	ctx := context.Background()
	cid := srv.CreateContract(prov, apitest.ContractSpec{})
	if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
		t.Fatal(err)
	}
	if err := c.UpdateProvisioning(ctx, cid, dcapi.FailedUpdate("no capacity", true)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	list, _, err := c.PendingContracts(ctx, 10*time.Second)
	if err != nil || len(list) != 1 || list[0].ContractID != cid {
		t.Fatalf("= %v %v", list, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("re-offer took %s", d)
	}
}

// TestFaultHooks exercises the harness's fault injection.
func TestFaultHooks(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t)
	prov := srv.NewProvider("")
	c := srv.Client(prov, srv.NewAgent(prov), dcapi.WithTimeout(2*time.Second))
	ctx := context.Background()
	hb := dcapi.Heartbeat{Version: "1", ProvisionerType: "manual"}

	srv.FailNext("POST", "/heartbeat", 2, http.StatusServiceUnavailable)
	for i := 0; i < 2; i++ {
		if _, err := c.Heartbeat(ctx, hb); !dcapi.IsRetryable(err) || dcapi.StatusCode(err) != 503 {
			t.Fatalf("attempt %d: %v, want injected 503", i, err)
		}
	}
	if srv.AgentStatus(prov).LastHeartbeatNs != nil {
		t.Fatal("a failed request reached the store")
	}
	if _, err := c.Heartbeat(ctx, hb); err != nil {
		t.Fatal(err)
	}
	if n := srv.CountRequests("POST", "/heartbeat", 503); n != 2 {
		t.Fatalf("logged 503s = %d", n)
	}

	// Lost response: stored, but the client sees a transport error.
	cid := srv.CreateContract(prov, apitest.ContractSpec{})
	srv.LoseResponseNext("PUT", "/provisioning", 1)
	err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning})
	if err == nil || dcapi.StatusCode(err) != 0 {
		t.Fatalf("lost response = %v, want a transport error", err)
	}
	if s := srv.ContractStatus(cid); s != dcapi.StatusProvisioning {
		t.Fatalf("status = %s; the lost request should have been applied", s)
	}

	// Block until released.
	release := srv.Block("POST", "/heartbeat")
	done := make(chan error, 1)
	go func() { _, err := c.Heartbeat(ctx, hb); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("blocked request returned: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// Down and back on the same port.
	srv.Stop()
	if _, err := c.Heartbeat(ctx, hb); err == nil || !dcapi.IsRetryable(err) {
		t.Fatalf("server down: %v", err)
	}
	srv.Restart()
	if _, err := c.Heartbeat(ctx, hb); err != nil {
		t.Fatalf("after restart: %v", err)
	}

	// Clock skew.
	srv.SetClockOffset(10 * time.Minute)
	if _, err := c.Heartbeat(ctx, hb); !dcapi.IsAuth(err) {
		t.Fatalf("skewed clock: %v", err)
	}
	srv.SetClockOffset(0)
}

// TestDelegationLifecycleOverHTTP: PROTOCOL.md §3 with the provider's main
// key over real HTTP: create, list (every field), revoke (the agent is
// refused at once), re-post (un-revoked).
func TestDelegationLifecycleOverHTTP(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		ctx := context.Background()
		p := srv.NewProvider("Delegating Hosting")
		pc := srv.ProviderClient(p)
		agent, _ := identity.GenerateKey()
		agentHex := identity.PublicHex(agent)
		exp := time.Now().Add(48 * time.Hour).UnixNano()
		sd, err := identity.Delegation{AgentPubkey: agentHex, ProviderPubkey: p.Pubkey,
			Permissions: []string{identity.PermFetchContracts, identity.PermHeartbeat}, ExpiresAtNs: &exp, Label: "rack 7"}.Sign(p.Key)
		if err != nil {
			t.Fatal(err)
		}
		if err := pc.RegisterDelegation(ctx, sd); err != nil {
			t.Fatal(err)
		}
		ac := srv.Client(p, agent)
		if _, err := ac.Heartbeat(ctx, dcapi.Heartbeat{Version: "1.2.3", ProvisionerType: "script"}); err != nil {
			t.Fatal(err)
		}
		get := func() dcapi.DelegationInfo { t.Helper(); return listedDelegation(t, pc, agentHex) }
		d := get()
		if d.ProviderPubkey != p.Pubkey || len(d.Permissions) != 2 || d.Permissions[0] != identity.PermFetchContracts || d.Permissions[1] != identity.PermHeartbeat ||
			d.ExpiresAtNs == nil || *d.ExpiresAtNs != exp || d.Label == nil || *d.Label != "rack 7" || d.CreatedAtNs == 0 ||
			!d.Active || !d.Online || d.Version == nil || *d.Version != "1.2.3" || d.LastHeartbeatNs == nil {
			t.Fatalf("listed delegation = %+v", d)
		}

		if err := pc.RevokeDelegation(ctx, agentHex); err != nil {
			t.Fatal(err)
		}
		if d := get(); d.Active || d.RevokedAtNs == nil {
			t.Fatalf("after revoke: %+v", d)
		}
		if _, err := ac.Heartbeat(ctx, dcapi.Heartbeat{Version: "1.2.3"}); dcapi.StatusCode(err) != http.StatusUnauthorized {
			t.Fatalf("heartbeat of a revoked agent: %v, want 401", err)
		}

		// Posting it again (main key) replaces and un-revokes it.
		if err := pc.RegisterDelegation(ctx, sd); err != nil {
			t.Fatal(err)
		}
		if d := get(); !d.Active || d.RevokedAtNs != nil {
			t.Fatalf("after re-posting: %+v", d)
		}
		if _, err := ac.Heartbeat(ctx, dcapi.Heartbeat{Version: "1.2.4"}); err != nil {
			t.Fatalf("heartbeat after un-revoking: %v", err)
		}
	})
}

// listedDelegation is agentHex's entry in the provider's delegation list.
func listedDelegation(t *testing.T, pc *dcapi.Client, agentHex string) dcapi.DelegationInfo {
	t.Helper()
	list, err := pc.ListDelegations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range list {
		if d.AgentPubkey == agentHex {
			return d
		}
	}
	t.Fatalf("delegation of %s not listed: %+v", agentHex, list)
	return dcapi.DelegationInfo{}
}
