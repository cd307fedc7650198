// Package e2eutil runs the real agent loop against the real reference API
// server (apiserver/apitest) for end-to-end tests of the backends: a
// provider, a delegated agent key on disk, a config, and an in-process
// agent with millisecond timing.
package e2eutil

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Env is one API server with one provider and its agent key.
type Env struct {
	t        testing.TB
	API      *apitest.Server
	Provider *apitest.Provider
	AgentKey ed25519.PrivateKey
	KeyPath  string
	Dir      string
	// Profile is the server's profile; Account the agent's registration.
	Profile Profile
	Account *Account
}

// NewEnv starts the API server (default profile unless opts say otherwise)
// and delegates a fresh agent key, saved as a 0600 key file.
func NewEnv(t testing.TB, opts ...apitest.Option) *Env {
	return NewEnvFor(t, Profile{Name: "default"}, "", opts...)
}

// NewEnvFor starts the API server in profile p and registers an agent of
// provisionerType the way p's server does (Profile.Enroll).
func NewEnvFor(t testing.TB, p Profile, provisionerType string, opts ...apitest.Option) *Env {
	t.Helper()
	srv := apitest.Start(t, append(p.Options(), opts...)...)
	acc := p.Enroll(t, srv, provisionerType)
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(keyPath, acc.AgentKey, false); err != nil {
		t.Fatal(err)
	}
	return &Env{t: t, API: srv, Provider: acc.Provider, AgentKey: acc.AgentKey, KeyPath: keyPath, Dir: dir, Profile: p, Account: acc}
}

// CreateContract creates a contract the env's agent is offered.
func (e *Env) CreateContract(spec apitest.ContractSpec) string {
	return e.Account.CreateContract(e.API, spec)
}

// Config is an agent config for this env with pc as the only provisioner.
// stateDir "" means a fresh one.
func (e *Env) Config(pc config.ProvisionerConfig, stateDir string) *config.Config {
	e.t.Helper()
	if stateDir == "" {
		stateDir = filepath.Join(e.Dir, "state")
	}
	// Unix socket paths are short (108 bytes): keep it out of t.TempDir.
	sockDir := testutil.ShortDir(e.t)
	return &config.Config{
		API:     e.apiConfig(),
		Polling: config.PollingConfig{IntervalSeconds: 1, HealthCheckIntervalSeconds: 10, ReconcileIntervalSeconds: 10, OrphanGracePeriodSeconds: 1},
		Agent: config.AgentConfig{StateDir: stateDir, StatusSocket: filepath.Join(sockDir, "s.sock"),
			MaxConcurrentProvisions: 4, ShutdownGraceSeconds: 30},
		Provisioner: pc,
		Path:        filepath.Join(e.Dir, "dc-agent.toml"),
	}
}

func (e *Env) apiConfig() config.APIConfig {
	c := config.APIConfig{Endpoint: e.API.URL, ProviderPubkey: e.Provider.Pubkey, AgentSecretKey: e.KeyPath}
	if p := e.Account.Pool; p != nil {
		c.PoolID, c.PoolName, c.PoolLocation = p.PoolID, p.Name, p.Location
	}
	return c
}

// FastTiming makes every loop of the agent run in milliseconds.
func FastTiming() agent.Timing {
	return agent.Timing{
		PollInterval: 20 * time.Millisecond, LongPollWait: time.Second, MinRepoll: 10 * time.Millisecond,
		HealthInterval: 50 * time.Millisecond, ReconcileInterval: 50 * time.Millisecond, OrphanGrace: 300 * time.Millisecond,
		HeartbeatDefault: 100 * time.Millisecond, HeartbeatMin: 20 * time.Millisecond, HeartbeatMax: 100 * time.Millisecond,
		BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond, LockRenew: time.Minute,
		RetryCooldown: 50 * time.Millisecond, RetryCooldownMax: 200 * time.Millisecond, ShutdownGrace: 30 * time.Second, OutboxFlush: 200 * time.Millisecond,
		StatusEvery: 20 * time.Millisecond, HealthCheckTime: 10 * time.Second, ListTime: 10 * time.Second, TerminateTime: 30 * time.Second,
		LivenessSlack: 5 * time.Second, InventoryEvery: time.Minute, InventoryTime: 10 * time.Second, BatchRetry: time.Hour,
		TenantPoll: 50 * time.Millisecond, TenantPollStreamed: 200 * time.Millisecond, TenantRetry: 2 * time.Second,
		TenantCooldown: 500 * time.Millisecond, TenantCallTime: 30 * time.Second, StreamIdle: 10 * time.Second,
	}
}

// Running is an agent running in this process.
type Running struct {
	t      testing.TB
	Agent  *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

// StartAgent runs the agent loop with reg until Stop or the end of the test.
func (e *Env) StartAgent(cfg *config.Config, reg *provisioners.Registry) *Running {
	e.t.Helper()
	logger := slog.New(slog.DiscardHandler)
	if testing.Verbose() {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	a, err := agent.New(cfg, agent.Options{Registry: reg, Logger: logger, Version: "e2e",
		Timing: func(*config.Config) agent.Timing { return FastTiming() }})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Running{t: e.t, Agent: a, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- a.Run(ctx) }()
	e.t.Cleanup(r.Stop)
	return r
}

// Stop stops the agent gracefully and waits for it.
func (r *Running) Stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Errorf("agent: %v", err)
		}
	case <-time.After(60 * time.Second):
		r.t.Error("agent did not stop within 60s")
	}
}

// Eventually is testutil.Eventually.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, timeout, what, cond)
}
