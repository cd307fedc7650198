package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// healthConcurrency bounds parallel backend health checks.
const healthConcurrency = 8

// maxQueuedHealth bounds how many health batches wait in the outbox while
// the API is away; older ones are dropped first (provisioning reports are
// never dropped).
const maxQueuedHealth = 48

// healthLoop checks every live contract this agent serves each
// HealthInterval and queues the results for the outbox, which batches them.
// Which contracts are live comes from GET …/contracts/active where the
// server has it, else from the fleet (the backends' instances that
// reconcile keeps, and the ones just reported provisioned).
//
// A round woken before the next full one (a contract was just provisioned,
// or reconcile found new ones) checks only the contracts not checked yet:
// on a server that takes one request per check (the live API, 60 writes a
// minute per IP) a full round per new contract would cost the square of
// the fleet.
func (a *Agent) healthLoop(ctx context.Context) error {
	checked := map[string]bool{}
	var fullDue time.Time
	return a.repeat(ctx, loopHealth, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		e := a.acquireEnv()
		defer a.releaseEnv(e)
		a.live.expect(loopHealth, 2*e.reqTimeout)
		jobs, cancelled, ok, err := a.healthJobs(ctx, e)
		if err != nil {
			return 0, nil, err
		}
		if !ok {
			// No list yet: the first reconcile round fills the fleet and
			// wakes this loop.
			return untilWoken, a.healthWake, nil
		}
		now := a.now()
		full := !now.Before(fullDue)
		if full {
			checked = map[string]bool{}
			fullDue = now.Add(a.timing().HealthInterval)
		} else {
			jobs = slices.DeleteFunc(jobs, func(j healthJob) bool { return checked[j.cid] })
		}
		for _, j := range jobs {
			checked[j.cid] = true
		}
		checks := a.checkAll(ctx, jobs)
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		if len(checks) > 0 {
			a.trimHealthQueue()
			if _, err := a.store.AddReport(Report{Kind: ReportHealth, Checks: checks, CreatedAt: a.now()}); err != nil {
				a.log.Error("queue health checks", "err", err)
			}
			a.wakeOutbox()
		}
		if cancelled {
			a.wakeReconcile()
		}
		a.obs.update(func(o *observer) { o.lastHealth = a.now() })
		// A contract just provisioned (healthWake) need not wait a whole
		// interval for its first health check.
		return fullDue.Sub(a.now()), a.healthWake, nil
	})
}

// healthJob is one contract to health-check on backend b.
type healthJob struct {
	cid, ext string
	b        *backend
}

// healthJobs lists the live contracts to check and records the active
// count. ok is false while nothing can tell yet (no contracts/active, and
// reconcile has not run).
func (a *Agent) healthJobs(ctx context.Context, e *env) (jobs []healthJob, cancelled, ok bool, err error) {
	if a.useActiveList() {
		list, err := e.client.ActiveContracts(ctx)
		switch {
		case dcapi.IsNotFound(err):
			a.noActiveList()
		case err != nil:
			return nil, false, false, err
		default:
			a.activeList.Store(1)
			jobs, cancelled = a.jobsFromActive(ctx, e, list)
			return jobs, cancelled, true, nil
		}
	}
	members, known := a.fleet.snapshot()
	if !known && len(members) == 0 {
		return nil, false, false, nil
	}
	for cid, m := range members {
		b := e.backends[m.typ]
		if m.paused || b == nil || !b.feat.Health || validContractID(cid) != nil {
			continue
		}
		jobs = append(jobs, healthJob{cid: cid, ext: m.ext, b: b})
	}
	a.setActive(live(members))
	return jobs, false, true, nil
}

// noActiveList records that the server has no GET …/contracts/active (the
// live API), asked again after Timing.BatchRetry.
func (a *Agent) noActiveList() {
	a.activeRetryAt.Store(a.now().Add(a.timing().BatchRetry).UnixNano())
	if a.activeList.Swap(2) != 2 {
		a.log.Info("the API has no active contract list (GET …/contracts/active); health checks and activeContracts come from the backends' instances and reconcile; contracts of backends that cannot list instances are not reconciled")
	}
}

// useActiveList reports whether to ask GET …/contracts/active: unknown or
// known to work, or an hour after a 404 (the server may have gained it).
func (a *Agent) useActiveList() bool {
	if a.activeList.Load() != 2 {
		return true
	}
	return a.now().UnixNano() >= a.activeRetryAt.Load()
}

func (a *Agent) setActive(n int) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	a.active = n
}

// liveStatus reports whether a contract's instance should exist and be running.
func liveStatus(s string) bool {
	return s == dcapi.StatusProvisioned || s == dcapi.StatusActive
}

// jobsFromActive turns the active contract list into health jobs for the
// backends this agent has. It records the active count, says whether any
// listed contract is cancelled (reconcile should run), and pauses or
// resumes the instances of backends that cannot list them (reconcile
// never sees those).
func (a *Agent) jobsFromActive(ctx context.Context, e *env, list []dcapi.ActiveContract) ([]healthJob, bool) {
	var jobs []healthJob
	active, cancelled := 0, false
	for _, c := range list {
		if c.Status == dcapi.StatusCancelled {
			cancelled = true
		}
		b := e.backends[cmp.Or(deref(c.ProvisionerType), e.defType)]
		ext := deref(c.ExternalInstanceID)
		if b != nil && !b.feat.List && ext != "" && validContractID(c.ContractID) == nil {
			switch {
			case c.Status == dcapi.StatusPaused:
				a.pauseInstance(ctx, b, c.ContractID, ext, "contract paused")
			case liveStatus(c.Status):
				_ = a.resumeInstance(ctx, e, c.ContractID, loopHealth)
			}
		}
		if !liveStatus(c.Status) {
			continue
		}
		active++
		if b == nil || !b.feat.Health || validContractID(c.ContractID) != nil {
			continue
		}
		if ext == "" && b.feat.GetByID {
			hctx, cancel := context.WithTimeout(ctx, a.timing().HealthCheckTime)
			inst, err := b.p.GetInstance(hctx, c.ContractID)
			cancel()
			if err == nil && inst != nil {
				ext = inst.ExternalID
			}
		}
		if ext != "" {
			jobs = append(jobs, healthJob{cid: c.ContractID, ext: ext, b: b})
		}
	}
	a.setActive(active)
	return jobs, cancelled
}

// checkAll health-checks the jobs, healthConcurrency at a time.
func (a *Agent) checkAll(ctx context.Context, jobs []healthJob) []dcapi.HealthCheck {
	results := make([]dcapi.HealthCheck, len(jobs))
	ok := make([]bool, len(jobs))
	a.healthInBatches(ctx, jobs, results, ok)
	sem := make(chan struct{}, healthConcurrency)
	var wg sync.WaitGroup
	for i, j := range jobs {
		if ok[i] {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			results[i], ok[i] = a.checkOne(ctx, j)
			// Progress keeps the loop alive in the watchdog's eyes however
			// many contracts there are.
			a.live.expect(loopHealth, a.timing().HealthCheckTime)
		}()
	}
	wg.Wait()
	out := results[:0]
	for i := range results {
		if ok[i] {
			out = append(out, results[i])
		}
	}
	return out
}

// healthInBatches asks each backend that can observe many instances at once
// (provisioners.HealthBatcher) about all of its jobs with known instance
// ids in one call, and fills in results/ok for those it answered; the
// rest are checked one by one. A failed batch only means one by one.
func (a *Agent) healthInBatches(ctx context.Context, jobs []healthJob, results []dcapi.HealthCheck, ok []bool) {
	byBackend := map[*backend][]int{}
	for i, j := range jobs {
		if _, can := j.b.p.(provisioners.HealthBatcher); can && j.ext != "" {
			byBackend[j.b] = append(byBackend[j.b], i)
		}
	}
	for b, idx := range byBackend {
		ids := make([]string, len(idx))
		pausedBefore := make([]bool, len(idx))
		for k, i := range idx {
			ids[k] = jobs[i].ext
			_, pausedBefore[k] = a.store.Paused(jobs[i].cid)
		}
		a.live.expect(loopHealth, a.timing().HealthCheckTime)
		bctx, cancel := context.WithTimeout(ctx, a.timing().HealthCheckTime)
		got, err := b.p.(provisioners.HealthBatcher).HealthCheckMany(bctx, ids)
		cancel()
		if err != nil {
			a.log.Debug("batch health check failed; checking one by one", "provisioner", b.p.Type(), "err", err)
			continue
		}
		for k, i := range idx {
			// An instance stopped for a pause when the batch began, or
			// meanwhile, is left to checkOne (which drops what a pause
			// explains).
			if _, paused := a.store.Paused(jobs[i].cid); paused || pausedBefore[k] {
				continue
			}
			if h, found := got[ids[k]]; found {
				results[i], ok[i] = a.healthRecord(jobs[i].cid, h, nil), true
			}
		}
	}
}

// healthDetails is the JSON put in a health check's details.
type healthDetails struct {
	UptimeSeconds int64  `json:"uptime_seconds,omitempty"`
	Reason        string `json:"reason,omitempty"`
}

func (a *Agent) checkOne(parent context.Context, j healthJob) (dcapi.HealthCheck, bool) {
	ctx, cancel := context.WithTimeout(parent, a.timing().HealthCheckTime)
	defer cancel()
	_, pausedBefore := a.store.Paused(j.cid)
	h, err := j.b.p.HealthCheck(ctx, j.ext)
	if parent.Err() != nil {
		return dcapi.HealthCheck{}, false // stopping: no verdict
	}
	// Stopped on purpose when the check began (it may be starting again
	// now: the record goes once it runs) or meanwhile: not unhealthy.
	if _, paused := a.store.Paused(j.cid); paused || pausedBefore {
		return dcapi.HealthCheck{}, false
	}
	return a.healthRecord(j.cid, h, err), true
}

// healthRecord is the check reported for what the backend said (err: it
// could not tell).
func (a *Agent) healthRecord(cid string, h provisioners.Health, err error) dcapi.HealthCheck {
	hc := dcapi.HealthCheck{ContractID: cid, CheckedAt: a.now().UnixNano(), Status: h.Status, LatencyMs: h.LatencyMs}
	det := healthDetails{UptimeSeconds: h.UptimeSeconds, Reason: h.Reason}
	if err != nil {
		// The backend could not tell: that is "unknown", not "unhealthy".
		hc.Status = provisioners.Unknown
		det = healthDetails{Reason: "health check failed: " + truncate(provisioners.TenantMessage(err), 300)}
	}
	switch hc.Status {
	case provisioners.Healthy, provisioners.Unhealthy, provisioners.Unknown:
	default:
		hc.Status = provisioners.Unknown
	}
	if det != (healthDetails{}) {
		b, _ := json.Marshal(det)
		hc.Details = string(b)
	}
	return hc
}

// trimHealthQueue drops the oldest queued health batches beyond the cap.
func (a *Agent) trimHealthQueue() {
	var health []Report
	for _, r := range a.store.Reports() {
		if r.Kind == ReportHealth {
			health = append(health, r)
		}
	}
	for i := 0; i+maxQueuedHealth <= len(health); i++ {
		_ = a.store.DeleteReport(health[i].Seq)
		a.log.Warn("dropping old queued health checks (the API has been unreachable for long)", "checks", len(health[i].Checks))
	}
}
