package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// reconcileLoop compares what the backends run with what the API says
// should run: instances of cancelled contracts are terminated at once,
// instances the API does not know after OrphanGrace (a crash between
// creating an instance and reporting it leaves one; so does a contract
// deleted by hand). Contracts the agent is working on are never touched.
func (a *Agent) reconcileLoop(ctx context.Context) error {
	orphans := map[string]time.Time{} // external id → first seen unknown
	// The first round waits a little, so resumed work has claimed its contracts.
	if a.wait(ctx, min(a.timing().ReconcileInterval, a.timing().PollInterval), a.reconWake) != nil {
		return nil
	}
	return a.repeat(ctx, loopReconcile, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		err := a.reconcileOnce(ctx, orphans)
		if err == nil {
			a.obs.update(func(o *observer) { o.lastReconcile = a.now() })
		}
		return a.timing().ReconcileInterval, a.reconWake, err
	})
}

// owned is an instance a backend listed.
type owned struct {
	inst provisioners.Instance
	b    *backend
}

func (a *Agent) reconcileOnce(ctx context.Context, orphans map[string]time.Time) error {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	t := a.timing()
	round := a.now()
	busy := a.busyContracts()

	instances := map[string]owned{}
	var running []dcapi.ReconcileInstance
	var allInstances []provisioners.Instance
	listed := 0
	for _, typ := range sortedTypes(e.backends) {
		b := e.backends[typ]
		if !b.feat.List {
			continue
		}
		a.live.expect(loopReconcile, t.ListTime)
		lctx, cancel := context.WithTimeout(ctx, t.ListTime)
		insts, err := b.p.List(lctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.warnOnce("list:"+typ, time.Hour, func() {
				a.obs.emit(status.EventNotice, status.LevelWarn, loopReconcile, "", "cannot list "+typ+" instances; skipping it this round", "err", err)
			})
			continue
		}
		listed++
		allInstances = append(allInstances, insts...)
		for _, inst := range insts {
			if inst.ExternalID == "" || busy[inst.ContractID] {
				continue
			}
			instances[inst.ExternalID] = owned{inst, b}
			running = append(running, dcapi.ReconcileInstance{ExternalID: inst.ExternalID, ContractID: inst.ContractID})
		}
	}

	var terminate []target
	var unknown []dcapi.ReconcileUnknown
	var resp dcapi.ReconcileResponse
	answered := false
	var active []dcapi.ActiveContract
	activeKnown := false
	if listed > 0 && !a.reconcile404.Load() {
		a.live.expect(loopReconcile, 2*e.reqTimeout)
		var err error
		resp, err = e.client.Reconcile(ctx, running)
		switch {
		case dcapi.IsNotFound(err):
			a.reconcile404.Store(true)
			a.log.Info("the API has no reconcile endpoint; comparing with the active contract list instead")
		case err != nil:
			return err
		default:
			answered = true
			for _, tm := range resp.Terminate {
				if o, ok := instances[tm.ExternalID]; ok {
					terminate = append(terminate, target{o: o, cid: tm.ContractID, reason: tm.Reason})
				}
			}
			unknown = resp.Unknown
		}
	}
	if a.reconcile404.Load() || listed < countListers(e) || unlistedTerminators(e) {
		// Either the server cannot reconcile, or some backends could not be
		// listed or cannot list at all (the script backend): the active
		// contract list tells which contracts are cancelled. The live API
		// has none: reconcile's own answer has to do.
		var err error
		if active, activeKnown, err = a.activeContracts(ctx, e); err != nil {
			return err
		}
		if activeKnown {
			t2, u2 := classifyByActive(e, instances, active, a.reconcile404.Load())
			terminate = append(terminate, t2...)
			unknown = append(unknown, u2...)
		}
	}
	if answered {
		a.applyKeepPause(ctx, e, round, instances, resp, listed == countListers(e))
	}

	now := a.now()
	done := map[string]bool{}
	for _, tm := range terminate {
		ext := tm.o.inst.ExternalID
		if done[ext] || busy[tm.cid] || !tm.o.b.feat.Terminate {
			continue
		}
		done[ext] = true
		a.terminate(ctx, tm.o, tm.cid, cmp.Or(tm.reason, "ended"), true)
		delete(orphans, ext)
	}
	seen := map[string]bool{}
	for _, u := range unknown {
		o, ok := instances[u.ExternalID]
		if !ok || done[u.ExternalID] {
			continue
		}
		seen[u.ExternalID] = true
		first, known := orphans[u.ExternalID]
		if !known {
			orphans[u.ExternalID] = now
			a.obs.emit(status.EventOrphan, status.LevelWarn, loopReconcile, o.inst.ContractID,
				fmt.Sprintf("instance %s is unknown to the API (%s); it is removed after %s unless the API claims it", u.ExternalID, cmp.Or(u.Message, "no contract"), t.OrphanGrace))
			continue
		}
		if now.Sub(first) >= t.OrphanGrace {
			a.terminate(ctx, o, o.inst.ContractID, "orphan: unknown to the API for "+now.Sub(first).Round(time.Second).String(), false)
			delete(orphans, u.ExternalID)
		}
	}
	for ext := range orphans {
		if !seen[ext] {
			delete(orphans, ext) // claimed by the API meanwhile, or gone
		}
	}
	if a.gw != nil {
		live, ok := gatewayLive(e, listed, allInstances, active, activeKnown)
		if !ok && a.useActiveList() {
			var err error
			if active, activeKnown, err = a.activeContracts(ctx, e); err != nil {
				return err
			}
			live, ok = gatewayLive(e, listed, allInstances, active, activeKnown)
		}
		if ok {
			a.reconcileGateway(ctx, live, round)
		}
	}
	return nil
}

// applyKeepPause acts on reconcile's keep and pause lists: kept instances
// are the fleet (health checks, activeContracts, their end times) and one
// the agent stopped for a pause is started again; paused ones are stopped,
// never destroyed. complete: every listing backend was listed this round
// (else the fleet only gains members).
func (a *Agent) applyKeepPause(ctx context.Context, e *env, round time.Time, instances map[string]owned, resp dcapi.ReconcileResponse, complete bool) {
	seen := map[string]member{}
	for _, k := range resp.Keep {
		o, ok := instances[k.ExternalID]
		if !ok || validContractID(k.ContractID) != nil {
			continue
		}
		m := member{ext: k.ExternalID, typ: o.b.typ, added: round}
		if k.EndsAt > 0 {
			m.endsAt = time.Unix(0, k.EndsAt)
		}
		seen[k.ContractID] = m
		_ = a.resumeInstance(ctx, e, k.ContractID, loopReconcile)
	}
	for _, p := range resp.Pause {
		o, ok := instances[p.ExternalID]
		if !ok || validContractID(p.ContractID) != nil {
			continue
		}
		seen[p.ContractID] = member{ext: p.ExternalID, typ: o.b.typ, paused: true, added: round}
		a.pauseInstance(ctx, o.b, p.ContractID, p.ExternalID, cmp.Or(p.Reason, "paused"))
	}
	if complete {
		a.fleet.set(round, seen)
	} else {
		for cid, m := range seen {
			a.fleet.add(cid, m)
		}
	}
	a.wakeHealth()
}

// gatewayLive lists the contracts whose gateway stays: those with an
// instance when every backend could be listed, else those the API lists
// as not cancelled (ok false: that list is needed and was not fetched).
// Terminated instances were released above already.
func gatewayLive(e *env, listed int, instances []provisioners.Instance, active []dcapi.ActiveContract, activeKnown bool) (map[string]bool, bool) {
	live := map[string]bool{}
	if listed == len(e.backends) {
		for _, inst := range instances {
			live[inst.ContractID] = true
		}
		return live, true
	}
	if !activeKnown {
		return nil, false
	}
	for _, c := range active {
		if c.Status != dcapi.StatusCancelled {
			live[c.ContractID] = true
		}
	}
	return live, true
}

func countListers(e *env) int {
	n := 0
	for _, b := range e.backends {
		if b.feat.List {
			n++
		}
	}
	return n
}

// activeContracts fetches the active contract list; ok is false when the
// server has none (the live API: GET …/contracts/active is 404), which is
// remembered (noActiveList): the cancelled contracts of backends that cannot list are
// then not found, and the gateway is reconciled only with listing backends.
func (a *Agent) activeContracts(ctx context.Context, e *env) ([]dcapi.ActiveContract, bool, error) {
	if !a.useActiveList() {
		return nil, false, nil
	}
	a.live.expect(loopReconcile, 2*e.reqTimeout)
	active, err := e.client.ActiveContracts(ctx)
	var de *dcapi.Error
	if dcapi.IsNotFound(err) || errors.As(err, &de) && de.StatusCode == http.StatusMethodNotAllowed {
		a.noActiveList()
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	a.activeList.Store(1)
	return active, true, nil
}

// unlistedTerminators says whether a backend can terminate but not list:
// its cancelled contracts are found only in the active contract list.
func unlistedTerminators(e *env) bool {
	for _, b := range e.backends {
		if b.feat.Terminate && !b.feat.List {
			return true
		}
	}
	return false
}

// target is an instance to terminate.
type target struct {
	o      owned
	cid    string
	reason string
}

// classifyByActive decides from the active contract list: an instance of
// a cancelled contract is terminated; one whose contract is not listed at
// all is unknown (only when the server has no reconcile endpoint, since
// then nothing else can tell). Backends that cannot list contribute the
// cancelled contracts that carry an external instance id.
func classifyByActive(e *env, instances map[string]owned, active []dcapi.ActiveContract, judgeUnknown bool) ([]target, []dcapi.ReconcileUnknown) {
	byCID := map[string]dcapi.ActiveContract{}
	for _, c := range active {
		byCID[c.ContractID] = c
	}
	var term []target
	var unk []dcapi.ReconcileUnknown
	for ext, o := range instances {
		c, ok := byCID[o.inst.ContractID]
		switch {
		case ok && c.Status == dcapi.StatusCancelled:
			term = append(term, target{o: o, cid: c.ContractID, reason: "cancelled"})
		case !ok && judgeUnknown:
			unk = append(unk, dcapi.ReconcileUnknown{ExternalID: ext, Message: "contract not active"})
		}
	}
	for _, c := range active {
		ext := deref(c.ExternalInstanceID)
		if c.Status != dcapi.StatusCancelled || ext == "" {
			continue
		}
		if _, listed := instances[ext]; listed {
			continue
		}
		typ := deref(c.ProvisionerType)
		if typ == "" {
			typ = e.defType
		}
		if b := e.backends[typ]; b != nil && !b.feat.List && b.feat.Terminate {
			o := owned{inst: provisioners.Instance{ExternalID: ext, ContractID: c.ContractID}, b: b}
			term = append(term, target{o: o, cid: c.ContractID, reason: "cancelled"})
		}
	}
	return term, unk
}

// terminate removes an instance and, for a known contract, queues the
// "terminated" report — only where the server takes it: the live API
// marks cancelled contracts only (mark_contract_terminated,
// api/src/openapi/providers.rs) and answers success:false for an expired
// one, so after the first such refusal only cancellations are reported.
func (a *Agent) terminate(ctx context.Context, o owned, cid, why string, report bool) {
	tctx, cancel := context.WithTimeout(ctx, a.timing().TerminateTime)
	defer cancel()
	a.live.expect(loopReconcile, a.timing().TerminateTime)
	// The gateway goes first: the VM's address must not stay forwarded
	// once the backend may give it to another VM.
	a.releaseGateway(tctx, cid, loopReconcile)
	if err := o.b.p.Terminate(tctx, o.inst.ExternalID); err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, loopReconcile, cid, "terminate "+o.inst.ExternalID+" failed; retrying next round", "err", err)
		return
	}
	a.obs.emit(status.EventTerminated, status.LevelInfo, loopReconcile, cid, "terminated "+o.inst.ExternalID+" ("+why+")")
	a.obs.update(func(ob *observer) { ob.counts.Terminated++ })
	if validContractID(cid) != nil {
		return
	}
	a.fleet.remove(cid)
	if _, ok := a.store.Paused(cid); ok {
		_ = a.store.DeletePaused(cid)
	}
	if report && (cancelled(why) || !a.termOnlyCancelled.Load()) {
		if _, err := a.store.AddReport(Report{Kind: ReportTerminated, ContractID: cid, Reason: why, CreatedAt: a.now()}); err != nil {
			a.log.Error("queue terminated report", "contract", cid, "err", err)
		}
		a.wakeOutbox()
	}
}

// cancelled reports whether a terminate reason is a cancellation (live:
// "cancelled"; dc-api: "contract cancelled at …").
func cancelled(reason string) bool {
	return strings.Contains(strings.ToLower(reason), "cancel")
}

// busyContracts are the contracts the agent is working on.
func (a *Agent) busyContracts() map[string]bool {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	out := make(map[string]bool, len(a.leases))
	for cid := range a.leases {
		out[cid] = true
	}
	return out
}
