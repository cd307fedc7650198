package agent

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Tenant requests: a tenant asks for a new root password (a reset) or adds
// an SSH key (a rotation) to a running contract. The tenant loop reads the
// API's pending lists (every Timing.TenantPoll; the reset list is also
// pushed by the live API's event stream, passwordStream), carries each
// request out through the backend's own control channel
// (provisioners.PasswordResetter, KeyRotator — never over SSH into the
// tenant's machine) and reports it.
//
// Each request is a job, journaled in tenant/<kind>-<contract>.json before
// anything is changed, so that a crash at any instruction neither resets
// twice nor reports what did not happen:
//
//	taken       the password to set (or the checked key) is on disk; the
//	            backend may or may not have it. A restart applies the same
//	            password (or adds the same key: AddAuthorizedKey adds it
//	            once) again, so the tenant ends up with the one password
//	            that is reported. Hetzner chooses its own password: a crash
//	            between its API call and the next write makes the restart
//	            reset once more (the first password was never seen by
//	            anyone).
//	applied     the backend has it; the report (the plaintext password for
//	            the live API, which encrypts it, or the password sealed to
//	            seal_to) waits to be accepted. The plaintext is dropped from
//	            the file once sealed.
//	failed      it cannot be done; the tenant's message waits to be
//	            reported: to servers that take failure reports (they list
//	            requested_at_ns) as PUT {"error"}, to the live API, which
//	            has none, as the details of a health check of the contract
//	            (which tenants read), through the outbox. A request the live
//	            API keeps listing is tried again after Timing.TenantCooldown.
//	handed_off  a manual backend told the provider; kept (not repeated)
//	            while the request stays listed.
//
// The file is removed once the report is accepted (or refused for good).
// Files are 0600 like every state file; the password is never logged.

// Tenant job kinds and steps.
const (
	jobReset  = "reset"
	jobRotate = "rotate"

	stepTaken     = "taken"
	stepApplied   = "applied"
	stepFailed    = "failed"
	stepHandedOff = "handed_off"
)

const tenantDir = "tenant"

// Tenant crash points, in the order a request passes them.
const (
	CrashTenantJournaled = "tenant_journaled" // job taken on disk, backend not called
	CrashTenantApplied   = "tenant_applied"   // backend returned, not journaled
	CrashTenantReported  = "tenant_reported"  // API accepted the report, job not removed
)

// TenantCrashPoints lists the crash points of a tenant request.
var TenantCrashPoints = []string{CrashTenantJournaled, CrashTenantApplied, CrashTenantReported}

// tenantJob is one tenant request in the works (its journal file).
type tenantJob struct {
	Kind       string `json:"kind"`
	ContractID string `json:"contractId"`
	// RequestedAtNs is the server's request time (0 on the live API);
	// non-zero means the server takes failure reports.
	RequestedAtNs int64  `json:"requestedAtNs,omitempty"`
	Step          string `json:"step"`
	Provisioner   string `json:"provisioner,omitempty"`
	ExternalID    string `json:"externalId,omitempty"`
	// Reset: the password being set (until it is sealed), the key to seal
	// it to ("" : the server encrypts it), and the report's newPassword.
	Password string `json:"password,omitempty"`
	SealTo   string `json:"sealTo,omitempty"`
	Report   string `json:"report,omitempty"`
	// Rotation: the checked key line.
	SSHPubkey string `json:"sshPubkey,omitempty"`
	// Error is the tenant's message of a failed request.
	Error     string    `json:"error,omitempty"`
	FirstAt   time.Time `json:"firstAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

func (j *tenantJob) key() string { return j.Kind + "-" + j.ContractID }

func (j *tenantJob) what() string {
	if j.Kind == jobReset {
		return "password reset"
	}
	return "SSH key rotation"
}

// aWhat is what() with its article.
func (j *tenantJob) aWhat() string {
	if j.Kind == jobReset {
		return "a password reset"
	}
	return "an SSH key rotation"
}

// tenantWork is the tenant loop's memory.
type tenantWork struct {
	mu       sync.Mutex
	inflight map[string]bool
	doneAt   map[string]time.Time // key → when its report was accepted
	cooldown map[string]cooldown  // key → failed; not tried before until
	noList   map[string]time.Time // kind → the server lacks the list until then
	wake     chan struct{}
	streamUp atomic.Bool
	// resetsDue: the event stream announced resets; read the list now.
	resetsDue atomic.Bool
	jobs      sync.WaitGroup
}

func newTenantWork() *tenantWork {
	return &tenantWork{inflight: map[string]bool{}, doneAt: map[string]time.Time{}, cooldown: map[string]cooldown{},
		noList: map[string]time.Time{}, wake: make(chan struct{}, 1)}
}

func (w *tenantWork) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// tenantTiming fills what a hand-made Timing left zero.
func tenantTiming(t Timing) Timing {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.TenantPoll, max(t.PollInterval, time.Millisecond))
	def(&t.TenantPollStreamed, 5*t.TenantPoll)
	def(&t.TenantRetry, 10*t.TenantPoll)
	def(&t.TenantCooldown, 60*t.TenantPoll)
	def(&t.TenantCallTime, 5*time.Minute)
	def(&t.StreamIdle, 90*time.Second)
	return t
}

// tenantLoop reads the pending lists and starts jobs; jobs left on disk by
// an earlier run are resumed first.
func (a *Agent) tenantLoop(ctx context.Context) error {
	w := a.tenant
	if err := os.MkdirAll(filepath.Join(a.store.Dir(), tenantDir), 0o700); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, loopTenant, "", "cannot create the tenant request journal; tenant requests are not served", "err", err)
		return nil
	}
	// The stream and the jobs end with this loop (at the stop, or while it
	// waits for a fixed delegation); jobs resume from the journal when it
	// runs again.
	jctx, stop := context.WithCancel(ctx)
	defer w.jobs.Wait()
	defer stop()
	w.jobs.Add(1)
	go func() {
		defer w.jobs.Done()
		a.passwordStream(jctx)
	}()
	lastResets := time.Time{}
	return a.repeat(ctx, loopTenant, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		t := tenantTiming(a.timing())
		a.live.expect(loopTenant, 4*a.reqTimeout())
		a.resumeTenantJobs(jctx)
		sent := a.now()
		// With the event stream up, resets are read when it says so (it
		// wakes this loop) and, as a safety net, every TenantPollStreamed.
		resets := w.resetsDue.Swap(false) || !w.streamUp.Load() || a.now().Sub(lastResets) >= t.TenantPollStreamed
		var jobs []*tenantJob
		var listed map[string]bool
		var err error
		if resets {
			var r []*tenantJob
			if r, err = a.pendingResets(ctx); err == nil {
				lastResets = sent
				jobs = append(jobs, r...)
			}
		}
		if err == nil {
			var r []*tenantJob
			if r, err = a.pendingRotations(ctx); err == nil {
				jobs = append(jobs, r...)
			}
		}
		if err != nil {
			return 0, nil, err
		}
		listed = map[string]bool{}
		for _, j := range jobs {
			listed[j.key()] = true
			a.startTenantJob(jctx, j, sent)
		}
		a.pruneHandedOff(listed, resets)
		a.pruneTenantMemory()
		return jitter(t.TenantPoll, a.rand), w.wake, nil
	})
}

func (a *Agent) reqTimeout() time.Duration {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	return e.reqTimeout
}

// pendingResets reads the pending password resets as jobs.
func (a *Agent) pendingResets(ctx context.Context) ([]*tenantJob, error) {
	if !a.tenantListed(jobReset) {
		return nil, nil
	}
	e := a.acquireEnv()
	list, err := e.client.PendingPasswordResets(ctx)
	a.releaseEnv(e)
	if err = a.tenantListErr(jobReset, err); err != nil || list == nil {
		return nil, err
	}
	out := make([]*tenantJob, 0, len(list))
	for _, r := range list {
		out = append(out, &tenantJob{Kind: jobReset, ContractID: r.ContractID, RequestedAtNs: r.RequestedAtNs, SealTo: r.SealTo})
	}
	return out, nil
}

// pendingRotations reads the pending SSH key rotations as jobs.
func (a *Agent) pendingRotations(ctx context.Context) ([]*tenantJob, error) {
	if !a.tenantListed(jobRotate) {
		return nil, nil
	}
	e := a.acquireEnv()
	list, err := e.client.PendingKeyRotations(ctx)
	a.releaseEnv(e)
	if err = a.tenantListErr(jobRotate, err); err != nil || list == nil {
		return nil, err
	}
	out := make([]*tenantJob, 0, len(list))
	for _, r := range list {
		out = append(out, &tenantJob{Kind: jobRotate, ContractID: r.ContractID, RequestedAtNs: r.RequestedAtNs, SSHPubkey: r.SSHPubkey})
	}
	return out, nil
}

// tenantListed reports whether the kind's list is worth reading (a server
// that answered 404 is asked again after an hour).
func (a *Agent) tenantListed(kind string) bool {
	a.tenant.mu.Lock()
	defer a.tenant.mu.Unlock()
	return !a.now().Before(a.tenant.noList[kind])
}

// tenantListErr turns a 404 (a server without tenant requests) into an
// empty answer, remembered for an hour.
func (a *Agent) tenantListErr(kind string, err error) error {
	if !dcapi.IsNotFound(err) {
		return err
	}
	a.tenant.mu.Lock()
	a.tenant.noList[kind] = a.now().Add(time.Hour)
	a.tenant.mu.Unlock()
	a.warnOnce("tenant-nolist-"+kind, 24*time.Hour, func() {
		a.obs.emit(status.EventNotice, status.LevelInfo, loopTenant, "", "the API has no list of pending tenant requests ("+kind+"); asking again in an hour", "err", err)
	})
	return nil
}

// startTenantJob starts a listed request unless it is in the works, was
// finished after the poll was sent (a stale answer) or cools down.
func (a *Agent) startTenantJob(ctx context.Context, j *tenantJob, sent time.Time) {
	if validContractID(j.ContractID) != nil {
		a.warnOnce("tenant-badid:"+j.ContractID, time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopTenant, "", "ignoring a tenant request with a malformed contract id "+truncate(j.ContractID, 80))
		})
		return
	}
	w := a.tenant
	k := j.key()
	w.mu.Lock()
	now := a.now()
	if d, ok := w.doneAt[k]; w.inflight[k] || ok && !d.Before(sent) || now.Before(w.cooldown[k].until) {
		w.mu.Unlock()
		return
	}
	if _, err := os.Stat(a.tenantPath(k)); err == nil {
		w.mu.Unlock()
		return // on disk: resumeTenantJobs runs it
	}
	w.inflight[k] = true
	w.mu.Unlock()
	j.FirstAt = now
	a.obs.emit(status.EventNotice, status.LevelInfo, loopTenant, j.ContractID, "tenant asks for "+j.aWhat())
	a.runTenantJob(ctx, j)
}

// resumeTenantJobs (re)starts every job on disk that is not running.
func (a *Agent) resumeTenantJobs(ctx context.Context) {
	des, err := os.ReadDir(filepath.Join(a.store.Dir(), tenantDir))
	if err != nil {
		return
	}
	w := a.tenant
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || strings.HasPrefix(name, ".") {
			continue
		}
		w.mu.Lock()
		busy := w.inflight[name]
		if !busy {
			w.inflight[name] = true
		}
		w.mu.Unlock()
		if busy {
			continue
		}
		p := a.tenantPath(name)
		b, err := os.ReadFile(p)
		var j tenantJob
		if err == nil {
			j, err = parseTenantJob(name, b)
		}
		if err != nil {
			_ = quarantine(p)
			a.obs.emit(status.EventNotice, status.LevelError, loopTenant, "", "unreadable tenant request journal moved aside: "+p, "err", err)
			w.mu.Lock()
			delete(w.inflight, name)
			w.mu.Unlock()
			continue
		}
		if j.Step == stepHandedOff {
			// Nothing to do until the request disappears (pruneHandedOff).
			w.mu.Lock()
			delete(w.inflight, name)
			w.mu.Unlock()
			continue
		}
		a.obs.emit(status.EventNotice, status.LevelInfo, loopTenant, j.ContractID, fmt.Sprintf("resuming the %s interrupted at step %q", j.what(), j.Step))
		a.runTenantJob(ctx, &j)
	}
}

// parseTenantJob decodes tenant/<name>.json: a known kind and step, and
// the contract its file is named after.
func parseTenantJob(name string, data []byte) (tenantJob, error) {
	var j tenantJob
	if err := json.Unmarshal(data, &j); err != nil {
		return j, err
	}
	if err := validContractID(j.ContractID); err != nil {
		return j, err
	}
	if j.Kind != jobReset && j.Kind != jobRotate {
		return j, fmt.Errorf("unknown kind %q", j.Kind)
	}
	if !slices.Contains([]string{stepTaken, stepApplied, stepFailed, stepHandedOff}, j.Step) {
		return j, fmt.Errorf("unknown step %q", j.Step)
	}
	if j.key() != name {
		return j, fmt.Errorf("names %s", j.key())
	}
	if j.Step == stepTaken && j.Kind == jobReset && j.Password == "" || j.Step == stepTaken && j.Kind == jobRotate && j.SSHPubkey == "" {
		return j, errors.New("a taken request without its password or key")
	}
	return j, nil
}

// pruneHandedOff forgets hand-offs whose request is no longer listed (the
// provider carried it out), for the kinds just read.
func (a *Agent) pruneHandedOff(listed map[string]bool, resetsRead bool) {
	des, _ := os.ReadDir(filepath.Join(a.store.Dir(), tenantDir))
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || listed[name] || strings.HasPrefix(name, jobReset+"-") && !resetsRead {
			continue
		}
		a.tenant.mu.Lock()
		busy := a.tenant.inflight[name]
		a.tenant.mu.Unlock()
		if busy {
			continue
		}
		if b, err := os.ReadFile(a.tenantPath(name)); err == nil {
			if j, err := parseTenantJob(name, b); err == nil && j.Step == stepHandedOff {
				_ = removeDurable(a.tenantPath(name))
			}
		}
	}
}

// pruneTenantMemory forgets old finish times and cool-downs.
func (a *Agent) pruneTenantMemory() {
	w := a.tenant
	w.mu.Lock()
	defer w.mu.Unlock()
	now := a.now()
	maps.DeleteFunc(w.doneAt, func(_ string, d time.Time) bool { return now.Sub(d) > doneMemory })
	maps.DeleteFunc(w.cooldown, func(_ string, cd cooldown) bool { return now.Sub(cd.until) > doneMemory })
}

func (a *Agent) tenantPath(key string) string {
	return filepath.Join(a.store.Dir(), tenantDir, key+".json")
}

func (a *Agent) saveTenantJob(j *tenantJob) error {
	j.UpdatedAt = a.now()
	if err := writeJSON(a.tenantPath(j.key()), j); err != nil {
		return fmt.Errorf("tenant request journal %s: %w", j.key(), err)
	}
	return nil
}

// runTenantJob carries j on from its step in a goroutine of its own.
func (a *Agent) runTenantJob(ctx context.Context, j *tenantJob) {
	w := a.tenant
	w.jobs.Add(1)
	go func() {
		defer w.jobs.Done()
		outcome := a.tenantJob(ctx, j)
		w.mu.Lock()
		delete(w.inflight, j.key())
		switch outcome {
		case outcomeDone:
			w.doneAt[j.key()] = a.now()
			delete(w.cooldown, j.key())
		case outcomeRetry:
			t := tenantTiming(a.timing())
			cd := w.cooldown[j.key()]
			cd.failures++
			wait := t.TenantCooldown
			for i := 1; i < cd.failures && wait < 24*time.Hour; i++ {
				wait *= 2
			}
			cd.until = a.now().Add(min(wait, 24*time.Hour))
			w.cooldown[j.key()] = cd
		}
		w.mu.Unlock()
	}()
}

// tenantJob runs one job to its end: outcomeDone (reported),
// outcomeRetry (a failure reported; the live API may list it again),
// outcomeStopped (the agent is stopping, or the instance is not this
// agent's: nothing on disk, nothing reported).
func (a *Agent) tenantJob(ctx context.Context, j *tenantJob) outcome {
	if j.Step == "" {
		if o, ok := a.takeTenantJob(ctx, j); !ok {
			return o
		}
	}
	if j.Step == stepTaken {
		a.applyTenantJob(ctx, j)
		if ctx.Err() != nil {
			return outcomeStopped
		}
	}
	switch j.Step {
	case stepApplied, stepFailed:
		return a.reportTenantJob(ctx, j)
	}
	return outcomeStopped
}

// takeTenantJob finds the instance, checks the request and journals it
// (taken), or journals why it cannot be done (failed). ok is false when
// there is nothing more to do.
func (a *Agent) takeTenantJob(ctx context.Context, j *tenantJob) (o outcome, ok bool) {
	b, ext, err := a.tenantInstance(ctx, j.ContractID)
	if err != nil {
		a.warnOnce("tenant-lookup:"+j.key(), time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopTenant, j.ContractID, "could not look up the instance of "+j.aWhat()+"; trying again later", "err", err)
		})
		return outcomeStopped, false
	}
	if b == nil {
		a.warnOnce("tenant-notmine:"+j.key(), time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelInfo, loopTenant, j.ContractID, "no backend of this agent has the instance of this contract's "+j.what()+"; leaving it to the provider's other agents")
		})
		return outcomeStopped, false
	}
	j.Provisioner, j.ExternalID = b.typ, ext
	fail := func(err error) (outcome, bool) {
		a.tenantFailed(j, err)
		if err := a.saveTenantJob(j); err != nil {
			a.obs.emit(status.EventNotice, status.LevelError, loopTenant, j.ContractID, "cannot journal the failed "+j.what(), "err", err)
			return outcomeStopped, false
		}
		return outcomeRetry, true
	}
	switch j.Kind {
	case jobReset:
		if _, ok := b.p.(provisioners.PasswordResetter); !ok || !b.feat.ResetPassword {
			return fail(provisioners.NotSupported(b.typ, "a password reset"))
		}
		if j.SealTo == "" && j.RequestedAtNs != 0 {
			return fail(&provisioners.Error{Err: errors.New("the API names no key to seal the new password to"),
				Tenant: "no password can be sent to you: the contract has no Ed25519 key to seal it to; add an SSH key instead (SSH key rotation)"})
		}
		if j.SealTo != "" {
			if k, err := hex.DecodeString(j.SealTo); err != nil || len(k) != 32 {
				return fail(&provisioners.Error{Err: fmt.Errorf("seal_to %q is not an Ed25519 key", truncate(j.SealTo, 80)),
					Tenant: "no password can be sent to you: the key to seal it to is malformed"})
			}
		}
		pw, err := provisioners.RandomPassword(24)
		if err != nil {
			a.obs.emit(status.EventNotice, status.LevelError, loopTenant, j.ContractID, "cannot make a password", "err", err)
			return outcomeStopped, false
		}
		j.Password = pw
	case jobRotate:
		if _, ok := b.p.(provisioners.KeyRotator); !ok || !b.feat.RotateSSHKey {
			return fail(provisioners.NotSupported(b.typ, "an SSH key rotation"))
		}
		line, err := provisioners.CheckSSHKeyLine(j.SSHPubkey)
		if err != nil {
			return fail(err)
		}
		j.SSHPubkey = line
	}
	j.Step = stepTaken
	if err := a.saveTenantJob(j); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, loopTenant, j.ContractID, "cannot journal the "+j.what()+"; not starting it", "err", err)
		return outcomeStopped, false
	}
	a.crash(CrashTenantJournaled)
	return 0, true
}

// tenantInstance finds the backend and instance of a contract: the first
// configured backend (in name order) that has it, else a manual backend
// (nil if none has it).
func (a *Agent) tenantInstance(ctx context.Context, cid string) (*backend, string, error) {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	t := tenantTiming(a.timing())
	var manual *backend
	var errs []error
	for _, typ := range sortedTypes(e.backends) {
		b := e.backends[typ]
		if b.feat.Manual {
			manual = b
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, t.ListTime)
		ext, err := findInstance(cctx, b, cid)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", typ, err))
			continue
		}
		if ext != "" {
			return b, ext, nil
		}
	}
	if len(errs) > 0 {
		return nil, "", errors.Join(errs...)
	}
	return manual, "", nil
}

func findInstance(ctx context.Context, b *backend, cid string) (string, error) {
	if b.feat.GetByID {
		inst, err := b.p.GetInstance(ctx, cid)
		if err != nil || inst == nil {
			return "", err
		}
		return inst.ExternalID, nil
	}
	if !b.feat.List {
		return "", nil
	}
	list, err := b.p.List(ctx)
	if err != nil {
		return "", err
	}
	for _, inst := range list {
		if inst.ContractID == cid {
			return inst.ExternalID, nil
		}
	}
	return "", nil
}

// applyTenantJob calls the backend, retrying transient failures with
// backoff until Timing.TenantRetry after the job began, and journals the
// result (applied, failed or handed off).
func (a *Agent) applyTenantJob(ctx context.Context, j *tenantJob) {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	b := e.backends[j.Provisioner]
	if b == nil {
		a.tenantFailed(j, fmt.Errorf("provisioner %q is no longer configured", j.Provisioner))
		j.Error = "the provider's setup changed; the request could not be carried out"
		a.saveTenantJobOrWarn(j)
		return
	}
	bo := a.newBackoff()
	for {
		t := tenantTiming(a.timing())
		cctx, cancel := context.WithTimeout(ctx, t.TenantCallTime)
		var err error
		var pw string
		switch j.Kind {
		case jobReset:
			pw, err = b.p.(provisioners.PasswordResetter).ResetPassword(cctx, j.ContractID, j.ExternalID, j.Password)
		case jobRotate:
			err = b.p.(provisioners.KeyRotator).RotateSSHKey(cctx, j.ContractID, j.ExternalID, j.SSHPubkey)
		}
		cancel()
		a.crash(CrashTenantApplied)
		switch {
		case ctx.Err() != nil:
			return
		case errors.Is(err, provisioners.ErrHandedOff):
			j.Step, j.Password = stepHandedOff, ""
			a.saveTenantJobOrWarn(j)
			a.obs.emit(status.EventNotice, status.LevelInfo, loopTenant, j.ContractID, "the provider was told to carry out the "+j.what()+" by hand")
			return
		case err == nil:
			if j.Kind == jobReset {
				if err := a.sealTenantPassword(j, pw); err != nil {
					a.tenantFailed(j, err)
					a.saveTenantJobOrWarn(j)
					return
				}
			}
			j.Step = stepApplied
			a.saveTenantJobOrWarn(j)
			return
		case provisioners.RetryPossible(err) && a.now().Before(j.FirstAt.Add(t.TenantRetry)):
			wait := bo.Next(0)
			a.obs.emit(status.EventNotice, status.LevelWarn, loopTenant, j.ContractID, fmt.Sprintf("%s failed; retrying in %s", j.what(), wait.Round(time.Millisecond)),
				"err", oneLine(err))
			if a.wait(ctx, wait, nil) != nil {
				return
			}
		default:
			a.tenantFailed(j, err)
			a.saveTenantJobOrWarn(j)
			return
		}
	}
}

// sealTenantPassword makes the report of an applied reset: the password
// sealed to SealTo, or in clear for a server that encrypts it (the live
// API; it goes only over https or to a server on this machine:
// dcapi.ParseEndpoint). The plaintext leaves the journal when sealed.
func (a *Agent) sealTenantPassword(j *tenantJob, pw string) error {
	if pw == "" {
		return provisioners.Permanent(errors.New("the backend reported no password"))
	}
	j.Password = ""
	if j.SealTo == "" {
		j.Report = pw
		return nil
	}
	key, _ := hex.DecodeString(j.SealTo)
	sealed, err := identity.Seal([]byte(pw), key, j.ContractID)
	if err != nil {
		return &provisioners.Error{Err: fmt.Errorf("seal the new password: %w", err), Tenant: "the new password could not be sealed to your key"}
	}
	j.Report = sealed
	return nil
}

// tenantFailed records err as the job's failure: the tenant's message in
// the job, the provider's in the log.
func (a *Agent) tenantFailed(j *tenantJob, err error) {
	j.Step, j.Password, j.Report = stepFailed, "", ""
	j.Error = truncate(j.what()+" failed: "+publicError(err), 450)
	a.obs.emit(status.EventNotice, status.LevelWarn, loopTenant, j.ContractID, j.what()+" failed; the tenant is told", "err", oneLine(err),
		"provisioner", j.Provisioner, "tenant_message", j.Error)
}

func oneLine(err error) string { return strings.Join(strings.Fields(err.Error()), " ") }

func (a *Agent) saveTenantJobOrWarn(j *tenantJob) {
	if err := a.saveTenantJob(j); err != nil {
		a.obs.emit(status.EventNotice, status.LevelError, loopTenant, j.ContractID, "cannot journal the "+j.what()+"; it is redone at the next start", "err", err)
	}
}

// reportTenantJob delivers an applied or failed job's report, retrying
// transient API errors, and removes the job once the API accepted it or
// refused it for good.
func (a *Agent) reportTenantJob(ctx context.Context, j *tenantJob) outcome {
	bo := a.newBackoff()
	for {
		e := a.acquireEnv()
		err := a.sendTenantReport(ctx, e, j)
		a.releaseEnv(e)
		switch {
		case ctx.Err() != nil:
			return outcomeStopped
		case err != nil && (dcapi.IsRetryable(err) || dcapi.IsAuth(err)):
			wait := bo.Next(retryAfter(err))
			if bo.Failures() <= 3 || bo.Failures()%10 == 0 {
				a.log.Warn("reporting the "+j.what()+" failed; retrying", "contract", j.ContractID, "err", err, "retry_in", wait.Round(time.Millisecond))
			}
			if a.wait(ctx, wait, nil) != nil {
				return outcomeStopped
			}
			continue
		case err != nil:
			a.obs.emit(status.EventReportDropped, status.LevelWarn, loopTenant, j.ContractID, "the API refused the "+j.what()+" report; dropped", "err", err)
		default:
			a.crash(CrashTenantReported)
			msg := "reported the " + j.what()
			if j.Step == stepFailed {
				msg = "told the tenant why the " + j.what() + " failed"
			}
			a.obs.emit(status.EventReportSent, status.LevelInfo, loopTenant, j.ContractID, msg)
		}
		if err := removeDurable(a.tenantPath(j.key())); err != nil {
			a.log.Warn("remove tenant request journal", "contract", j.ContractID, "err", err)
		}
		if j.Step == stepFailed {
			return outcomeRetry
		}
		return outcomeDone
	}
}

// sendTenantReport sends one job's report: nil when accepted.
func (a *Agent) sendTenantReport(ctx context.Context, e *env, j *tenantJob) error {
	if j.Step == stepFailed {
		if j.RequestedAtNs == 0 {
			return a.queueFailureHealth(ctx, e, j)
		}
		if j.Kind == jobReset {
			return e.client.ReportPassword(ctx, j.ContractID, dcapi.PasswordUpdate{Error: j.Error})
		}
		return e.client.ReportKeyRotation(ctx, j.ContractID, dcapi.KeyRotationUpdate{Error: j.Error})
	}
	if j.Kind == jobReset {
		pw := j.Report
		return e.client.ReportPassword(ctx, j.ContractID, dcapi.PasswordUpdate{NewPassword: &pw})
	}
	err := e.client.ReportKeyRotation(ctx, j.ContractID, dcapi.KeyRotationUpdate{})
	if err != nil && strings.Contains(strings.ToLower(err.Error()), "no pending ssh key rotation") {
		// Already completed: the report was accepted before a crash.
		return nil
	}
	return err
}

// queueFailureHealth tells the tenant of a failed request on the live API,
// which has no failure report for tenant requests: a health check of the
// contract (POST /contracts/{cid}/health, which tenants read) whose
// details say what failed, with the instance's current status. It goes
// through the outbox, so it is delivered even across restarts.
func (a *Agent) queueFailureHealth(ctx context.Context, e *env, j *tenantJob) error {
	st := dcapi.HealthUnknown
	if b := e.backends[j.Provisioner]; b != nil && b.feat.Health && j.ExternalID != "" {
		cctx, cancel := context.WithTimeout(ctx, a.timing().HealthCheckTime)
		h, err := b.p.HealthCheck(cctx, j.ExternalID)
		cancel()
		if err == nil && h.Status != "" {
			st = h.Status
		}
	}
	_, err := a.store.AddReport(Report{Kind: ReportHealth, CreatedAt: a.now(),
		Checks: []dcapi.HealthCheck{{ContractID: j.ContractID, CheckedAt: a.now().UnixNano(), Status: st, Details: j.Error}}})
	if err != nil {
		return err
	}
	a.wakeOutbox()
	return nil
}

// passwordStream follows the API's password-reset event stream and wakes
// the tenant loop when it reports resets. A server without it (404) is
// asked again after an hour; other failures back off.
func (a *Agent) passwordStream(ctx context.Context) {
	w := a.tenant
	bo := a.newBackoff()
	for ctx.Err() == nil {
		t := tenantTiming(a.timing())
		e := a.acquireEnv()
		client := e.client
		a.releaseEnv(e)
		err := client.PasswordResetEvents(ctx, t.StreamIdle, func(ev dcapi.PasswordResetEvent) {
			if !w.streamUp.Swap(true) {
				a.log.Debug("password reset event stream up")
				bo.Reset()
			}
			if ev.Count > 0 || len(ev.ContractIDs) > 0 {
				w.resetsDue.Store(true)
				w.poke()
			}
		})
		w.streamUp.Store(false)
		if ctx.Err() != nil {
			return
		}
		wait := bo.Next(retryAfter(err))
		if dcapi.IsNotFound(err) {
			wait = time.Hour
			a.warnOnce("tenant-nostream", 24*time.Hour, func() {
				a.log.Info("the API has no password reset event stream; polling pending resets every interval", "poll", t.TenantPoll)
			})
		} else if bo.Failures() <= 3 || bo.Failures()%10 == 0 {
			a.log.Debug("password reset event stream ended; reconnecting", "err", err, "retry_in", wait.Round(time.Millisecond))
		}
		if a.wait(ctx, wait, nil) != nil {
			return
		}
	}
}
