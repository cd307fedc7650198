package store

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestDashboardMatchesPerProviderReads: the dashboard's five queries give,
// for every provider, what the per-provider reads (Agents, ListContracts,
// HealthSummary, HealthHistory) give — for providers with and without
// agents, contracts and checks.
func TestDashboardMatchesPerProviderReads(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		r := rand.New(rand.NewPCG(7, 8))
		now := time.Now().UnixNano()
		var provs []*fixture
		for i := range 6 {
			f := newFixture(t, s)
			f.now = now - 40*dayNs
			provs = append(provs, f)
			for a := range i % 3 { // 0–2 agents
				agent, _ := identity.GenerateKey()
				at := now - int64(r.IntN(int(10*time.Minute)))
				if err := s.RecordHeartbeat(f.ctx, f.pub, identity.PublicHex(agent), dcapi.Heartbeat{Version: "1", ProvisionerType: fmt.Sprint("p", a)}, at); err != nil {
					t.Fatal(err)
				}
			}
			for c := range i * 2 { // 0–10 contracts
				id := f.contract(t)
				if c%3 == 0 {
					continue
				}
				s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, dcapi.ProvisioningUpdate{Status: dcapi.StatusProvisioning}, f.now)
				if _, err := s.UpdateProvisioning(f.ctx, f.pub, id, f.agent, provisioned(fmt.Sprint("vm", c)), f.now); err != nil {
					t.Fatal(err)
				}
				// Tenant requests: a pending reset, a failed rotation, or
				// (c%4 == 3) both.
				if c%2 == 1 {
					if _, err := s.RequestPasswordReset(f.ctx, id, now); err != nil {
						t.Fatal(err)
					}
				}
				if c%4 >= 2 {
					if _, err := s.RequestKeyRotation(f.ctx, id, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA k", now); err != nil {
						t.Fatal(err)
					}
					if err := s.FailTenantRequest(f.ctx, f.pub, id, RequestKeyRotation, "no guest agent", now); err != nil {
						t.Fatal(err)
					}
				}
				for d := range 40 { // a check a day, some unhealthy, as they happen
					at := now - int64(d)*dayNs - int64(r.IntN(int(time.Hour)))
					st := dcapi.HealthHealthy
					if r.IntN(5) == 0 {
						st = dcapi.HealthUnhealthy
					}
					lat := r.IntN(100)
					if _, err := s.InsertHealthChecks(f.ctx, f.pub, f.agent, []dcapi.HealthCheck{{ContractID: id, CheckedAt: at, Status: st, LatencyMs: &lat}}, at); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		dash, err := s.Dashboard(provs[0].ctx, now, 30, 30, 6)
		if err != nil {
			t.Fatal(err)
		}
		if len(dash) != len(provs) {
			t.Fatalf("%d providers, want %d", len(dash), len(provs))
		}
		for _, d := range dash {
			agents, _ := s.Agents(provs[0].ctx, d.Pubkey)
			online := 0
			for _, a := range agents {
				if a.Online(now) {
					online++
				}
			}
			if d.Agents != len(agents) || d.AgentsOnline != online || (len(agents) > 0) != (d.LastHeartbeatNs != nil) ||
				len(agents) > 0 && (*d.LastHeartbeatNs != agents[0].LastHeartbeatNs || d.ProvisionerType != agents[0].ProvisionerType) {
				t.Errorf("%s: agents %d/%d last %v %q; per-provider %+v", d.Name, d.Agents, d.AgentsOnline, d.LastHeartbeatNs, d.ProvisionerType, agents)
			}
			all, _ := s.ListContracts(provs[0].ctx, ContractFilter{Provider: d.Pubkey, Limit: 1000})
			counts := map[string]int{}
			for _, c := range all {
				counts[c.Status]++
			}
			if fmt.Sprint(counts) != fmt.Sprint(d.Contracts) {
				t.Errorf("%s: counts %v, want %v", d.Name, d.Contracts, counts)
			}
			var want []string
			for _, c := range all[:min(6, len(all))] {
				want = append(want, c.ContractID+" "+c.Status)
			}
			var got []string
			for _, c := range d.Latest {
				got = append(got, c.ContractID+" "+c.Status)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s: latest %v, want %v", d.Name, got, want)
			}
			sum, _ := s.HealthSummary(provs[0].ctx, d.Pubkey, 30, now)
			if d.Summary.Total != sum.TotalChecks || d.Summary.Healthy != sum.HealthyChecks || d.Summary.Unhealthy != sum.UnhealthyChecks ||
				(sum.AvgLatencyMs == nil) != (d.LatN == 0) || d.LatN > 0 && float64(d.LatSum)/float64(d.LatN) != *sum.AvgLatencyMs {
				t.Errorf("%s: summary %+v lat %d/%d, want %+v", d.Name, d.Summary, d.LatSum, d.LatN, sum)
			}
			reqs, _ := s.ProviderTenantRequests(provs[0].ctx, d.Pubkey)
			pending, failed := 0, 0
			for _, r := range reqs {
				if r.DoneAtNs == nil {
					pending++
				} else if r.Error != nil {
					failed++
				}
			}
			if d.TenantPending != pending || d.TenantFailed != failed {
				t.Errorf("%s: tenant requests %d pending %d failed, want %d and %d", d.Name, d.TenantPending, d.TenantFailed, pending, failed)
			}
			hist, _ := s.HealthHistory(provs[0].ctx, d.Pubkey, now, dayNs, 30)
			if fmt.Sprint(hist) != fmt.Sprint(d.Days) {
				t.Errorf("%s: days\n%v\nwant\n%v", d.Name, d.Days, hist)
			}
		}
	})
}
