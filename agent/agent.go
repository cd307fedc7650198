// Package agent is the dc-agent runtime: independent loops under one
// context that turn paid contracts into instances and keep the provider
// online.
//
//   - contracts: long-polls pending-provision (falls back to interval
//     polling with jitter) and hands each new contract to a worker;
//   - workers: lock → "provisioning" → provisioner → seal the password →
//     report via the outbox → unlock, bounded globally and per backend;
//     each contract is one lease (lease.go) that renews its lock from the
//     moment it is taken until the report is accepted;
//   - heartbeat: on start, then every nextHeartbeatSeconds;
//   - health: every active contract each interval, batched when supported;
//   - reconcile: terminates instances of cancelled contracts and, after a
//     grace period, instances the API does not know;
//   - outbox: delivers reports in order, durably, with backoff.
//
// Work in flight is journaled and reports are queued on disk (Store), so
// the agent may be killed at any instruction: on restart it resumes or
// cleans up, never provisions a contract twice and never loses a report.
// A provision never delays a heartbeat: every loop has its own goroutine.
//
// The package knows backends only through the provisioners registry.
package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Options are the agent's collaborators; only Registry is required.
type Options struct {
	Registry *provisioners.Registry
	Logger   *slog.Logger
	Version  string
	// Notifier speaks sd_notify; nil when not running under systemd.
	Notifier Notifier
	// Timing derives every duration from a config, at start and at each
	// reload; nil is TimingFromConfig.
	Timing func(*config.Config) Timing
	// HTTPClient for the API (tests); its Timeout must be 0.
	HTTPClient *http.Client
	// Clock is what every loop reads the time from and waits on; nil is
	// RealClock.
	Clock Clock
	// Rand returns numbers in [0,1) for jitter; nil is math/rand.
	Rand func() float64
	// Faults breaks the agent on purpose for the test suite; nil in
	// production (only a binary built with -tags testhooks sets it).
	Faults *Faults
	// Upgrade starts the upgrade path to version (the API's
	// upgradeToVersion, with agent.auto_update on); nil: the agent cannot,
	// and shows the request instead.
	Upgrade func(ctx context.Context, version string) error
}

// Faults are the test suite's fault injection, in one place.
type Faults struct {
	// Crash is called at each durable step of a provision with the step's
	// name (CrashPoints); the crash tests make it SIGKILL the process.
	Crash func(point string)
}

// Crash points, in the order a provision passes them.
const (
	CrashLocked              = "locked"               // lock held, nothing on disk
	CrashJournaled           = "journaled"            // journal written
	CrashStarted             = "started"              // API accepted "provisioning"
	CrashProvisionerCalled   = "provisioner_called"   // about to call the backend
	CrashProvisionerReturned = "provisioner_returned" // backend returned, report not queued
	CrashReportQueued        = "report_queued"        // report in the outbox, journal not cleared
	CrashJournalCleared      = "journal_cleared"      // only the outbox remembers the contract
	CrashReportSent          = "report_sent"          // API accepted the report, outbox not cleared
	CrashReportCleared       = "report_cleared"       // outbox cleared, lock not released
)

// CrashPoints lists every crash point in order.
var CrashPoints = []string{CrashLocked, CrashJournaled, CrashStarted, CrashProvisionerCalled, CrashProvisionerReturned,
	CrashReportQueued, CrashJournalCleared, CrashReportSent, CrashReportCleared}

// ConfigError is a problem with the config, a key or a provisioner's
// settings: the operator must fix a file (exit code 3).
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// Agent is one running dc-agent.
type Agent struct {
	opts      Options
	log       *slog.Logger
	clock     Clock
	rand      func() float64
	store     *Store
	obs       *observer
	live      *liveness
	startedAt time.Time
	version   string

	envMu sync.RWMutex
	env   *env

	global   *limiter
	limitsMu sync.Mutex
	perType  map[string]*limiter

	workMu   sync.Mutex
	leases   map[string]*lease    // by contract id: the contracts the agent works on
	doneAt   map[string]time.Time // when work on a contract last ended
	cooldown map[string]cooldown
	warned   map[string]time.Time // rate limit for repeated warnings
	active   int                  // contracts the API lists as live

	phase      atomic.Value // string
	outboxWake chan struct{}
	reconWake  chan struct{}
	healthWake chan struct{}
	progMu     sync.Mutex
	progress   chan struct{} // closed (and replaced) when work passes "started" or ends
	resumeMu   sync.Mutex
	resume     chan struct{} // closed by Reload to restart stopped loops
	hardStop   chan struct{}
	hardOnce   sync.Once
	workers    sync.WaitGroup
	renewals   sync.WaitGroup // lock renewals of open leases

	// batchHealth: 0 unknown, 1 the server takes batches, 2 it does not (until batchRetryAt).
	batchHealth  atomic.Int32
	batchRetryAt atomic.Int64
	reconcile404 atomic.Bool
	// activeList: 0 unknown, 1 the server has GET …/contracts/active, 2 it
	// does not (until activeRetryAt; the live API).
	activeList    atomic.Int32
	activeRetryAt atomic.Int64
	// termOnlyCancelled: the server refused a terminated report for a
	// contract that was not cancelled (live: mark_contract_terminated takes
	// cancelled contracts only); only cancelled ones are reported since.
	termOnlyCancelled atomic.Bool
	fleet             fleet

	statusSrv *statusServer
	metrics   *metrics
	pacer     *dcapi.Pacer
	// healthPace spaces health checks sent one request each (servers
	// without the batch endpoint) to Timing.HealthWritesPerMinute.
	healthPace *rate.Limiter
	// sealOnly: the server is dc-api with its extensions (it long-polls)
	// or refused a plaintext root password: passwords of contracts without
	// requester_pubkey are sealed to the requester's SSH key.
	sealOnly atomic.Bool
	tenant   *tenantWork // tenant requests (tenant.go)
	// gw is [gateway] (nil without one); opened by New, kept across
	// reloads (a changed [gateway] needs a restart).
	gw *gateway.Manager
}

// env is everything a config reload replaces.
type env struct {
	cfg      *config.Config
	client   *dcapi.Client
	timing   Timing
	backends map[string]*backend
	defType  string
	agentPub string
	// reqTimeout is the API client's per-request timeout.
	reqTimeout time.Duration

	mu      sync.Mutex
	refs    int
	retired bool
}

// backend is one configured provisioner.
type backend struct {
	typ  string
	p    provisioners.Provisioner
	feat provisioners.Features
	max  int // per-backend concurrency
	// policy says which instance_config keys a contract may set.
	policy provisioners.ConfigPolicy
}

type cooldown struct {
	until    time.Time
	failures int
}

// New does the local initialisation: loads the agent key, builds the API
// client and every configured provisioner, opens (and locks) the state
// directory and starts the status socket. When New returns nil the agent
// is ready to Run (READY=1 is sent by Run).
func New(cfg *config.Config, opts Options) (*Agent, error) {
	if opts.Registry == nil {
		return nil, errors.New("agent: no provisioner registry")
	}
	a := &Agent{
		opts:       opts,
		log:        opts.Logger,
		clock:      opts.Clock,
		rand:       opts.Rand,
		version:    opts.Version,
		perType:    map[string]*limiter{},
		leases:     map[string]*lease{},
		doneAt:     map[string]time.Time{},
		cooldown:   map[string]cooldown{},
		warned:     map[string]time.Time{},
		outboxWake: make(chan struct{}, 1),
		reconWake:  make(chan struct{}, 1),
		healthWake: make(chan struct{}, 1),
		progress:   make(chan struct{}),
		resume:     make(chan struct{}),
		hardStop:   make(chan struct{}),
		tenant:     newTenantWork(),
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.clock == nil {
		a.clock = RealClock{}
	}
	if a.version == "" {
		a.version = "dev"
	}
	a.phase.Store(status.PhaseStarting)
	a.startedAt = a.now()
	e, err := a.buildEnv(cfg)
	if err != nil {
		return nil, err
	}
	a.env = e
	a.live = newLiveness(a.now, e.timing.LivenessSlack)
	a.obs = newObserver(a.log, a.now)
	a.global = newLimiter(cfg.Agent.MaxConcurrentProvisions)
	a.applyLimits(e)

	st, err := OpenStore(cfg.Agent.StateDir)
	if err != nil {
		a.closeEnv(e)
		return nil, err
	}
	a.store = st
	if err := a.openGateway(); err != nil {
		st.Close()
		a.closeEnv(e)
		return nil, &ConfigError{err}
	}
	if a.statusSrv, err = a.startStatusServer(cfg.Agent.StatusSocket); err != nil {
		a.closeGateway()
		st.Close()
		a.closeEnv(e)
		return nil, err
	}
	if cfg.Agent.MetricsListen != "" {
		if a.metrics, err = a.startMetrics(cfg.Agent.MetricsListen); err != nil {
			a.statusSrv.close()
			a.closeGateway()
			st.Close()
			a.closeEnv(e)
			return nil, err
		}
	}
	return a, nil
}

// buildEnv turns a config into a client and backends.
func (a *Agent) buildEnv(cfg *config.Config) (*env, error) {
	key, err := cfg.LoadAgentKey()
	if err != nil {
		return nil, &ConfigError{fmt.Errorf("agent key: %w (create it with: dc-agent init)", err)}
	}
	timingOf := a.opts.Timing
	if timingOf == nil {
		timingOf = TimingFromConfig
	}
	t := timingOf(cfg)
	// One pacer for the agent's whole life: the read budget holds across
	// reloads (Reload applies a new one), and a 429 holds every loop's
	// requests.
	if a.pacer == nil {
		a.pacer = dcapi.NewPacer(t.ReadsPerMinute, t.ReadMinute)
		a.healthPace = rate.NewLimiter(healthRate(t), healthBurst)
	}
	copts := []dcapi.Option{dcapi.WithUserAgent("dc-agent/" + a.version), dcapi.WithLogger(a.log), dcapi.WithPacer(a.pacer)}
	if cfg.API.TimeoutSeconds > 0 {
		copts = append(copts, dcapi.WithTimeout(time.Duration(cfg.API.TimeoutSeconds)*time.Second))
	}
	if a.opts.HTTPClient != nil {
		copts = append(copts, dcapi.WithHTTPClient(a.opts.HTTPClient))
	}
	client, err := dcapi.New(cfg.API.Endpoint, cfg.API.ProviderPubkey, ed25519.PrivateKey(key), copts...)
	if err != nil {
		return nil, &ConfigError{err}
	}
	e := &env{cfg: cfg, client: client, timing: t, backends: map[string]*backend{}, defType: cfg.Provisioner.Type,
		agentPub: identity.PublicHex(key), reqTimeout: dcapi.DefaultTimeout}
	if cfg.API.TimeoutSeconds > 0 {
		e.reqTimeout = time.Duration(cfg.API.TimeoutSeconds) * time.Second
	}
	for _, pc := range cfg.AllProvisioners() {
		p, err := a.opts.Registry.New(pc, provisioners.Deps{Logger: a.log.With("provisioner", pc.Type), Config: cfg, Timeouts: t.Backend})
		if err != nil {
			a.closeEnv(e)
			return nil, &ConfigError{err}
		}
		m := pc.MaxConcurrent
		if m <= 0 || m > cfg.Agent.MaxConcurrentProvisions {
			m = cfg.Agent.MaxConcurrentProvisions
		}
		e.backends[pc.Type] = &backend{typ: pc.Type, p: p, feat: p.Features(), max: m, policy: provisioners.PolicyFor(p, pc.Type, pc.InstanceConfigAllow)}
	}
	return e, nil
}

func (a *Agent) applyLimits(e *env) {
	a.global.SetLimit(e.cfg.Agent.MaxConcurrentProvisions)
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	for typ, b := range e.backends {
		if l, ok := a.perType[typ]; ok {
			l.SetLimit(b.max)
		} else {
			a.perType[typ] = newLimiter(b.max)
		}
	}
}

func (a *Agent) limiterFor(typ string) *limiter {
	a.limitsMu.Lock()
	defer a.limitsMu.Unlock()
	l, ok := a.perType[typ]
	if !ok {
		l = newLimiter(1)
		a.perType[typ] = l
	}
	return l
}

// acquireEnv returns the current env, held until release.
func (a *Agent) acquireEnv() *env {
	a.envMu.RLock()
	e := a.env
	e.mu.Lock()
	e.refs++
	e.mu.Unlock()
	a.envMu.RUnlock()
	return e
}

func (a *Agent) releaseEnv(e *env) {
	e.mu.Lock()
	e.refs--
	closeNow := e.retired && e.refs == 0
	e.mu.Unlock()
	if closeNow {
		a.closeEnv(e)
	}
}

func (a *Agent) closeEnv(e *env) {
	for _, b := range e.backends {
		if c, ok := b.p.(provisioners.Closer); ok {
			if err := c.Close(); err != nil {
				a.log.Debug("close provisioner", "provisioner", b.typ, "err", err)
			}
		}
	}
}

// timing returns the current intervals.
func (a *Agent) timing() Timing {
	a.envMu.RLock()
	defer a.envMu.RUnlock()
	return a.env.timing
}

// Reload applies a new config (SIGHUP). A config that does not load or
// whose provisioners cannot be built is refused and the old one stays.
// State directory, status socket and metrics address need a restart.
func (a *Agent) Reload(cfg *config.Config) error {
	e, err := a.buildEnv(cfg)
	if err != nil {
		return err
	}
	a.envMu.Lock()
	old := a.env
	a.env = e
	a.envMu.Unlock()
	a.applyLimits(e)
	a.pacer.SetReadBudget(e.timing.ReadsPerMinute, e.timing.ReadMinute)
	a.healthPace.SetLimit(healthRate(e.timing))
	for _, w := range []struct{ name, old, new string }{
		{"agent.state_dir", old.cfg.Agent.StateDir, cfg.Agent.StateDir},
		{"agent.status_socket", old.cfg.Agent.StatusSocket, cfg.Agent.StatusSocket},
		{"agent.metrics_listen", old.cfg.Agent.MetricsListen, cfg.Agent.MetricsListen},
		{"[gateway]", gatewayKey(old.cfg.Gateway), gatewayKey(cfg.Gateway)},
	} {
		if w.old != w.new {
			a.obs.emit(status.EventNotice, status.LevelWarn, "", "", w.name+" changed; it takes effect at the next restart (systemctl restart dc-agent)")
		}
	}
	// A refused lock or start is retried with the new config; until then
	// it is no longer known to stand.
	a.obs.clearProblem(problemProvision)
	old.mu.Lock()
	old.retired = true
	closeNow := old.refs == 0
	old.mu.Unlock()
	if closeNow {
		a.closeEnv(old)
	}
	a.resumeMu.Lock()
	close(a.resume)
	a.resume = make(chan struct{})
	a.resumeMu.Unlock()
	a.obs.emit(status.EventReloaded, status.LevelInfo, "", "", "configuration reloaded")
	return nil
}

func (a *Agent) resumeChan() <-chan struct{} {
	a.resumeMu.Lock()
	defer a.resumeMu.Unlock()
	return a.resume
}

// HardStop cancels in-flight provisions now instead of waiting for the
// grace period (a second SIGTERM). Their journal entries stay, so the next
// start resumes them.
func (a *Agent) HardStop() { a.hardOnce.Do(func() { close(a.hardStop) }) }

func (a *Agent) crash(point string) {
	if a.opts.Faults != nil && a.opts.Faults.Crash != nil {
		a.opts.Faults.Crash(point)
	}
}

func (a *Agent) notify(state string) {
	if a.opts.Notifier == nil {
		return
	}
	if err := a.opts.Notifier.Notify(state); err != nil {
		a.log.Debug("sd_notify failed", "err", err)
	}
}

// Run runs the agent until ctx ends, then stops gracefully: no new
// contracts are taken, in-flight provisions get the shutdown grace (or
// until HardStop), queued reports get a last chance to go out. Whatever
// is unfinished stays in the journal and outbox for the next start.
//
// Run returns nil after a clean stop, or the errors of the loops that were
// stopped (an auth refusal waiting for a fix) or failing when it ended,
// joined.
func (a *Agent) Run(ctx context.Context) error {
	defer a.store.Close()
	defer a.closeGateway()
	defer a.statusSrv.close()
	if a.metrics != nil {
		defer a.metrics.close()
	}
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	loopCtx, cancelLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelLoops()
	rc := runCtxs{admit: ctx, work: workCtx, loops: loopCtx}

	e := a.acquireEnv()
	a.obs.emit(status.EventStarted, status.LevelInfo, "", "", "dc-agent starting",
		"version", a.version, "endpoint", e.client.Endpoint(), "provider", e.client.Provider(), "agent_key", e.agentPub,
		"provisioners", sortedTypes(e.backends), "state_dir", a.store.Dir())
	a.releaseEnv(e)
	a.resumeFromDisk(rc)

	var contracts, loops sync.WaitGroup
	var errMu sync.Mutex
	var errs []error
	start := func(wg *sync.WaitGroup, name string, ctx context.Context, fn func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.runLoop(ctx, name, fn); err != nil {
				errMu.Lock()
				errs = append(errs, err)
				errMu.Unlock()
			}
		}()
	}
	start(&contracts, loopContracts, ctx, func(ctx context.Context) error { return a.contractsLoop(ctx, rc) })
	start(&loops, loopHeartbeat, loopCtx, a.heartbeatLoop)
	start(&loops, loopHealth, loopCtx, a.healthLoop)
	start(&loops, loopReconcile, loopCtx, a.reconcileLoop)
	start(&loops, loopOutbox, loopCtx, a.outboxLoop)
	start(&loops, loopTenant, loopCtx, a.tenantLoop)
	loops.Add(1)
	go func() {
		defer loops.Done()
		a.systemdLoop(loopCtx)
	}()

	a.phase.Store(status.PhaseRunning)
	a.notify("READY=1")
	a.obs.emit(status.EventReady, status.LevelInfo, "", "", "dc-agent ready")

	<-ctx.Done()
	a.phase.Store(status.PhaseStopping)
	a.notify("STOPPING=1")
	contracts.Wait()
	n := a.runningWorkers()
	a.obs.emit(status.EventStopping, status.LevelInfo, "", "", fmt.Sprintf("stopping: no new contracts; waiting for %d provision(s)", n))
	done := make(chan struct{})
	go func() {
		a.workers.Wait()
		close(done)
	}()
	grace := a.timing().ShutdownGrace
	select {
	case <-done:
	case <-a.hardStop:
		a.obs.emit(status.EventNotice, status.LevelWarn, "", "", "hard stop: cancelling in-flight provisions; they resume at the next start")
		cancelWork()
		<-done
	case <-a.clock.After(grace):
		a.obs.emit(status.EventNotice, status.LevelWarn, "", "", fmt.Sprintf("shutdown grace of %s expired: cancelling in-flight provisions; they resume at the next start", grace))
		cancelWork()
		<-done
	}
	// Give the outbox a moment to deliver what the last provisions produced.
	a.drainOutbox(a.timing().OutboxFlush)
	cancelLoops()
	loops.Wait()
	a.renewals.Wait()
	a.obs.closeSubscribers()
	a.obs.emit(status.EventNotice, status.LevelInfo, "", "", "dc-agent stopped", "queued_reports", len(a.store.Reports()))
	e = a.acquireEnv()
	a.releaseEnv(e)
	a.closeEnv(e)
	return errors.Join(errs...)
}

// drainOutbox waits up to d for the outbox to empty.
func (a *Agent) drainOutbox(d time.Duration) {
	deadline := a.clock.After(d)
	for len(a.store.Reports()) > 0 {
		changed := a.obs.Changed()
		a.wakeOutbox()
		select {
		case <-deadline:
			return
		case <-changed:
		}
	}
}

func (a *Agent) wakeOutbox() {
	select {
	case a.outboxWake <- struct{}{}:
	default:
	}
}

// progressed tells the contracts loop that a contract it saw listed has
// moved on (the API no longer offers it), so a re-poll may find new ones.
func (a *Agent) progressed() {
	a.progMu.Lock()
	defer a.progMu.Unlock()
	close(a.progress)
	a.progress = make(chan struct{})
}

func (a *Agent) progressChan() <-chan struct{} {
	a.progMu.Lock()
	defer a.progMu.Unlock()
	return a.progress
}

func (a *Agent) wakeHealth() {
	select {
	case a.healthWake <- struct{}{}:
	default:
	}
}

func (a *Agent) wakeReconcile() {
	select {
	case a.reconWake <- struct{}{}:
	default:
	}
}

// warnOnce logs a repeated warning at most once per interval per key.
func (a *Agent) warnOnce(key string, every time.Duration, f func()) {
	a.workMu.Lock()
	last, ok := a.warned[key]
	now := a.now()
	if ok && now.Sub(last) < every {
		a.workMu.Unlock()
		return
	}
	a.warned[key] = now
	a.workMu.Unlock()
	f()
}

// State is the live state served on the status socket.
func (a *Agent) State() status.State {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	st := status.State{
		Version: a.version, PID: os.Getpid(), StartedAt: a.startedAt, Now: a.now(),
		Phase: a.phase.Load().(string), ConfigPath: e.cfg.Path, Endpoint: e.client.Endpoint(),
		Provider: e.client.Provider(), AgentPubkey: e.agentPub,
	}
	a.obs.snapshot(&st, time.Duration(dcapi.OnlineWindowNs))
	a.workMu.Lock()
	st.Counts.Active = a.active
	for _, l := range a.leases {
		sw := l.snapshot()
		st.Work = append(st.Work, sw)
		switch sw.Step {
		case status.StepQueued:
			st.Counts.Queued++
		case status.StepReporting:
		default:
			st.Counts.Provisioning++
		}
	}
	a.workMu.Unlock()
	slices.SortFunc(st.Work, func(x, y status.Work) int { return x.StartedAt.Compare(y.StartedAt) })
	st.Gateways = a.gatewayStatus()
	st.Counts.Outbox = len(a.store.Reports())
	for _, p := range a.store.AllPaused() {
		st.Paused = append(st.Paused, status.PausedInstance{ContractID: p.ContractID, ExternalID: p.ExternalID, Reason: p.Reason, Since: p.Since})
	}
	if members, _ := a.fleet.snapshot(); len(members) > 0 {
		st.Ending = ending(members)
		if len(st.Ending) > maxEnding {
			st.Ending = st.Ending[:maxEnding]
		}
	}
	for _, typ := range sortedTypes(e.backends) {
		b := e.backends[typ]
		st.Provisioners = append(st.Provisioners, status.Provisioner{
			Type: typ, Default: typ == e.defType, MaxConcurrent: b.max, InFlight: a.limiterFor(typ).InUse(), Features: featureNames(b.feat),
		})
	}
	offline := ""
	for _, l := range st.Loops {
		if (l.Name == loopHeartbeat || l.Name == loopContracts) && l.State == status.LoopBackoff {
			offline = "API unreachable, retrying"
		}
	}
	problem := ""
	if len(st.Problems) > 0 {
		problem = st.Problems[0].Message
		if st.Problems[0].Fix != "" {
			problem += " — " + st.Problems[0].Fix
		}
	}
	var lastPoll time.Time
	if st.LastPoll != nil {
		lastPoll = *st.LastPoll
	}
	st.Line = statusLine(st.Phase, st.Online, offline, st.Counts.Active, st.Counts.Queued, st.Counts.Provisioning, st.Counts.Outbox, lastPoll, st.Now, problem)
	return st
}

// healthBurst is how many per-contract health checks go at once.
const healthBurst = 5

// healthRate is Timing.HealthWritesPerMinute as a rate (keeping the burst
// inside the minute's budget).
func healthRate(t Timing) rate.Limit {
	if t.HealthWritesPerMinute <= healthBurst {
		return rate.Inf
	}
	return rate.Limit(float64(t.HealthWritesPerMinute-healthBurst) / t.ReadMinute.Seconds())
}

// maxEnding bounds the contracts State lists with their end times.
const maxEnding = 50

func sortedTypes(m map[string]*backend) []string { return slices.Sorted(maps.Keys(m)) }

func featureNames(f provisioners.Features) []string {
	var out []string
	for _, x := range []struct {
		on   bool
		name string
	}{{f.Terminate, "terminate"}, {f.List, "list"}, {f.Health, "health"}, {f.GetByID, "get"}, {f.Inventory, "inventory"}, {f.Manual, "manual"},
		{f.ResetPassword, "reset_password"}, {f.RotateSSHKey, "rotate_ssh_key"}} {
		if x.on {
			out = append(out, x.name)
		}
	}
	return out
}

// statusDebounce is the least time between two STATUS= updates.
const statusDebounce = 100 * time.Millisecond

// systemdLoop refreshes STATUS= and feeds the watchdog from the loops'
// own liveness.
func (a *Agent) systemdLoop(ctx context.Context) {
	if a.opts.Notifier == nil {
		return
	}
	wd := a.opts.Notifier.WatchdogInterval()
	every := a.timing().StatusEvery
	if wd > 0 {
		every = min(every, wd/3)
	}
	var lastLine string
	var lastPing time.Time
	stuckLogged := false
	for {
		if st := a.State(); st.Line != lastLine {
			a.notify("STATUS=" + st.Line)
			lastLine = st.Line
		}
		if wd > 0 && a.now().Sub(lastPing) >= wd/3 {
			if stuck := a.live.stuck(); len(stuck) == 0 {
				a.notify("WATCHDOG=1")
				lastPing = a.now()
				stuckLogged = false
			} else if !stuckLogged {
				a.obs.emit(status.EventNotice, status.LevelError, "", "", fmt.Sprintf("loop(s) stuck: %v; withholding the watchdog so systemd restarts the agent", stuck))
				stuckLogged = true
			}
		}
		// Changes show up promptly, but at most every statusDebounce.
		if a.wait(ctx, every, a.obs.Changed()) != nil || a.wait(ctx, min(statusDebounce, every), nil) != nil {
			return
		}
	}
}
