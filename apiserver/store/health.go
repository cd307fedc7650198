package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

const (
	hourNs = int64(time.Hour)
	dayNs  = 24 * hourNs
	// MaxCheckAge bounds how late a check may be reported: the clock skew
	// the request window allows plus the agent's retries. Public uptime
	// is built from these reports; a check dated further back would let a
	// provider fill in history it did not report as it happened (issue
	// 15: checks backdated 90 days padded uptime). An agent whose API was
	// unreachable for longer loses those checks: that time has no data,
	// which counts neither for nor against it.
	MaxCheckAge   = 15 * time.Minute
	maxCheckAgeNs = int64(MaxCheckAge)
	// maxCheckAheadNs tolerates the agent's clock running ahead.
	maxCheckAheadNs = 5 * int64(time.Minute)
	maxCheckDetails = 4096
	// MaxSummaryDays bounds health-summary's period.
	MaxSummaryDays = 365
)

// ValidateHealthCheck checks one health report's values at nowNs.
func ValidateHealthCheck(h *dcapi.HealthCheck, nowNs int64) error {
	switch h.Status {
	case dcapi.HealthHealthy, dcapi.HealthUnhealthy, dcapi.HealthUnknown:
	default:
		return invalidf("status must be healthy, unhealthy or unknown, not %q", clip(h.Status))
	}
	switch {
	case h.CheckedAt <= 0:
		return invalidf("checkedAt must be the check time in Unix nanoseconds")
	case h.CheckedAt > nowNs+maxCheckAheadNs:
		return invalidf("checkedAt %s is in the future; check the agent's clock", fmtNs(h.CheckedAt))
	case h.CheckedAt < nowNs-maxCheckAgeNs:
		return invalidf("checkedAt %s is more than %d minutes old: checks are recorded as they happen, not backdated (check the agent's clock)",
			fmtNs(h.CheckedAt), maxCheckAgeNs/int64(time.Minute))
	}
	if h.LatencyMs != nil && (*h.LatencyMs < 0 || *h.LatencyMs > 24*3600*1000) {
		return invalidf("latencyMs %d out of range", *h.LatencyMs)
	}
	if len(h.Details) > maxCheckDetails {
		return invalidf("details is %d bytes; at most %d", len(h.Details), maxCheckDetails)
	}
	return validText("details", h.Details, maxCheckDetails)
}

type hourAgg struct{ total, healthy, unhealthy, unknown, latSum, latCount int64 }

// InsertHealthChecks stores checks reported by agent for contracts of
// provider, all or none. Every contract must be provider's and have (had) an
// instance. A check already stored (same contract and time: an outbox
// resending) is accepted again without counting twice. The first healthy
// check of a provisioned contract makes it active. It returns the stored
// record of each check, in order.
func (s *Store) InsertHealthChecks(ctx context.Context, provider, agent string, checks []dcapi.HealthCheck, nowNs int64) ([]dcapi.HealthRecord, error) {
	if len(checks) == 0 {
		return []dcapi.HealthRecord{}, nil
	}
	for i := range checks {
		if err := ValidateHealthCheck(&checks[i], nowNs); err != nil {
			if len(checks) > 1 {
				return nil, invalidf("checks[%d]: %v", i, err)
			}
			return nil, err
		}
		if !isLowerHex64(checks[i].ContractID) {
			return nil, invalidf("checks[%d].contractId must be 64 lowercase hex characters, got %q", i, clip(checks[i].ContractID))
		}
	}
	out := make([]dcapi.HealthRecord, len(checks))
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// Contracts are checked and later updated in id order, so that two
		// concurrent batches never wait on each other in a cycle.
		ids := make([]string, 0, len(checks))
		for _, h := range checks {
			ids = append(ids, h.ContractID)
		}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		type cstate struct {
			status      string
			lastNs      int64
			lastStatus  string
			anyHealthy  bool
			anyInserted bool
		}
		cs := make(map[string]*cstate, len(ids))
		for _, id := range ids {
			var status string
			var prov string
			err := tx.QueryRowContext(ctx, s.q(`SELECT provider_pubkey, status FROM contracts WHERE contract_id = ?`), id).Scan(&prov, &status)
			if errors.Is(err, sql.ErrNoRows) || err == nil && prov != provider {
				return notFoundf("contract %s not found for provider %s", id, clip(provider))
			}
			if err != nil {
				return err
			}
			switch status {
			case dcapi.StatusProvisioned, dcapi.StatusActive, dcapi.StatusPaused, dcapi.StatusCancelled, dcapi.StatusCompleted, dcapi.StatusExpired:
			default:
				return conflictf("contract %s is %s: it has no instance to check yet", id, status)
			}
			cs[id] = &cstate{status: status}
		}
		hours := map[int64]*hourAgg{}
		ins := s.q(`INSERT INTO contract_health_checks
			(contract_id, provider_pubkey, agent_pubkey, status, checked_at_ns, latency_ms, details, received_at_ns)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (contract_id, checked_at_ns) DO NOTHING RETURNING id`)
		for i, h := range checks {
			var details any
			if h.Details != "" {
				details = h.Details
			}
			var id int64
			err := tx.QueryRowContext(ctx, ins, h.ContractID, provider, agent, h.Status, h.CheckedAt, nullInt(h.LatencyMs), details, nowNs).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				// Already stored: answer with the stored record.
				rec, err := scanHealth(tx.QueryRowContext(ctx, s.q(`SELECT `+healthCols+` FROM contract_health_checks WHERE contract_id = ? AND checked_at_ns = ?`),
					h.ContractID, h.CheckedAt))
				if err != nil {
					return err
				}
				out[i] = rec
				continue
			}
			if err != nil {
				return err
			}
			out[i] = dcapi.HealthRecord{ID: id, ContractID: h.ContractID, CheckedAt: h.CheckedAt, Status: h.Status, LatencyMs: h.LatencyMs, Details: h.Details}
			c := cs[h.ContractID]
			c.anyInserted = true
			if h.CheckedAt >= c.lastNs {
				c.lastNs, c.lastStatus = h.CheckedAt, h.Status
			}
			if h.Status == dcapi.HealthHealthy {
				c.anyHealthy = true
			}
			hour := h.CheckedAt / hourNs * hourNs
			a := hours[hour]
			if a == nil {
				a = &hourAgg{}
				hours[hour] = a
			}
			a.total++
			switch h.Status {
			case dcapi.HealthHealthy:
				a.healthy++
			case dcapi.HealthUnhealthy:
				a.unhealthy++
			default:
				a.unknown++
			}
			if h.LatencyMs != nil {
				a.latSum += int64(*h.LatencyMs)
				a.latCount++
			}
		}
		for _, id := range ids {
			c := cs[id]
			if !c.anyInserted {
				continue
			}
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET
				last_health_status = CASE WHEN last_health_check_ns IS NULL OR last_health_check_ns <= ? THEN ? ELSE last_health_status END,
				last_health_check_ns = CASE WHEN last_health_check_ns IS NULL OR last_health_check_ns < ? THEN ? ELSE last_health_check_ns END
				WHERE contract_id = ?`), c.lastNs, c.lastStatus, c.lastNs, c.lastNs, id); err != nil {
				return err
			}
			if c.anyHealthy && c.status == dcapi.StatusProvisioned {
				if _, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ? WHERE contract_id = ? AND status = ?`),
					dcapi.StatusActive, nowNs, id, dcapi.StatusProvisioned); err != nil {
					return err
				}
			}
		}
		hourKeys := make([]int64, 0, len(hours))
		for h := range hours {
			hourKeys = append(hourKeys, h)
		}
		slices.Sort(hourKeys)
		up := s.q(`INSERT INTO provider_health_hourly
			(provider_pubkey, hour_start_ns, total, healthy, unhealthy, unknown, latency_sum, latency_count)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (provider_pubkey, hour_start_ns) DO UPDATE SET
				total = provider_health_hourly.total + excluded.total,
				healthy = provider_health_hourly.healthy + excluded.healthy,
				unhealthy = provider_health_hourly.unhealthy + excluded.unhealthy,
				unknown = provider_health_hourly.unknown + excluded.unknown,
				latency_sum = provider_health_hourly.latency_sum + excluded.latency_sum,
				latency_count = provider_health_hourly.latency_count + excluded.latency_count`)
		for _, h := range hourKeys {
			a := hours[h]
			if _, err := tx.ExecContext(ctx, up, provider, h, a.total, a.healthy, a.unhealthy, a.unknown, a.latSum, a.latCount); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(err, "store health checks")
	}
	return out, nil
}

const healthCols = `id, contract_id, checked_at_ns, status, latency_ms, details`

func scanHealth(sc rowScanner) (dcapi.HealthRecord, error) {
	var r dcapi.HealthRecord
	var lat sql.NullInt64
	var details sql.NullString
	if err := sc.Scan(&r.ID, &r.ContractID, &r.CheckedAt, &r.Status, &lat, &details); err != nil {
		return r, err
	}
	r.LatencyMs = intPtr(lat)
	r.Details = details.String
	return r, nil
}

// HealthChecks returns a contract's stored checks, oldest first (at most limit,
// the newest ones; default 1000).
func (s *Store) HealthChecks(ctx context.Context, contractID string, limit int) ([]dcapi.HealthRecord, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+healthCols+` FROM contract_health_checks
		WHERE contract_id = ? ORDER BY checked_at_ns DESC LIMIT ?`), contractID, limit)
	if err != nil {
		return nil, fmt.Errorf("read health checks: %w", err)
	}
	out, err := collect(rows, scanHealth)
	slices.Reverse(out)
	return out, err
}

// SummaryQuery is the statement behind HealthSummary (bench/ prints its plan).
const SummaryQuery = `SELECT COALESCE(SUM(total), 0), COALESCE(SUM(healthy), 0), COALESCE(SUM(unhealthy), 0),
	COALESCE(SUM(unknown), 0), COALESCE(SUM(latency_sum), 0), COALESCE(SUM(latency_count), 0)
	FROM provider_health_hourly WHERE provider_pubkey = ? AND hour_start_ns >= ?`

// MonitoredQuery counts the contracts with a check in the period.
const MonitoredQuery = `SELECT COUNT(*) FROM contracts WHERE provider_pubkey = ? AND last_health_check_ns >= ?`

// SummaryPeriodStart is where a summary over days starts: days before now,
// rounded down to the hour (the roll-up's granularity).
func SummaryPeriodStart(nowNs int64, days int) int64 {
	return (nowNs - int64(days)*dayNs) / hourNs * hourNs
}

// HealthSummary answers GET .../health-summary?days=N over the period
// [SummaryPeriodStart, now]. Uptime = healthy ÷ total × 100; an unknown
// check counts as not healthy; no checks → 0.
func (s *Store) HealthSummary(ctx context.Context, provider string, days int, nowNs int64) (dcapi.HealthSummary, error) {
	var hs dcapi.HealthSummary
	if days < 1 || days > MaxSummaryDays {
		return hs, invalidf("days must be 1..%d", MaxSummaryDays)
	}
	if _, err := s.GetProvider(ctx, provider); err != nil {
		return hs, err
	}
	start := SummaryPeriodStart(nowNs, days)
	hs.PeriodStartNs, hs.PeriodEndNs = start, nowNs
	var latSum, latCount int64
	if err := s.r.QueryRowContext(ctx, s.q(SummaryQuery), provider, start).
		Scan(&hs.TotalChecks, &hs.HealthyChecks, &hs.UnhealthyChecks, &hs.UnknownChecks, &latSum, &latCount); err != nil {
		return hs, fmt.Errorf("health summary: %w", err)
	}
	if err := s.r.QueryRowContext(ctx, s.q(MonitoredQuery), provider, start).Scan(&hs.ContractsMonitored); err != nil {
		return hs, fmt.Errorf("health summary: %w", err)
	}
	if hs.TotalChecks > 0 {
		hs.UptimePercent = float64(hs.HealthyChecks) * 100 / float64(hs.TotalChecks)
	}
	if latCount > 0 {
		avg := float64(latSum) / float64(latCount)
		hs.AvgLatencyMs = &avg
	}
	return hs, nil
}

// HealthBucket is one slice of the health history.
type HealthBucket struct {
	StartNs   int64
	Total     int64
	Healthy   int64
	Unhealthy int64
	Unknown   int64
}

// Uptime is the bucket's healthy share in percent, or -1 without checks.
func (b HealthBucket) Uptime() float64 {
	if b.Total == 0 {
		return -1
	}
	return float64(b.Healthy) * 100 / float64(b.Total)
}

// HealthHistory returns n consecutive buckets of width bucketNs ending with the
// one that contains nowNs (for the dashboard chart). bucketNs must be a
// multiple of an hour.
func (s *Store) HealthHistory(ctx context.Context, provider string, nowNs, bucketNs int64, n int) ([]HealthBucket, error) {
	if bucketNs < hourNs || bucketNs%hourNs != 0 || n <= 0 {
		return nil, invalidf("health history: bucket must be whole hours")
	}
	last := nowNs / bucketNs * bucketNs
	first := last - int64(n-1)*bucketNs
	out := make([]HealthBucket, n)
	for i := range out {
		out[i].StartNs = first + int64(i)*bucketNs
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT hour_start_ns, total, healthy, unhealthy, unknown FROM provider_health_hourly
		WHERE provider_pubkey = ? AND hour_start_ns >= ?`), provider, first)
	if err != nil {
		return nil, fmt.Errorf("health history: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var h, t, ok, bad, unk int64
		if err := rows.Scan(&h, &t, &ok, &bad, &unk); err != nil {
			return nil, err
		}
		i := int((h - first) / bucketNs)
		if i < 0 || i >= n {
			continue
		}
		out[i].Total += t
		out[i].Healthy += ok
		out[i].Unhealthy += bad
		out[i].Unknown += unk
	}
	return out, rows.Err()
}
