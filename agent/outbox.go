package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// outboxLoop delivers queued reports in order. A report leaves the outbox
// only when the API accepted it or refused it for good; network and server
// errors keep it at the head of the queue, retried with backoff.
func (a *Agent) outboxLoop(ctx context.Context) error {
	return a.repeat(ctx, loopOutbox, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		reports := a.store.Reports()
		if len(reports) == 0 {
			return untilWoken, a.outboxWake, nil
		}
		next := pickReport(reports)
		e := a.acquireEnv()
		defer a.releaseEnv(e)
		a.live.expect(loopOutbox, 4*e.reqTimeout)
		err := a.deliver(ctx, e, next)
		if err != nil && next.Kind == ReportHealth {
			// A provisioning report queued meanwhile must not wait
			// behind a health endpoint that keeps failing.
			return 0, a.outboxWake, err
		}
		return 0, nil, err
	})
}

// pickReport chooses the next report: the oldest provisioning or
// terminated report first (a requester waits for those), health after.
func pickReport(reports []Report) Report {
	for _, r := range reports {
		if r.Kind != ReportHealth {
			return r
		}
	}
	return reports[0]
}

// deliver sends one report. nil means it is gone from the outbox
// (accepted or refused for good); an error means retry it.
func (a *Agent) deliver(ctx context.Context, e *env, r Report) error {
	switch r.Kind {
	case ReportProvisioning:
		err := e.client.UpdateProvisioning(ctx, r.ContractID, *r.Update)
		if err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err) || ctx.Err() != nil) {
			return err
		}
		if err != nil && r.Plaintext {
			// A server that does not encrypt passwords itself (dc-api's
			// default profile refuses a plaintext one): seal it and send
			// the report again.
			return a.resealReport(r, err)
		}
		if err == nil {
			a.crash(CrashReportSent)
		}
		if derr := a.store.DeleteReport(r.Seq); derr != nil {
			return derr
		}
		if err == nil {
			a.crash(CrashReportCleared)
		}
		o := outcomeDone
		if r.result() == ResultFailedRetryable {
			o = outcomeRetry
		}
		if l := a.leaseOf(r.ContractID); l != nil {
			l.close(o, release)
		} else {
			// Every queued provisioning report has a lease (provision hands
			// it over, resumeFromDisk opens one); defensive only.
			if r.Unlock {
				a.unlock(r.ContractID)
			}
			a.finish(r.ContractID, o)
		}
		if err != nil {
			a.obs.emit(status.EventReportDropped, status.LevelWarn, loopOutbox, r.ContractID, "the API refused the "+r.Update.Status+" report; dropped", "err", err)
			// The tenant never gets this VM's gateway (another agent took
			// the contract, or it ended): its ports, route and DNS name
			// are freed now, not kept while the contract lives.
			a.releaseGateway(ctx, r.ContractID, loopOutbox)
			return nil
		}
		a.obs.emit(status.EventReportSent, status.LevelInfo, loopOutbox, r.ContractID, "reported "+r.Update.Status)
		if r.Update.Status == dcapi.StatusProvisioned {
			if r.ExternalID != "" && r.Provisioner != "" {
				a.fleet.add(r.ContractID, member{ext: r.ExternalID, typ: r.Provisioner, added: a.now()})
			}
			a.wakeHealth()
		}
		return nil

	case ReportTerminated:
		err := e.client.MarkTerminated(ctx, r.ContractID)
		if err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err) || ctx.Err() != nil) {
			return err
		}
		if derr := a.store.DeleteReport(r.Seq); derr != nil {
			return derr
		}
		switch {
		case err != nil && r.Reason != "" && !cancelled(r.Reason):
			// The live API records terminations of cancelled contracts
			// only (mark_contract_terminated): say so once, report only
			// those from now on.
			if !a.termOnlyCancelled.Swap(true) {
				a.obs.emit(status.EventNotice, status.LevelInfo, loopOutbox, r.ContractID,
					"the API records the termination of cancelled contracts only ("+r.Reason+" refused); only cancellations are reported from now on", "err", err)
			}
			return nil
		case err != nil:
			a.obs.emit(status.EventReportDropped, status.LevelWarn, loopOutbox, r.ContractID, "the API refused the terminated report; dropped", "err", err)
			return nil
		}
		a.obs.emit(status.EventReportSent, status.LevelInfo, loopOutbox, r.ContractID, "reported terminated")
		return nil

	case ReportHealth:
		return a.deliverHealth(ctx, e, r)
	}
	// Unknown kinds never get into the store (validate); drop defensively.
	return a.store.DeleteReport(r.Seq)
}

// deliverHealth sends a batch of health checks: in one request per 1000
// where the server supports it, else one request per contract. Partial
// progress is saved so a retry never sends a check twice.
func (a *Agent) deliverHealth(ctx context.Context, e *env, r Report) error {
	sent := 0
	defer func() {
		if sent > 0 {
			a.obs.update(func(o *observer) { o.counts.HealthChecks += sent })
		}
	}()
	if a.useBatch() {
		for len(r.Checks) > 0 {
			n := min(len(r.Checks), dcapi.MaxHealthBatch)
			_, err := e.client.ReportHealthBatch(ctx, r.Checks[:n])
			if dcapi.IsNotFound(err) {
				a.batchHealth.Store(2)
				a.batchRetryAt.Store(a.now().Add(a.timing().BatchRetry).UnixNano())
				a.log.Info("the API has no batch health endpoint; reporting health per contract")
				break
			}
			if err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err) || ctx.Err() != nil) {
				return err
			}
			if err != nil {
				a.obs.emit(status.EventReportDropped, status.LevelWarn, loopOutbox, "", fmt.Sprintf("the API refused %d health checks; dropped", n), "err", err)
			} else {
				a.batchHealth.Store(1)
				sent += n
			}
			r.Checks = r.Checks[n:]
			if len(r.Checks) > 0 {
				if err := a.store.ReplaceReport(r); err != nil {
					return err
				}
			}
		}
		if len(r.Checks) == 0 {
			a.obs.emit(status.EventHealthReported, status.LevelInfo, loopOutbox, "", plural(sent, "health check"))
			return a.store.DeleteReport(r.Seq)
		}
	}
	// One request per contract (the live API: POST /contracts/{cid}/health
	// only, api/src/openapi/agents.rs), paced to half the live API's
	// per-IP write limit (60 a minute, api/src/rate_limit.rs) and a few
	// per round, so a provisioning report queued meanwhile goes first.
	for i, c := range r.Checks {
		if i == healthPerRound {
			r.Checks = r.Checks[i:]
			if sent > 0 {
				a.obs.emit(status.EventHealthReported, status.LevelInfo, loopOutbox, "", plural(sent, "health check"))
			}
			return a.store.ReplaceReport(r)
		}
		if err := a.healthPace.Wait(ctx); err != nil {
			return err
		}
		err := e.client.ReportHealth(ctx, c.ContractID, c)
		if err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err) || ctx.Err() != nil) {
			r.Checks = r.Checks[i:]
			if rerr := a.store.ReplaceReport(r); rerr != nil {
				return rerr
			}
			return err
		}
		if err != nil {
			a.log.Debug("health check refused; dropped", "contract", c.ContractID, "err", err)
			continue
		}
		sent++
	}
	if sent > 0 {
		a.obs.emit(status.EventHealthReported, status.LevelInfo, loopOutbox, "", plural(sent, "health check"))
	}
	return a.store.DeleteReport(r.Seq)
}

// healthPerRound is how many health checks one outbox round sends one by
// one before it looks for other reports.
const healthPerRound = 10

// useBatch reports whether to try the batch endpoint.
func (a *Agent) useBatch() bool {
	if a.batchHealth.Load() != 2 {
		return true
	}
	return a.now().UnixNano() >= a.batchRetryAt.Load()
}

// plural renders "reported 1 health check" / "reported 3 health checks".
func plural(n int, what string) string {
	if n == 1 {
		return fmt.Sprintf("reported 1 %s", what)
	}
	return fmt.Sprintf("reported %d %ss", n, what)
}
