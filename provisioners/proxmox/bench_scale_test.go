package proxmox

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// BenchmarkThousandContracts measures what the Proxmox backend costs an
// agent with 1,000 active contracts on a 3-node cluster: one health round
// (a HealthCheck per contract, 8 at a time), one reconcile listing (List)
// and one inventory (Resources): API requests, wall time and the agent
// process's CPU time for each, and its heap afterwards. The simulator runs
// as its own process (pve-sim), so the CPU figures are the backend's own.
//
//	go test -run '^$' -bench BenchmarkThousandContracts -benchtime 1x ./provisioners/proxmox/
func BenchmarkThousandContracts(b *testing.B) {
	const n = 1000
	dir := b.TempDir()
	bin, err := testutil.BuildBinary(dir, "github.com/decent-stuff/dc-agent/cmd/pve-sim", "pve-sim")
	if err != nil {
		b.Fatal(err)
	}
	state := dir + "/state"
	tm := pve.FastTiming()
	store, err := pve.Create(state, pve.InitOptions{Nodes: 3, NodeTemplates: true, Template: 9000, AgentToken: true, Timing: &tm})
	if err != nil {
		b.Fatal(err)
	}
	var ids []string
	if err := store.Update(func(st *pve.State) error {
		for i := 0; i < n; i++ {
			vmid, node := 1000+i, fmt.Sprintf("pve%d", i%3+1)
			st.VMs[vmid] = &pve.VM{VMID: vmid, Node: node, Status: "running", PID: 10000 + i, StartedAt: time.Now(),
				Config: map[string]string{"name": provisioners.InstanceName(contractID(i)), "memory": "1024", "cores": "1", "tags": Tag}}
			ids = append(ids, ExternalID(node, vmid))
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	sim := startSimProcess(b, bin, state)
	p, err := New(config.ProxmoxConfig{APIURL: sim.URL, APITokenID: sim.TokenID, TLSFingerprint: sim.Fingerprint,
		ProxmoxPlacement: config.ProxmoxPlacement{Nodes: config.ProxmoxNodes{config.NodesAuto}}, TemplateVMID: 9000, Storage: "local-lvm", MaxParallelClones: 2,
		IPWaitAttempts: 1, IPWaitIntervalSec: 1}, sim.Secret, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	measure := func(what string, fn func() error) {
		calls, cpu, start := p.APICalls(), cpuTime(), time.Now()
		if err := fn(); err != nil {
			b.Fatalf("%s: %v", what, err)
		}
		b.ReportMetric(float64(p.APICalls()-calls), "requests/"+what)
		b.ReportMetric(time.Since(start).Seconds(), "s/"+what)
		b.ReportMetric(float64((cpuTime() - cpu).Milliseconds()), "cpu-ms/"+what)
	}
	for i := 0; i < b.N; i++ {
		measure("health-round", func() error {
			sem := make(chan struct{}, 8)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var bad []string
			for _, id := range ids {
				wg.Add(1)
				sem <- struct{}{}
				go func(id string) {
					defer wg.Done()
					defer func() { <-sem }()
					if h, err := p.HealthCheck(ctx, id); err != nil || h.Status != provisioners.Healthy {
						mu.Lock()
						bad = append(bad, fmt.Sprintf("%s: %+v %v", id, h, err))
						mu.Unlock()
					}
				}(id)
			}
			wg.Wait()
			if len(bad) > 0 {
				return fmt.Errorf("%d unhealthy, e.g. %s", len(bad), bad[0])
			}
			return nil
		})
		measure("reconcile-list", func() error {
			list, err := p.List(ctx)
			if err == nil && len(list) != n {
				err = fmt.Errorf("listed %d VMs, want %d", len(list), n)
			}
			return err
		})
		measure("inventory", func() error {
			res, err := p.Resources(ctx)
			if err == nil && res.CPUThreads != 48 {
				err = fmt.Errorf("resources %+v", res)
			}
			return err
		})
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
}

// startSimProcess runs pve-sim on state and returns how to reach it.
func startSimProcess(b *testing.B, bin, state string) *pveapi.TestSim {
	b.Helper()
	cmd := exec.Command(bin, "--listen", "127.0.0.1:0", "--state", state)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		b.Fatalf("pve-sim printed no line: %v", err)
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(line), &info); err != nil {
		b.Fatal(err)
	}
	return &pveapi.TestSim{Sim: &pveapi.Sim{URL: info["url"], Fingerprint: info["fingerprint"], Node: info["node"]},
		TokenID: info["token_id"], Secret: info["token_secret"]}
}

// cpuTime is the user and system CPU time of this process.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
