package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// work is one contract the agent is working on, from dispatch until its
// report is accepted by the API.
type work struct {
	cid     string
	c       dcapi.PendingContract
	typ     string
	resumed bool
	attempt int // previous attempts (from the journal)

	mu      sync.Mutex
	step    string
	detail  string
	started time.Time
	updated time.Time
}

func (w *work) set(step, detail string, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.step, w.detail, w.updated = step, detail, now
}

func (w *work) snapshot() status.Work {
	w.mu.Lock()
	defer w.mu.Unlock()
	return status.Work{ContractID: w.cid, Provisioner: w.typ, Step: w.step, Detail: w.detail, StartedAt: w.started, UpdatedAt: w.updated, Resumed: w.resumed}
}

// Outcomes of work on a contract, for cool-downs.
const (
	outcomeDone    = "done"    // reported (provisioned or failed for good)
	outcomeRetry   = "retry"   // failed, may succeed later
	outcomeBusy    = "busy"    // another agent holds the lock
	outcomeRefused = "refused" // the API refused to start it (cancelled, not ours)
	outcomeStopped = "stopped" // the agent is stopping or waits for a human
)

// claim registers work on a contract; false if the agent already works on it.
func (a *Agent) claim(c dcapi.PendingContract, typ string, step string, resumed bool, attempt int) (*work, bool) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	if _, busy := a.work[c.ContractID]; busy {
		return nil, false
	}
	now := a.now()
	w := &work{cid: c.ContractID, c: c, typ: typ, resumed: resumed, attempt: attempt, step: step, started: now, updated: now}
	a.work[c.ContractID] = w
	return w, true
}

// finish ends work on a contract.
func (a *Agent) finish(cid, outcome string) {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	delete(a.work, cid)
	now := a.now()
	a.doneAt[cid] = now
	t := a.timing()
	switch outcome {
	case outcomeDone:
		delete(a.cooldown, cid)
	case outcomeRetry, outcomeRefused:
		cd := a.cooldown[cid]
		cd.failures++
		wait := t.RetryCooldown
		for i := 1; i < cd.failures && wait < t.RetryCooldownMax; i++ {
			wait *= 2
		}
		cd.until = now.Add(min(wait, t.RetryCooldownMax))
		a.cooldown[cid] = cd
	case outcomeBusy, outcomeStopped:
		cd := a.cooldown[cid]
		cd.until = now.Add(t.RetryCooldown)
		a.cooldown[cid] = cd
	}
	defer a.progressed()
}

func (a *Agent) runningWorkers() int {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	n := 0
	for _, w := range a.work {
		if w.snapshot().Step != status.StepReporting {
			n++
		}
	}
	return n
}

// startWork runs provision for w in its own goroutine.
func (a *Agent) startWork(w *work) {
	a.workers.Add(1)
	go func() {
		defer a.workers.Done()
		a.provision(w)
	}()
}

// provision takes one contract through lock → "provisioning" → backend →
// sealed report in the outbox. Every step is journaled before the next
// begins, so a crash at any point is resumed by the next start (see
// resumeFromDisk); the backend's deterministic naming makes a repeated
// Provision reuse the instance instead of making a second one.
func (a *Agent) provision(w *work) {
	outcome := outcomeStopped
	handedOff := false
	defer func() {
		if !handedOff {
			a.finish(w.cid, outcome)
		}
	}()
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	b := e.backends[w.typ]
	if b == nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", w.cid, fmt.Sprintf("provisioner %q is no longer configured; the contract waits", w.typ))
		return
	}
	// Slots: per backend first, so a backend at its limit never holds a global slot.
	pl := a.limiterFor(w.typ)
	if pl.Acquire(a.admitCtx) != nil {
		return
	}
	defer pl.Release()
	if a.global.Acquire(a.admitCtx) != nil {
		return
	}
	defer a.global.Release()

	ctx := a.workCtx
	started := a.now()
	cid := w.cid
	w.set(status.StepLocking, "", started)

	held, lockSupported, err := a.lockContract(ctx, e, cid)
	switch {
	case ctx.Err() != nil:
		return
	case err != nil:
		outcome = a.apiFailure(w, "lock", err)
		return
	case !held:
		a.obs.emit(status.EventNotice, status.LevelInfo, "", cid, "contract is locked by another agent; leaving it")
		if w.resumed {
			_ = a.store.DeleteJournal(cid)
		}
		outcome = outcomeBusy
		return
	}
	a.crash(CrashLocked)
	unlock := func() {
		if lockSupported {
			a.unlock(e, cid)
		}
	}

	entry := JournalEntry{ContractID: cid, Contract: w.c, Provisioner: w.typ, Step: jLocked, Attempt: w.attempt + 1, StartedAt: started, UpdatedAt: started}
	if err := a.store.PutJournal(entry); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot write the journal; not starting the contract", "err", err)
		unlock()
		outcome = outcomeRetry
		return
	}
	a.crash(CrashJournaled)
	if lockSupported {
		renewCtx, stopRenew := context.WithCancel(ctx)
		defer stopRenew()
		go a.renewLock(renewCtx, e, cid)
	}

	w.set(status.StepStarting, "", a.now())
	err = a.callAPI(ctx, "report provisioning", cid, func(ctx context.Context) error {
		return e.client.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning})
	})
	switch {
	case ctx.Err() != nil:
		return
	case err != nil && (dcapi.IsAuth(err) || dcapi.IsRetryable(err)):
		outcome = a.apiFailure(w, "report provisioning", err)
		return
	case err != nil:
		// Cancelled, provisioned meanwhile, or not ours: the API has the last
		// word. Nothing is removed here: reconcile asks the API what to keep.
		a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "the API refused to start provisioning; leaving the contract", "err", err)
		_ = a.store.DeleteJournal(cid)
		unlock()
		outcome = outcomeRefused
		return
	}
	a.crash(CrashStarted)
	a.progressed()

	req, sealTo, reqErr := a.buildRequest(w, b)
	entry.Step, entry.UpdatedAt = jProvisioning, a.now()
	if err := a.store.PutJournal(entry); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot write the journal; not calling the provisioner", "err", err)
		unlock()
		outcome = outcomeRetry
		return
	}
	w.set(status.StepProvisioning, "", a.now())
	var inst provisioners.Instance
	perr := reqErr
	if reqErr == nil {
		a.crash(CrashProvisionerCalled)
		inst, perr = b.p.Provision(ctx, req)
		a.crash(CrashProvisionerReturned)
	}
	if perr != nil && ctx.Err() != nil {
		// Hard stop: the journal keeps the contract for the next start.
		return
	}
	if b.feat.Manual {
		outcome = a.manualDone(w, perr, unlock)
		return
	}

	var update dcapi.ProvisioningUpdate
	var result string
	if perr != nil {
		retry := provisioners.RetryPossible(perr)
		if reqErr == nil {
			a.removeLeftover(ctx, b, cid)
		}
		update = dcapi.FailedUpdate(publicError(perr), retry)
		result = status.EventProvisionFailed
		a.obs.emit(status.EventProvisionFailed, status.LevelWarn, "", cid, "provisioning failed: "+publicError(perr), "retry_possible", retry, "provisioner", w.typ)
		a.obs.update(func(o *observer) { o.counts.Failed++ })
	} else {
		details := a.instanceDetails(cid, &inst, sealTo)
		u, err := dcapi.ProvisionedUpdate(details)
		if err != nil {
			a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot encode instance details", "err", err)
			unlock()
			outcome = outcomeRetry
			return
		}
		update = u
		result = status.EventProvisioned
		a.obs.emit(status.EventProvisioned, status.LevelInfo, "", cid, fmt.Sprintf("provisioned %s (%s) in %s", details.ExternalID, details.IPAddress, a.now().Sub(started).Round(time.Millisecond)),
			"provisioner", w.typ, "password_sealed", details.RootPassword != "")
		a.obs.update(func(o *observer) { o.counts.Provisioned++ })
		if a.metrics != nil {
			a.metrics.provisionSeconds.WithLabelValues(w.typ).Observe(a.now().Sub(started).Seconds())
		}
	}
	if _, err := a.store.AddReport(Report{Kind: ReportProvisioning, ContractID: cid, Update: &update, Unlock: lockSupported, CreatedAt: a.now()}); err != nil {
		// The journal still holds the contract: the next start redoes it.
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot queue the report; it is redone at the next start", "err", err)
		return
	}
	a.crash(CrashReportQueued)
	if err := a.store.DeleteJournal(cid); err != nil {
		a.log.Warn("clear journal", "contract", cid, "err", err)
	}
	a.crash(CrashJournalCleared)
	_ = result
	handedOff = true
	w.set(status.StepReporting, "", a.now())
	a.wakeOutbox()
}

// apiFailure handles an API error that stops work on a contract for now.
// The journal entry (if any) stays: the work resumes at the next start or
// when the contract is listed again.
func (a *Agent) apiFailure(w *work, what string, err error) string {
	if dcapi.IsAuth(err) {
		a.obs.setProblem("provision", "the API refused to "+what+": "+err.Error(), dcapi.AuthHint(err))
		a.obs.emit(status.EventNotice, status.LevelError, "", w.cid, what+" refused: "+err.Error()+"; "+dcapi.AuthHint(err))
		return outcomeStopped
	}
	a.obs.emit(status.EventNotice, status.LevelWarn, "", w.cid, what+" failed; will retry", "err", err)
	return outcomeRetry
}

// manualDone finishes a contract of a manual backend: the provider was
// told and completes it by hand; the agent reports nothing, ever.
//
// When the notification failed the lock is kept, not released: a server
// takes a released lock on a provisioning contract as a hand-off and never
// offers it again, so nobody would ever be told. A lock left to expire
// (it is no longer renewed) puts the contract back on offer, and the
// notification is retried then.
func (a *Agent) manualDone(w *work, err error, unlock func()) string {
	if err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", w.cid, "could not notify the provider; retrying when the contract's lock expires", "err", err)
		_ = a.store.DeleteJournal(w.cid)
		return outcomeRetry
	}
	defer unlock()
	if err := a.store.MarkManual(w.cid, a.now()); err != nil {
		a.log.Warn("remember manual notification", "contract", w.cid, "err", err)
	}
	_ = a.store.DeleteJournal(w.cid)
	a.obs.emit(status.EventNotice, status.LevelInfo, "", w.cid, "provider notified; the contract is completed by hand on the dashboard")
	return outcomeDone
}

// lockContract takes the contract's provisioning lock. Servers without
// locks (404) are fine: supported is then false.
func (a *Agent) lockContract(ctx context.Context, e *env, cid string) (held, supported bool, err error) {
	var res dcapi.LockResult
	err = a.callAPI(ctx, "lock", cid, func(ctx context.Context) error {
		var err error
		res, err = e.client.LockContract(ctx, cid)
		return err
	})
	if dcapi.IsNotFound(err) {
		return true, false, nil
	}
	if err != nil {
		return false, true, err
	}
	return res.Acquired, true, nil
}

func (a *Agent) renewLock(ctx context.Context, e *env, cid string) {
	for {
		if a.sleep(ctx, a.timing().LockRenew) != nil {
			return
		}
		res, err := e.client.LockContract(ctx, cid)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			a.log.Debug("renew lock failed", "contract", cid, "err", err)
		case !res.Acquired:
			a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "lost the contract's lock to another agent while provisioning")
		}
	}
}

// unlock releases a lock, best effort: it expires by itself anyway.
func (a *Agent) unlock(e *env, cid string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.client.UnlockContract(ctx, cid); err != nil && !dcapi.IsNotFound(err) {
		a.log.Debug("unlock failed (the lock expires by itself)", "contract", cid, "err", err)
	}
}

// callAPI runs fn, retrying retryable errors with backoff until it
// succeeds, fails for good, or ctx ends.
func (a *Agent) callAPI(ctx context.Context, what, cid string, fn func(context.Context) error) error {
	bo := a.newBackoff()
	for {
		err := fn(ctx)
		if err == nil || !dcapi.IsRetryable(err) || ctx.Err() != nil {
			return err
		}
		wait := bo.Next(retryAfter(err))
		if bo.Failures() <= 3 || bo.Failures()%10 == 0 {
			a.log.Warn(what+" failed, retrying", "contract", cid, "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if a.sleep(ctx, wait) != nil {
			return ctx.Err()
		}
	}
}

func retryAfter(err error) time.Duration {
	var e *dcapi.Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// buildRequest turns a contract into a provisioner request for backend b:
// sizes parsed, instance_config (only the keys b's policy lets a contract
// set) merged over the offering's provisioner_config, and the key the root
// password will be sealed to (nil: no password at all).
func (a *Agent) buildRequest(w *work, b *backend) (provisioners.Request, ed25519.PublicKey, error) {
	c := w.c
	req := provisioners.Request{
		ContractID: c.ContractID, OfferingID: c.OfferingID, RequesterSSHPubkey: c.RequesterSSHPubkey,
		PostProvisionScript: deref(c.PostProvisionScript), ProductType: deref(c.ProductType), DatacenterCity: deref(c.DatacenterCity),
		Progress: func(step string) {
			w.set(status.StepProvisioning, step, a.now())
			a.obs.emit(status.EventProvisionStep, status.LevelInfo, "", w.cid, step)
		},
	}
	if c.CPUCores != nil {
		if *c.CPUCores < 0 || *c.CPUCores > 4096 {
			return req, nil, provisioners.Permanent(fmt.Errorf("contract cpu_cores %d is out of range", *c.CPUCores))
		}
		req.CPUCores = *c.CPUCores
	}
	if s := strings.TrimSpace(deref(c.MemoryAmount)); s != "" {
		mb, err := dcapi.ParseSizeMB(s)
		if err != nil {
			return req, nil, provisioners.Permanent(fmt.Errorf("offering memory_amount: %w", err))
		}
		req.MemoryMB = mb
	}
	if s := strings.TrimSpace(deref(c.StorageCapacity)); s != "" {
		gb, err := dcapi.ParseSizeGB(s)
		if err != nil {
			return req, nil, provisioners.Permanent(fmt.Errorf("offering storage_capacity: %w", err))
		}
		req.StorageGB = gb
	}
	cfg, err := provisioners.MergeConfig(deref(c.ProvisionerConfig), deref(c.InstanceConfig), b.policy)
	if err != nil {
		return req, nil, err
	}
	req.Config = cfg
	pub, ok, err := identity.SealRecipient(c.RequesterPubkey, c.RequesterSSHPubkey)
	if err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", c.ContractID, "requester key unusable for sealing; no root password will be set (SSH key access only)", "err", err)
		ok = false
	}
	req.WantPassword = ok
	if !ok {
		pub = nil
	}
	return req, pub, nil
}

// instanceDetails builds the report of a provisioned instance. The root
// password leaves this function sealed for the requester or not at all;
// the plaintext is dropped from inst.
func (a *Agent) instanceDetails(cid string, inst *provisioners.Instance, sealTo ed25519.PublicKey) dcapi.InstanceDetails {
	d := dcapi.InstanceDetails{ExternalID: inst.ExternalID, IPAddress: inst.IPAddress, IPv6Address: inst.IPv6Address, SSHPort: inst.SSHPort}
	if pw := inst.RootPassword; pw != "" {
		inst.RootPassword = ""
		switch {
		case sealTo == nil:
			a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "the provisioner set a root password although there is no requester key to seal it to; it is not reported (SSH key access only)")
		default:
			sealed, err := identity.Seal([]byte(pw), sealTo, cid)
			if err != nil {
				a.obs.emit(status.EventNotice, status.LevelError, "", cid, "sealing the root password failed; it is not reported", "err", err)
			} else {
				d.RootPassword = sealed
			}
		}
	}
	if len(inst.AdditionalDetails) > 0 {
		if b, err := json.Marshal(inst.AdditionalDetails); err == nil {
			d.AdditionalDetails = b
		}
	}
	return d
}

// removeLeftover removes what a failed attempt may have left behind, in
// case the backend did not clean up after itself.
func (a *Agent) removeLeftover(ctx context.Context, b *backend, cid string) {
	if !b.feat.GetByID || !b.feat.Terminate {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, a.timing().TerminateTime)
	defer cancel()
	inst, err := b.p.GetInstance(ctx, cid)
	if err != nil || inst == nil || inst.ExternalID == "" {
		return
	}
	if err := b.p.Terminate(ctx, inst.ExternalID); err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "could not remove the failed attempt's instance; reconcile retries", "external_id", inst.ExternalID, "err", err)
		return
	}
	a.obs.emit(status.EventTerminated, status.LevelInfo, "", cid, "removed the failed attempt's instance "+inst.ExternalID)
}

// publicError is the failure text sent to the API (the requester sees it):
// one line, bounded.
func publicError(err error) string {
	s := strings.Join(strings.Fields(err.Error()), " ")
	return truncate(s, 500)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// resumeFromDisk picks up what a previous run left: reports to deliver
// and contracts in flight.
func (a *Agent) resumeFromDisk() {
	reported := map[string]bool{}
	for _, r := range a.store.Reports() {
		if r.Kind != ReportProvisioning {
			continue
		}
		reported[r.ContractID] = true
		if w, ok := a.claim(dcapi.PendingContract{ContractID: r.ContractID}, "", status.StepReporting, true, 0); ok {
			_ = w
		}
	}
	entries, bad, err := a.store.Journal()
	if err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, "", "", "cannot read the journal", "err", err)
	}
	for _, b := range bad {
		a.obs.emit(status.EventNotice, status.LevelError, "", "", "unreadable journal entry moved aside: "+b)
	}
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	for _, j := range entries {
		cid := j.ContractID
		if reported[cid] || a.store.ManualNotified(cid) {
			// The outbox (or the provider) has the final word on it.
			_ = a.store.DeleteJournal(cid)
			continue
		}
		if e.backends[j.Provisioner] == nil {
			a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, fmt.Sprintf("journal names provisioner %q, which is not configured; the contract waits", j.Provisioner))
			continue
		}
		w, ok := a.claim(j.Contract, j.Provisioner, status.StepQueued, true, j.Attempt)
		if !ok {
			continue
		}
		a.obs.emit(status.EventContractReceived, status.LevelInfo, "", cid, fmt.Sprintf("resuming contract interrupted at step %q", j.Step))
		a.startWork(w)
	}
	if n := len(a.store.Reports()); n > 0 {
		a.obs.emit(status.EventNotice, status.LevelInfo, "", "", fmt.Sprintf("%d queued report(s) from the previous run will be delivered", n))
	}
}
