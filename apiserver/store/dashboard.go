package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// DashboardProvider is what the public dashboard shows of one provider.
type DashboardProvider struct {
	Provider
	Agents       int
	AgentsOnline int
	// LastHeartbeatNs and ProvisionerType are those of the agent that sent
	// the most recent heartbeat (nil and "" without agents).
	LastHeartbeatNs *int64
	ProvisionerType string
	// AgentList is every agent of the provider, most recent heartbeat first.
	AgentList []DashboardAgent
	// Contracts counts the provider's contracts by status.
	Contracts map[string]int
	// Latest are its newest contracts, newest first.
	Latest []DashboardContract
	// Summary is the health summary over the period (HealthSummary
	// without ContractsMonitored), Days the daily history (HealthHistory).
	Summary HealthBucket
	LatSum  int64
	LatN    int64
	Days    []HealthBucket
	// TenantPending and TenantFailed count the latest tenant requests of
	// its contracts (tenant_requests) not yet carried out and failed.
	TenantPending, TenantFailed int
}

// DashboardAgent is one agent of a provider as the dashboard lists it.
type DashboardAgent struct {
	Pubkey          string
	LastHeartbeatNs int64
	ProvisionerType string
	ActiveContracts int64
}

// DashboardContract is a contract as the dashboard lists it.
type DashboardContract struct {
	ContractID       string
	Status           string
	CreatedAtNs      int64
	LastHealthStatus *string
	// Gateway is where the tenant reaches a VM behind the provider's
	// gateway (nil: no gateway), from the instance details.
	Gateway *GatewayAccess
}

// GatewayAccess are the gateway fields of a contract's instance details
// (dc-agent/src/provisioner/mod.rs Instance).
type GatewayAccess struct {
	Slug      string `json:"gateway_slug"`
	Subdomain string `json:"gateway_subdomain"`
	SSHPort   int    `json:"gateway_ssh_port"`
	PortStart int    `json:"gateway_port_range_start"`
	PortEnd   int    `json:"gateway_port_range_end"`
	PublicIP  string `json:"public_ip"`
}

// ParseGatewayAccess returns the gateway fields of instance details, or
// nil when they have none.
func ParseGatewayAccess(details string) *GatewayAccess {
	var g GatewayAccess
	if json.Unmarshal([]byte(details), &g) != nil || g.Slug == "" {
		return nil
	}
	return &g
}

// Dashboard reads everything the public dashboard shows, for every
// provider, in six queries whatever their number: providers, agents,
// contract counts, the latest contracts (latest per provider), tenant
// request counts, and the hourly health roll-up from which the summary
// over days (from SummaryPeriodStart) and chartDays daily buckets (as
// HealthHistory) are summed.
func (s *Store) Dashboard(ctx context.Context, nowNs int64, days, chartDays, latest int) ([]DashboardProvider, error) {
	provs, err := s.ListProviders(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]DashboardProvider, len(provs))
	idx := make(map[string]*DashboardProvider, len(provs))
	summaryStart := SummaryPeriodStart(nowNs, days)
	lastDay := nowNs / dayNs * dayNs
	firstDay := lastDay - int64(chartDays-1)*dayNs
	for i, p := range provs {
		out[i] = DashboardProvider{Provider: p, Contracts: map[string]int{}, Days: make([]HealthBucket, chartDays)}
		for d := range out[i].Days {
			out[i].Days[d].StartNs = firstDay + int64(d)*dayNs
		}
		idx[p.Pubkey] = &out[i]
	}
	// Agents, most recent heartbeat first within each provider.
	rows, err := s.r.QueryContext(ctx, `SELECT a.provider_pubkey, COALESCE(h.last_heartbeat_ns, a.updated_at_ns), a.provisioner_type,
		a.agent_pubkey, a.active_contracts
		FROM provider_agent_status a LEFT JOIN agent_heartbeats h ON h.agent_id = a.id
		ORDER BY a.provider_pubkey, 2 DESC, a.agent_pubkey`)
	if err != nil {
		return nil, fmt.Errorf("dashboard agents: %w", err)
	}
	err = scanAll(rows, func() error {
		var prov, ptype string
		var hb int64
		var ag DashboardAgent
		if err := rows.Scan(&prov, &hb, &ptype, &ag.Pubkey, &ag.ActiveContracts); err != nil {
			return err
		}
		if p := idx[prov]; p != nil {
			if p.Agents == 0 {
				p.LastHeartbeatNs, p.ProvisionerType = &hb, ptype
			}
			ag.LastHeartbeatNs, ag.ProvisionerType = hb, ptype
			p.AgentList = append(p.AgentList, ag)
			p.Agents++
			if nowNs-hb < dcapi.OnlineWindowNs {
				p.AgentsOnline++
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard agents: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, `SELECT provider_pubkey, status, COUNT(*) FROM contracts GROUP BY provider_pubkey, status`)
	if err != nil {
		return nil, fmt.Errorf("dashboard contract counts: %w", err)
	}
	err = scanAll(rows, func() error {
		var prov, status string
		var n int
		if err := rows.Scan(&prov, &status, &n); err != nil {
			return err
		}
		if p := idx[prov]; p != nil {
			p.Contracts[status] = n
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard contract counts: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, s.q(`SELECT provider_pubkey, contract_id, status, created_at_ns, last_health_status, instance_details FROM (
			SELECT provider_pubkey, contract_id, status, created_at_ns, last_health_status, instance_details,
				ROW_NUMBER() OVER (PARTITION BY provider_pubkey ORDER BY created_at_ns DESC, contract_id) AS n
			FROM contracts) latest
		WHERE n <= ? ORDER BY provider_pubkey, n`), latest)
	if err != nil {
		return nil, fmt.Errorf("dashboard latest contracts: %w", err)
	}
	err = scanAll(rows, func() error {
		var prov string
		var c DashboardContract
		var health, details sql.NullString
		if err := rows.Scan(&prov, &c.ContractID, &c.Status, &c.CreatedAtNs, &health, &details); err != nil {
			return err
		}
		c.LastHealthStatus = strPtr(health)
		if details.Valid && (c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive) {
			c.Gateway = ParseGatewayAccess(details.String)
		}
		if p := idx[prov]; p != nil {
			p.Latest = append(p.Latest, c)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard latest contracts: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, `SELECT c.provider_pubkey,
			SUM(CASE WHEN r.done_at_ns IS NULL THEN 1 ELSE 0 END),
			SUM(CASE WHEN r.done_at_ns IS NOT NULL AND r.error IS NOT NULL THEN 1 ELSE 0 END)
		FROM tenant_requests r JOIN contracts c ON c.contract_id = r.contract_id GROUP BY c.provider_pubkey`)
	if err != nil {
		return nil, fmt.Errorf("dashboard tenant requests: %w", err)
	}
	err = scanAll(rows, func() error {
		var prov string
		var pending, failed int
		if err := rows.Scan(&prov, &pending, &failed); err != nil {
			return err
		}
		if p := idx[prov]; p != nil {
			p.TenantPending, p.TenantFailed = pending, failed
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard tenant requests: %w", err)
	}

	rows, err = s.r.QueryContext(ctx, s.q(`SELECT provider_pubkey, hour_start_ns, total, healthy, unhealthy, unknown, latency_sum, latency_count
		FROM provider_health_hourly WHERE hour_start_ns >= ?`), min(summaryStart, firstDay))
	if err != nil {
		return nil, fmt.Errorf("dashboard health: %w", err)
	}
	err = scanAll(rows, func() error {
		var prov string
		var h HealthBucket
		var latSum, latN int64
		if err := rows.Scan(&prov, &h.StartNs, &h.Total, &h.Healthy, &h.Unhealthy, &h.Unknown, &latSum, &latN); err != nil {
			return err
		}
		p := idx[prov]
		if p == nil {
			return nil
		}
		if h.StartNs >= summaryStart {
			p.Summary.add(h)
			p.LatSum += latSum
			p.LatN += latN
		}
		if d := (h.StartNs - firstDay) / dayNs; h.StartNs >= firstDay && d < int64(chartDays) {
			p.Days[d].add(h)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("dashboard health: %w", err)
	}
	return out, nil
}

func (b *HealthBucket) add(h HealthBucket) {
	b.Total += h.Total
	b.Healthy += h.Healthy
	b.Unhealthy += h.Unhealthy
	b.Unknown += h.Unknown
}

// rowScanner is a *sql.Row or *sql.Rows.
type rowScanner interface{ Scan(...any) error }

// collect scans each row with scan and closes rows. The list is never nil
// (JSON [] when empty).
func collect[T any](rows *sql.Rows, scan func(rowScanner) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanAll calls scan for each row and closes rows.
func scanAll(rows *sql.Rows, scan func() error) error {
	defer rows.Close()
	for rows.Next() {
		if err := scan(); err != nil {
			return err
		}
	}
	return rows.Err()
}
