package setup

import (
	"testing"
	"time"
)

// BenchmarkSetupProxmox measures a full setup of a fresh simulated node
// (one template) over real SSH, and a re-run that finds everything in
// place, side by side: wall time and remote commands of each.
//
//	go test -run '^$' -bench SetupProxmox -benchtime 3x ./setup/
func BenchmarkSetupProxmox(b *testing.B) {
	var first, rerun time.Duration
	var firstCmds, rerunCmds int
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		f := newFixtureTB(b, "9.1.1")
		b.StartTimer()
		start := time.Now()
		_, c, err := f.run("ubuntu-24.04")
		if err != nil {
			b.Fatal(err)
		}
		first += time.Since(start)
		firstCmds += len(c.lines(EventCommand))
		start = time.Now()
		_, c, err = f.run("ubuntu-24.04")
		if err != nil {
			b.Fatal(err)
		}
		rerun += time.Since(start)
		rerunCmds += len(c.lines(EventCommand))
	}
	n := float64(b.N)
	b.ReportMetric(first.Seconds()/n, "s/first-run")
	b.ReportMetric(rerun.Seconds()/n, "s/re-run")
	b.ReportMetric(float64(firstCmds)/n, "cmds/first-run")
	b.ReportMetric(float64(rerunCmds)/n, "cmds/re-run")
	b.ReportMetric(first.Seconds()/rerun.Seconds(), "first/re-run")
}
