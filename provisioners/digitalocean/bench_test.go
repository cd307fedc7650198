package digitalocean

import (
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

// BenchmarkProvision provisions droplets against the simulator's documented
// timings (create ~55 s), cloudkittest.Scale times faster, at concurrency 1
// and 4, with the default poll interval (POLL_MS overrides it).
func BenchmarkProvision(b *testing.B) {
	cloudkittest.Bench{PerMinute: 250, PerHour: 5000, New: func(b *testing.B) (provisioners.Provisioner, func() int) {
		so := dosim.DocumentedTimings()
		cloudkittest.Scaled(&so.CreateDuration, &so.IPDelay, &so.PowerDuration, &so.DeleteDuration)
		so.BurstLimit, so.HourlyLimit = -1, -1 // real-time windows: the ceilings are computed instead
		sim := dosim.New(so)
		cfg := config.DigitalOceanConfig{Endpoint: sim.Start(b), ActionTimeoutSeconds: 30, PollIntervalMs: cloudkittest.BenchPollMs()}
		p := cloudkittest.Build(b, cfg, nil, func(cfg config.DigitalOceanConfig) (*Provisioner, error) { return New(cfg, sim.Token(), TestOptions()) })
		return p, func() int { return len(sim.Requests()) }
	}}.Run(b)
}
