package store

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

func (f *fixture) pool(t *testing.T, name, location string) *Pool {
	t.Helper()
	p, err := f.s.CreatePool(f.ctx, f.pub, name, location, "proxmox", f.now)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) token(t *testing.T, p *Pool, ttl time.Duration) string {
	t.Helper()
	tok, err := f.s.CreateSetupToken(f.ctx, f.pub, p.PoolID, nil, ttl, f.now)
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}

var tokenRE = regexp.MustCompile(`^apt_europe_[0-9a-f]{16}$`)

func TestPoolsAndSetupTokens(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		_, err := s.CreatePool(f.ctx, f.pub, "x", "mars", "proxmox", f.now)
		wantKind(t, err, KindInvalid)
		if want := "Invalid location 'mars': must be one of: europe, na, latam, apac, mena, ssa, cis"; err.Error() != want {
			t.Fatalf("bad location: %q, want %q", err, want)
		}
		p := f.pool(t, "EU Proxmox!", "europe")
		if !regexp.MustCompile(`^euproxmox-[0-9a-f]{8}$`).MatchString(p.PoolID) {
			t.Fatalf("pool id %q: want the name's letters and digits, lowercased, and 8 hex digits (as live)", p.PoolID)
		}
		// A pool registers a provider that is new, as live does.
		newProv := identity.PublicHex(mustKey(t))
		if _, err := s.CreatePool(f.ctx, newProv, "na", "na", "docker", f.now); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetProvider(f.ctx, newProv); err != nil {
			t.Fatalf("pool did not register its provider: %v", err)
		}
		if _, err := s.CreateSetupToken(f.ctx, newProv, p.PoolID, nil, time.Hour, f.now); KindOf(err) != KindNotFound {
			t.Fatalf("token for another provider's pool: %v", err)
		}

		tok := f.token(t, p, time.Hour)
		if !tokenRE.MatchString(tok) {
			t.Fatalf("token %q is not apt_<location>_<16 hex>", tok)
		}
		// Stored hashed: the token appears nowhere in the table.
		var hash, hint string
		if err := s.DB().QueryRow(s.q(`SELECT token_hash, token_hint FROM agent_setup_tokens`)).Scan(&hash, &hint); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(tok))
		if hash != hex.EncodeToString(sum[:]) || strings.Contains(hint, tok[len(tok)-12:]) || !strings.HasPrefix(tok, strings.TrimSuffix(hint, "…")) {
			t.Fatalf("stored %q / %q for token %q", hash, hint, tok)
		}
		pending, err := s.ListSetupTokens(f.ctx, f.pub, p.PoolID, f.now)
		if err != nil || len(pending) != 1 || pending[0].Token != "" || pending[0].Hint != hint {
			t.Fatalf("pending tokens = %+v, %v", pending, err)
		}

		agent := identity.PublicHex(mustKey(t))
		res, err := s.UseSetupToken(f.ctx, tok, agent, f.now+1)
		if err != nil {
			t.Fatal(err)
		}
		if res.Pool != *p || !slices.Equal(res.Permissions, []string{"provision", "health_check", "heartbeat", "fetch_contracts", "dns_manage"}) {
			t.Fatalf("setup result %+v", res)
		}
		d, err := s.GetDelegation(f.ctx, f.pub, agent)
		if err != nil {
			t.Fatal(err)
		}
		if d.PoolID == nil || *d.PoolID != p.PoolID || d.ExpiresAtNs != nil || d.Signature != strings.Repeat("0", 128) ||
			!slices.Equal(d.Permissions, []string{"dns_manage", "fetch_contracts", "health_check", "heartbeat", "provision"}) {
			t.Fatalf("delegation %+v", d)
		}
		if _, err := s.UseSetupToken(f.ctx, tok, identity.PublicHex(mustKey(t)), f.now+2); KindOf(err) != KindConflict || err.Error() != "Setup token already used" {
			t.Fatalf("used token: %v", err)
		}
		if _, err := s.UseSetupToken(f.ctx, "apt_europe_0000000000000000", agent, f.now+2); KindOf(err) != KindNotFound || err.Error() != "Invalid setup token" {
			t.Fatalf("unknown token: %v", err)
		}
		short := f.token(t, p, time.Minute)
		if _, err := s.UseSetupToken(f.ctx, short, agent, f.now+int64(time.Minute)); KindOf(err) != KindGone || err.Error() != "Setup token expired" {
			t.Fatalf("expired token: %v", err)
		}
		if pending, _ := s.ListSetupTokens(f.ctx, f.pub, p.PoolID, f.now+int64(time.Minute)); len(pending) != 0 {
			t.Fatalf("used and expired tokens listed: %+v", pending)
		}
		// A refused token leaves nothing behind.
		if _, err := s.GetDelegation(f.ctx, f.pub, identity.PublicHex(mustKey(t))); !IsNotFound(err) {
			t.Fatalf("refused registration stored a delegation: %v", err)
		}

		del := f.token(t, p, time.Hour)
		if err := s.DeleteSetupToken(f.ctx, f.pub, p.PoolID, del); err != nil {
			t.Fatal(err)
		}
		if _, err := s.UseSetupToken(f.ctx, del, agent, f.now+3); !IsNotFound(err) {
			t.Fatalf("deleted token still works: %v", err)
		}

		pools, err := s.ListPools(f.ctx, f.pub, f.now+4)
		if err != nil || len(pools) != 1 || pools[0].AgentCount != 1 || pools[0].OnlineCount != 0 {
			t.Fatalf("pools = %+v, %v", pools, err)
		}
		if err := s.DeletePool(f.ctx, f.pub, p.PoolID); KindOf(err) != KindConflict || !strings.Contains(err.Error(), "Cannot delete pool with 1 active agents") {
			t.Fatalf("delete pool with an agent: %v", err)
		}
		if err := s.RevokeDelegation(f.ctx, f.pub, agent, f.now+5); err != nil {
			t.Fatal(err)
		}
		f.token(t, p, time.Hour)
		if err := s.DeletePool(f.ctx, f.pub, p.PoolID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetPool(f.ctx, p.PoolID); !IsNotFound(err) {
			t.Fatalf("deleted pool: %v", err)
		}
	})
}

// TestSetupTokenRace: two agents present one token at the same moment;
// exactly one is registered, the other told it is used — every time.
func TestSetupTokenRace(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		p := f.pool(t, "race", "europe")
		for round := 0; round < 20; round++ {
			tok := f.token(t, p, time.Hour)
			agents := [2]string{identity.PublicHex(mustKey(t)), identity.PublicHex(mustKey(t))}
			var errs [2]error
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range agents {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					_, errs[i] = s.UseSetupToken(f.ctx, tok, agents[i], f.now+1)
				}()
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner < 0:
					winner = i
				case err == nil:
					t.Fatalf("round %d: both agents registered with one token", round)
				case KindOf(err) != KindConflict || err.Error() != "Setup token already used":
					t.Fatalf("round %d: loser got %v", round, err)
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: nobody registered: %v", round, errs)
			}
			if _, err := s.GetDelegation(f.ctx, f.pub, agents[winner]); err != nil {
				t.Fatalf("round %d: winner has no delegation: %v", round, err)
			}
			if _, err := s.GetDelegation(f.ctx, f.pub, agents[1-winner]); !IsNotFound(err) {
				t.Fatalf("round %d: loser has a delegation: %v", round, err)
			}
			var by string
			if err := s.DB().QueryRow(s.q(`SELECT used_by_agent FROM agent_setup_tokens WHERE token_hash = ?`), tokenHash(tok)).Scan(&by); err != nil || by != agents[winner] {
				t.Fatalf("round %d: token used by %q, %v", round, by, err)
			}
		}
	})
}

// TestPoolFilter: a pooled agent is offered the contracts of its pool and
// the pool-less ones whose country is in its region (as live), on both
// rule sets; an agent in no pool everything (default rules only).
func TestPoolFilter(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		eu, na := f.pool(t, "eu", "europe"), f.pool(t, "na", "na")
		mk := func(pool *Pool, country string) string {
			nc := NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "ssh-ed25519 AAAA test"}
			if pool != nil {
				nc.AgentPoolID = &pool.PoolID
			}
			if country != "" {
				nc.DatacenterCountry = &country
			}
			c, err := s.CreateContract(f.ctx, nc, f.now)
			if err != nil {
				t.Fatal(err)
			}
			f.now++
			return c.ContractID
		}
		explicit, de, us, naDE, none := mk(eu, ""), mk(nil, "DE"), mk(nil, "US"), mk(na, "DE"), mk(nil, "")
		ids := func(l []dcapi.PendingContract) []string {
			var out []string
			for _, c := range l {
				out = append(out, c.ContractID)
			}
			return out
		}
		got, _, err := s.PendingContractsForPool(f.ctx, f.pub, f.agent, eu, f.now)
		if err != nil || !slices.Equal(ids(got), []string{explicit, de}) {
			t.Fatalf("eu pool (default rules) = %v, %v; want %v", ids(got), err, []string{explicit, de})
		}
		if got, _, _ := s.PendingContractsForPool(f.ctx, f.pub, f.agent, na, f.now); !slices.Equal(ids(got), []string{us, naDE}) {
			t.Fatalf("na pool = %v; want %v", ids(got), []string{us, naDE})
		}
		if got, _, _ := s.PendingContracts(f.ctx, f.pub, f.agent, f.now); len(got) != 5 || !slices.Contains(ids(got), none) {
			t.Fatalf("agent in no pool = %v; want all five", ids(got))
		}
		live, err := s.PendingLive(f.ctx, f.pub, eu, f.now)
		if err != nil || !slices.Equal(ids(live), []string{explicit, de}) {
			t.Fatalf("eu pool (live rules) = %v, %v", ids(live), err)
		}
		if _, err := s.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "k", AgentPoolID: &[]string{"nope-12345678"}[0]}, f.now); !IsNotFound(err) {
			t.Fatalf("contract in an unknown pool: %v", err)
		}
		if _, err := s.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "k", DatacenterCountry: &[]string{"de"}[0]}, f.now); KindOf(err) != KindInvalid {
			t.Fatalf("lowercase country: %v", err)
		}
	})
}

// TestLiveRules: provisioning transitions, credentials, locks, timeout,
// reconcile and terminated under the live rules.
func TestLiveRules(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		pool := f.pool(t, "eu", "europe")
		requester := mustKey(t)
		reqHex := identity.PublicHex(requester)
		id := func() string {
			c, err := s.CreateContract(f.ctx, NewContract{ProviderPubkey: f.pub, RequesterSSHPubkey: "k", RequesterPubkey: &reqHex, AgentPoolID: &pool.PoolID}, f.now)
			if err != nil {
				t.Fatal(err)
			}
			return c.ContractID
		}
		c1 := id()
		upd := func(cid, status, details string) (string, error) {
			return s.UpdateStatusLive(f.ctx, f.pub, cid, f.agent, status, details, f.now)
		}
		if msg, err := upd(c1, "provisioning", ""); err != nil || msg != MsgStatusUpdated {
			t.Fatalf("provisioning: %q %v", msg, err)
		}
		_, err := upd(c1, "provisioning", "")
		if want := "Invalid status transition: provisioning -> provisioning. Valid transitions from 'provisioning': [Provisioned, ProvisioningFailed, Cancelled]"; err == nil || err.Error() != want {
			t.Fatalf("repeated provisioning: %v\nwant %s", err, want)
		}
		if _, err := upd(c1, "provisioned", "  "); err == nil || err.Error() != "Instance details are required when marking a contract as provisioned" {
			t.Fatalf("provisioned without details: %v", err)
		}
		if _, err := upd(c1, "bogus", ""); err == nil || !strings.HasPrefix(err.Error(), "Invalid contract status 'bogus'. Valid statuses:") {
			t.Fatalf("bogus status: %v", err)
		}
		details, _ := json.Marshal(map[string]any{"external_id": "vm-7", "ip_address": "10.0.0.7", "root_password": "hunter2"})
		if _, err := upd(c1, "provisioned", string(details)); err != nil {
			t.Fatal(err)
		}
		c := f.status(t, c1)
		if c.Status != dcapi.StatusProvisioned || c.InstanceDetails == nil || strings.Contains(*c.InstanceDetails, "hunter2") || *c.ExternalInstanceID != "vm-7" {
			t.Fatalf("provisioned contract %+v", c)
		}
		var stored dcapi.InstanceDetails
		if err := json.Unmarshal([]byte(*c.InstanceDetails), &stored); err != nil {
			t.Fatal(err)
		}
		if pw, err := identity.Open(stored.RootPassword, requester); err != nil || string(pw) != "hunter2" {
			t.Fatalf("the requester cannot open the sealed password: %q %v", pw, err)
		}

		// A password the agent sealed itself is kept as it is.
		c2 := id()
		upd(c2, "provisioning", "")
		sealed, err := identity.Seal([]byte("s3cret"), requester.Public().(ed25519.PublicKey), c2)
		if err != nil {
			t.Fatal(err)
		}
		d2, _ := json.Marshal(dcapi.InstanceDetails{ExternalID: "vm-8", RootPassword: sealed})
		if _, err := upd(c2, "provisioned", string(d2)); err != nil {
			t.Fatal(err)
		}
		if got := *f.status(t, c2).InstanceDetails; got != string(d2) {
			t.Fatalf("sealed details changed:\n%s\n%s", got, d2)
		}

		// provisioning_failed is final, and a repeat (or a report on a
		// contract past provisioning) changes nothing and succeeds.
		c3 := id()
		for i := 0; i < 2; i++ {
			if msg, err := upd(c3, "provisioningfailed", `{"error":"no capacity","retry_possible":true}`); err != nil || msg != MsgProvisioningFailed {
				t.Fatalf("failed #%d: %q %v", i, msg, err)
			}
		}
		if got := f.status(t, c3); got.Status != dcapi.StatusProvisioningFailed || got.FailureCount != 1 {
			t.Fatalf("failed contract %+v", got)
		}
		if l, _ := s.PendingLive(f.ctx, f.pub, pool, f.now+int64(time.Hour)); slices.ContainsFunc(l, func(p dcapi.PendingContract) bool { return p.ContractID == c3 }) {
			t.Fatal("a failed contract is offered again")
		}
		if _, err := upd(c3, "provisioning", ""); err == nil || !strings.HasPrefix(err.Error(), "Invalid status transition: provisioningfailed -> provisioning.") {
			t.Fatalf("provisioning after failure: %v", err)
		}
		if _, err := upd(c1, "provisioning_failed", ""); err != nil || f.status(t, c1).Status != dcapi.StatusProvisioned {
			t.Fatalf("failure of a provisioned contract: %v", err)
		}

		// Locks: acquired, held against another agent, released.
		c4 := id()
		other := identity.PublicHex(mustKey(t))
		if r, err := s.LockLive(f.ctx, f.pub, c4, f.agent, f.now); err != nil || !r.Acquired {
			t.Fatalf("lock %+v %v", r, err)
		}
		if r, err := s.LockLive(f.ctx, f.pub, c4, other, f.now+1); err != nil || r.Acquired || r.ExpiresAtNs != f.now+1+int64(5*time.Minute) {
			t.Fatalf("second agent %+v %v", r, err)
		}
		if l, _ := s.PendingLive(f.ctx, f.pub, pool, f.now+2); slices.ContainsFunc(l, func(p dcapi.PendingContract) bool { return p.ContractID == c4 }) {
			t.Fatal("a locked contract is offered (live offers none that is locked, not even to its holder)")
		}
		if ok, err := s.ReleaseLive(f.ctx, f.pub, c4, other); err != nil || ok {
			t.Fatalf("release by a non-holder: %v %v", ok, err)
		}
		if ok, err := s.ReleaseLive(f.ctx, f.pub, c4, f.agent); err != nil || !ok {
			t.Fatalf("release: %v %v", ok, err)
		}
		if _, err := s.LockLive(f.ctx, f.pub, c1, f.agent, f.now); err == nil || err.Error() != fmt.Sprintf("Contract %s is not in lockable status (status: provisioned)", c1) {
			t.Fatalf("lock of a provisioned contract: %v", err)
		}

		// The provisioning timeout fails what was accepted or provisioning
		// for an hour.
		c5 := id()
		if l, _ := s.PendingLive(f.ctx, f.pub, pool, f.now+int64(time.Hour)+1); slices.ContainsFunc(l, func(p dcapi.PendingContract) bool { return p.ContractID == c5 }) {
			t.Fatal("a timed-out contract is offered")
		}
		if got := f.status(t, c5); got.Status != dcapi.StatusProvisioningFailed || !strings.Contains(strOr(got.LastError, ""), "timed out") {
			t.Fatalf("timed-out contract %+v", got)
		}
		if got := f.status(t, c2); got.Status != dcapi.StatusProvisioned {
			t.Fatalf("the timeout failed a provisioned contract: %s", got.Status)
		}

		// Terminated only for cancelled contracts.
		if err := s.MarkTerminatedLive(f.ctx, f.pub, c2, f.now); err == nil || err.Error() != "Contract not found or not in cancelled status (ID: "+c2+")" {
			t.Fatalf("terminated of a provisioned contract: %v", err)
		}
		if _, err := upd(c2, "cancelled", ""); err != nil {
			t.Fatal(err)
		}
		if err := s.MarkTerminatedLive(f.ctx, f.pub, c2, f.now); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPauseResumeExpire(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		f := newFixture(t, s)
		id := f.contract(t)
		if _, err := s.PauseContract(f.ctx, id, "stripe_dispute:du_1", f.now); KindOf(err) != KindConflict {
			t.Fatalf("pause of an accepted contract: %v", err)
		}
		s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
		if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned("vm-1"), f.now); err != nil {
			t.Fatal(err)
		}
		c, err := s.PauseContract(f.ctx, id, "stripe_dispute:du_1", f.now+1)
		if err != nil || c.Status != dcapi.StatusPaused || *c.PauseReason != "stripe_dispute:du_1" {
			t.Fatalf("pause: %+v %v", c, err)
		}
		if _, err := s.PauseContract(f.ctx, id, "stripe_dispute:du_1", f.now+2); err != nil {
			t.Fatalf("same pause again: %v", err)
		}
		if _, err := s.PauseContract(f.ctx, id, "other", f.now+2); KindOf(err) != KindConflict {
			t.Fatalf("pause with another reason: %v", err)
		}
		in := []dcapi.ReconcileInstance{{ExternalID: "vm-1", ContractID: id}}
		rec, err := s.Reconcile(f.ctx, f.pub, in, f.now+3)
		if err != nil || len(rec.Pause) != 1 || rec.Pause[0] != (dcapi.ReconcilePause{ExternalID: "vm-1", ContractID: id, Reason: "stripe_dispute:du_1"}) || len(rec.Keep)+len(rec.Terminate) != 0 {
			t.Fatalf("reconcile of a paused contract = %+v %v", rec, err)
		}
		live, err := s.ReconcileLive(f.ctx, f.pub, []LiveInstance{{ExternalID: "vm-1", ContractID: &id}}, f.now+3)
		if err != nil || len(live.Pause) != 1 || live.Pause[0].Reason != "stripe_dispute:du_1" {
			t.Fatalf("live reconcile of a paused contract = %+v %v", live, err)
		}
		if c, err := s.ResumeContract(f.ctx, id, f.now+4); err != nil || c.Status != dcapi.StatusActive || c.PauseReason != nil {
			t.Fatalf("resume: %+v %v", c, err)
		}
		rec, _ = s.Reconcile(f.ctx, f.pub, in, f.now+5)
		ends := f.status(t, id).EndsAtNs
		if len(rec.Keep) != 1 || rec.Keep[0].EndsAt != *ends {
			t.Fatalf("reconcile after resume = %+v (ends %d)", rec, *ends)
		}
		if c, err := s.ExpireContract(f.ctx, id, f.now+6); err != nil || c.Status != dcapi.StatusExpired || *c.EndsAtNs != f.now+6 {
			t.Fatalf("expire: %+v %v", c, err)
		}
		rec, _ = s.Reconcile(f.ctx, f.pub, in, f.now+7)
		if len(rec.Terminate) != 1 || !strings.HasPrefix(rec.Terminate[0].Reason, "contract expired at ") {
			t.Fatalf("reconcile of an expired contract = %+v", rec)
		}
		live, _ = s.ReconcileLive(f.ctx, f.pub, []LiveInstance{{ExternalID: "vm-1", ContractID: &id}}, f.now+7)
		if len(live.Terminate) != 1 || live.Terminate[0].Reason != "expired" {
			t.Fatalf("live reconcile of an expired contract = %+v", live)
		}
		if _, err := s.CancelContract(f.ctx, id, f.now+8); KindOf(err) != KindConflict {
			t.Fatalf("cancel of an expired contract: %v", err)
		}
		if err := s.MarkTerminated(f.ctx, f.pub, id, f.now+8); err != nil {
			t.Fatalf("terminated (default rules) of an expired contract: %v", err)
		}
		acc := f.contract(t)
		if _, err := s.ExpireContract(f.ctx, acc, f.now); err == nil || !strings.HasPrefix(err.Error(), "Invalid status transition: accepted -> expired.") {
			t.Fatalf("expire of an accepted contract: %v", err)
		}
		// Live reconcile's unknowns.
		bad, other := "zz", f.contract(t)
		res, err := s.ReconcileLive(f.ctx, identity.PublicHex(mustKey(t)), []LiveInstance{{ExternalID: "a"}, {ExternalID: "b", ContractID: &bad}, {ExternalID: "c", ContractID: &other}}, f.now)
		if err != nil || len(res.Unknown) != 3 || res.Unknown[0].Message != "No contract ID associated with this instance" ||
			res.Unknown[1].Message != `Invalid contract id hex: Invalid character 'z' (value: zz)` || res.Unknown[2].Message != "Contract belongs to different provider" {
			t.Fatalf("unknowns = %+v %v", res.Unknown, err)
		}
	})
}
