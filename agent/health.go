package agent

import (
	"context"
	"encoding/json"
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
func (a *Agent) healthLoop(ctx context.Context) error {
	return a.repeat(ctx, loopHealth, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		e := a.acquireEnv()
		defer a.releaseEnv(e)
		a.live.expect(loopHealth, 2*e.reqTimeout)
		list, err := e.client.ActiveContracts(ctx)
		if err != nil {
			return 0, nil, err
		}
		checks, cancelled := a.checkAll(ctx, e, list)
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
		return a.timing().HealthInterval, a.healthWake, nil
	})
}

// liveStatus reports whether a contract's instance should exist and be running.
func liveStatus(s string) bool {
	return s == dcapi.StatusProvisioned || s == dcapi.StatusActive
}

// checkAll health-checks the live contracts of backends this agent has.
// It also records the active count and says whether any listed contract
// is cancelled (reconcile should run).
func (a *Agent) checkAll(ctx context.Context, e *env, list []dcapi.ActiveContract) ([]dcapi.HealthCheck, bool) {
	var jobs []healthJob
	active, cancelled := 0, false
	for _, c := range list {
		if c.Status == dcapi.StatusCancelled {
			cancelled = true
		}
		if !liveStatus(c.Status) {
			continue
		}
		active++
		typ := deref(c.ProvisionerType)
		if typ == "" {
			typ = e.defType
		}
		b := e.backends[typ]
		if b == nil || !b.feat.Health || validContractID(c.ContractID) != nil {
			continue
		}
		jobs = append(jobs, healthJob{c, b})
	}
	a.workMu.Lock()
	a.active = active
	a.workMu.Unlock()

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
			results[i], ok[i] = a.checkOne(ctx, j.c, j.b)
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
	return out, cancelled
}

// healthJob is one contract to health-check, on backend b.
type healthJob struct {
	c dcapi.ActiveContract
	b *backend
}

// healthInBatches asks each backend that can observe many instances at once
// (provisioners.HealthBatcher) about all of its jobs with known instance
// ids in one call, and fills in results/ok for those it answered; the
// rest are checked one by one. A failed batch only means one by one.
func (a *Agent) healthInBatches(ctx context.Context, jobs []healthJob, results []dcapi.HealthCheck, ok []bool) {
	byBackend := map[*backend][]int{}
	for i, j := range jobs {
		if _, can := j.b.p.(provisioners.HealthBatcher); can && deref(j.c.ExternalInstanceID) != "" {
			byBackend[j.b] = append(byBackend[j.b], i)
		}
	}
	for b, idx := range byBackend {
		ids := make([]string, len(idx))
		for k, i := range idx {
			ids[k] = deref(jobs[i].c.ExternalInstanceID)
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
			if h, found := got[ids[k]]; found {
				results[i], ok[i] = a.healthRecord(jobs[i].c.ContractID, h, nil), true
			}
		}
	}
}

// healthDetails is the JSON put in a health check's details.
type healthDetails struct {
	UptimeSeconds int64  `json:"uptime_seconds,omitempty"`
	Reason        string `json:"reason,omitempty"`
}

func (a *Agent) checkOne(parent context.Context, c dcapi.ActiveContract, b *backend) (dcapi.HealthCheck, bool) {
	ext := deref(c.ExternalInstanceID)
	ctx, cancel := context.WithTimeout(parent, a.timing().HealthCheckTime)
	defer cancel()
	if ext == "" && b.feat.GetByID {
		inst, err := b.p.GetInstance(ctx, c.ContractID)
		if err == nil && inst != nil {
			ext = inst.ExternalID
		}
	}
	if ext == "" {
		return dcapi.HealthCheck{}, false
	}
	h, err := b.p.HealthCheck(ctx, ext)
	if parent.Err() != nil {
		return dcapi.HealthCheck{}, false // stopping: no verdict
	}
	return a.healthRecord(c.ContractID, h, err), true
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
