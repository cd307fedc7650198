package proxmox

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

// benchTiming: a small host, scaled down ~7x so a run takes seconds. Clones
// on one storage slow each other down (CloneContention), as they share its
// bandwidth.
func benchTiming() *pve.Timing {
	ms := func(n int) pve.Duration { return pve.Duration(time.Duration(n) * time.Millisecond) }
	return &pve.Timing{Clone: ms(300), CloneContention: 0.3, Config: ms(50), Resize: ms(100), Start: ms(100),
		Stop: ms(100), Shutdown: ms(200), Destroy: ms(100), Boot: ms(1000), Request: ms(2)}
}

func benchOpts() Options {
	return Options{PollInterval: 100 * time.Millisecond, IPWaitInterval: 250 * time.Millisecond, IPWaitAttempts: 40,
		RetryBackoff: 200 * time.Millisecond}
}

// burst provisions n contracts at once with a clone limit and returns the
// wall time and the API requests made.
func burst(b *testing.B, n, limit int) (time.Duration, int64, *pveapi.TestSim) {
	b.Helper()
	s := pveapi.StartTest(b, pveapi.TestOptions{Timing: benchTiming()})
	p := newProv(b, s, func(c *config.ProxmoxConfig, o *Options) {
		*o = benchOpts()
		c.MaxParallelClones = limit
	})
	d, _ := provisionAll(b, p, n, 1000, 20)
	return d, p.APICalls(), s
}

// provisionAll provisions n contracts (ids from base, disks of storageGB)
// at once and returns the wall time and the VMs per node.
func provisionAll(b *testing.B, p *Provisioner, n, base int, storageGB int64) (time.Duration, map[string]int) {
	b.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	per := map[string]int{}
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			req := request(b, base+i)
			req.StorageGB = storageGB
			inst, err := p.Provision(context.Background(), req)
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			per[nodeOf(inst)]++
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return time.Since(start), per
}

// BenchmarkProvision20 provisions a burst of 20 contracts against the
// simulator with max_parallel_clones = 1 and = 2, side by side, and counts
// the API requests one provision makes (alone, so polls are not inflated
// by waiting for a clone slot).
//
//	go test -run '^$' -bench BenchmarkProvision20 -benchtime 1x ./provisioners/proxmox/
func BenchmarkProvision20(b *testing.B) {
	const n = 20
	var t1, t2 time.Duration
	var calls1, calls2, single int64
	for i := 0; i < b.N; i++ {
		var c int64
		var d time.Duration
		d, c, _ = burst(b, n, 1)
		t1 += d
		calls1 += c
		d, c, _ = burst(b, n, 2)
		t2 += d
		calls2 += c
		var s *pveapi.TestSim
		_, c, s = burst(b, 1, 2)
		single += c
		if i == 0 {
			b.Logf("API requests of one provision by route:\n%s", s.Server.CallsReport())
		}
	}
	N := float64(b.N)
	b.ReportMetric(t1.Seconds()/N, "s/burst(limit=1)")
	b.ReportMetric(t2.Seconds()/N, "s/burst(limit=2)")
	b.ReportMetric(t1.Seconds()/t2.Seconds(), "speedup")
	b.ReportMetric(float64(calls1)/N/n, "calls/provision(limit=1)")
	b.ReportMetric(float64(calls2)/N/n, "calls/provision(limit=2)")
	b.ReportMetric(float64(single)/N, "calls/provision(alone)")
}
