package agent

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
)

// The agent's side of [gateway] (package gateway does the work): a VM the
// backend reports with a private address gets its gateway before the
// report is queued, so the contract's journal entry covers the assignment
// (a crash in between resumes the provision, and Assign completes the same
// slug and ports); Release runs before the VM is destroyed; reconcile
// releases the gateways of contracts that are gone; each heartbeat carries
// the gateway's traffic counters as bandwidthStats.

// CrashGatewayAssigned is the crash point after the gateway of a
// provisioned VM is in place and before its report is queued. It fires only
// with [gateway], so it is not in CrashPoints (which every backend passes).
const CrashGatewayAssigned = "gateway_assigned"

// GatewayCrashPoints are the crash points only a gateway provision passes.
var GatewayCrashPoints = []string{CrashGatewayAssigned}

// gatewayDNS is the gateway's DNS through the current API client (a
// reload may replace it).
type gatewayDNS struct{ a *Agent }

func (d gatewayDNS) CreateRecord(ctx context.Context, slug, dcID, publicIP string) (string, error) {
	e := d.a.acquireEnv()
	defer d.a.releaseEnv(e)
	return gateway.APIDNS{Client: e.client}.CreateRecord(ctx, slug, dcID, publicIP)
}

func (d gatewayDNS) DeleteRecord(ctx context.Context, slug, dcID string) error {
	e := d.a.acquireEnv()
	defer d.a.releaseEnv(e)
	return gateway.APIDNS{Client: e.client}.DeleteRecord(ctx, slug, dcID)
}

// gatewayOpenTime bounds the start-up's Caddy reload.
const gatewayOpenTime = 30 * time.Second

// openGateway opens [gateway], if configured.
func (a *Agent) openGateway() error {
	e := a.acquireEnv()
	defer a.releaseEnv(e)
	if e.cfg.Gateway == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), gatewayOpenTime)
	defer cancel()
	m, err := gateway.Open(ctx, *e.cfg.Gateway, gatewayDNS{a}, a.log.With("component", "gateway"))
	if err != nil {
		return fmt.Errorf("[gateway]: %w (`dc-agent doctor` checks the host)", err)
	}
	a.gw = m
	return nil
}

// needsGateway says whether a VM at ip is reached through the gateway: an
// IPv4 address tenants cannot reach (RFC 1918 or shared address space).
func needsGateway(ip string) bool {
	addr, err := netip.ParseAddr(ip)
	return err == nil && addr.Is4() && (addr.IsPrivate() || cgnat.Contains(addr))
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// assignGateway gives a provisioned VM with a private address its gateway
// and returns the fields its instance details carry (nil without one).
func (a *Agent) assignGateway(ctx context.Context, cid string, ip string) (*gateway.Details, error) {
	if a.gw == nil || !needsGateway(ip) {
		return nil, nil
	}
	as, err := a.gw.Assign(ctx, cid, ip)
	if err != nil {
		return nil, err
	}
	d := as.Details()
	a.obs.emit(status.EventNotice, status.LevelInfo, "", cid, fmt.Sprintf("gateway: %s, ssh port %d, ports %d-%d → %s", d.GatewaySubdomain, d.GatewaySSHPort, d.GatewayPortRangeStart, d.GatewayPortRangeEnd, ip))
	return &d, nil
}

// withGateway merges the gateway fields into instance details, as the Rust
// agent does (dc-agent/src/gateway/mod.rs setup_gateway; the fields of
// dc-agent/src/provisioner/mod.rs Instance).
func withGateway(d *dcapi.InstanceDetails, g *gateway.Details) {
	if g == nil {
		return
	}
	d.PublicIP, d.GatewaySlug, d.GatewaySubdomain = g.PublicIP, g.GatewaySlug, g.GatewaySubdomain
	d.GatewaySSHPort, d.GatewayPortRangeStart, d.GatewayPortRangeEnd = g.GatewaySSHPort, g.GatewayPortRangeStart, g.GatewayPortRangeEnd
}

// releaseGateway removes a contract's gateway (none: nothing to do). A
// failure is logged; the record stays "releasing" and reconcile finishes
// it.
func (a *Agent) releaseGateway(ctx context.Context, cid, loop string) {
	if a.gw == nil {
		return
	}
	if err := a.gw.Release(ctx, cid); err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, loop, cid, "gateway release failed; reconcile retries", "err", err)
	}
}

// reconcileGateway releases the gateways of contracts that are gone. live
// must name every contract that still has a VM; the contracts the agent is
// working on, or finished since since, are added here.
func (a *Agent) reconcileGateway(ctx context.Context, live map[string]bool, since time.Time) {
	if a.gw == nil {
		return
	}
	a.workMu.Lock()
	for cid := range a.leases {
		live[cid] = true
	}
	for cid, at := range a.doneAt {
		if !at.Before(since) {
			live[cid] = true
		}
	}
	a.workMu.Unlock()
	keep := make([]string, 0, len(live))
	for cid := range live {
		keep = append(keep, cid)
	}
	res, err := a.gw.Reconcile(ctx, keep)
	for _, r := range res.Released {
		a.obs.emit(status.EventNotice, status.LevelInfo, loopReconcile, r.ContractID, fmt.Sprintf("gateway of a contract that is gone released: %s, ports %d-%d", r.Subdomain, r.PortStart, r.PortEnd))
	}
	if res.Rules+res.Routes > 0 {
		a.obs.emit(status.EventNotice, status.LevelInfo, loopReconcile, "", fmt.Sprintf("gateway repaired: %d forwarding element(s), %d route(s)", res.Rules, res.Routes))
	}
	if err != nil {
		a.warnOnce("gateway-reconcile", time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopReconcile, "", "gateway reconcile failed; retrying next round", "err", err)
		})
	}
}

// gatewayStats are the heartbeat's bandwidthStats.
func (a *Agent) gatewayStats() []dcapi.VMBandwidthReport {
	if a.gw == nil {
		return nil
	}
	s, err := a.gw.Stats()
	if err != nil {
		a.warnOnce("gateway-stats", time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopHeartbeat, "", "gateway traffic counters unreadable; heartbeats go without bandwidthStats", "err", err)
		})
		return nil
	}
	return s
}

func (a *Agent) closeGateway() {
	if a.gw != nil {
		_ = a.gw.Close()
	}
}

// gatewayKey is [gateway] as one comparable string ("" without one).
func gatewayKey(g *config.GatewayConfig) string {
	if g == nil {
		return ""
	}
	return fmt.Sprintf("%+v", *g)
}

// gatewayStatus lists the gateways for status and the monitor.
func (a *Agent) gatewayStatus() []status.Gateway {
	if a.gw == nil {
		return nil
	}
	var out []status.Gateway
	for _, g := range a.gw.Assignments() {
		out = append(out, status.Gateway{ContractID: g.ContractID, Subdomain: g.Subdomain, PublicIP: g.PublicIP, SSHPort: g.SSHPort(),
			PortStart: g.PortStart, PortEnd: g.PortEnd, InternalIP: g.InternalIP, State: g.State})
	}
	return out
}
