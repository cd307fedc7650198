package docker

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// BenchmarkProvision measures containers provisioned per minute on the
// real test daemon with 1 and 4 provisions in flight, side by side. Each
// provision is the full production path (inspect, image check, port pick,
// create, key copy, start, 1 s start check); the containers are removed
// after the timer stops. Run: make bench-docker (bench/docker-provision.sh).
func BenchmarkProvision(b *testing.B) {
	key := sshKey(b)
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			p := newProvisioner(b, func(c *config.DockerConfig) {
				c.SSHPortRangeStart, c.SSHPortRangeEnd = 43000, 44999
			})
			p.opts = Options{StopTimeout: 2 * time.Second, StartWait: time.Second, Now: time.Now, Logger: p.log}
			ctx := context.Background()
			var next atomic.Int64
			var failed atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1)
						if i > int64(b.N) {
							return
						}
						_, err := p.Provision(ctx, provisioners.Request{
							ContractID: cid(int(i) + conc*100000), CPUCores: 1, MemoryMB: 64, RequesterSSHPubkey: key,
						})
						if err != nil {
							failed.Add(1)
							b.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Minutes(), "containers/min")
			b.ReportMetric(elapsed.Seconds()/float64(b.N), "s/container")
			list, err := p.List(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if len(list) != b.N-int(failed.Load()) {
				b.Errorf("%d containers for %d provisions", len(list), b.N)
			}
			for _, inst := range list {
				if err := p.Terminate(ctx, inst.ExternalID); err != nil {
					b.Error(err)
				}
			}
		})
	}
}
