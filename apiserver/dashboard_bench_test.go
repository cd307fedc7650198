package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// BenchmarkDashboard400 measures the public dashboard at 400 providers,
// each with an agent, five contracts (three running) and a health check of
// each running contract every day for 30 days (SQLite):
//
//   - page: one GET / from a new client address each time (what a visitor
//     costs the server);
//
//   - build: reading and assembling the data of every provider (before
//     issue 15 each GET / did this; now a snapshot does, at most every
//     DashboardSnapshotAge).
//
//     go test ./apiserver -run '^$' -bench Dashboard400 -benchtime 20x
func BenchmarkDashboard400(b *testing.B) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(b.TempDir(), "dash.db"), store.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{Store: st, RateLimit: -1})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now().UnixNano()
	start := now - 30*24*int64(time.Hour)
	for i := range 400 {
		pk, _ := identity.GenerateKey()
		ak, _ := identity.GenerateKey()
		prov, agent := identity.PublicHex(pk), identity.PublicHex(ak)
		if _, err := st.AddProvider(ctx, prov, fmt.Sprintf("Provider %03d", i), start); err != nil {
			b.Fatal(err)
		}
		var running []string
		for c := range 5 {
			ct, err := st.CreateContract(ctx, store.NewContract{ProviderPubkey: prov, RequesterSSHPubkey: "ssh-ed25519 AAAA bench"}, start)
			if err != nil {
				b.Fatal(err)
			}
			if c >= 3 {
				continue
			}
			st.UpdateProvisioning(ctx, prov, ct.ContractID, agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, start)
			up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: fmt.Sprint("vm-", i, "-", c), IPAddress: "10.0.0.5", SSHPort: 22})
			if _, err := st.UpdateProvisioning(ctx, prov, ct.ContractID, agent, up, start); err != nil {
				b.Fatal(err)
			}
			running = append(running, ct.ContractID)
		}
		for d := range 30 {
			at := now - int64(d)*24*int64(time.Hour) - int64(i)*int64(time.Second)
			var checks []dcapi.HealthCheck
			for _, id := range running {
				lat := 20 + d
				checks = append(checks, dcapi.HealthCheck{ContractID: id, CheckedAt: at, Status: dcapi.HealthHealthy, LatencyMs: &lat})
			}
			if _, err := st.InsertHealthChecks(ctx, prov, agent, checks, at); err != nil {
				b.Fatal(err)
			}
		}
		if err := st.RecordHeartbeat(ctx, prov, agent, dcapi.Heartbeat{Version: "1.0.0", ProvisionerType: "proxmox"}, now); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("page", func(b *testing.B) {
		defer cpuPerOp(b)()
		for i := range b.N {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = fmt.Sprintf("10.%d.%d.%d:4242", i>>16&255, i>>8&255, i&255)
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				b.Fatalf("GET /: %d", rec.Code)
			}
		}
	})
	b.Run("build", func(b *testing.B) {
		defer cpuPerOp(b)()
		for range b.N {
			if _, err := s.dashboardData(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// cpuPerOp reports the process's CPU time per operation (cpu-ms/op) when
// the returned func runs: on a shared machine it varies less than the
// elapsed time.
func cpuPerOp(b *testing.B) func() {
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	start := cpu()
	return func() {
		b.ReportMetric(float64(cpu()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
	}
}
