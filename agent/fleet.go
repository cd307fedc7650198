package agent

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// The fleet is what this agent serves, as the API confirmed it: the
// instances its backends list whose contracts reconcile keeps (or pauses),
// plus the instances whose provisioned report the API just accepted. It
// is the source of health checks and of the heartbeat's activeContracts
// on a server without GET …/contracts/active (the live API: 404, route
// list in api/src/main.rs); where a server has that list, it is used
// instead (it also covers backends that cannot list their instances).
type fleet struct {
	mu      sync.Mutex
	known   bool // a reconcile round filled it
	members map[string]member
}

// member is one contract the agent serves.
type member struct {
	ext    string
	typ    string
	endsAt time.Time // zero: not known
	paused bool
	added  time.Time
}

// set replaces what a reconcile round that started at round saw: members
// added after it started (a report accepted meanwhile) stay.
func (f *fleet) set(round time.Time, seen map[string]member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for cid, m := range f.members {
		if _, ok := seen[cid]; !ok && m.added.After(round) {
			seen[cid] = m
		}
	}
	f.members, f.known = seen, true
}

// add records one served contract (its provisioned report was accepted).
func (f *fleet) add(cid string, m member) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.members == nil {
		f.members = map[string]member{}
	}
	if old, ok := f.members[cid]; ok && m.endsAt.IsZero() {
		m.endsAt = old.endsAt
	}
	f.members[cid] = m
}

// remove forgets a contract (its instance was terminated).
func (f *fleet) remove(cid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.members, cid)
}

// snapshot returns the members and whether a reconcile round filled them.
func (f *fleet) snapshot() (map[string]member, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]member, len(f.members))
	for k, v := range f.members {
		out[k] = v
	}
	return out, f.known
}

// live counts the members whose instance should run (not paused).
func live(members map[string]member) int {
	n := 0
	for _, m := range members {
		if !m.paused {
			n++
		}
	}
	return n
}

// ending lists the live members with their end times, soonest first
// (status: when each contract ends, from reconcile's keep[].endsAt).
func ending(members map[string]member) []status.Contract {
	var out []status.Contract
	for cid, m := range members {
		if m.paused {
			continue
		}
		c := status.Contract{ContractID: cid, ExternalID: m.ext}
		if !m.endsAt.IsZero() {
			t := m.endsAt
			c.EndsAt = &t
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y status.Contract) int {
		switch {
		case x.EndsAt == nil && y.EndsAt == nil:
			return cmp.Compare(x.ContractID, y.ContractID)
		case x.EndsAt == nil:
			return 1
		case y.EndsAt == nil:
			return -1
		}
		return x.EndsAt.Compare(*y.EndsAt)
	})
	return out
}

// pauseInstance stops the instance of a paused contract (reconcile's
// pause: a payment dispute; live: common/src/api_types.rs
// ReconcilePauseInstance — stop the VM, never destroy it) and remembers
// that the agent stopped it. A backend that cannot stop an instance
// leaves it running and says so once an hour.
func (a *Agent) pauseInstance(ctx context.Context, b *backend, cid, ext, reason string) {
	if _, done := a.store.Paused(cid); done {
		return
	}
	p, ok := b.p.(provisioners.Pauser)
	if !ok || !b.feat.Pause {
		a.warnOnce("nopause:"+cid, time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopReconcile, cid,
				fmt.Sprintf("contract is paused (%s) but the %s backend cannot stop an instance; %s keeps running", reason, b.typ, ext))
		})
		return
	}
	// Recorded first: a health check that sees the instance stopping is
	// dropped (it is not unhealthy, it is paused), and a crash between
	// the two leaves a record whose resume starts a running instance: a
	// no-op.
	if err := a.store.PutPaused(PausedRecord{ContractID: cid, ExternalID: ext, Provisioner: b.typ, Reason: reason, Since: a.now()}); err != nil {
		a.log.Error("remember paused instance", "contract", cid, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.timing().TerminateTime)
	defer cancel()
	a.live.expect(loopReconcile, a.timing().TerminateTime)
	if err := p.Pause(ctx, ext); err != nil {
		_ = a.store.DeletePaused(cid)
		a.obs.emit(status.EventNotice, status.LevelWarn, loopReconcile, cid, "stopping "+ext+" for the paused contract failed; retrying next round", "err", err)
		return
	}
	a.obs.emit(status.EventPaused, status.LevelInfo, loopReconcile, cid, "stopped "+ext+" (contract paused: "+reason+"); it is kept and started again when the contract resumes")
}

// resumeInstance starts an instance the agent stopped for a paused
// contract that is back (kept by reconcile, offered again, or listed
// active). Instances the agent did not stop are left alone.
func (a *Agent) resumeInstance(ctx context.Context, e *env, cid, loop string) error {
	rec, ok := a.store.Paused(cid)
	if !ok {
		return nil
	}
	b := e.backends[rec.Provisioner]
	p, can := provisioners.Pauser(nil), false
	if b != nil {
		p, can = b.p.(provisioners.Pauser)
	}
	if !can {
		return fmt.Errorf("instance %s was stopped by the %s backend, which is no longer configured", rec.ExternalID, rec.Provisioner)
	}
	ctx, cancel := context.WithTimeout(ctx, a.timing().TerminateTime)
	defer cancel()
	if err := p.Resume(ctx, rec.ExternalID); err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, loop, cid, "starting "+rec.ExternalID+" for the resumed contract failed; retrying", "err", err)
		return err
	}
	if err := a.store.DeletePaused(cid); err != nil {
		a.log.Error("forget paused instance", "contract", cid, "err", err)
	}
	a.obs.emit(status.EventResumed, status.LevelInfo, loop, cid, "started "+rec.ExternalID+" again: the contract is no longer paused")
	return nil
}
