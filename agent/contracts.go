package agent

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// doneMemory is how long the agent remembers finishing a contract, to
// ignore it in poll answers that were already on the way.
const doneMemory = time.Hour

// contractsLoop fetches pending contracts and hands new ones to workers
// (run with rc's contexts). With a long-poll server the next poll starts as
// soon as the last one returns (the server holds it open); otherwise it
// polls every PollInterval ± 10 %.
func (a *Agent) contractsLoop(ctx context.Context, rc runCtxs) error {
	return a.repeat(ctx, loopContracts, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		t := a.timing()
		e := a.acquireEnv()
		a.live.expect(loopContracts, t.LongPollWait+2*e.reqTimeout)
		sent := a.now()
		prog := a.progressChan()
		a.obs.update(func(o *observer) {
			// A long-poll held open by a server that just answered is as
			// fresh as a poll can be: "last poll" counts from its start.
			if o.longPoll && o.loops[loopContracts].State != status.LoopBackoff {
				o.lastPoll = sent
			}
		})
		list, longPoll, err := e.client.PendingContracts(ctx, t.LongPollWait)
		a.releaseEnv(e)
		if err != nil {
			return 0, nil, err
		}
		a.obs.update(func(o *observer) {
			o.lastPoll = a.now()
			o.longPoll = longPoll
		})
		if longPoll {
			// Only dc-api holds the request (X-Long-Poll-Wait): a server
			// with its extensions takes passwords sealed by the agent
			// (PROTOCOL.md §7), and refuses them in clear.
			a.sealOnly.Store(true)
		}
		started := a.dispatch(list, sent, rc)
		switch {
		case !longPoll || t.LongPollWait == 0:
			return jitter(t.PollInterval, a.rand), nil, nil
		case started == 0 && len(list) > 0:
			// Only contracts we already work on: the server answers at once
			// until they move on. Re-poll as soon as one does (or after
			// MinRepoll), so a new contract is not kept waiting, and the
			// server is not hammered.
			return t.MinRepoll - a.now().Sub(sent), prog, nil
		case started == 0:
			// An empty answer that came back at once: a long-poll that did
			// not hold. Do not spin.
			return t.MinRepoll - a.now().Sub(sent), nil, nil
		}
		return 0, nil, nil
	})
}

// dispatch starts work on the contracts of a poll answer that was
// requested at sent. It returns how many it started.
func (a *Agent) dispatch(list []dcapi.PendingContract, sent time.Time, rc runCtxs) int {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	now := a.now()
	started := 0
	for _, c := range list {
		c.ContractID = strings.ToLower(strings.TrimSpace(c.ContractID))
		cid := c.ContractID
		if err := validContractID(cid); err != nil {
			a.warnOnce("badid:"+cid, time.Hour, func() {
				a.obs.emit(status.EventNotice, status.LevelWarn, loopContracts, "", "ignoring a pending contract with a malformed id: "+err.Error())
			})
			continue
		}
		typ := deref(c.ProvisionerType)
		if typ == "" {
			typ = e.defType
		}
		if e.backends[typ] == nil {
			a.warnOnce("unserved:"+cid, time.Hour, func() {
				a.obs.emit(status.EventNotice, status.LevelWarn, loopContracts, cid,
					fmt.Sprintf("contract wants provisioner %q, which this agent does not have; add it as [[additional_provisioners]] (or let an agent that has it take the contract)", typ))
			})
			continue
		}
		if !a.admissible(cid, sent, now) {
			continue
		}
		if e.backends[typ].feat.Manual && a.store.ManualNotified(cid) {
			continue
		}
		l, ok := a.claim(c, typ, status.StepQueued, false, 0)
		if !ok {
			continue
		}
		a.obs.emit(status.EventContractReceived, status.LevelInfo, loopContracts, cid, "new contract", "provisioner", typ, "offering", c.OfferingID)
		a.startWork(l, rc)
		started++
	}
	a.pruneMemory(now)
	return started
}

// admissible reports whether a listed contract may be started now: not
// being worked on, not finished after the poll was sent (a stale answer),
// not cooling down after a failure.
func (a *Agent) admissible(cid string, sent, now time.Time) bool {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	if _, busy := a.leases[cid]; busy {
		return false
	}
	if d, ok := a.doneAt[cid]; ok && !d.Before(sent) {
		return false
	}
	if cd, ok := a.cooldown[cid]; ok && now.Before(cd.until) {
		return false
	}
	return true
}

// pruneMemory forgets old finish times, cool-downs and warnings.
func (a *Agent) pruneMemory(now time.Time) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	maps.DeleteFunc(a.doneAt, func(_ string, d time.Time) bool { return now.Sub(d) > doneMemory })
	maps.DeleteFunc(a.cooldown, func(_ string, cd cooldown) bool { return now.Sub(cd.until) > doneMemory })
	maps.DeleteFunc(a.warned, func(_ string, t time.Time) bool { return now.Sub(t) > 24*time.Hour })
}
