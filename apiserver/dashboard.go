package apiserver

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net"
	"net/http"
	"strconv"
	"sync"
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
	Providers   []dashProvider // this page's
	Count       int            // all providers
	Online      int
	Active      int
	Pending     int
	Uptime      string
	Page, Pages int
	First, Last int // 1-based positions of this page's providers
	Prev, Next  string
}

type dashProvider struct {
	Pubkey      string
	Short       string
	Name        string
	State       string // online | offline | never
	StateLabel  string
	LastSeen    string
	LastSeenISO string
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
	AgentRows   []dashAgent
	// Requests: the provider's tenant requests, pending and failed (the
	// page is public: counts only, never a tenant's failure message).
	Requests string
}

type dashBar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

// dashContract is a contract as the public page shows it: a short id, no
// instance id.
// dashAgent is one row of a provider's agent table (a short key and no
// version: the page is public).
type dashAgent struct {
	Short       string
	State       string // online | offline
	LastSeen    string
	Provisioner string
	Active      int64
}

type dashContract struct {
	Short   string
	Status  string
	Created string
	Health  string
	// Gateway is "<subdomain> · ssh <public_ip>:<port>" for a VM behind
	// the provider's gateway, else "".
	Gateway string
}

// The public dashboard is rendered from a snapshot of the database taken
// at most every DashboardSnapshotAge (one build, whatever the number of
// visitors), DashboardPerPage providers a page; each client address may
// fetch dashBurst pages at once, then one every dashEvery.
const (
	DashboardSnapshotAge = 5 * time.Second
	DashboardPerPage     = 50
	dashBurst            = 30
	dashEvery            = time.Second
	dashLatest           = 6 // contracts listed per provider
)

// dashSnapshot is the data of every page, and the pages rendered so far.
type dashSnapshot struct {
	at    time.Time
	all   []dashProvider
	page  dashPage // the totals; Providers empty
	pages map[int][]byte
}

// dashCache holds the current snapshot; mu also makes builds single-flight.
type dashCache struct {
	mu   sync.Mutex
	snap *dashSnapshot
}

// dashboard serves GET /[?page=N]: every provider with its agent state,
// uptime and health history, rendered on the server (no script, no build
// step) from the snapshot.
func (s *Server) dashboard(w http.ResponseWriter, r *http.Request) {
	if wait, ok := s.dashLimit.allow(clientAddr(r), s.now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(wait))
		setErr(r.Context(), "dashboard rate limit")
		http.Error(w, fmt.Sprintf("too many requests for the dashboard from your address; retry in %d s", wait), http.StatusTooManyRequests)
		return
	}
	n := 1
	if v := r.URL.Query().Get("page"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			http.Error(w, fmt.Sprintf("page must be a whole number from 1, got %q", clip(v)), http.StatusBadRequest)
			return
		}
	}
	b, err := s.dashboardPage(n)
	switch {
	case errors.Is(err, errNoPage):
		http.Error(w, fmt.Sprintf("no page %d: %v", n, err), http.StatusNotFound)
		return
	case err != nil:
		s.log.ErrorContext(r.Context(), "dashboard", "request_id", requestID(r.Context()), "err", err)
		http.Error(w, "dashboard unavailable: the database could not be read (request id "+requestID(r.Context())+")", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
	_, _ = w.Write(b)
}

var errNoPage = errors.New("past the last page")

// dashboardPage returns page n of the current snapshot, building the
// snapshot when it is older than DashboardSnapshotAge (by the server's
// clock) and rendering the page once per snapshot.
func (s *Server) dashboardPage(n int) ([]byte, error) {
	s.dash.mu.Lock()
	defer s.dash.mu.Unlock()
	now := s.now()
	if s.dash.snap == nil || now.Sub(s.dash.snap.at) >= DashboardSnapshotAge || now.Before(s.dash.snap.at) {
		// Not the visitor's context: a build serves every visitor.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		snap, err := s.dashboardData(ctx)
		cancel()
		if err != nil {
			return nil, err
		}
		s.dash.snap = snap
	}
	snap := s.dash.snap
	if b, ok := snap.pages[n]; ok {
		return b, nil
	}
	page := snap.page
	page.Pages = max(1, (len(snap.all)+DashboardPerPage-1)/DashboardPerPage)
	if n > page.Pages {
		return nil, fmt.Errorf("%w (%d)", errNoPage, page.Pages)
	}
	page.Page = n
	from, to := (n-1)*DashboardPerPage, min(n*DashboardPerPage, len(snap.all))
	page.Providers = snap.all[from:to]
	page.First, page.Last = from+1, to
	if n > 1 {
		page.Prev = "?page=" + strconv.Itoa(n-1)
	}
	if n < page.Pages {
		page.Next = "?page=" + strconv.Itoa(n+1)
	}
	var b bytes.Buffer
	if err := dashboardTmpl.Execute(&b, &page); err != nil {
		return nil, fmt.Errorf("dashboard template: %w", err)
	}
	snap.pages[n] = b.Bytes()
	return b.Bytes(), nil
}

// clientAddr is the request's client address for the dashboard's limit:
// the IP, an IPv6 one by its /64 (one host's share).
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return host
}

// dashboardData builds a snapshot from one read of the store (six queries
// whatever the number of providers).
func (s *Server) dashboardData(ctx context.Context) (*dashSnapshot, error) {
	now := s.now()
	nowNs := now.UnixNano()
	snap := &dashSnapshot{at: now, pages: map[int][]byte{}, page: dashPage{
		Title: "Decent Cloud providers", Version: s.cfg.Version, Profile: s.cfg.Profile,
		GeneratedAt: now.UTC().Format("2006-01-02 15:04:05 UTC"), Refresh: int(s.cfg.DashboardRefresh / time.Second),
	}}
	providers, err := s.st.Dashboard(ctx, nowNs, 30, chartDays, dashLatest)
	if err != nil {
		return nil, err
	}
	page := &snap.page
	page.Count = len(providers)
	var totalChecks, totalHealthy int64
	for _, p := range providers {
		dp := dashProvider{Pubkey: p.Pubkey, Short: p.Pubkey[:8] + "…" + p.Pubkey[56:], Name: p.Name, State: "never",
			StateLabel: "No agent", LastSeen: "never", Provisioner: "—", ChartW: chartW, ChartH: chartH,
			Agents: p.Agents, AgentsOn: p.AgentsOnline}
		if dp.Name == "" {
			dp.Name = "Provider " + p.Pubkey[:8]
		}
		if p.LastHeartbeatNs != nil {
			last := time.Unix(0, *p.LastHeartbeatNs)
			dp.State, dp.StateLabel = "offline", "Offline"
			if nowNs-*p.LastHeartbeatNs < dcapi.OnlineWindowNs {
				dp.State, dp.StateLabel = "online", "Online"
				page.Online++
			}
			dp.LastSeen = ago(now, last)
			dp.LastSeenISO = last.UTC().Format(time.RFC3339)
			if p.ProvisionerType != "" {
				dp.Provisioner = p.ProvisionerType
			}
		}
		cs := p.Contracts
		dp.Active = cs[dcapi.StatusProvisioned] + cs[dcapi.StatusActive]
		dp.Pending = cs[dcapi.StatusAccepted] + cs[dcapi.StatusProvisioning]
		dp.Failed = cs[dcapi.StatusProvisioningFailed]
		dp.Paused = cs[dcapi.StatusPaused]
		dp.Expired = cs[dcapi.StatusExpired]
		for _, ag := range p.AgentList {
			da := dashAgent{Short: ag.Pubkey[:min(8, len(ag.Pubkey))], State: "offline",
				LastSeen: ago(now, time.Unix(0, ag.LastHeartbeatNs)), Provisioner: ag.ProvisionerType, Active: ag.ActiveContracts}
			if nowNs-ag.LastHeartbeatNs < dcapi.OnlineWindowNs {
				da.State = "online"
			}
			dp.AgentRows = append(dp.AgentRows, da)
		}
		for _, c := range p.Latest {
			dc := dashContract{Short: c.ContractID[:8], Status: c.Status, Created: ago(now, time.Unix(0, c.CreatedAtNs)), Health: "—"}
			if g := c.Gateway; g != nil {
				dc.Gateway = fmt.Sprintf("%s · ssh %s:%d", g.Subdomain, g.PublicIP, g.SSHPort)
			}
			if c.LastHealthStatus != nil {
				dc.Health = *c.LastHealthStatus
			}
			dp.Contracts = append(dp.Contracts, dc)
		}
		dp.Requests = fmt.Sprintf("%d pending", p.TenantPending)
		if p.TenantFailed > 0 {
			dp.Requests += fmt.Sprintf(" · %d failed", p.TenantFailed)
		}
		page.Active += dp.Active
		page.Pending += dp.Pending
		sum := p.Summary
		dp.Checks = sum.Total
		if sum.Total > 0 {
			u := float64(sum.Healthy) * 100 / float64(sum.Total)
			dp.HasUptime = true
			dp.Uptime = fmtPercent(u)
			dp.UptimeRaw = strconv.FormatFloat(u, 'f', 2, 64)
			dp.UptimeLow = u < UptimeWarnBelow
			totalChecks += sum.Total
			totalHealthy += sum.Healthy
		}
		if p.LatN > 0 {
			dp.Latency = strconv.FormatFloat(float64(p.LatSum)/float64(p.LatN), 'f', 0, 64) + " ms"
		}
		dp.Bars = bars(p.Days)
		snap.all = append(snap.all, dp)
	}
	page.Uptime = "—"
	if totalChecks > 0 {
		page.Uptime = fmtPercent(float64(totalHealthy) * 100 / float64(totalChecks))
	}
	return snap, nil
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
