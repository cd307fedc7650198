package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/safeurl"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// problemProvision is the key of the problem a refused lock or start sets;
// the next lock or start the API accepts clears it.
const problemProvision = "provision"

// runCtxs are the contexts of one Run, handed down (never stored): admit
// ends at the stop request (no new work starts), work at a hard stop or
// when the shutdown grace runs out (in-flight provisions stop), loops last
// (the loops, the outbox and the lock renewals).
type runCtxs struct{ admit, work, loops context.Context }

func (a *Agent) runningWorkers() int {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	n := 0
	for _, l := range a.leases {
		if l.snapshot().Step != status.StepReporting {
			n++
		}
	}
	return n
}

// startWork runs provision for l in its own goroutine.
func (a *Agent) startWork(l *lease, rc runCtxs) {
	a.workers.Add(1)
	go func() {
		defer a.workers.Done()
		a.provision(l, rc)
	}()
}

// provision takes one contract through lock → "provisioning" → backend →
// sealed report in the outbox, then hands the lease to the outbox, which
// closes it once the API accepted the report. Every step is journaled
// before the next begins, so a crash at any point is resumed by the next
// start (see resumeFromDisk); the backend's deterministic naming makes a
// repeated Provision reuse the instance instead of making a second one.
func (a *Agent) provision(l *lease, rc runCtxs) {
	o, rel := outcomeStopped, lapse
	handedOff := false
	ctx, endWork := l.workCtx(rc.work)
	defer endWork()
	defer func() {
		if handedOff {
			return
		}
		if provisioners.Abandoned(ctx) {
			// Another agent may hold the lock now: what this one made is
			// that agent's to adopt or replace, and the journal is not
			// resumed at the next start.
			a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, "stopped working on the contract: "+context.Cause(ctx).Error())
			// A gateway assigned on this host is no use to the agent that
			// takes over (it assigns its own): free it, the VM stays.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			a.releaseGateway(rctx, l.cid, "")
			cancel()
			_ = a.store.DeleteJournal(l.cid)
			o, rel = outcomeBusy, lapse
		}
		l.close(o, rel)
	}()
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	b := e.backends[l.typ]
	if b == nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, fmt.Sprintf("provisioner %q is no longer configured; the contract waits", l.typ))
		return
	}
	// Slots: per backend first, so a backend at its limit never holds a global slot.
	pl := a.limiterFor(l.typ)
	if pl.Acquire(rc.admit) != nil {
		return
	}
	defer pl.Release()
	if a.global.Acquire(rc.admit) != nil {
		return
	}
	defer a.global.Release()

	started := a.now()
	cid := l.cid
	l.set(status.StepLocking, "")

	held, err := l.acquire(ctx, rc.loops, e)
	switch {
	case ctx.Err() != nil:
		return
	case err != nil:
		o = a.apiFailure(l, "lock", err)
		return
	case !held:
		a.obs.emit(status.EventNotice, status.LevelInfo, "", cid, "contract is locked by another agent; leaving it")
		if l.resumed {
			_ = a.store.DeleteJournal(cid)
		}
		o = outcomeBusy
		return
	}
	a.crash(CrashLocked)

	first := started
	if !l.since.IsZero() {
		first = l.since // resumed: the retry budget counts from the first attempt
	}
	entry := JournalEntry{ContractID: cid, Contract: l.c, Provisioner: l.typ, Step: jLocked, Attempt: l.attempt + 1, StartedAt: first, UpdatedAt: started}
	if err := a.store.PutJournal(entry); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot write the journal; not starting the contract", "err", err)
		o, rel = outcomeRetry, release
		return
	}
	a.crash(CrashJournaled)

	l.set(status.StepStarting, "")
	err = a.callAPI(ctx, "report provisioning", cid, func(ctx context.Context) error {
		return e.client.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning})
	})
	switch {
	case ctx.Err() != nil:
		return
	case err != nil && (dcapi.IsAuth(err) || dcapi.IsRetryable(err)):
		o = a.apiFailure(l, "report provisioning", err)
		return
	case alreadyStarted(err):
		// The live API refuses a second "provisioning" (ContractStatus::
		// can_transition_to, common/src/contract_status.rs): it was
		// accepted before, by this agent's earlier run (the lock is ours).
		a.obs.emit(status.EventNotice, status.LevelInfo, "", cid, "the API already has the contract as provisioning (started before a restart); carrying on")
	case err != nil:
		// Cancelled, provisioned meanwhile, or not ours: the API has the last
		// word. Nothing is removed here: reconcile asks the API what to keep.
		a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "the API refused to start provisioning; leaving the contract", "err", err)
		_ = a.store.DeleteJournal(cid)
		o, rel = outcomeRefused, release
		return
	}
	a.obs.clearProblem(problemProvision)
	a.crash(CrashStarted)
	a.progressed()

	req, cred, reqErr := a.buildRequest(l, b, e)
	entry.Step, entry.UpdatedAt, entry.Password = jProvisioning, a.now(), cred.mode()
	if err := a.store.PutJournal(entry); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot write the journal; not calling the provisioner", "err", err)
		o, rel = outcomeRetry, release
		return
	}
	l.set(status.StepProvisioning, "")
	var inst provisioners.Instance
	perr := reqErr
	if reqErr == nil {
		if err := a.resumeInstance(ctx, e, cid, ""); err != nil {
			a.log.Warn("the contract was paused and is offered again; starting its stopped instance failed, provisioning it again", "contract", cid, "err", err)
		}
		inst, perr = a.callProvisioner(ctx, l, b, req, &entry)
	}
	if perr != nil && ctx.Err() != nil {
		// Hard stop: the journal keeps the contract for the next start.
		return
	}
	if b.feat.Manual {
		o, rel = a.manualDone(l, perr)
		return
	}
	// The gateway, while the journal still holds the contract: a crash
	// from here to the queued report resumes the provision, and Assign
	// completes the same slug and ports.
	var gwd *gateway.Details
	if perr == nil {
		gwd, perr = a.assignGateway(ctx, cid, inst.IPAddress)
		if perr != nil && ctx.Err() != nil {
			return
		}
		if gwd != nil {
			a.crash(CrashGatewayAssigned)
		}
	}

	report := Report{Kind: ReportProvisioning, ContractID: cid, Unlock: l.lockStatus() != lockUnsupported, Provisioner: l.typ}
	if perr != nil {
		retry := provisioners.RetryPossible(perr)
		if reqErr == nil {
			// A gateway of this or an earlier attempt goes before the VM.
			a.releaseGateway(ctx, cid, "")
			a.removeLeftover(ctx, b, cid)
		}
		update := dcapi.FailedUpdate(publicError(perr), retry)
		report.Update, report.Result = &update, ResultFailedPermanent
		if retry {
			report.Result = ResultFailedRetryable
		}
		a.obs.emit(status.EventProvisionFailed, status.LevelWarn, "", cid, "provisioning failed: "+strings.Join(strings.Fields(perr.Error()), " "), "retry_possible", retry, "provisioner", l.typ)
		a.obs.update(func(o *observer) { o.counts.Failed++ })
	} else {
		details := a.instanceDetails(cid, &inst, cred)
		withGateway(&details, gwd)
		report.ExternalID = details.ExternalID
		if cred.plain && details.RootPassword != "" {
			report.Plaintext, report.SealFallback = true, l.c.RequesterSSHPubkey
		}
		update, err := dcapi.ProvisionedUpdate(details)
		if err != nil {
			a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot encode instance details", "err", err)
			o, rel = outcomeRetry, release
			return
		}
		report.Update, report.Result = &update, ResultProvisioned
		a.obs.emit(status.EventProvisioned, status.LevelInfo, "", cid, fmt.Sprintf("provisioned %s (%s) in %s", details.ExternalID, details.IPAddress, a.now().Sub(started).Round(time.Millisecond)),
			"provisioner", l.typ, "password", cred.describe(details.RootPassword != ""))
		a.obs.update(func(o *observer) { o.counts.Provisioned++ })
		if a.metrics != nil {
			a.metrics.provisionSeconds.WithLabelValues(l.typ).Observe(a.now().Sub(started).Seconds())
		}
	}
	report.CreatedAt = a.now()
	if _, err := a.store.AddReport(report); err != nil {
		// The journal still holds the contract: the next start redoes it.
		a.obs.emit(status.EventNotice, status.LevelError, "", cid, "cannot queue the report; it is redone at the next start", "err", err)
		return
	}
	a.crash(CrashReportQueued)
	if err := a.store.DeleteJournal(cid); err != nil {
		a.log.Warn("clear journal", "contract", cid, "err", err)
	}
	a.crash(CrashJournalCleared)
	// The outbox closes the lease once the API accepted the report; the
	// lock is renewed until then.
	handedOff = true
	l.set(status.StepReporting, "")
	a.wakeOutbox()
}

// callProvisioner runs the backend's Provision. A transient failure
// (provisioners.RetryPossible) is retried here, with a growing wait,
// while the contract's retry budget lasts (agent.provision_retry_seconds,
// counted from its first attempt, across restarts): on the live API a
// reported provisioning_failed is final and refunds the tenant
// (mark_provisioning_failed, api/src/database/contracts/timeouts.rs), so
// a backend hiccup must not cost the sale. The lock is renewed all the
// while (the lease). A permanent failure returns at once.
func (a *Agent) callProvisioner(ctx context.Context, l *lease, b *backend, req provisioners.Request, entry *JournalEntry) (provisioners.Instance, error) {
	t := a.timing()
	wait := t.ProvisionRetryBase
	for try := 1; ; try++ {
		a.crash(CrashProvisionerCalled)
		inst, err := b.p.Provision(ctx, req)
		a.crash(CrashProvisionerReturned)
		if err == nil || ctx.Err() != nil || !provisioners.RetryPossible(err) {
			return inst, err
		}
		left := entry.StartedAt.Add(t.ProvisionRetry).Sub(a.now())
		if left < wait {
			if t.ProvisionRetry > 0 {
				a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, fmt.Sprintf("provisioning failed (try %d); the retry budget (agent.provision_retry_seconds) is spent: reporting the failure", try), "err", err)
			}
			return inst, err
		}
		a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, fmt.Sprintf("provisioning failed (transient); retrying in %s (try %d, %s of the retry budget left)", wait.Round(time.Millisecond), try+1, left.Round(time.Second)), "err", err)
		l.set(status.StepProvisioning, "retrying after: "+truncate(publicError(err), 120))
		entry.Attempt++
		entry.UpdatedAt = a.now()
		if err := a.store.PutJournal(*entry); err != nil {
			a.log.Warn("journal the retry", "contract", l.cid, "err", err)
		}
		if a.wait(ctx, wait, nil) != nil {
			return inst, ctx.Err()
		}
		wait = min(2*wait, t.ProvisionRetryMax)
	}
}

// alreadyStarted reports whether the API refused "provisioning" because
// the contract is provisioning already: the live API's refusal of a
// repeated transition ("Invalid status transition: provisioning ->
// provisioning", common/src/contract_status.rs). dc-api accepts the
// repeat (idempotent) instead.
func alreadyStarted(err error) bool {
	if !dcapi.IsPermanent(err) {
		return false
	}
	m := strings.ToLower(err.Error())
	return strings.Contains(m, "invalid status transition") && strings.Contains(m, "provisioning -> provisioning")
}

// apiFailure handles an API error that stops work on a contract for now.
// The journal entry (if any) stays: the work resumes at the next start or
// when the contract is listed again.
func (a *Agent) apiFailure(l *lease, what string, err error) outcome {
	if dcapi.IsAuth(err) {
		a.obs.setProblem(problemProvision, "the API refused to "+what+": "+err.Error(), dcapi.AuthHint(err))
		a.obs.emit(status.EventNotice, status.LevelError, "", l.cid, what+" refused: "+err.Error()+"; "+dcapi.AuthHint(err))
		return outcomeStopped
	}
	a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, what+" failed; will retry", "err", err)
	return outcomeRetry
}

// manualDone finishes a contract of a manual backend: the provider was
// told and completes it by hand; the agent reports nothing, ever.
//
// When the notification failed the lock is kept, not released: a server
// takes a released lock on a provisioning contract as a hand-off and never
// offers it again, so nobody would ever be told. A lock left to lapse
// puts the contract back on offer, and the notification is retried then.
func (a *Agent) manualDone(l *lease, err error) (outcome, bool) {
	if err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, "", l.cid, "could not notify the provider; retrying when the contract's lock expires", "err", err)
		_ = a.store.DeleteJournal(l.cid)
		return outcomeRetry, lapse
	}
	if err := a.store.MarkManual(l.cid, a.now()); err != nil {
		a.log.Warn("remember manual notification", "contract", l.cid, "err", err)
	}
	_ = a.store.DeleteJournal(l.cid)
	a.obs.emit(status.EventNotice, status.LevelInfo, "", l.cid, "provider notified; the contract is completed by hand on the dashboard")
	return outcomeDone, release
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
		if err := a.wait(ctx, wait, nil); err != nil {
			return err
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
func (a *Agent) buildRequest(l *lease, b *backend, e *env) (provisioners.Request, credentials, error) {
	c := l.c
	req := provisioners.Request{
		ContractID: c.ContractID, OfferingID: c.OfferingID, RequesterSSHPubkey: c.RequesterSSHPubkey,
		PostProvisionScript: deref(c.PostProvisionScript), ProductType: deref(c.ProductType), DatacenterCity: deref(c.DatacenterCity),
		Progress: func(step string) {
			l.set(status.StepProvisioning, step)
			a.obs.emit(status.EventProvisionStep, status.LevelInfo, "", l.cid, step)
		},
	}
	if c.CPUCores != nil {
		if *c.CPUCores < 0 || *c.CPUCores > 4096 {
			return req, credentials{}, provisioners.Permanent(fmt.Errorf("contract cpu_cores %d is out of range", *c.CPUCores))
		}
		req.CPUCores = *c.CPUCores
	}
	if s := strings.TrimSpace(deref(c.MemoryAmount)); s != "" {
		mb, err := dcapi.ParseSizeMB(s)
		if err != nil {
			return req, credentials{}, provisioners.Permanent(fmt.Errorf("offering memory_amount: %w", err))
		}
		req.MemoryMB = mb
	}
	if s := strings.TrimSpace(deref(c.StorageCapacity)); s != "" {
		gb, err := dcapi.ParseSizeGB(s)
		if err != nil {
			return req, credentials{}, provisioners.Permanent(fmt.Errorf("offering storage_capacity: %w", err))
		}
		req.StorageGB = gb
	}
	cfg, err := provisioners.MergeConfig(deref(c.ProvisionerConfig), deref(c.InstanceConfig), b.policy)
	if err != nil {
		return req, credentials{}, err
	}
	req.Config = cfg
	cred := a.credentialsFor(c, e, l.pwMode)
	req.WantPassword = cred.plain || cred.sealTo != nil
	return req, cred, nil
}

// credentials says how a contract's root password leaves the agent.
type credentials struct {
	// sealTo: sealed to this key by the agent (PROTOCOL.md §7).
	sealTo ed25519.PublicKey
	// plain: in clear, for the server to encrypt to the requester's key it
	// holds (the live API).
	plain bool
}

// Password modes as the journal keeps them.
const (
	pwNone   = "none"
	pwSealed = "sealed"
	pwPlain  = "plain"
)

func (c credentials) mode() string {
	switch {
	case c.plain:
		return pwPlain
	case c.sealTo != nil:
		return pwSealed
	}
	return pwNone
}

func (c credentials) describe(set bool) string {
	switch {
	case !set:
		return "none (SSH key only)"
	case c.plain:
		return "in clear (https or loopback), encrypted by the API"
	}
	return "sealed by the agent"
}

// credentialsFor decides, from what the server handed over, how the root
// password is reported:
//
//   - the contract carries requester_pubkey (dc-api): sealed to it by the
//     agent, as PROTOCOL.md §7 says;
//   - it does not (the live API never sends one: ContractWithSpecs,
//     api/src/database/contracts/mod.rs): in clear, which the live API
//     encrypts to the requester key it holds, the one the tenant's
//     dashboard opens (add_provisioning_details,
//     api/src/database/contracts/provisioning.rs). Sealing it to the SSH
//     key instead would reach the tenant encrypted twice and unusable. A
//     plaintext password only goes over https, or plain http to a server
//     on this machine; otherwise none is set (SSH key access only);
//   - where the server is dc-api with its extensions (it held a
//     pending-provision request: X-Long-Poll-Wait), or once the server
//     refused a plaintext password (dc-api refuses them), sealed to the
//     requester's Ed25519 SSH key, as PROTOCOL.md §7 says when no
//     requester_pubkey exists; none when there is no such key.
//
// A contract resumed after a restart keeps the way decided at its first
// attempt (mode, from the journal): the restarted agent may not know the
// server yet, and a backend reuses an instance only when no new password
// is asked of it.
func (a *Agent) credentialsFor(c dcapi.PendingContract, e *env, mode string) credentials {
	switch mode {
	case pwNone:
		return credentials{}
	case pwPlain:
		if privateTransport(e.client.Endpoint()) {
			return credentials{plain: true}
		}
		return credentials{}
	}
	if strings.TrimSpace(c.RequesterPubkey) != "" || a.sealOnly.Load() || mode == pwSealed {
		pub, ok, err := identity.SealRecipient(c.RequesterPubkey, c.RequesterSSHPubkey)
		if err != nil {
			a.obs.emit(status.EventNotice, status.LevelWarn, "", c.ContractID, "requester key unusable for sealing; no root password will be set (SSH key access only)", "err", err)
			return credentials{}
		}
		if !ok {
			return credentials{}
		}
		return credentials{sealTo: pub}
	}
	if !privateTransport(e.client.Endpoint()) {
		a.warnOnce("plaintext-transport", time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, "", c.ContractID,
				"the API endpoint is plain http to another machine: no root password is set (SSH key access only); use https:// in api.endpoint")
		})
		return credentials{}
	}
	return credentials{plain: true}
}

// privateTransport reports whether a password may travel to endpoint:
// https, or plain http to this machine (safeurl's one rule; dcapi.New
// refuses other endpoints already, this keeps the password's own rule
// explicit where it is sent).
func privateTransport(endpoint string) bool {
	u, err := url.Parse(endpoint)
	return err == nil && safeurl.Check(u) == nil
}

// instanceDetails builds the report of a provisioned instance. The root
// password leaves this function sealed for the requester, in clear for a
// server that encrypts it itself (cred.plain), or not at all; the
// plaintext is dropped from inst.
func (a *Agent) instanceDetails(cid string, inst *provisioners.Instance, cred credentials) dcapi.InstanceDetails {
	d := dcapi.InstanceDetails{ExternalID: inst.ExternalID, IPAddress: inst.IPAddress, IPv6Address: inst.IPv6Address, SSHPort: inst.SSHPort}
	if pw := inst.RootPassword; pw != "" {
		inst.RootPassword = ""
		switch {
		case cred.plain:
			d.RootPassword = pw
		case cred.sealTo == nil:
			a.obs.emit(status.EventNotice, status.LevelWarn, "", cid, "the provisioner set a root password although there is no requester key to seal it to; it is not reported (SSH key access only)")
		default:
			sealed, err := identity.Seal([]byte(pw), cred.sealTo, cid)
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

// resealReport handles a provisioned report with a plaintext password
// that the server refused: a server that wants passwords sealed by the
// agent (dc-api's default profile). The password is sealed to the
// requester's SSH key (PROTOCOL.md §7), or dropped when there is none to
// seal to, the report rewritten in place and sent again; from now on
// passwords are sealed from the start (sealOnly).
func (a *Agent) resealReport(r Report, refusal error) error {
	var d dcapi.InstanceDetails
	if err := json.Unmarshal([]byte(r.Update.InstanceDetails), &d); err != nil {
		return a.store.DeleteReport(r.Seq) // cannot happen: the agent wrote it
	}
	how := "sealed to the requester's SSH key"
	if pub, ok, _ := identity.SealRecipient("", r.SealFallback); ok && d.RootPassword != "" {
		sealed, err := identity.Seal([]byte(d.RootPassword), pub, r.ContractID)
		if err != nil {
			return err
		}
		d.RootPassword = sealed
	} else {
		d.RootPassword, how = "", "left out (no Ed25519 key to seal it to: SSH key access only)"
	}
	u, err := dcapi.ProvisionedUpdate(d)
	if err != nil {
		return err
	}
	r.Update, r.Plaintext, r.SealFallback = &u, false, ""
	if err := a.store.ReplaceReport(r); err != nil {
		return err
	}
	if !a.sealOnly.Swap(true) {
		a.obs.emit(status.EventNotice, status.LevelInfo, loopOutbox, r.ContractID,
			"the API refused a root password in clear (it wants passwords sealed by the agent); sending it "+how+"; passwords are sealed from now on", "err", refusal)
	}
	return nil
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
// the backend's tenant message (never its log text), one line, bounded.
func publicError(err error) string {
	s := strings.Join(strings.Fields(provisioners.TenantMessage(err)), " ")
	return truncate(s, 500)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// resumeFromDisk picks up what a previous run left: reports to deliver
// (their leases renew the lock until the API accepts them) and contracts
// in flight.
func (a *Agent) resumeFromDisk(rc runCtxs) {
	reported := map[string]bool{}
	for _, r := range a.store.Reports() {
		if r.Kind != ReportProvisioning {
			continue
		}
		reported[r.ContractID] = true
		if l, ok := a.claim(dcapi.PendingContract{ContractID: r.ContractID}, "", status.StepReporting, true, 0); ok && r.Unlock {
			l.hold(rc.loops, time.Time{})
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
		l, ok := a.claim(j.Contract, j.Provisioner, status.StepQueued, true, j.Attempt)
		if !ok {
			continue
		}
		l.since, l.pwMode = j.StartedAt, j.Password
		a.obs.emit(status.EventContractReceived, status.LevelInfo, "", cid, fmt.Sprintf("resuming contract interrupted at step %q", j.Step))
		a.startWork(l, rc)
	}
	if n := len(a.store.Reports()); n > 0 {
		a.obs.emit(status.EventNotice, status.LevelInfo, "", "", fmt.Sprintf("%d queued report(s) from the previous run will be delivered", n))
	}
}
