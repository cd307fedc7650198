// Package cloudkittest holds what the tests of the cloud backends
// (DigitalOcean, Hetzner, Vultr) share: the checks of checks.go, the
// scenarios of cases.go (machine type choice, injected failures, pause and
// resume, foreign machines, provider keys) and the provisioning benchmark
// against their simulators (make bench-cloud). Only tests import it.
package cloudkittest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Scale is how much faster than real time the benchmarks run the
// simulators' documented timings (and the provisioner's poll interval):
// one real second is Scale simulated seconds. The API round trips on
// loopback are not scaled, so each counts as ~Scale ms simulated, about a
// real cloud API's latency.
const Scale = 100

// Bench is one backend against its simulator.
type Bench struct {
	// New makes a fresh simulator and provisioner; requests counts the
	// API requests the simulator has served so far.
	New func(b *testing.B) (p provisioners.Provisioner, requests func() int)
	// Limits describe the API's rate limits, for the ceiling figures:
	// requests per minute (burst) and per hour (0: none).
	PerMinute, PerHour float64
}

// Run benchmarks provisioning at concurrency 1 and 4: b.N contracts each,
// reported as provisions per simulated minute, API calls per provision, and
// the provisions per minute the API's rate limits allow at that many calls.
func (bb Bench) Run(b *testing.B) {
	for _, conc := range []int{1, 4} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			p, requests := bb.New(b)
			reqs := make([]provisioners.Request, b.N)
			for i := range reqs {
				reqs[i] = request(b, i)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			var mu sync.Mutex
			var firstErr error
			before := requests()
			b.ResetTimer()
			start := time.Now()
			for range conc {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := int(next.Add(1)) - 1
						if i >= len(reqs) {
							return
						}
						if _, err := p.Provision(context.Background(), reqs[i]); err != nil {
							mu.Lock()
							if firstErr == nil {
								firstErr = err
							}
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
			calls := float64(requests()-before) / float64(b.N)
			simMinutes := elapsed.Minutes() * Scale
			b.ReportMetric(float64(b.N)/simMinutes, "provisions/min")
			b.ReportMetric(calls, "calls/provision")
			ceiling := 0.0
			if bb.PerMinute > 0 {
				ceiling = bb.PerMinute / calls
			}
			if bb.PerHour > 0 && (ceiling == 0 || bb.PerHour/60/calls < ceiling) {
				ceiling = bb.PerHour / 60 / calls
			}
			b.ReportMetric(ceiling, "ratelimit-max-provisions/min")
		})
	}
}

func request(b *testing.B, i int) provisioners.Request {
	sum := sha256.Sum256(fmt.Appendf(nil, "bench-%d-%d", time.Now().UnixNano(), i))
	return provisioners.Request{ContractID: hex.EncodeToString(sum[:]), OfferingID: "bench", CPUCores: 2, MemoryMB: 4096, StorageGB: 40,
		RequesterSSHPubkey: SSHKey(b)}
}

// BenchPollMs is the poll interval of a benchmark's provisioner, in ms:
// the default (the environment's POLL_MS overrides it), Scale times
// shorter.
func BenchPollMs() int {
	poll := config.DefaultCloudPollIntervalMs
	if v, err := strconv.Atoi(os.Getenv("POLL_MS")); err == nil && v > 0 {
		poll = v
	}
	return max(1, poll/Scale)
}

// Scaled divides each of a simulator's timings by Scale.
func Scaled(timings ...*time.Duration) {
	for _, d := range timings {
		*d /= Scale
	}
}
