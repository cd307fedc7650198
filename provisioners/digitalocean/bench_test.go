package digitalocean

import (
	"os"
	"strconv"
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
	poll := config.DefaultCloudPollIntervalMs
	if v, err := strconv.Atoi(os.Getenv("POLL_MS")); err == nil && v > 0 {
		poll = v
	}
	cloudkittest.Bench{PerMinute: 250, PerHour: 5000, New: func(b *testing.B) (provisioners.Provisioner, func() int) {
		so := dosim.DocumentedTimings()
		so.CreateDuration /= cloudkittest.Scale
		so.IPDelay /= cloudkittest.Scale
		so.PowerDuration /= cloudkittest.Scale
		so.DeleteDuration /= cloudkittest.Scale
		so.BurstLimit, so.HourlyLimit = -1, -1 // real-time windows: the ceilings are computed instead
		sim := dosim.New(so)
		url := sim.Start(b)
		p, err := New(config.DigitalOceanConfig{Endpoint: url, ActionTimeoutSeconds: 30,
			PollIntervalMs: max(1, poll/cloudkittest.Scale)}, sim.Token(), TestOptions())
		if err != nil {
			b.Fatal(err)
		}
		return p, func() int { return len(sim.Requests()) }
	}}.Run(b)
}
