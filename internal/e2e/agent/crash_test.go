package agente2e

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
)

// killedBySIGKILL reports whether a process ended by SIGKILL.
func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// checkExactlyOnce asserts every contract is provisioned with exactly one
// instance, the one the API was told about, and the backend holds nothing
// else (no orphan).
func checkExactlyOnce(t *testing.T, w *world, cids []string) {
	t.Helper()
	byContract := w.instancesByContract()
	if len(byContract) != len(cids) {
		t.Fatalf("backend holds instances for %d contracts, want %d: %+v", len(byContract), len(cids), w.backend.Instances())
	}
	for _, cid := range cids {
		waitLive(t, w, cid)
		if byContract[cid] != 1 {
			t.Fatalf("contract %s has %d instances", cid, byContract[cid])
		}
		d, _ := w.srv.InstanceDetails(cid)
		found := false
		for _, inst := range w.backend.Instances() {
			found = found || inst.ContractID == cid && inst.ExternalID == d.ExternalID
		}
		if !found {
			t.Fatalf("contract %s reported instance %q, which the backend does not hold", cid, d.ExternalID)
		}
	}
}

// waitLive waits until the contract's instance is reported (provisioned,
// or already active once health came in).
func waitLive(t *testing.T, w *world, cid string) {
	t.Helper()
	w.srv.WaitForContract(cid, 20*time.Second, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned or active")
}

// TestCrashAtEveryStep SIGKILLs the agent at each step of provisioning in
// turn (the agent kills itself at the named point, so the step is exact),
// restarts it, and checks that every contract ends provisioned exactly
// once with no orphan instance — against both dc-api profiles (the live
// API refuses the restarted agent's repeated "provisioning" and offers a
// locked contract again only once its lock expired: 3 s here).
func TestCrashAtEveryStep(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		for _, point := range agent.CrashPoints {
			t.Run(point, func(t *testing.T) {
				w := newWorld(t, withProfile(p), withAPI(apitest.WithLockTTL(3*time.Second)))
				cids := []string{w.contract(apitest.ContractSpec{}), w.contract(apitest.ContractSpec{})}
				p1 := w.startAgent(nil, "--crash-at", point)
				if err := p1.waitExit(30 * time.Second); !killedBySIGKILL(err) {
					t.Fatalf("agent did not die at %s: %v", point, err)
				}
				p2 := w.startAgent(nil)
				for _, cid := range cids {
					waitLive(t, w, cid)
				}
				// Let reconcile look at the pool: it must keep both instances.
				n := w.srv.CountRequests("POST", "/reconcile", 200)
				eventually(t, 20*time.Second, "a reconcile round", func() bool { return w.srv.CountRequests("POST", "/reconcile", 200) > n })
				checkExactlyOnce(t, w, cids)
				p2.stop()
				for _, cid := range cids {
					if c := w.srv.Contract(cid); c.FailureCount != 0 {
						t.Errorf("contract %s: %d failures reported", cid, c.FailureCount)
					}
					// Released, or (killed between the report and the
					// release: only the live API keeps a provisioned
					// contract's lock) lapsed after its 3 s.
					w.srv.WaitForContract(cid, 20*time.Second, func(c *store.Contract) bool {
						return c.LockAgent == nil || c.LockExpiresAtNs != nil && *c.LockExpiresAtNs < w.srv.Now().UnixNano()
					}, "no lock held")
				}
			})
		}
	})
}

// TestKilledWhileBackendCreates kills the agent from inside the backend
// call, after the machine exists but before the agent hears about it.
func TestKilledWhileBackendCreates(t *testing.T) {
	eachProfile(t, func(t *testing.T, p e2eutil.Profile) {
		w := newWorld(t, withProfile(p), withAPI(apitest.WithLockTTL(3*time.Second)))
		if err := w.backend.Set("kill-parent", "1"); err != nil {
			t.Fatal(err)
		}
		cid := w.contract(apitest.ContractSpec{})
		p1 := w.startAgent(nil)
		if err := p1.waitExit(30 * time.Second); !killedBySIGKILL(err) {
			t.Fatalf("agent was not killed: %v", err)
		}
		if len(w.backend.Instances()) != 1 {
			t.Fatal("the backend should have made the machine before the kill")
		}
		w.startAgent(nil)
		waitLive(t, w, cid)
		checkExactlyOnce(t, w, []string{cid})
		if calls := w.provisionCalls()[cid]; calls != 2 {
			t.Fatalf("provision called %d times, want 2 (the killed call, then the resumed one)", calls)
		}
	})
}

// TestOrphanRemovedAfterGrace: an instance the API does not know (made by
// an attempt whose contract vanished) is removed after the grace period.
func TestOrphanRemovedAfterGrace(t *testing.T) {
	w := newWorld(t, func(c *worldConfig) { c.orphanGrace = 100 }) // 1 s at this time scale
	cid := w.contract(apitest.ContractSpec{})
	w.startAgent(nil)
	waitLive(t, w, cid)
	// A stray machine named like one of ours, for a contract the API never had.
	if err := writeStrayInstance(w); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "orphan removed", func() bool { return len(w.backend.Instances()) == 1 })
	checkExactlyOnce(t, w, []string{cid})
}
