// Package bench measures the agent against the reference server and prints
// the figures (make bench). Each benchmark runs once (-benchtime 1x): they
// are experiments with real time in them, not micro-benchmarks.
//
//	BenchmarkPickupLatency   contract created → provisioner called with
//	                         long-poll, p50/p99 over 50 contracts
//	BenchmarkPickupNoLongPoll  the same against dc-api --profile live (no
//	                         long-poll): dc-agent next to the Rust agent's
//	                         30 s polling, with the reads per minute of each
//	BenchmarkConcurrency     20 contracts on a backend taking 5 s each,
//	                         max_concurrent_provisions 4 vs 1
//	BenchmarkIdle            RSS and CPU of an idle `dc-agent run` over 60 s
//	BenchmarkWizardFirstFrame  bare `dc-agent` on a pty: launch → first
//	                         wizard frame, p50/max over 20 launches
//
// BENCH_QUICK=1 shrinks every experiment (for a smoke run).
package bench

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/all"
)

// demoBackend is the demo machine pool program the script provisioner
// drives, built once by TestMain.
var demoBackend string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run()) // `go test ./...` without -bench: nothing to prepare
	}
	dir, err := os.MkdirTemp("", "dc-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	demoBackend, err = goBuild(dir, "github.com/decent-stuff/dc-agent/internal/demobackend/demo-backend", "demo-backend")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func goBuild(dir, pkg, name string) (string, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	if o, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, o)
	}
	return out, nil
}

func quick() bool { return os.Getenv("BENCH_QUICK") == "1" }

// setup is a reference server with a provider and a delegated agent key.
type setup struct {
	srv      *apitest.Server
	prov     *apitest.Provider
	keyPath  string
	dir      string
	stateDir string
}

func newSetup(b *testing.B) *setup {
	srv := apitest.Start(b)
	prov := srv.NewProvider("Bench Hosting")
	key := srv.NewAgent(prov)
	dir := b.TempDir()
	kp := filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(kp, key, false); err != nil {
		b.Fatal(err)
	}
	return &setup{srv: srv, prov: prov, keyPath: kp, dir: dir, stateDir: filepath.Join(dir, "state")}
}

func (s *setup) config(b *testing.B, pc config.ProvisionerConfig, interval int, longPoll bool, maxConc int) *config.Config {
	sock := testutil.ShortDir(b)
	lp := longPoll
	cfg := &config.Config{
		API:         config.APIConfig{Endpoint: s.srv.URL, ProviderPubkey: s.prov.Pubkey, AgentSecretKey: s.keyPath},
		Polling:     config.PollingConfig{IntervalSeconds: interval, HealthCheckIntervalSeconds: 300, ReconcileIntervalSeconds: 300, LongPoll: &lp},
		Agent:       config.AgentConfig{StateDir: s.stateDir, StatusSocket: filepath.Join(sock, "s.sock"), MaxConcurrentProvisions: maxConc, ShutdownGraceSeconds: 60},
		Provisioner: pc,
	}
	path := filepath.Join(s.dir, "dc-agent.toml")
	if err := config.Save(path, cfg); err != nil {
		b.Fatal(err)
	}
	loaded, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	return loaded
}

// runAgent runs an in-process agent until the benchmark ends.
func runAgent(b *testing.B, cfg *config.Config, reg *provisioners.Registry) {
	a, err := agent.New(cfg, agent.Options{Registry: reg, Version: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = a.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(20 * time.Second)
	for !a.State().Online {
		if time.Now().After(deadline) {
			b.Fatal("agent did not come online")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a backend that notes when it is asked to provision.
type recorder struct {
	mu     sync.Mutex
	called map[string]time.Time
}

func (r *recorder) Type() string { return config.TypeScript }
func (r *recorder) Features() provisioners.Features {
	return provisioners.Features{Terminate: true, Health: true}
}
func (r *recorder) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	r.mu.Lock()
	if _, seen := r.called[req.ContractID]; !seen {
		r.called[req.ContractID] = time.Now()
	}
	r.mu.Unlock()
	return provisioners.Instance{ExternalID: "rec-" + req.ContractID[:8], IPAddress: "10.0.0.1", SSHPort: 22}, nil
}
func (r *recorder) Terminate(context.Context, string) error { return nil }
func (r *recorder) HealthCheck(context.Context, string) (provisioners.Health, error) {
	return provisioners.Health{Status: provisioners.Healthy}, nil
}
func (r *recorder) GetInstance(context.Context, string) (*provisioners.Instance, error) {
	return nil, nil
}
func (r *recorder) List(context.Context) ([]provisioners.Instance, error) { return nil, nil }

func (r *recorder) get(cid string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.called[cid]
	return t, ok
}

// latencies waits (until deadline) for each contract of order to reach
// the provisioner and returns how long each took from created.
func (r *recorder) latencies(order []string, created map[string]time.Time, deadline time.Time) ([]time.Duration, error) {
	var lat []time.Duration
	for _, cid := range order {
		for {
			if t, ok := r.get(cid); ok {
				lat = append(lat, t.Sub(created[cid]))
				break
			}
			if time.Now().After(deadline) {
				return lat, fmt.Errorf("contract %s never reached the provisioner", cid)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return lat, nil
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}

// BenchmarkPickupLatency: how long a paid contract waits before the
// provisioner is called. Contracts arrive at random times (uniform gaps),
// so with polling they land at random phases of the poll interval.
func BenchmarkPickupLatency(b *testing.B) {
	n := 50
	if quick() {
		n = 10
	}
	for _, mode := range []struct {
		name     string
		longPoll bool
		interval int
		meanGap  time.Duration
	}{
		{"long-poll", true, 30, 150 * time.Millisecond},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s := newSetup(b)
				rec := &recorder{called: map[string]time.Time{}}
				reg := provisioners.NewRegistry()
				reg.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) { return rec, nil })
				cfg := s.config(b, config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{Provision: "/bin/true", Terminate: "/bin/true", HealthCheck: "/bin/true", TimeoutSeconds: 60}}, mode.interval, mode.longPoll, 8)
				runAgent(b, cfg, reg)
				created := map[string]time.Time{}
				var order []string
				start := time.Now()
				for k := 0; k < n; k++ {
					time.Sleep(time.Duration(rand.Float64() * 2 * float64(mode.meanGap)))
					at := time.Now()
					cid := s.srv.CreateContract(s.prov, apitest.ContractSpec{})
					created[cid] = at
					order = append(order, cid)
				}
				lat, err := rec.latencies(order, created, time.Now().Add(time.Duration(mode.interval)*time.Second*2+30*time.Second))
				if err != nil {
					b.Fatal(err)
				}
				p50, p99 := percentile(lat, 0.5), percentile(lat, 0.99)
				b.ReportMetric(float64(p50)/1e6, "p50-ms")
				b.ReportMetric(float64(p99)/1e6, "p99-ms")
				fmt.Printf("pickup latency %-9s over %d contracts (%s): p50 %s, p99 %s, max %s\n", mode.name, n,
					time.Since(start).Round(time.Second), p50.Round(time.Millisecond), p99.Round(time.Millisecond), percentile(lat, 1).Round(time.Millisecond))
			}
		})
	}
}

// BenchmarkConcurrency: 20 contracts on a backend that needs 5 s for each
// (the demo machine pool behind the real script provisioner), with
// max_concurrent_provisions 1 and then 4; the ratio is printed.
func BenchmarkConcurrency(b *testing.B) {
	n, delay := 20, 5*time.Second
	if quick() {
		n, delay = 8, time.Second
	}
	results := map[int]time.Duration{}
	for _, conc := range []int{1, 4} {
		b.Run("concurrency-"+strconv.Itoa(conc), func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				s := newSetup(b)
				pool := &demobackend.Backend{Dir: filepath.Join(s.dir, "pool")}
				if err := pool.Set("delay", delay.String()); err != nil {
					b.Fatal(err)
				}
				wrapper := filepath.Join(s.dir, "backend.sh")
				if err := demobackend.WriteWrapper(wrapper, demoBackend, pool.Dir); err != nil {
					b.Fatal(err)
				}
				pc := config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
					Provision: wrapper, Terminate: wrapper, HealthCheck: wrapper, GetInstance: wrapper, List: wrapper, TimeoutSeconds: 60}}
				runAgent(b, s.config(b, pc, 30, true, conc), all.Registry())
				start := time.Now()
				var cids []string
				for k := 0; k < n; k++ {
					cids = append(cids, s.srv.CreateContract(s.prov, apitest.ContractSpec{}))
				}
				for _, cid := range cids {
					s.srv.WaitForContract(cid, time.Duration(n+5)*delay+time.Minute, func(c *store.Contract) bool {
						return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
					}, "provisioned")
				}
				took := time.Since(start)
				results[conc] = took
				b.ReportMetric(took.Seconds(), "s-total")
				fmt.Printf("concurrency %d: %d contracts × %s backend → all provisioned in %s\n", conc, n, delay, took.Round(10*time.Millisecond))
			}
		})
	}
	if results[1] > 0 && results[4] > 0 {
		fmt.Printf("concurrency speed-up 4 vs 1: %.2f× (target ≥ 3.5×)\n", results[1].Seconds()/results[4].Seconds())
	}
}

// BenchmarkIdle: the real dc-agent binary, running with nothing to do
// (long-polling, heartbeating), measured over 60 s after a warm-up.
func BenchmarkIdle(b *testing.B) {
	window := 60 * time.Second
	if quick() {
		window = 10 * time.Second
	}
	for i := 0; i < b.N; i++ {
		s := newSetup(b)
		bin, err := goBuild(s.dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
		if err != nil {
			b.Fatal(err)
		}
		pool := filepath.Join(s.dir, "pool")
		if err := os.MkdirAll(pool, 0o755); err != nil {
			b.Fatal(err)
		}
		wrapper := filepath.Join(s.dir, "backend.sh")
		if err := demobackend.WriteWrapper(wrapper, demoBackend, pool); err != nil {
			b.Fatal(err)
		}
		pc := config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{
			Provision: wrapper, Terminate: wrapper, HealthCheck: wrapper, GetInstance: wrapper, List: wrapper, TimeoutSeconds: 60}}
		cfg := s.config(b, pc, 30, true, 4)
		cmd := exec.Command(bin, "run", "--config", cfg.Path)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.dir}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		pid := cmd.Process.Pid
		deadline := time.Now().Add(20 * time.Second)
		for !s.srv.AgentStatus(s.prov).Online {
			if time.Now().After(deadline) {
				b.Fatal("agent did not come online")
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(5 * time.Second) // warm-up: first health/reconcile rounds
		w := watchProcess(b, pid, window, nil)
		elapsed, rss, hwm := w.elapsed, w.rssKiB, w.hwmKiB
		cpuPct := w.cpu.Seconds() / elapsed.Seconds() * 100
		b.ReportMetric(float64(rss)/1024, "RSS-MiB")
		b.ReportMetric(cpuPct, "CPU-%")
		fmt.Printf("idle dc-agent over %s: RSS %.1f MiB (peak %.1f MiB), CPU %.3f %% of one core\n", elapsed.Round(time.Second), float64(rss)/1024, float64(hwm)/1024, cpuPct)
	}
}

// watched is what watchProcess measured of a process over its window.
type watched struct {
	elapsed        time.Duration
	cpu            time.Duration // user+system CPU time used in the window
	rssKiB, hwmKiB int64         // at the end of the window
}

// watchProcess measures pid over window; before, if set, runs right at
// the window's start (to read counters alongside).
func watchProcess(b *testing.B, pid int, window time.Duration, before func()) watched {
	b.Helper()
	if before != nil {
		before()
	}
	cpu0, err := cpuTicks(pid)
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	time.Sleep(window)
	cpu1, _ := cpuTicks(pid)
	w := watched{elapsed: time.Since(t0)}
	const hz = 100 // USER_HZ on Linux
	w.cpu = time.Duration(cpu1-cpu0) * time.Second / hz
	if w.rssKiB, w.hwmKiB, err = rssKiB(pid); err != nil {
		b.Fatal(err)
	}
	return w
}

// cpuTicks is utime+stime of pid in clock ticks (/proc/pid/stat).
func cpuTicks(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may contain spaces) in parentheses.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	return ut + st, nil
}

// rssKiB returns VmRSS and VmHWM of pid.
func rssKiB(pid int) (rss, hwm int64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = v
		case "VmHWM:":
			hwm = v
		}
	}
	return rss, hwm, nil
}
