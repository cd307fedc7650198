// Command dc-demo shows the whole system on one machine with nothing but
// Go installed (`make demo`): it starts the reference API server (dc-api)
// on SQLite, registers a provider and delegates an agent key, runs the real
// agent with a provisioner backend, creates contracts and shows them
// provisioned (passwords sealed for their requesters) and healthy, with the
// dashboard URL, until Ctrl-C.
//
// Environment:
//
//	DEMO_CONTRACTS=N   contracts to create (default 3)
//	DEMO_EXIT=1        exit once all are provisioned and healthy, printing
//	                   "demo: N/N contracts provisioned" (non-zero on failure)
//	DEMO_TIMEOUT=120s  how long to wait for that
//	DEMO_BACKEND=name  provisioner backend: proxmox (default: the real Proxmox
//	                   provisioner against the simulated node) or script
//	DEMO_PVE_TIMING=fast  simulated Proxmox tasks take milliseconds (tests)
//	DEMO_DIR=.demo     scratch directory (recreated on every run)
//	DEMO_PORT=8780     API/dashboard port on 127.0.0.1 (busy: any free port)
//	DEMO_PROFILE=live  run dc-api as the live Decent Cloud API (default:
//	                   "default"): the provider makes a pool and a one-time
//	                   setup token, `dc-agent register --setup-token
//	                   file:…` registers the agent with it and the contracts
//	                   are the pool's; no long-poll
//	DEMO_AGENT=path    the dc-agent binary that registers (default: the one
//	                   beside dc-demo, as make demo builds it, else on PATH)
package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
	"github.com/decent-stuff/dc-agent/provisioners/all"
	"github.com/decent-stuff/dc-agent/setup"
)

// marker marks a directory as the demo's own, so only that is ever wiped.
const marker = ".dc-demo"

func main() {
	// The script backend runs this same binary as the provider's script.
	demobackend.MaybeRun()
	os.Exit(run(os.Stdout))
}

type settings struct {
	contracts int
	exit      bool
	timeout   time.Duration
	backend   string
	dir       string
	port      int
	profile   string
	agentBin  string // dc-agent, for registering by setup token
}

func readSettings() (settings, error) {
	s := settings{contracts: 3, timeout: 120 * time.Second, backend: defaultBackend, dir: ".demo", port: 8780, profile: apiserver.ProfileDefault}
	if v := os.Getenv("DEMO_CONTRACTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 500 {
			return s, fmt.Errorf("DEMO_CONTRACTS=%q: use a number from 1 to 500", v)
		}
		s.contracts = n
	}
	switch v := os.Getenv("DEMO_EXIT"); v {
	case "", "0", "false", "no":
	case "1", "true", "yes":
		s.exit = true
	default:
		return s, fmt.Errorf("DEMO_EXIT=%q: use 1 or 0", v)
	}
	if v := os.Getenv("DEMO_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			secs, err2 := strconv.Atoi(v)
			if err2 != nil {
				return s, fmt.Errorf("DEMO_TIMEOUT=%q: use a duration like 90s", v)
			}
			d = time.Duration(secs) * time.Second
		}
		if d <= 0 {
			return s, fmt.Errorf("DEMO_TIMEOUT=%q must be positive", v)
		}
		s.timeout = d
	}
	if v := os.Getenv("DEMO_BACKEND"); v != "" {
		if _, ok := backends[v]; !ok {
			return s, fmt.Errorf("DEMO_BACKEND=%q: choose one of %s", v, strings.Join(backendNames(), ", "))
		}
		s.backend = v
	}
	switch v := os.Getenv("DEMO_PROFILE"); v {
	case "", apiserver.ProfileDefault:
	case apiserver.ProfileLive:
		s.profile = v
	default:
		return s, fmt.Errorf("DEMO_PROFILE=%q: use %s or %s", v, apiserver.ProfileDefault, apiserver.ProfileLive)
	}
	if v := os.Getenv("DEMO_DIR"); v != "" {
		s.dir = v
	}
	s.agentBin = os.Getenv("DEMO_AGENT")
	if s.agentBin == "" {
		s.agentBin = "dc-agent"
		if self, err := os.Executable(); err == nil {
			if beside := filepath.Join(filepath.Dir(self), "dc-agent"); fileExists(beside) {
				s.agentBin = beside
			}
		}
	}
	if v := os.Getenv("DEMO_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			return s, fmt.Errorf("DEMO_PORT=%q is not a port", v)
		}
		s.port = p
	}
	return s, nil
}

func backendNames() []string {
	var out []string
	for n := range backends {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func run(out io.Writer) int {
	s, err := readSettings()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{s: s, out: out}
	err = d.run(ctx)
	d.close()
	switch {
	case err == nil:
		return 0
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(out, "\ndemo: stopped")
		return 0
	default:
		fmt.Fprintln(out, "demo: failed:", err)
		if d.agentLog != "" {
			fmt.Fprintln(out, "demo: the agent's log is in", d.agentLog)
		}
		return 1
	}
}

type demo struct {
	s        settings
	outMu    sync.Mutex
	out      io.Writer
	dir      string
	agentLog string

	st       *store.Store
	api      *apiserver.Server
	apiDone  chan error
	stopAPI  context.CancelFunc
	backend  Backend
	agent    *agent.Agent
	agentRun chan error
	stopAgt  context.CancelFunc
	logFile  *os.File

	provider   ed25519.PrivateKey
	pool       *store.Pool                   // the live profile's pool
	setup      *dcapi.AgentSetupResponse     // and the agent's registration in it
	requesters map[string]ed25519.PrivateKey // contract id → requester key
	order      []string
}

func (d *demo) say(format string, args ...any) {
	d.outMu.Lock()
	defer d.outMu.Unlock()
	fmt.Fprintf(d.out, format+"\n", args...)
}

func (d *demo) run(ctx context.Context) error {
	if err := d.prepareDir(); err != nil {
		return err
	}
	url, err := d.startAPI(ctx)
	if err != nil {
		return err
	}
	d.backend = backends[d.s.backend]()
	pc, err := d.backend.Start(ctx, d.dir)
	if err != nil {
		return fmt.Errorf("start the %s backend: %w", d.s.backend, err)
	}
	var agentKey ed25519.PrivateKey
	var registered string
	if d.s.profile == apiserver.ProfileLive {
		agentKey, registered, err = d.seedPool(ctx, url, pc.Type)
	} else {
		agentKey, err = d.seed(ctx)
		registered = "delegated"
	}
	if err != nil {
		return err
	}
	socket, err := d.startAgent(url, agentKey, pc)
	if err != nil {
		return err
	}
	d.say("dc-demo %s — Decent Cloud provider agent, end to end on this machine", buildinfo.Version)
	d.say("  API + dashboard  %s/   (dc-api, profile %s, on SQLite: %s)", url, d.s.profile, filepath.Join(d.dir, "dc-api.db"))
	d.say("  provider         Demo Hosting %s", short(identity.PublicHex(d.provider)))
	d.say("  agent            key %s, %s; %s", short(identity.PublicHex(agentKey)), registered, d.backend.Describe())
	d.say("  agent log        %s   (live state: dc-agent status --socket %s)", d.agentLog, socket)
	d.say("")

	evCtx, stopEvents := context.WithCancel(ctx)
	defer stopEvents()
	go d.showEvents(evCtx, socket)
	if err := d.waitRunning(ctx); err != nil {
		return err
	}

	d.say("creating %d contract(s)…", d.s.contracts)
	for i := 0; i < d.s.contracts; i++ {
		if err := d.createContract(ctx, i); err != nil {
			return err
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, d.s.timeout)
	defer cancel()
	done, err := d.waitAllHealthy(waitCtx)
	stopEvents()
	time.Sleep(50 * time.Millisecond) // let the last event lines print first
	d.say("")
	d.printTable(ctx)
	if err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%d/%d contracts provisioned and healthy after %s: %w", done, d.s.contracts, d.s.timeout, err)
	}
	d.say("demo: %d/%d contracts provisioned", done, d.s.contracts)
	if d.s.exit {
		return nil
	}
	d.say("\nDashboard: %s/  — the agent keeps running (heartbeats, health checks); Ctrl-C to stop.", url)
	evCtx2, stopEvents2 := context.WithCancel(ctx)
	defer stopEvents2()
	go d.showEvents(evCtx2, socket)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-d.agentRun:
		return fmt.Errorf("the agent stopped: %v", err)
	}
}

// prepareDir recreates the scratch directory; it only ever deletes a
// directory the demo made (it carries the marker file).
func (d *demo) prepareDir() error {
	dir, err := filepath.Abs(d.s.dir)
	if err != nil {
		return err
	}
	d.dir = dir
	if _, err := os.Stat(dir); err == nil {
		if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
			return fmt.Errorf("DEMO_DIR %s exists and was not made by the demo; choose another DEMO_DIR", dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, marker), []byte("scratch directory of dc-demo; deleted on the next run\n"), 0o600)
}

func (d *demo) startAPI(ctx context.Context) (string, error) {
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(d.dir, "dc-api.db"), store.Options{})
	if err != nil {
		return "", fmt.Errorf("open the API database: %w", err)
	}
	d.st = st
	// Rate limits are off, as live has them outside production
	// (api/src/rate_limit.rs from_env).
	api, err := apiserver.New(apiserver.Config{Store: st, Logger: slog.New(slog.DiscardHandler), Version: "demo", DashboardRefresh: 2 * time.Second,
		Profile: d.s.profile, RateLimit: -1})
	if err != nil {
		return "", err
	}
	d.api = api
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", d.s.port))
	if err != nil && d.s.port != 0 {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		return "", fmt.Errorf("listen: %w", err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	d.stopAPI, d.apiDone = cancel, make(chan error, 1)
	go func() { d.apiDone <- api.Serve(sctx, ln, 2*time.Second) }()
	return "http://" + ln.Addr().String(), nil
}

// seed registers the provider and delegates a fresh agent key, as
// `dc-agent delegation request/sign` and `dc-agent register` would.
func (d *demo) seed(ctx context.Context) (ed25519.PrivateKey, error) {
	var err error
	if d.provider, err = identity.GenerateKey(); err != nil {
		return nil, err
	}
	agentKey, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixNano()
	prov := identity.PublicHex(d.provider)
	if _, err := d.st.AddProvider(ctx, prov, "Demo Hosting", now); err != nil {
		return nil, fmt.Errorf("register provider: %w", err)
	}
	dl := identity.Delegation{AgentPubkey: identity.PublicHex(agentKey), ProviderPubkey: prov, Permissions: identity.AllPermissions, Label: "dc-demo"}
	sd, err := dl.Sign(d.provider)
	if err != nil {
		return nil, err
	}
	if _, _, err := d.st.PutDelegation(ctx, sd, false, now); err != nil {
		return nil, fmt.Errorf("register delegation: %w", err)
	}
	return agentKey, nil
}

// seedPool is registration as the live API has it: the provider makes a
// pool and a one-time setup token, and `dc-agent register --setup-token
// file:…` creates the agent key and registers it with the token (POST
// /api/v1/agents/setup, unsigned), writing the provider and pool into the
// config. It returns the key and a line saying so.
func (d *demo) seedPool(ctx context.Context, url, ptype string) (ed25519.PrivateKey, string, error) {
	var err error
	if d.provider, err = identity.GenerateKey(); err != nil {
		return nil, "", err
	}
	now := time.Now().UnixNano()
	prov := identity.PublicHex(d.provider)
	if _, err := d.st.AddProvider(ctx, prov, "Demo Hosting", now); err != nil {
		return nil, "", fmt.Errorf("register provider: %w", err)
	}
	if d.pool, err = d.st.CreatePool(ctx, prov, "demo", "europe", ptype, now); err != nil {
		return nil, "", fmt.Errorf("create pool: %w", err)
	}
	tok, err := d.st.CreateSetupToken(ctx, prov, d.pool.PoolID, nil, store.DefaultSetupTokenTTL, now)
	if err != nil {
		return nil, "", fmt.Errorf("create setup token: %w", err)
	}
	tokFile, cfgPath := filepath.Join(d.dir, "setup-token"), filepath.Join(d.dir, "dc-agent.toml")
	if err := os.WriteFile(tokFile, []byte(tok.Token+"\n"), 0o600); err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, d.s.agentBin, "--config", cfgPath, "register", "--setup-token", "file:"+tokFile, "--api-endpoint", url)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + d.dir}
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, "", fmt.Errorf("dc-agent register --setup-token (%s; build it with make demo, or set DEMO_AGENT): %v\n%s", d.s.agentBin, err, out)
	}
	cfg, _, err := setup.LoadForUpdate(cfgPath)
	if err != nil {
		return nil, "", err
	}
	cfg.Path = cfgPath
	agentKey, err := cfg.LoadAgentKey()
	if err != nil {
		return nil, "", err
	}
	d.setup = &dcapi.AgentSetupResponse{ProviderPubkey: cfg.API.ProviderPubkey, PoolID: cfg.API.PoolID, PoolName: cfg.API.PoolName, PoolLocation: cfg.API.PoolLocation}
	return agentKey, fmt.Sprintf("registered by dc-agent register --setup-token (%s…) into pool %s (%s)", tok.Token[:len(tok.Token)-12], cfg.API.PoolID, cfg.API.PoolLocation), nil
}

func fileExists(p string) bool { st, err := os.Stat(p); return err == nil && !st.IsDir() }

func (d *demo) startAgent(url string, agentKey ed25519.PrivateKey, pc config.ProvisionerConfig) (string, error) {
	keyPath := filepath.Join(d.dir, "agent.key")
	if err := identity.SaveAgentKey(keyPath, agentKey, true); err != nil {
		return "", err
	}
	socket := filepath.Join(d.dir, "status.sock")
	if len(socket) > 100 {
		socket = filepath.Join(os.TempDir(), fmt.Sprintf("dc-demo-%d.sock", os.Getpid()))
	}
	poll := 30 // a long-poll answers at once when a contract is created
	if d.s.profile == apiserver.ProfileLive {
		poll = 5 // the live API has no long-poll
	}
	cfg := &config.Config{
		API:         config.APIConfig{Endpoint: url, ProviderPubkey: identity.PublicHex(d.provider), AgentSecretKey: keyPath},
		Polling:     config.PollingConfig{IntervalSeconds: poll, HealthCheckIntervalSeconds: 10, ReconcileIntervalSeconds: 30},
		Agent:       config.AgentConfig{StateDir: filepath.Join(d.dir, "agent-state"), StatusSocket: socket, MaxConcurrentProvisions: 4, ShutdownGraceSeconds: 10},
		Provisioner: pc,
	}
	if d.setup != nil {
		// What setup-token registration writes into the config.
		cfg.API.PoolID, cfg.API.PoolName, cfg.API.PoolLocation = d.setup.PoolID, d.setup.PoolName, d.setup.PoolLocation
	}
	cfgPath := filepath.Join(d.dir, "dc-agent.toml")
	if err := config.Save(cfgPath, cfg); err != nil {
		return "", err
	}
	// The agent reads the file back like the service does: defaults, validation.
	loaded, err := config.Load(cfgPath)
	if err != nil {
		return "", fmt.Errorf("demo config: %w", err)
	}
	d.agentLog = filepath.Join(d.dir, "agent.log")
	if d.logFile, err = os.OpenFile(d.agentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
		return "", err
	}
	log, err := agent.NewLogger(d.logFile, "text", "info")
	if err != nil {
		return "", err
	}
	a, err := agent.New(loaded, agent.Options{Registry: all.Registry(), Logger: log, Version: buildinfo.Version})
	if err != nil {
		return "", fmt.Errorf("start the agent: %w", err)
	}
	d.agent = a
	actx, cancel := context.WithCancel(context.Background())
	d.stopAgt, d.agentRun = cancel, make(chan error, 1)
	go func() { d.agentRun <- a.Run(actx) }()
	return socket, nil
}

// waitRunning waits until the agent polls the API.
func (d *demo) waitRunning(ctx context.Context) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := d.agent.State()
		if st.Phase == status.PhaseRunning && st.Online {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent did not come online within 15s: %s", st.Line)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-d.agentRun:
			return fmt.Errorf("the agent stopped: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (d *demo) createContract(ctx context.Context, i int) error {
	if d.requesters == nil {
		d.requesters = map[string]ed25519.PrivateKey{}
	}
	req, err := identity.GenerateKey()
	if err != nil {
		return err
	}
	pk, err := ssh.NewPublicKey(req.Public())
	if err != nil {
		return err
	}
	sizes := []struct {
		cpu       int
		mem, disk string
	}{{1, "1 GB", "10 GB"}, {2, "4 GB", "50 GB"}, {4, "16 GB", "1 TB"}}[i%3]
	hexKey := identity.PublicHex(req)
	nc := store.NewContract{
		ProviderPubkey: identity.PublicHex(d.provider), OfferingID: fmt.Sprintf("demo-%dcpu", sizes.cpu),
		RequesterSSHPubkey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " requester-" + strconv.Itoa(i+1),
		RequesterPubkey:    &hexKey, CPUCores: &sizes.cpu, MemoryAmount: &sizes.mem, StorageCapacity: &sizes.disk,
	}
	if d.pool != nil {
		nc.AgentPoolID = &d.pool.PoolID
	}
	c, err := d.st.CreateContract(ctx, nc, time.Now().UnixNano())
	if err != nil {
		return fmt.Errorf("create contract: %w", err)
	}
	d.api.WakeProvider(identity.PublicHex(d.provider))
	d.requesters[c.ContractID] = req
	d.order = append(d.order, c.ContractID)
	return nil
}

// waitAllHealthy waits until every contract is provisioned (or active)
// and has a healthy check stored; it returns how many are.
func (d *demo) waitAllHealthy(ctx context.Context) (int, error) {
	for {
		done := 0
		var last error
		for _, cid := range d.order {
			c, err := d.st.GetContract(ctx, cid)
			if err != nil {
				last = err
				continue
			}
			if c.Status == dcapi.StatusProvisioningFailed && c.LastError != nil {
				last = fmt.Errorf("contract %s failed: %s", short(cid), *c.LastError)
			}
			if (c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive) && c.LastHealthStatus != nil && *c.LastHealthStatus == dcapi.HealthHealthy {
				done++
			}
		}
		if done == len(d.order) {
			return done, nil
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return done, last
			}
			return done, ctx.Err()
		case err := <-d.agentRun:
			return done, fmt.Errorf("the agent stopped: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *demo) printTable(ctx context.Context) {
	d.say("%-14s %-12s %-18s %-12s %-9s %s", "CONTRACT", "STATUS", "INSTANCE", "IP", "HEALTH", "ROOT PASSWORD (sealed; opened with the requester's key)")
	for _, cid := range d.order {
		c, err := d.st.GetContract(ctx, cid)
		if err != nil {
			continue
		}
		var det dcapi.InstanceDetails
		pw := "-"
		if c.InstanceDetails != nil && decodeJSON(*c.InstanceDetails, &det) == nil && det.RootPassword != "" {
			if plain, err := identity.Open(det.RootPassword, d.requesters[cid]); err == nil {
				pw = string(plain[:min(len(plain), 8)]) + "…"
			} else {
				pw = "cannot open: " + err.Error()
			}
		}
		health := "-"
		if c.LastHealthStatus != nil {
			health = *c.LastHealthStatus
		}
		d.say("%-14s %-12s %-18s %-12s %-9s %s", short(cid), c.Status, orDash(det.ExternalID), orDash(det.IPAddress), health, pw)
	}
	if lines := d.backend.Instances(); len(lines) > 0 {
		d.say("\nbackend holds %d machine(s):", len(lines))
		for _, l := range lines {
			d.say("  %s", l)
		}
	}
}

// showEvents prints the agent's event stream (from its status socket, as
// `dc-agent status --follow` does).
func (d *demo) showEvents(ctx context.Context, socket string) {
	c := status.NewClient(socket)
	var last uint64
	for ctx.Err() == nil {
		_ = c.Events(ctx, last, func(ev status.Event) error {
			last = ev.Seq
			switch ev.Kind {
			case status.EventContractReceived, status.EventProvisionStep, status.EventProvisioned, status.EventProvisionFailed,
				status.EventReportSent, status.EventHeartbeat, status.EventHealthReported, status.EventTerminated, status.EventLoopBackoff, status.EventLoopStopped:
				who := "agent   "
				if ev.ContractID != "" {
					who = short(ev.ContractID)
				}
				d.say("  %s  %-14s %s", ev.Time.Local().Format("15:04:05"), who, ev.Message)
			}
			return nil
		})
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (d *demo) close() {
	if d.stopAgt != nil {
		d.stopAgt()
		select {
		case <-d.agentRun:
		case <-time.After(15 * time.Second):
		}
	}
	if d.backend != nil {
		d.backend.Stop()
	}
	if d.stopAPI != nil {
		d.stopAPI()
		<-d.apiDone
	}
	if d.st != nil {
		d.st.Close()
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func decodeJSON(s string, v any) error { return json.Unmarshal([]byte(s), v) }
