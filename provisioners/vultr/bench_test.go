package vultr

import (
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
	cloudkittest.Bench{PerMinute: 30 * 60, New: func(b *testing.B) (provisioners.Provisioner, func() int) {
		so := vultrsim.DocumentedTimings()
		cloudkittest.Scaled(&so.CreateDuration, &so.IPDelay, &so.PowerDuration, &so.DeleteDuration)
		so.PerSecond = -1 // a real-time window: the ceiling is computed instead
		sim := vultrsim.New(so)
		cfg := config.VultrConfig{Endpoint: sim.Start(b), ActionTimeoutSeconds: 30, RequestsPerSecond: 1000, PollIntervalMs: cloudkittest.BenchPollMs()}
		p := cloudkittest.Build(b, cfg, nil, func(cfg config.VultrConfig) (*Provisioner, error) { return New(cfg, sim.Token(), TestOptions()) })
		return p, func() int { return len(sim.Requests()) }
	}}.Run(b)
}
