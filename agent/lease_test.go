package agent

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestLockHeldUntilReportAccepted: two agents of one provider on the
// reference server, with a 3 s contract lock. Agent A provisions the
// contract; then the API refuses every report (503) for longer than the
// lock's life. A's lease keeps renewing the lock until its report is
// accepted, so agent B, polling all along, is never offered the contract:
// exactly one instance exists, A's.
func TestLockHeldUntilReportAccepted(t *testing.T) {
	const ttl = 3 * time.Second
	srv := apitest.Start(t, apitest.WithLockTTL(ttl))
	p := srv.NewProvider("Two Agents Hosting")
	keyA := srv.NewAgent(p)
	a, b := newHarness(t), newHarness(t)
	a.useReferenceServer(srv, p, keyA)
	b.useReferenceServer(srv, p, srv.NewAgent(p))
	a.prov.block = make(chan struct{})
	cid := srv.CreateContract(p, apitest.ContractSpec{})
	a.start()
	eventually(t, "agent A provisioning", func() bool { return a.prov.callsFor(cid) == 1 })
	b.start()

	// The outage: every report is refused until the lock A held when it
	// began has run out.
	srv.FailNext("PUT", "/provisioning", -1, http.StatusServiceUnavailable)
	close(a.prov.block)
	eventually(t, "A's report refused by the outage", func() bool { return srv.CountRequests("PUT", "/provisioning", http.StatusServiceUnavailable) > 0 })
	lockedUntil := *srv.Contract(cid).LockExpiresAtNs
	eventually(t, "the outage outlasting the lock", func() bool { return srv.Now().UnixNano() > lockedUntil })
	c := srv.Contract(cid)
	if c.LockAgent == nil || *c.LockAgent != identity.PublicHex(keyA) || *c.LockExpiresAtNs <= srv.Now().UnixNano() {
		holder := "nobody"
		if c.LockAgent != nil {
			holder = *c.LockAgent
		}
		t.Fatalf("A's lock lapsed while its report waited for the API (held by %s, A is %s): another agent may take the contract", holder, identity.PublicHex(keyA))
	}

	srv.ClearFaults()
	srv.WaitForStatus(cid, dcapi.StatusProvisioned, 20*time.Second)
	eventually(t, "A's report delivered and its lock released", func() bool {
		c := srv.Contract(cid)
		return len(a.a.store.Reports()) == 0 && c.LockAgent == nil && a.a.State().Counts.Outbox == 0
	})
	if n := b.prov.callsFor(cid); n != 0 {
		t.Fatalf("agent B provisioned the contract too (%d calls)", n)
	}
	if n := a.prov.numInstances() + b.prov.numInstances(); n != 1 {
		t.Fatalf("%d instances of one contract", n)
	}
	if d, _ := srv.InstanceDetails(cid); d.ExternalID != "mem-1" || a.prov.numInstances() != 1 {
		t.Fatalf("reported %q, A holds %d instances", d.ExternalID, a.prov.numInstances())
	}
}

// TestProvisionProblemClears: a refused lock (the delegation lacks the
// provision permission) shows as a problem (STOPPED in `systemctl
// status`); once the provider grants the permission, the next attempt
// locks the contract and the problem is gone.
func TestProvisionProblemClears(t *testing.T) {
	srv := apitest.Start(t)
	p := srv.NewProvider("Permission Hosting")
	key := srv.NewAgent(p, apitest.Permissions(identity.PermFetchContracts, identity.PermHeartbeat, identity.PermHealthCheck))
	h := newHarness(t)
	h.useReferenceServer(srv, p, key)
	h.prov.feat.List = false // reconcile needs the provision permission too; keep it out of the picture
	cid := srv.CreateContract(p, apitest.ContractSpec{})
	h.start()
	eventually(t, "the refused lock shown as a problem", func() bool {
		return strings.HasPrefix(h.a.State().Line, "STOPPED: the API refused to lock")
	})
	srv.Delegate(p, identity.PublicHex(key))
	srv.WaitForStatus(cid, dcapi.StatusProvisioned, 20*time.Second)
	st := h.a.State()
	if len(st.Problems) != 0 || strings.HasPrefix(st.Line, "STOPPED") {
		t.Fatalf("the problem outlived its cause: %q, problems %+v", st.Line, st.Problems)
	}
}

// TestUnrenewableLockStopsProvision: agent A is provisioning when the API
// stops answering its lock renewals. Before the lock runs out A stops the
// provision (its context ends with provisioners.ErrAbandoned), reports
// nothing, removes nothing and forgets its journal entry; once the lock
// has expired agent B takes the contract and provisions it, once.
func TestUnrenewableLockStopsProvision(t *testing.T) {
	const ttl = 1500 * time.Millisecond
	srv := apitest.Start(t, apitest.WithLockTTL(ttl))
	p := srv.NewProvider("Two Agents Hosting")
	a, b := newHarness(t), newHarness(t)
	a.useReferenceServer(srv, p, srv.NewAgent(p))
	keyB := srv.NewAgent(p)
	b.useReferenceServer(srv, p, keyB)
	a.prov.block = make(chan struct{}) // A's provision never ends by itself
	cid := srv.CreateContract(p, apitest.ContractSpec{})
	a.start()
	eventually(t, "agent A provisioning", func() bool { return a.prov.callsFor(cid) == 1 })

	srv.FailNext("POST", "/contracts/"+cid+"/lock", -1, http.StatusServiceUnavailable)
	eventually(t, "A to stop its provision", func() bool {
		a.prov.mu.Lock()
		defer a.prov.mu.Unlock()
		return a.prov.running == 0 && len(a.a.State().Work) == 0
	})
	c := srv.Contract(cid)
	if c.Status != dcapi.StatusProvisioning || c.LockExpiresAtNs == nil || *c.LockExpiresAtNs <= srv.Now().UnixNano() {
		t.Fatalf("A stopped only after its lock ran out (status %s): another agent could have taken the contract meanwhile", c.Status)
	}
	if entries, _, _ := a.a.store.Journal(); len(entries) != 0 || len(a.a.store.Reports()) != 0 {
		t.Fatalf("A kept %d journal entries and %d reports of a contract it no longer owns", len(entries), len(a.a.store.Reports()))
	}
	a.stop()

	srv.ClearFaults()
	b.start()
	srv.WaitForStatus(cid, dcapi.StatusProvisioned, 20*time.Second)
	if got := srv.Contract(cid).ProvisioningAgent; got == nil || *got != identity.PublicHex(keyB) {
		t.Fatalf("provisioned by %v, want agent B", got)
	}
	if a.prov.callsFor(cid) != 1 || b.prov.callsFor(cid) != 1 || a.prov.numInstances() != 0 || b.prov.numInstances() != 1 {
		t.Fatalf("calls A %d B %d, instances A %d B %d", a.prov.callsFor(cid), b.prov.callsFor(cid), a.prov.numInstances(), b.prov.numInstances())
	}
}
