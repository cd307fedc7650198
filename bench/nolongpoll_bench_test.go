package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// BenchmarkPickupNoLongPoll: against a server that does not hold the poll
// open (dc-api --profile live, with the live API's per-IP rate limit of 120
// reads and 60 writes a minute), how long a paid contract waits before it
// is picked up, and how many reads a minute that costs — dc-agent next to
// the Rust agent's polling, in one run, side by side (two servers, the same
// arrivals: uniform random gaps). The Rust agent is emulated by its poll
// loop: GET pending-provision every polling.interval_seconds, 30 s by
// default (dc-agent/src/runtime/mod.rs, config.rs), the only read it makes
// periodically; it picks a contract up when a poll returns it.
func BenchmarkPickupNoLongPoll(b *testing.B) {
	n, meanGap := 20, 8*time.Second
	if quick() {
		n, meanGap = 6, 2*time.Second
	}
	for i := 0; i < b.N; i++ {
		gaps := make([]time.Duration, n)
		for k := range gaps {
			gaps[k] = time.Duration(rand.Float64() * 2 * float64(meanGap))
		}
		var wg sync.WaitGroup
		res := make([]pickup, 2)
		for j, poller := range []string{"dc-agent", "rust-30s"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res[j] = runPickup(b, poller, gaps)
			}()
		}
		wg.Wait()
		for _, r := range res {
			if r.err != nil {
				b.Fatal(r.err)
			}
			fmt.Printf("no long-poll %-9s %d contracts over %s: pick-up p50 %s, p99 %s; %.1f reads/min (live budget 120, target ≤ 60), %d answered 429\n",
				r.name, n, r.window.Round(time.Second), r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.readsPerMin, r.limited)
			b.ReportMetric(float64(r.p50)/1e6, r.name+"-p50-ms")
			b.ReportMetric(r.readsPerMin, r.name+"-reads/min")
		}
		fmt.Printf("no long-poll: dc-agent picks up %.1f× faster (p50) for %.1f× the reads\n",
			float64(res[1].p50)/float64(res[0].p50), res[0].readsPerMin/res[1].readsPerMin)
	}
}

type pickup struct {
	name             string
	p50, p99, window time.Duration
	readsPerMin      float64
	limited          int
	err              error
}

// runPickup starts a live-profile server, a pooled agent (dc-agent in
// process, or the Rust agent's poll loop) and creates len(gaps) contracts.
func runPickup(b *testing.B, name string, gaps []time.Duration) pickup {
	srv := apitest.Start(b, append(e2eutil.Profiles[1].Options(), apitest.WithRateLimit(0, 0))...)
	acc := e2eutil.Profiles[1].Enroll(b, srv, config.TypeScript)
	seen := &recorder{called: map[string]time.Time{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	switch name {
	case "dc-agent":
		dir := b.TempDir()
		kp := filepath.Join(dir, "agent.key")
		if err := identity.SaveAgentKey(kp, acc.AgentKey, false); err != nil {
			return pickup{err: err}
		}
		sock, err := os.MkdirTemp("", "dcb")
		if err != nil {
			return pickup{err: err}
		}
		defer os.RemoveAll(sock)
		// The Rust agent's config values: interval_seconds = 30.
		cfg := &config.Config{
			API:     config.APIConfig{Endpoint: srv.URL, ProviderPubkey: acc.Provider.Pubkey, AgentSecretKey: kp, PoolID: acc.Pool.PoolID},
			Polling: config.PollingConfig{IntervalSeconds: 30, HealthCheckIntervalSeconds: 300, ReconcileIntervalSeconds: 300},
			Agent: config.AgentConfig{StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(sock, "s.sock"),
				MaxConcurrentProvisions: 8, ShutdownGraceSeconds: 60},
			Provisioner: config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{Provision: "/bin/true", Terminate: "/bin/true", HealthCheck: "/bin/true", TimeoutSeconds: 60}},
		}
		path := filepath.Join(dir, "dc-agent.toml")
		if err := config.Save(path, cfg); err != nil {
			return pickup{err: err}
		}
		if cfg, err = config.Load(path); err != nil {
			return pickup{err: err}
		}
		reg := provisioners.NewRegistry()
		reg.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) { return seen, nil })
		a, err := agent.New(cfg, agent.Options{Registry: reg, Version: "bench"})
		if err != nil {
			return pickup{err: err}
		}
		done := make(chan struct{})
		go func() { _ = a.Run(ctx); close(done) }()
		defer func() { cancel(); <-done }()
	default:
		c := srv.Client(acc.Provider, acc.AgentKey)
		go func() {
			for {
				if list, _, err := c.PendingContracts(ctx, 0); err == nil {
					now := time.Now()
					seen.mu.Lock()
					for _, p := range list {
						if _, ok := seen.called[p.ContractID]; !ok {
							seen.called[p.ContractID] = now
						}
					}
					seen.mu.Unlock()
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(30 * time.Second):
				}
			}
		}()
	}
	// Reads are counted from the first contract to the last pick-up.
	reads0 := srv.CountRequests("GET", dcapi.APIPrefix, 0)
	start := time.Now()
	created := map[string]time.Time{}
	var order []string
	for _, g := range gaps {
		time.Sleep(g)
		at := time.Now()
		cid := acc.CreateContract(srv, apitest.ContractSpec{})
		created[cid], order = at, append(order, cid)
	}
	lat, err := seen.latencies(order, created, time.Now().Add(2*time.Minute))
	if err != nil {
		return pickup{err: fmt.Errorf("%s: %w", name, err)}
	}
	window := time.Since(start)
	reads := srv.CountRequests("GET", dcapi.APIPrefix, 0) - reads0
	return pickup{name: name, p50: percentile(lat, 0.5), p99: percentile(lat, 0.99), window: window,
		readsPerMin: float64(reads) / window.Minutes(), limited: srv.CountRequests("", "", 429)}
}
