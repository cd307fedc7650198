package proxmox

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

// clusterBenchTiming: full clones dominate, as they do on real nodes (a
// full clone of a few GB takes a minute or two, a boot half a minute),
// scaled down 50x. Clones on one storage share its bandwidth.
func clusterBenchTiming() *pve.Timing {
	ms := func(n int) pve.Duration { return pve.Duration(time.Duration(n) * time.Millisecond) }
	return &pve.Timing{Clone: ms(2000), CloneContention: 0.3, Config: ms(100), Resize: ms(200), Start: ms(200),
		Stop: ms(200), Shutdown: ms(400), Destroy: ms(200), Boot: ms(600), Request: ms(2)}
}

// clusterBurst provisions n contracts at once on a cluster of nodes
// nodes (placement over all of them, one template copy per node, one
// clone at a time per node) and returns the wall time, the API requests
// made and the VMs per node.
func clusterBurst(b *testing.B, n, nodes int) (time.Duration, int64, map[string]int) {
	b.Helper()
	s := pveapi.StartTest(b, pveapi.TestOptions{Timing: clusterBenchTiming(), Nodes: nodes, NodeTemplates: nodes > 1})
	p := newProv(b, s, func(c *config.ProxmoxConfig, o *Options) {
		*o = benchOpts()
		c.Node = ""
		c.Nodes = config.ProxmoxNodes{config.NodesAuto}
		c.MaxParallelClones = 1
		copies := map[string]int{}
		for i := 2; i <= nodes; i++ {
			copies[fmt.Sprintf("pve%d", i)] = 9000 + i - 1
		}
		c.NodeTemplates = map[string]map[string]int{"9000": copies}
	})
	// 10 GB disks: 20 of them fit on one node's local-lvm.
	d, per := provisionAll(b, p, n, 2000, 10)
	return d, p.APICalls(), per
}

// BenchmarkCluster20 provisions a burst of 20 contracts on one node and on
// a 3-node cluster, side by side, with the same simulated clone and boot
// times, and reports provisions per minute and API requests per
// provision.
//
//	go test -run '^$' -bench BenchmarkCluster20 -benchtime 1x ./provisioners/proxmox/
func BenchmarkCluster20(b *testing.B) {
	const n = 20
	var t1, t3 time.Duration
	var c1, c3 int64
	for i := 0; i < b.N; i++ {
		d, c, _ := clusterBurst(b, n, 1)
		t1 += d
		c1 += c
		d, c, per := clusterBurst(b, n, 3)
		t3 += d
		c3 += c
		if i == 0 {
			var names []string
			for node, k := range per {
				names = append(names, fmt.Sprintf("%s:%d", node, k))
			}
			sort.Strings(names)
			b.Logf("3 nodes: VMs per node %v", names)
		}
	}
	N := float64(b.N)
	b.ReportMetric(n*N/t1.Minutes(), "provisions/min(1node)")
	b.ReportMetric(n*N/t3.Minutes(), "provisions/min(3nodes)")
	b.ReportMetric(t1.Seconds()/t3.Seconds(), "speedup(3nodes)")
	b.ReportMetric(float64(c1)/N/n, "calls/provision(1node)")
	b.ReportMetric(float64(c3)/N/n, "calls/provision(3nodes)")
}
