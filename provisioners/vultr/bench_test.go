package vultr

import (
	"os"
	"strconv"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	vultrsim "github.com/decent-stuff/dc-agent/internal/sim/vultr"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

// BenchmarkProvision provisions instances against the simulator's
// documented timings (deployed in ~60 s), cloudkittest.Scale times faster,
// at concurrency 1 and 4, with the default poll interval (POLL_MS
// overrides it).
func BenchmarkProvision(b *testing.B) {
	poll := config.DefaultCloudPollIntervalMs
	if v, err := strconv.Atoi(os.Getenv("POLL_MS")); err == nil && v > 0 {
		poll = v
	}
	cloudkittest.Bench{PerMinute: 30 * 60, New: func(b *testing.B) (provisioners.Provisioner, func() int) {
		so := vultrsim.DocumentedTimings()
		so.CreateDuration /= cloudkittest.Scale
		so.IPDelay /= cloudkittest.Scale
		so.PowerDuration /= cloudkittest.Scale
		so.DeleteDuration /= cloudkittest.Scale
		so.PerSecond = -1 // a real-time window: the ceiling is computed instead
		sim := vultrsim.New(so)
		url := sim.Start(b)
		p, err := New(config.VultrConfig{Endpoint: url, ActionTimeoutSeconds: 30, RequestsPerSecond: 1000,
			PollIntervalMs: max(1, poll/cloudkittest.Scale)}, sim.Token(), TestOptions())
		if err != nil {
			b.Fatal(err)
		}
		return p, func() int { return len(sim.Requests()) }
	}}.Run(b)
}
