package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// BenchmarkGateway500 measures rules and routes for 500 VMs on the real
// nftables and a real Caddy, in the test network's host namespace
// (bench/gateway.sh prints the figures): filling 500 gateways one Assign at
// a time, one more Assign with 500 in place, a Reconcile of all 501 that
// changes nothing, a Reconcile that puts everything back after the table
// and the route files were wiped (a reboot plus a lost sites directory),
// and one Release.
func BenchmarkGateway500(b *testing.B) {
	n := newTestNet(b, false)
	n.cfg.PortRangeEnd = 29999
	n.zone = "" // the DNS answers from memory: its cost is the API's, not ours
	for range b.N {
		var f benchFigures
		if err := json.Unmarshal([]byte(n.gw("bench", "500")), &f); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(f.AddOne.Microseconds())/1000, "ms/add-one")
		b.ReportMetric(float64(f.ReconcileAll.Microseconds())/1000, "ms/reconcile-all")
		b.ReportMetric(float64(f.RestoreAll.Microseconds())/1000, "ms/restore-all")
		b.ReportMetric(float64(f.ReleaseOne.Microseconds())/1000, "ms/release-one")
		b.ReportMetric(float64(f.FillAll.Microseconds())/1000/float64(f.VMs), "ms/fill-per-vm")
		fmt.Fprintf(os.Stderr, "gateway, %d VMs on nftables + Caddy %s: add one %v, reconcile all (no change) %v, restore all (%d rules, %d routes) %v, release one %v; filling 1..%d: %v (%v per VM)\n",
			f.VMs, "(Debian caddy)", f.AddOne.Round(time.Microsecond), f.ReconcileAll.Round(time.Microsecond), f.Rules, f.Routes, f.RestoreAll.Round(time.Microsecond),
			f.ReleaseOne.Round(time.Microsecond), f.VMs, f.FillAll.Round(time.Millisecond), (f.FillAll / time.Duration(f.VMs)).Round(time.Microsecond))
	}
}

// runBench is the benchmark's child, in the host namespace.
func runBench(ctx context.Context, m *Manager, args []string) error {
	vms, err := strconv.Atoi(args[0])
	if err != nil {
		return err
	}
	var live []string
	ip := func(i int) string { return fmt.Sprintf("10.80.%d.%d", i/250, i%250+2) }
	f := benchFigures{VMs: vms}
	start := time.Now()
	for i := range vms {
		cid := contractID(1000 + i)
		if _, err := m.Assign(ctx, cid, ip(i)); err != nil {
			return err
		}
		live = append(live, cid)
	}
	f.FillAll = time.Since(start)

	cid := contractID(1000 + vms)
	start = time.Now()
	if _, err := m.Assign(ctx, cid, ip(vms)); err != nil {
		return err
	}
	f.AddOne = time.Since(start)
	live = append(live, cid)

	start = time.Now()
	res, err := m.Reconcile(ctx, live)
	if err != nil {
		return err
	}
	f.ReconcileAll = time.Since(start)
	if res.Rules != 0 || res.Routes != 0 || len(res.Released) != 0 {
		return fmt.Errorf("reconcile of an unchanged gateway changed %+v", res)
	}

	m.mu.Lock()
	m.nft.conn.DelTable(m.nft.table)
	err = m.nft.conn.Flush()
	if err == nil {
		err = m.nft.ensureBase()
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	if err := os.RemoveAll(m.cfg.CaddySitesDir); err != nil {
		return err
	}
	start = time.Now()
	res, err = m.Reconcile(ctx, live)
	if err != nil {
		return err
	}
	f.RestoreAll = time.Since(start)
	f.Rules, f.Routes = res.Rules, res.Routes
	if res.Routes != vms+1 {
		return fmt.Errorf("restore put back %d routes, want %d", res.Routes, vms+1)
	}

	start = time.Now()
	if err := m.Release(ctx, cid); err != nil {
		return err
	}
	f.ReleaseOne = time.Since(start)
	b, _ := json.Marshal(f)
	fmt.Println(string(b))
	return nil
}
