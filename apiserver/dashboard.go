package apiserver

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
)

//go:embed dashboard.html
var dashboardHTML string

var dashboardTmpl = template.Must(template.New("dashboard").Parse(dashboardHTML))

// UptimeWarnBelow is the uptime (percent) under which the dashboard
// highlights a provider.
const UptimeWarnBelow = 99.0

// chart geometry (SVG user units).
const (
	chartDays   = 30
	chartW      = 300
	chartH      = 56
	chartBarGap = 2
)

type dashPage struct {
	Title       string
	Version     string
	Profile     string
	GeneratedAt string
	Refresh     int
	Providers   []dashProvider
	Online      int
	Active      int
	Pending     int
	Uptime      string
}

type dashProvider struct {
	Pubkey      string
	Short       string
	Name        string
	State       string // online | offline | never
	StateLabel  string
	LastSeen    string
	LastSeenISO string
	Version     string
	Provisioner string
	Agents      int
	AgentsOn    int
	Active      int
	Pending     int
	Failed      int
	Paused      int
	Expired     int
	HasUptime   bool
	Uptime      string
	UptimeRaw   string
	UptimeLow   bool
	Checks      int64
	Latency     string
	Bars        []dashBar
	ChartW      int
	ChartH      int
	Contracts   []dashContract
}

type dashBar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type dashContract struct {
	ID       string
	Short    string
	Status   string
	Created  string
	Instance string
	Health   string
}

// dashboard serves GET /: every provider with its agent state, uptime and
// health history, rendered on the server (no script, no build step).
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	page, err := s.dashboardData(r.Context())
	if err != nil {
		s.log.ErrorContext(r.Context(), "dashboard", "request_id", requestID(r.Context()), "err", err)
		http.Error(w, "dashboard unavailable: the database could not be read (request id "+requestID(r.Context())+")", http.StatusServiceUnavailable)
		return
	}
	var b bytes.Buffer
	if err := dashboardTmpl.Execute(&b, page); err != nil {
		s.log.ErrorContext(r.Context(), "dashboard template", "err", err)
		http.Error(w, "dashboard unavailable", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	_, _ = w.Write(b.Bytes())
}

func (s *Server) dashboardData(ctx context.Context) (*dashPage, error) {
	now := s.now()
	nowNs := now.UnixNano()
	page := &dashPage{
		Title: "Decent Cloud providers", Version: s.cfg.Version, Profile: s.cfg.Profile,
		GeneratedAt: now.UTC().Format("2006-01-02 15:04:05 UTC"), Refresh: int(s.cfg.DashboardRefresh / time.Second),
	}
	providers, err := s.st.ListProviders(ctx)
	if err != nil {
		return nil, err
	}
	var totalChecks, totalHealthy int64
	for _, p := range providers {
		dp := dashProvider{Pubkey: p.Pubkey, Short: p.Pubkey[:8] + "…" + p.Pubkey[56:], Name: p.Name, State: "never",
			StateLabel: "No agent", LastSeen: "never", Version: "—", Provisioner: "—", ChartW: chartW, ChartH: chartH}
		if dp.Name == "" {
			dp.Name = "Provider " + p.Pubkey[:8]
		}
		agents, err := s.st.Agents(ctx, p.Pubkey)
		if err != nil {
			return nil, err
		}
		dp.Agents = len(agents)
		for i, a := range agents {
			if a.Online(nowNs) {
				dp.AgentsOn++
			}
			if i == 0 {
				dp.State, dp.StateLabel = "offline", "Offline"
				if a.Online(nowNs) {
					dp.State, dp.StateLabel = "online", "Online"
				}
				dp.LastSeen = ago(now, time.Unix(0, a.LastHeartbeatNs))
				dp.LastSeenISO = time.Unix(0, a.LastHeartbeatNs).UTC().Format(time.RFC3339)
				dp.Version = a.Version
				if a.ProvisionerType != "" {
					dp.Provisioner = a.ProvisionerType
				}
			}
		}
		if dp.State == "online" {
			page.Online++
		}
		contracts, err := s.st.ListContracts(ctx, store.ContractFilter{Provider: p.Pubkey, Limit: 500})
		if err != nil {
			return nil, err
		}
		for i, c := range contracts {
			switch c.Status {
			case dcapi.StatusProvisioned, dcapi.StatusActive:
				dp.Active++
			case dcapi.StatusAccepted, dcapi.StatusProvisioning:
				dp.Pending++
			case dcapi.StatusProvisioningFailed:
				dp.Failed++
			case dcapi.StatusPaused:
				dp.Paused++
			case dcapi.StatusExpired:
				dp.Expired++
			}
			if i < 6 {
				dc := dashContract{ID: c.ContractID, Short: c.ContractID[:12], Status: c.Status, Created: ago(now, time.Unix(0, c.CreatedAtNs)), Instance: "—", Health: "—"}
				if c.ExternalInstanceID != nil {
					dc.Instance = *c.ExternalInstanceID
				}
				if c.LastHealthStatus != nil {
					dc.Health = *c.LastHealthStatus
				}
				dp.Contracts = append(dp.Contracts, dc)
			}
		}
		page.Active += dp.Active
		page.Pending += dp.Pending
		sum, err := s.st.HealthSummary(ctx, p.Pubkey, 30, nowNs)
		if err != nil {
			return nil, err
		}
		dp.Checks = sum.TotalChecks
		if sum.TotalChecks > 0 {
			dp.HasUptime = true
			dp.Uptime = fmtPercent(sum.UptimePercent)
			dp.UptimeRaw = strconv.FormatFloat(sum.UptimePercent, 'f', 2, 64)
			dp.UptimeLow = sum.UptimePercent < UptimeWarnBelow
			totalChecks += sum.TotalChecks
			totalHealthy += sum.HealthyChecks
		}
		if sum.AvgLatencyMs != nil {
			dp.Latency = strconv.FormatFloat(*sum.AvgLatencyMs, 'f', 0, 64) + " ms"
		}
		hist, err := s.st.HealthHistory(ctx, p.Pubkey, nowNs, int64(24*time.Hour), chartDays)
		if err != nil {
			return nil, err
		}
		dp.Bars = bars(hist)
		page.Providers = append(page.Providers, dp)
	}
	page.Uptime = "—"
	if totalChecks > 0 {
		page.Uptime = fmtPercent(float64(totalHealthy) * 100 / float64(totalChecks))
	}
	return page, nil
}

// bars turns daily buckets into SVG bar geometry: height is the day's
// uptime (floored at a sliver so a bad day is still visible), colour by
// threshold, grey for days without checks.
func bars(hist []store.HealthBucket) []dashBar {
	w := (float64(chartW) - float64(len(hist)-1)*chartBarGap) / float64(len(hist))
	out := make([]dashBar, len(hist))
	for i, b := range hist {
		x := float64(i) * (w + chartBarGap)
		day := time.Unix(0, b.StartNs).UTC().Format("Jan 2")
		u := b.Uptime()
		if u < 0 {
			out[i] = dashBar{X: x, Y: chartH - 4, W: w, H: 4, Class: "none", Title: day + ": no checks"}
			continue
		}
		h := math.Max(4, u/100*chartH)
		class := "ok"
		switch {
		case u < 95:
			class = "bad"
		case u < UptimeWarnBelow:
			class = "warn"
		}
		out[i] = dashBar{X: round1(x), Y: round1(chartH - h), W: round1(w), H: round1(h), Class: class,
			Title: fmt.Sprintf("%s: %s uptime (%d checks)", day, fmtPercent(u), b.Total)}
	}
	return out
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// fmtPercent shows two decimals, never rounding a shortfall up to 100 %.
func fmtPercent(p float64) string {
	v := math.Floor(p*100) / 100
	return strconv.FormatFloat(v, 'f', 2, 64) + " %"
}

// ago renders how long before now t was: "12 s ago", "3 min ago".
func ago(now, t time.Time) string {
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
	}
}
