package store

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.StopSharedPostgres()
	os.Exit(code)
}

var testPolicy = Policy{LockTTL: 5 * time.Minute, RetryCooldown: time.Minute, MaxAttempts: 3}

// eachDB runs fn against a fresh SQLite database and a fresh PostgreSQL
// database (one shared cluster per test binary).
func eachDB(t *testing.T, fn func(t *testing.T, s *Store)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, openTest(t, "sqlite:"+filepath.Join(t.TempDir(), "test.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		fn(t, openTest(t, testutil.PostgresDB(t)))
	})
}

func openTest(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, Options{Policy: testPolicy})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

type fixture struct {
	s        *Store
	ctx      context.Context
	provider ed25519.PrivateKey
	pub      string
	agent    string
	now      int64
}

func newFixture(t *testing.T, s *Store) *fixture {
	t.Helper()
	p, _ := identity.GenerateKey()
	a, _ := identity.GenerateKey()
	f := &fixture{s: s, ctx: context.Background(), provider: p, pub: identity.PublicHex(p), agent: identity.PublicHex(a), now: time.Now().UnixNano()}
	if _, err := s.AddProvider(f.ctx, f.pub, "Test Provider", f.now); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) contract(t *testing.T) string {
	t.Helper()
	c, err := f.s.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "ssh-ed25519 AAAA test"}, f.now)
	if err != nil {
		t.Fatal(err)
	}
	return c.ContractID
}

func wantKind(t *testing.T, err error, k ErrorKind) {
	t.Helper()
	if KindOf(err) != k {
		t.Fatalf("error = %v (kind %d), want kind %d", err, KindOf(err), k)
	}
}

func (f *fixture) status(t *testing.T, id string) *Contract {
	t.Helper()
	c, err := f.s.GetContract(f.ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func provisioned(ext string) dcapi.ProvisioningUpdate {
	u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: ext, IPAddress: "10.0.0.5", SSHPort: 22})
	return u
}

func TestProvisioningFlow(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		id := f.contract(t)
		pend, _, err := s.PendingContracts(f.ctx, f.pub, f.agent, f.now)
		if err != nil || len(pend) != 1 || pend[0].ContractID != id || pend[0].PaymentConfirmedAtNs == nil {
			t.Fatalf("pending = %+v, %v", pend, err)
		}
		lr, err := s.LockContract(f.ctx, f.pub, id, f.agent, f.now)
		if err != nil || !lr.Acquired || lr.ExpiresAtNs != f.now+int64(5*time.Minute) {
			t.Fatalf("lock = %+v, %v", lr, err)
		}
		other := identity.PublicHex(mustKey(t))
		lr2, err := s.LockContract(f.ctx, f.pub, id, other, f.now+1)
		if err != nil || lr2.Acquired || lr2.ExpiresAtNs != lr.ExpiresAtNs {
			t.Fatalf("second agent lock = %+v, %v", lr2, err)
		}
		if p, _, _ := s.PendingContracts(f.ctx, f.pub, other, f.now+1); len(p) != 0 {
			t.Fatalf("contract locked by another agent is offered: %+v", p)
		}
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now+2); err != nil {
			t.Fatal(err)
		}
		r, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now+3)
		if err != nil || !r.Unchanged {
			t.Fatalf("repeated provisioning = %+v, %v; want idempotent", r, err)
		}
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, other, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now+4)
		wantKind(t, err, KindConflict)
		if p, _, _ := s.PendingContracts(f.ctx, f.pub, f.agent, f.now+5); len(p) != 0 {
			t.Fatalf("contract in provisioning is offered: %+v", p)
		}
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm-1"), f.now+6); err != nil {
			t.Fatal(err)
		}
		c := f.status(t, id)
		if c.Status != dcapi.StatusProvisioned || c.ExternalInstanceID == nil || *c.ExternalInstanceID != "vm-1" || c.LockAgent != nil || c.OfferAfterNs != nil {
			t.Fatalf("after provisioned: %+v", c)
		}
		var d dcapi.InstanceDetails
		if err := json.Unmarshal([]byte(*c.InstanceDetails), &d); err != nil || d.IPAddress != "10.0.0.5" {
			t.Fatalf("instance details %q: %v", *c.InstanceDetails, err)
		}
		// An outbox resending the same report is fine; another instance is not.
		if r, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm-1"), f.now+7); err != nil || !r.Unchanged {
			t.Fatalf("repeat provisioned = %+v, %v", r, err)
		}
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm-2"), f.now+8)
		wantKind(t, err, KindConflict)
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now+9)
		wantKind(t, err, KindConflict)

		act, err := s.ActiveContracts(f.ctx, f.pub, f.now+10)
		if err != nil || len(act) != 1 || act[0].Status != dcapi.StatusProvisioned || *act[0].ExternalInstanceID != "vm-1" {
			t.Fatalf("active = %+v, %v", act, err)
		}
		// The first healthy check makes it active.
		if _, err := s.InsertHealthChecks(f.ctx, f.pub, f.agent, []dcapi.HealthCheck{{ContractID: id, CheckedAt: f.now + 11, Status: dcapi.HealthHealthy}}, f.now+12); err != nil {
			t.Fatal(err)
		}
		if c := f.status(t, id); c.Status != dcapi.StatusActive {
			t.Fatalf("status after healthy check = %s", c.Status)
		}
		rec, err := s.Reconcile(f.ctx, f.pub, []dcapi.ReconcileInstance{{ExternalID: "vm-1", ContractID: id}, {ExternalID: "vm-x", ContractID: id}, {ExternalID: "mine"}}, f.now+13)
		if err != nil || len(rec.Keep) != 1 || len(rec.Terminate) != 1 || rec.Terminate[0].ExternalID != "vm-x" || len(rec.Unknown) != 1 {
			t.Fatalf("reconcile = %+v, %v", rec, err)
		}
		err = s.MarkTerminated(f.ctx, f.pub, id, f.now+14)
		wantKind(t, err, KindConflict)

		// Cancel: the agent is told to terminate until it says it did.
		if _, err := s.CancelContract(f.ctx, id, f.now+15); err != nil {
			t.Fatal(err)
		}
		act, _ = s.ActiveContracts(f.ctx, f.pub, f.now+16)
		if len(act) != 1 || act[0].Status != dcapi.StatusCancelled {
			t.Fatalf("active after cancel = %+v", act)
		}
		rec, _ = s.Reconcile(f.ctx, f.pub, []dcapi.ReconcileInstance{{ExternalID: "vm-1", ContractID: id}}, f.now+17)
		if len(rec.Terminate) != 1 || rec.Terminate[0].Reason == "" {
			t.Fatalf("reconcile after cancel = %+v", rec)
		}
		if err := s.MarkTerminated(f.ctx, f.pub, id, f.now+18); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkTerminated(f.ctx, f.pub, id, f.now+19); err != nil {
			t.Fatalf("repeated terminated: %v", err)
		}
		if act, _ = s.ActiveContracts(f.ctx, f.pub, f.now+20); len(act) != 0 {
			t.Fatalf("active after terminated = %+v", act)
		}
		if c := f.status(t, id); c.TerminatedAtNs == nil || *c.TerminatedAtNs != f.now+18 {
			t.Fatalf("terminated_at = %v", c.TerminatedAtNs)
		}
	})
}

func mustKey(t *testing.T) ed25519.PrivateKey {
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestFailureRetryCooldownAndMaxAttempts(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		id := f.contract(t)
		now := f.now
		for attempt := 1; attempt <= 3; attempt++ {
			if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, now); err != nil {
				t.Fatalf("attempt %d: %v", attempt, err)
			}
			if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.FailedUpdate("out of capacity", true), now+1); err != nil {
				t.Fatalf("attempt %d: %v", attempt, err)
			}
			c := f.status(t, id)
			if c.Status != dcapi.StatusProvisioningFailed || c.FailureCount != attempt || *c.LastError != "out of capacity" {
				t.Fatalf("attempt %d: %+v", attempt, c)
			}
			pend, next, _ := s.PendingContracts(f.ctx, f.pub, f.agent, now+2)
			if len(pend) != 0 {
				t.Fatalf("attempt %d: offered during cool-down", attempt)
			}
			if attempt == 3 {
				if c.OfferAfterNs != nil || next != 0 {
					t.Fatalf("offered again after the last attempt: %+v next=%d", c.OfferAfterNs, next)
				}
				_, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, now+int64(time.Hour))
				wantKind(t, err, KindConflict)
				break
			}
			if next != now+1+int64(time.Minute) {
				t.Fatalf("next offer = %d, want %d", next, now+1+int64(time.Minute))
			}
			now = next
			pend, _, _ = s.PendingContracts(f.ctx, f.pub, f.agent, now)
			if len(pend) != 1 {
				t.Fatalf("attempt %d: not offered after cool-down", attempt)
			}
		}
		// A permanent failure is never offered again.
		id2 := f.contract(t)
		s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, dcapi.FailedUpdate("bad image", false), f.now+1); err != nil {
			t.Fatal(err)
		}
		if c := f.status(t, id2); c.OfferAfterNs != nil {
			t.Fatalf("permanent failure offered again: %+v", c)
		}
		// Reconcile asks to remove a leftover instance of a failed contract.
		rec, _ := s.Reconcile(f.ctx, f.pub, []dcapi.ReconcileInstance{{ExternalID: "vm-left", ContractID: id2}}, f.now+2)
		if len(rec.Terminate) != 1 {
			t.Fatalf("reconcile failed contract = %+v", rec)
		}
	})
}

func TestStaleProvisioningIsOfferedAgain(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		id := f.contract(t)
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now); err != nil {
			t.Fatal(err)
		}
		ttl := int64(5 * time.Minute)
		pend, next, _ := s.PendingContracts(f.ctx, f.pub, f.agent, f.now+ttl-1)
		if len(pend) != 0 || next != f.now+ttl {
			t.Fatalf("before expiry: %+v next=%d", pend, next)
		}
		other := identity.PublicHex(mustKey(t))
		pend, _, _ = s.PendingContracts(f.ctx, f.pub, other, f.now+ttl)
		if len(pend) != 1 {
			t.Fatalf("stale provisioning not offered after lock expiry")
		}
		// Another agent takes it over.
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, other, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now+ttl); err != nil {
			t.Fatal(err)
		}
		// The first agent's late report is refused.
		_, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm-old"), f.now+ttl+1)
		wantKind(t, err, KindConflict)
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, other, provisioned("vm-new"), f.now+ttl+2); err != nil {
			t.Fatal(err)
		}
		// Renewing the lock pushes the re-offer; releasing it hands the
		// contract off: not offered again.
		id2 := f.contract(t)
		s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		if lr, err := s.LockContract(f.ctx, f.pub, id2, f.agent, f.now+ttl-10); err != nil || !lr.Acquired {
			t.Fatalf("renew: %+v %v", lr, err)
		}
		if pend, _, _ := s.PendingContracts(f.ctx, f.pub, other, f.now+ttl+1); len(pend) != 0 {
			t.Fatal("renewed lock did not keep the contract from others")
		}
		err = s.UnlockContract(f.ctx, f.pub, id2, other, f.now+ttl+2)
		wantKind(t, err, KindConflict)
		if err := s.UnlockContract(f.ctx, f.pub, id2, f.agent, f.now+ttl+3); err != nil {
			t.Fatal(err)
		}
		if pend, next, _ := s.PendingContracts(f.ctx, f.pub, other, f.now+2*ttl); len(pend) != 0 || next != 0 {
			t.Fatalf("a released (handed-off) provisioning contract is offered: %+v next=%d", pend, next)
		}
		// Its agent may still finish it.
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, provisioned("vm-late"), f.now+2*ttl); err != nil {
			t.Fatalf("report after hand-off: %v", err)
		}
	})
}

func TestDelegations(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		exp := f.now + int64(time.Hour)
		d := identity.Delegation{AgentPubkey: f.agent, ProviderPubkey: f.pub, Permissions: identity.AllPermissions, ExpiresAtNs: &exp, Label: "pve-1"}
		sd, err := d.Sign(f.provider)
		if err != nil {
			t.Fatal(err)
		}
		if _, created, err := s.PutDelegation(f.ctx, sd, false, f.now); err != nil || !created {
			t.Fatalf("put: %v %v", created, err)
		}
		got, err := s.GetDelegation(f.ctx, f.pub, f.agent)
		if err != nil || !got.Active(f.now) || got.Active(exp) || !got.Has(identity.PermHeartbeat) || *got.Label != "pve-1" {
			t.Fatalf("get = %+v, %v", got, err)
		}
		if err := s.RevokeDelegation(f.ctx, f.pub, f.agent, f.now+1); err != nil {
			t.Fatal(err)
		}
		// The agent cannot bring back its revoked delegation; the provider can.
		_, _, err = s.PutDelegation(f.ctx, sd, true, f.now+2)
		wantKind(t, err, KindForbidden)
		if got, _ := s.GetDelegation(f.ctx, f.pub, f.agent); got.RevokedAtNs == nil || *got.RevokedAtNs != f.now+1 {
			t.Fatalf("revocation lost: %+v", got)
		}
		if _, created, err := s.PutDelegation(f.ctx, sd, false, f.now+3); err != nil || created {
			t.Fatalf("re-put by provider: %v %v", created, err)
		}
		list, err := s.ListDelegations(f.ctx, f.pub, f.now+4)
		if err != nil || len(list) != 1 || !list[0].Active || list[0].Online {
			t.Fatalf("list = %+v, %v", list, err)
		}
		if err := s.RecordHeartbeat(f.ctx, f.pub, f.agent, dcapi.Heartbeat{Version: "1.2.3", ProvisionerType: "proxmox"}, f.now+5); err != nil {
			t.Fatal(err)
		}
		list, _ = s.ListDelegations(f.ctx, f.pub, f.now+6)
		if !list[0].Online || *list[0].Version != "1.2.3" {
			t.Fatalf("list after heartbeat = %+v", list[0])
		}
		// Expired delegations are refused on input.
		past := f.now - 1
		d.ExpiresAtNs = &past
		sd2, _ := d.Sign(f.provider)
		_, _, err = s.PutDelegation(f.ctx, sd2, false, f.now)
		wantKind(t, err, KindInvalid)
		// Unknown provider.
		other := mustKey(t)
		d3 := identity.Delegation{AgentPubkey: f.agent, ProviderPubkey: identity.PublicHex(other), Permissions: []string{identity.PermHeartbeat}}
		sd3, _ := d3.Sign(other)
		_, _, err = s.PutDelegation(f.ctx, sd3, false, f.now)
		wantKind(t, err, KindNotFound)
	})
}

func TestHeartbeatAndAgentStatus(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		st, err := s.AgentStatus(f.ctx, f.pub, f.now)
		if err != nil || st.Online || st.LastHeartbeatNs != nil {
			t.Fatalf("status without heartbeat = %+v, %v", st, err)
		}
		hb := dcapi.Heartbeat{Version: "0.4.21", ProvisionerType: "docker", Capabilities: []string{"vm"}, ActiveContracts: 3,
			Resources: &dcapi.Resources{CPUCores: 8, MemoryTotalMB: 32768}}
		if err := s.RecordHeartbeat(f.ctx, f.pub, f.agent, hb, f.now); err != nil {
			t.Fatal(err)
		}
		hb.ActiveContracts = 4
		if err := s.RecordHeartbeat(f.ctx, f.pub, f.agent, hb, f.now+1); err != nil {
			t.Fatal(err)
		}
		st, _ = s.AgentStatus(f.ctx, f.pub, f.now+int64(5*time.Minute))
		if !st.Online || st.ActiveContracts != 4 || *st.Version != "0.4.21" || st.Resources.CPUCores != 8 || st.Capabilities[0] != "vm" {
			t.Fatalf("status = %+v", st)
		}
		st, _ = s.AgentStatus(f.ctx, f.pub, f.now+1+int64(5*time.Minute))
		if st.Online {
			t.Fatal("online 5 minutes after the last heartbeat")
		}
		err = s.RecordHeartbeat(f.ctx, f.pub, f.agent, dcapi.Heartbeat{}, f.now)
		wantKind(t, err, KindInvalid)
	})
}

func TestHealthSummary(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		id := f.contract(t)
		sum, err := s.HealthSummary(f.ctx, f.pub, 30, f.now)
		if err != nil || sum.TotalChecks != 0 || sum.UptimePercent != 0 || sum.AvgLatencyMs != nil {
			t.Fatalf("empty summary = %+v, %v", sum, err)
		}
		_, err = s.InsertHealthChecks(f.ctx, f.pub, f.agent, []dcapi.HealthCheck{{ContractID: id, CheckedAt: f.now, Status: dcapi.HealthHealthy}}, f.now)
		wantKind(t, err, KindConflict) // not provisioned yet
		s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm"), f.now); err != nil {
			t.Fatal(err)
		}
		lat := func(v int) *int { return &v }
		var checks []dcapi.HealthCheck
		for i := range 8 {
			checks = append(checks, dcapi.HealthCheck{ContractID: id, CheckedAt: f.now - int64(i)*int64(time.Hour), Status: dcapi.HealthHealthy, LatencyMs: lat(10)})
		}
		checks = append(checks,
			dcapi.HealthCheck{ContractID: id, CheckedAt: f.now - 9*int64(time.Hour), Status: dcapi.HealthUnhealthy, LatencyMs: lat(40)},
			dcapi.HealthCheck{ContractID: id, CheckedAt: f.now - 10*int64(time.Hour), Status: dcapi.HealthUnknown},
			// Outside 30 days: not counted.
			dcapi.HealthCheck{ContractID: id, CheckedAt: f.now - 40*24*int64(time.Hour), Status: dcapi.HealthUnhealthy},
		)
		// Each reported as it happened (a check may be at most MaxCheckAge late).
		var recs []dcapi.HealthRecord
		for _, c := range checks {
			r, err := s.InsertHealthChecks(f.ctx, f.pub, f.agent, []dcapi.HealthCheck{c}, c.CheckedAt+int64(time.Second))
			if err != nil {
				t.Fatalf("insert %+v: %v", c, err)
			}
			recs = append(recs, r...)
		}
		// Resending (outbox) does not double-count and returns the stored records.
		again, err := s.InsertHealthChecks(f.ctx, f.pub, f.agent, checks[:1], f.now+int64(MaxCheckAge))
		if err != nil || again[0].ID != recs[0].ID {
			t.Fatalf("resend = %+v, %v", again, err)
		}
		sum, err = s.HealthSummary(f.ctx, f.pub, 30, f.now)
		if err != nil {
			t.Fatal(err)
		}
		if sum.TotalChecks != 10 || sum.HealthyChecks != 8 || sum.UnhealthyChecks != 1 || sum.UnknownChecks != 1 || sum.UptimePercent != 80 ||
			sum.ContractsMonitored != 1 || sum.AvgLatencyMs == nil || *sum.AvgLatencyMs != 120.0/9 || sum.PeriodEndNs != f.now ||
			sum.PeriodStartNs != SummaryPeriodStart(f.now, 30) {
			t.Fatalf("summary = %+v (avg %v)", sum, sum.AvgLatencyMs)
		}
		sum, _ = s.HealthSummary(f.ctx, f.pub, 365, f.now)
		if sum.TotalChecks != 11 {
			t.Fatalf("365-day total = %d", sum.TotalChecks)
		}
		got, err := s.HealthChecks(f.ctx, id, 0)
		if err != nil || len(got) != 11 || got[0].CheckedAt >= got[10].CheckedAt {
			t.Fatalf("checks = %d %v", len(got), err)
		}
		hist, err := s.HealthHistory(f.ctx, f.pub, f.now, dayNs, 30)
		if err != nil || len(hist) != 30 {
			t.Fatal(err)
		}
		var total int64
		for _, b := range hist {
			total += b.Total
		}
		if total != 10 {
			t.Fatalf("history total = %d", total)
		}
		// All or nothing: a batch with one bad contract stores nothing.
		bad := []dcapi.HealthCheck{{ContractID: id, CheckedAt: f.now - 1, Status: dcapi.HealthHealthy}, {ContractID: NewContractID(), CheckedAt: f.now, Status: dcapi.HealthHealthy}}
		_, err = s.InsertHealthChecks(f.ctx, f.pub, f.agent, bad, f.now)
		wantKind(t, err, KindNotFound)
		if got, _ := s.HealthChecks(f.ctx, id, 0); len(got) != 11 {
			t.Fatalf("partial write: %d checks", len(got))
		}
		_, err = s.HealthSummary(f.ctx, f.pub, 0, f.now)
		wantKind(t, err, KindInvalid)
	})
}

func TestValidationAndNotFound(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		_, err := s.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub}, f.now)
		wantKind(t, err, KindInvalid)
		_, err = s.CreateContract(f.ctx, NewContract{ProviderPubkey: identity.PublicHex(mustKey(t)), RequesterSSHPubkey: "k"}, f.now)
		wantKind(t, err, KindNotFound)
		_, err = s.CreateContract(f.ctx, NewContract{ContractID: "XYZ", ProviderPubkey: f.pub, RequesterSSHPubkey: "k"}, f.now)
		wantKind(t, err, KindInvalid)
		id := f.contract(t)
		_, err = s.CreateContract(f.ctx, NewContract{ContractID: id, ProviderPubkey: f.pub, RequesterSSHPubkey: "k"}, f.now)
		wantKind(t, err, KindConflict)
		_, err = s.GetContract(f.ctx, NewContractID())
		wantKind(t, err, KindNotFound)
		// Another provider's contract is not found for this one.
		other := identity.PublicHex(mustKey(t))
		s.AddProvider(f.ctx, other, "", f.now)
		_, err = s.LockContract(f.ctx, other, id, f.agent, f.now)
		wantKind(t, err, KindNotFound)
		// Illegal transitions and bad details write nothing.
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm"), f.now)
		wantKind(t, err, KindConflict)
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: "active"}, f.now)
		wantKind(t, err, KindInvalid)
		s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		for _, details := range []string{``, `[]`, `{"ip_address":"1.2.3.4"}`, `{"external_id":"x","ip_address":"nope"}`,
			`{"external_id":"x","root_password":"hunter2"}`, `{"external_id":"x","ssh_port":70000}`} {
			_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioned, InstanceDetails: details}, f.now)
			wantKind(t, err, KindInvalid)
		}
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioningFailed, InstanceDetails: "boom"}, f.now)
		wantKind(t, err, KindInvalid)
		if c := f.status(t, id); c.Status != dcapi.StatusProvisioning || c.InstanceDetails != nil {
			t.Fatalf("partial write: %+v", c)
		}
		// A sealed credential for this contract is accepted.
		req := mustKey(t)
		sealed, err := identity.Seal([]byte("pw"), req.Public().(ed25519.PublicKey), id)
		if err != nil {
			t.Fatal(err)
		}
		u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm", RootPassword: sealed})
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, u, f.now); err != nil {
			t.Fatal(err)
		}
		// ...but not one sealed for another contract.
		id2 := f.contract(t)
		s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		_, err = s.UpdateProvisioning(f.ctx, f.pub, id2, f.agent, u, f.now)
		wantKind(t, err, KindInvalid)
	})
}

func TestCrossProcessWake(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		// A second handle on the same database plays the CLI process.
		var dsn string
		if s.Dialect() == SQLite {
			dsn = "sqlite:" + s.dsn
		} else {
			dsn = s.dsn
		}
		cli := openTest(t, dsn)
		ctx, cancel := context.WithCancel(f.ctx)
		defer cancel()
		woke := make(chan string, 10)
		ready := make(chan struct{}, 10)
		go s.Watch(ctx, 10*time.Millisecond, func(p string) { woke <- p }, func() { ready <- struct{}{} })
		select {
		case <-ready:
		case <-time.After(10 * time.Second):
			t.Fatal("watcher did not start")
		}
		if _, err := cli.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "k"}, f.now); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-woke:
			if p != f.pub {
				t.Fatalf("woke %s, want %s", p, f.pub)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a contract created by another process did not wake the watcher")
		}
	})
}

func TestMigrateIdempotent(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		res, err := s.Migrate(context.Background())
		if err != nil || len(res) != 0 {
			t.Fatalf("second migrate = %v, %v", res, err)
		}
		cur, latest, err := s.SchemaVersion(context.Background())
		if err != nil || cur != latest || cur < 1 {
			t.Fatalf("versions %d/%d %v", cur, latest, err)
		}
	})
}

// TestDelegationCacheInvalidation: a cached delegation is dropped at once
// when this store changes it, and — through Watch — when another process
// (a second handle on the database) revokes it.
func TestDelegationCacheInvalidation(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		sd, _ := identity.Delegation{AgentPubkey: f.agent, ProviderPubkey: f.pub, Permissions: identity.AllPermissions}.Sign(f.provider)
		if _, _, err := s.PutDelegation(f.ctx, sd, false, f.now); err != nil {
			t.Fatal(err)
		}
		if d, err := s.GetDelegation(f.ctx, f.pub, f.agent); err != nil || d.RevokedAtNs != nil {
			t.Fatalf("get = %+v, %v", d, err)
		}
		// Same store: immediate.
		if err := s.RevokeDelegation(f.ctx, f.pub, f.agent, f.now+1); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.GetDelegation(f.ctx, f.pub, f.agent); d.RevokedAtNs == nil {
			t.Fatal("revocation by this store not seen")
		}
		if _, _, err := s.PutDelegation(f.ctx, sd, false, f.now+2); err != nil {
			t.Fatal(err)
		}
		if d, _ := s.GetDelegation(f.ctx, f.pub, f.agent); d.RevokedAtNs != nil {
			t.Fatal("re-delegation by this store not seen")
		}
		// Another process: seen through the watcher.
		dsn := s.dsn
		if s.Dialect() == SQLite {
			dsn = "sqlite:" + s.dsn
		}
		other := openTest(t, dsn)
		ctx, cancel := context.WithCancel(f.ctx)
		defer cancel()
		ready := make(chan struct{}, 10)
		go s.Watch(ctx, 10*time.Millisecond, func(string) {}, func() { ready <- struct{}{} })
		<-ready
		if err := other.RevokeDelegation(f.ctx, f.pub, f.agent, f.now+3); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			d, _ := s.GetDelegation(f.ctx, f.pub, f.agent)
			if d.RevokedAtNs != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a revocation by another process was not seen within 10 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestConcurrentHeartbeats: heartbeats written together (group commit) are
// all stored, each with its own values.
func TestConcurrentHeartbeats(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		const n = 200
		agents := make([]string, n)
		errs := make(chan error, n)
		for i := range agents {
			agents[i] = identity.PublicHex(mustKey(t))
			go func(i int) {
				errs <- s.RecordHeartbeat(f.ctx, f.pub, agents[i], dcapi.Heartbeat{Version: "v", ProvisionerType: "docker", ActiveContracts: i}, f.now)
			}(i)
		}
		for range agents {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		rows, err := s.Agents(f.ctx, f.pub)
		if err != nil || len(rows) != n {
			t.Fatalf("%d agent rows, %v", len(rows), err)
		}
		for _, r := range rows {
			for i, a := range agents {
				if a == r.AgentPubkey && r.ActiveContracts != i {
					t.Fatalf("agent %d stored activeContracts %d", i, r.ActiveContracts)
				}
			}
		}
	})
}

// statusRow reads the agent's status row and heartbeat time directly.
func statusRow(t *testing.T, s *Store, provider, agent string) (updatedNs, lastNs int64, version string) {
	t.Helper()
	err := s.r.QueryRow(s.q(`SELECT a.updated_at_ns, h.last_heartbeat_ns, a.version
		FROM provider_agent_status a JOIN agent_heartbeats h ON h.agent_id = a.id
		WHERE a.provider_pubkey = ? AND a.agent_pubkey = ?`), provider, agent).Scan(&updatedNs, &lastNs, &version)
	if err != nil {
		t.Fatalf("status row: %v", err)
	}
	return updatedNs, lastNs, version
}

// TestHeartbeatWritesOnlyTheTime: a heartbeat that reports nothing new
// updates only the agent's heartbeat time; one that reports something new,
// or comes hbRewriteEvery after the row was last written, rewrites the row.
func TestHeartbeatWritesOnlyTheTime(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		hb := dcapi.Heartbeat{Version: "1.0.0", ProvisionerType: "proxmox", Capabilities: []string{"vm"}, ActiveContracts: 2,
			Resources: &dcapi.Resources{CPUCores: 4}}
		record := func(hb dcapi.Heartbeat, at int64) {
			t.Helper()
			if err := s.RecordHeartbeat(f.ctx, f.pub, f.agent, hb, at); err != nil {
				t.Fatal(err)
			}
		}
		record(hb, f.now)
		if up, last, _ := statusRow(t, s, f.pub, f.agent); up != f.now || last != f.now {
			t.Fatalf("first heartbeat: row written at %d, time %d; want both %d", up, last, f.now)
		}
		record(hb, f.now+int64(time.Second))
		up, last, _ := statusRow(t, s, f.pub, f.agent)
		if up != f.now || last != f.now+int64(time.Second) {
			t.Fatalf("unchanged heartbeat: row written at %d (want %d, untouched), time %d", up, f.now, last)
		}
		rows, err := s.Agents(f.ctx, f.pub)
		if err != nil || len(rows) != 1 || rows[0].LastHeartbeatNs != last || rows[0].Version != "1.0.0" {
			t.Fatalf("Agents = %+v, %v", rows, err)
		}
		hb.Version = "1.1.0"
		record(hb, f.now+int64(2*time.Second))
		if up, last, v := statusRow(t, s, f.pub, f.agent); up != last || v != "1.1.0" {
			t.Fatalf("new version: row written at %d, time %d, version %q", up, last, v)
		}
		hb.Resources = &dcapi.Resources{CPUCores: 8}
		record(hb, f.now+int64(3*time.Second))
		if rows, _ := s.Agents(f.ctx, f.pub); rows[0].Resources == nil || rows[0].Resources.CPUCores != 8 {
			t.Fatalf("new resources not stored: %+v", rows[0].Resources)
		}
		at := f.now + int64(3*time.Second) + hbRewriteEvery
		record(hb, at)
		if up, _, _ := statusRow(t, s, f.pub, f.agent); up != at {
			t.Fatalf("%v on, the row was not rewritten: written at %d, want %d", time.Duration(hbRewriteEvery), up, at)
		}
		// Another dc-api on the same database changed the row: while the
		// writer trusts its memory of the row, a heartbeat with nothing new
		// writes only the time.
		if _, err := s.w.Exec(s.q(`UPDATE provider_agent_status SET version = 'other' WHERE agent_pubkey = ?`), f.agent); err != nil {
			t.Fatal(err)
		}
		at += int64(time.Second)
		record(hb, at)
		if _, _, v := statusRow(t, s, f.pub, f.agent); v != "other" {
			t.Fatalf("version %q: the writer rewrote a row it had no news for", v)
		}
		if got, _ := s.AgentStatus(f.ctx, f.pub, at); !got.Online || *got.LastHeartbeatNs != at {
			t.Fatalf("status after the time-only write: %+v", got)
		}
	})
}

// TestMigration4KeepsAgentStatus: migrating a database of version 3 (agent
// status rows with their heartbeat times in them) to 4 and back keeps every
// agent's status and time.
func TestMigration4KeepsAgentStatus(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		p, err := s.migrator()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.DownTo(f.ctx, 3); err != nil {
			t.Fatalf("down to 3: %v", err)
		}
		agents := []string{identity.PublicHex(mustKey(t)), identity.PublicHex(mustKey(t))}
		for i, a := range agents {
			if _, err := s.w.Exec(s.q(`INSERT INTO provider_agent_status
				(provider_pubkey, agent_pubkey, last_heartbeat_ns, version, provisioner_type, capabilities, active_contracts, resources, updated_at_ns)
				VALUES (?, ?, ?, ?, 'docker', '["vm"]', ?, NULL, ?)`), f.pub, a, f.now+int64(i), fmt.Sprintf("v%d", i), i, f.now-10); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := p.Up(f.ctx); err != nil {
			t.Fatalf("up: %v", err)
		}
		check := func(when string) {
			t.Helper()
			rows, err := s.Agents(f.ctx, f.pub)
			if err != nil || len(rows) != 2 {
				t.Fatalf("%s: %d rows, %v", when, len(rows), err)
			}
			for _, r := range rows {
				i := slices.Index(agents, r.AgentPubkey)
				if i < 0 || r.LastHeartbeatNs != f.now+int64(i) || r.Version != fmt.Sprintf("v%d", i) || r.ActiveContracts != i || r.Capabilities[0] != "vm" {
					t.Fatalf("%s: agent row %+v", when, r)
				}
			}
		}
		check("after migration 4")
		if err := s.RecordHeartbeat(f.ctx, f.pub, agents[0], dcapi.Heartbeat{Version: "v0", ProvisionerType: "docker", Capabilities: []string{"vm"}}, f.now); err != nil {
			t.Fatalf("heartbeat after migration 4: %v", err)
		}
		if _, err := p.DownTo(f.ctx, 3); err != nil {
			t.Fatalf("down to 3 again: %v", err)
		}
		var last int64
		if err := s.r.QueryRow(s.q(`SELECT last_heartbeat_ns FROM provider_agent_status WHERE agent_pubkey = ?`), agents[1]).Scan(&last); err != nil || last != f.now+1 {
			t.Fatalf("after down: time %d, %v", last, err)
		}
		if _, err := p.Up(f.ctx); err != nil {
			t.Fatalf("up again: %v", err)
		}
		check("after down and up")
	})
}
