package apiserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// TestHealthCheckBackdating (issue 15, finding 8): health checks could be
// dated up to 90 days back, so a provider could fill in weeks of healthy
// history after the fact and pad its public uptime. Only a bounded skew is
// accepted now: a check a few minutes late (retries, clock skew) counts, one
// hours or days old is refused and counts for nothing. Both profiles.
func TestHealthCheckBackdating(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		t.Parallel()
		ctx := context.Background()
		srv := apitest.Start(t, apitest.WithProfile(profile))
		srv.FreezeClock()
		p := srv.NewProvider("Padding Hosting")
		c := srv.Client(p, srv.NewAgent(p))
		cid := srv.CreateContract(p, apitest.ContractSpec{})
		if err := c.UpdateProvisioning(ctx, cid, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}); err != nil {
			t.Fatal(err)
		}
		up, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1"})
		if err := c.UpdateProvisioning(ctx, cid, up); err != nil {
			t.Fatal(err)
		}
		now := srv.Now()
		// A check a few minutes late is fine.
		if err := c.ReportHealth(ctx, cid, dcapi.HealthCheck{CheckedAt: now.Add(-3 * time.Minute).UnixNano(), Status: dcapi.HealthUnhealthy}); err != nil {
			t.Fatalf("a check 3 minutes late: %v", err)
		}
		// Weeks of healthy history, filled in afterwards: refused.
		for _, ago := range []time.Duration{89 * 24 * time.Hour, 10 * 24 * time.Hour, 26 * time.Hour, 2 * time.Hour, 20 * time.Minute} {
			err := c.ReportHealth(ctx, cid, dcapi.HealthCheck{CheckedAt: now.Add(-ago).UnixNano(), Status: dcapi.HealthHealthy})
			if err == nil {
				t.Errorf("a healthy check dated %v back was accepted", ago)
			}
		}
		if profile == apiserver.ProfileDefault {
			var batch []dcapi.HealthCheck
			for h := 1; h <= 100; h++ {
				batch = append(batch, dcapi.HealthCheck{ContractID: cid, CheckedAt: now.Add(-time.Duration(h) * time.Hour).UnixNano(), Status: dcapi.HealthHealthy})
			}
			if _, err := c.ReportHealthBatch(ctx, batch); dcapi.StatusCode(err) != 422 {
				t.Errorf("a batch of 100 backdated healthy checks: %v, want 422", err)
			}
		}
		sum, err := srv.Store.HealthSummary(ctx, p.Pubkey, 30, now.UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		if sum.TotalChecks != 1 || sum.UptimePercent != 0 {
			t.Fatalf("30-day summary after the padding attempts: %d checks, %.2f %% uptime; want only the real unhealthy check (0 %%)", sum.TotalChecks, sum.UptimePercent)
		}
	})
}
