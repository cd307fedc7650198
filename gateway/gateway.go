// Package gateway lets tenants reach VMs on a private bridge through the
// host's one public address, as the live Rust agent's gateway does
// (dc-agent/src/gateway/): each VM gets a slug, the DNS name
// <slug>.<dc_id>.<gw_prefix>.<domain> (through the API), a block of public
// ports forwarded to it (first port: SSH), HTTPS by name through Caddy, and
// its traffic counted for the heartbeat's bandwidthStats.
//
// It runs on the host that routes the VMs' bridge (the Proxmox node whose
// vmbrN holds the VMs' gateway address): CheckHost says whether this is
// that host. Forwarding is nftables (table ip dc_gateway, through
// github.com/google/nftables), routes are Caddy site files, allocations are
// a journal keyed by contract id. docs/gateway.md has the operator's view.
//
// The agent drives a Manager: Assign after a VM with a private address is
// provisioned (the instance details get Assignment.Details), Release when
// its contract ends, Reconcile with the contracts it still has, Stats for
// each heartbeat.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// Assignment is one VM's gateway as the tenant sees it.
type Assignment struct {
	ContractID string `json:"contractId"`
	Slug       string `json:"slug"`
	Subdomain  string `json:"subdomain,omitempty"`
	InternalIP string `json:"internalIp"`
	PublicIP   string `json:"publicIp"`
	PortStart  int    `json:"portStart"`
	PortEnd    int    `json:"portEnd"`
	// State is the journal's: allocated, dns, active or releasing.
	State string `json:"state"`
}

// SSHPort is the public port forwarded to the VM's port 22.
func (a Assignment) SSHPort() int { return a.PortStart }

// Forwards lists every public port of the block and where it lands.
func (a Assignment) Forwards() []Forward { return forwards(a.PortStart, a.PortEnd-a.PortStart+1) }

// Details are the instance-details fields of a gateway VM, as the live
// agent reports them (dc-agent/src/provisioner/mod.rs Instance) and the
// server stores them (api/src/database/contracts/provisioning.rs).
type Details struct {
	GatewaySlug           string `json:"gateway_slug"`
	GatewaySubdomain      string `json:"gateway_subdomain"`
	GatewaySSHPort        int    `json:"gateway_ssh_port"`
	GatewayPortRangeStart int    `json:"gateway_port_range_start"`
	GatewayPortRangeEnd   int    `json:"gateway_port_range_end"`
	PublicIP              string `json:"public_ip"`
}

// Details returns the fields the contract's instance details carry.
func (a Assignment) Details() Details {
	return Details{GatewaySlug: a.Slug, GatewaySubdomain: a.Subdomain, GatewaySSHPort: a.SSHPort(),
		GatewayPortRangeStart: a.PortStart, GatewayPortRangeEnd: a.PortEnd, PublicIP: a.PublicIP}
}

// Manager owns the gateway of one host: the allocation journal (locked
// while open), the nftables table and the Caddy site files. Its methods
// are safe for concurrent use; operations on one contract never overlap.
type Manager struct {
	cfg    config.GatewayConfig
	public netip.Addr
	dns    DNS
	log    *slog.Logger

	mu    sync.Mutex // guards j, busy and every change to nftables and the sites
	j     *journal
	nft   *netfilter
	caddy *caddySites
	busy  map[string]bool // contracts inside Assign or Release
}

// Open loads the journal, creates the nftables table if missing and puts
// back the forwarding and routes of every recorded VM (after a reboot the
// kernel has none). A Caddy that cannot be reached is logged, not fatal:
// the routes are files and load when Caddy starts.
func Open(ctx context.Context, cfg config.GatewayConfig, dns DNS, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.ApplyDefaults()
	if problems := cfg.Validate(func(string, ...any) {}); len(problems) > 0 {
		return nil, fmt.Errorf("[gateway]: %s", strings.Join(problems, "; "))
	}
	if dns == nil {
		return nil, errors.New("gateway: no DNS client (the agent passes gateway.APIDNS)")
	}
	j, err := openJournal(cfg.PortAllocationsPath)
	if err != nil {
		return nil, err
	}
	m := &Manager{cfg: cfg, public: netip.MustParseAddr(cfg.PublicIP), dns: dns, log: log, j: j,
		caddy: newCaddySites(log, cfg.CaddySitesDir, cfg.Caddyfile, cfg.CaddyAdmin), busy: map[string]bool{}}
	for _, r := range j.bySlug {
		if r.Subdomain == "" && r.State != stateAllocated {
			// The Rust agent did not store the name; the API builds it so
			// (api/src/cloudflare_dns.rs gateway_fqdn).
			r.Subdomain = r.slug + "." + cfg.Zone()
		}
	}
	if m.nft, err = openNetfilter(m.public); err != nil {
		j.close()
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.applyNetfilter(); err != nil {
		m.closeLocked()
		return nil, err
	}
	if _, err := m.caddy.sync(ctx, m.sites(), false); err != nil {
		log.Warn("gateway: caddy routes not applied; they are retried with the next change", "err", err)
	}
	return m, nil
}

// Close releases the journal lock. Forwarding and routes stay.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closeLocked()
	return nil
}

func (m *Manager) closeLocked() {
	if m.nft != nil {
		m.nft.close()
		m.nft = nil
	}
	if m.j != nil {
		m.j.close()
		m.j = nil
	}
}

// Assign gives a provisioned VM its gateway: a slug and port block
// (journaled first), the DNS record, forwarding of the block to internalIP
// and the HTTPS route. It is idempotent per contract: called again (a
// provision resumed after a crash, a retry after an error) it completes the
// same assignment, same slug and ports; with a new address (the VM was
// re-created) it moves the forwarding there. On error the allocation stays
// (state allocated or dns): call Assign again, or Release.
func (m *Manager) Assign(ctx context.Context, contractID, internalIP string) (Assignment, error) {
	if err := dcapi.CheckContractID(contractID); err != nil {
		return Assignment{}, fmt.Errorf("gateway: %w", err)
	}
	ip, err := netip.ParseAddr(internalIP)
	if err != nil || !ip.Is4() || ip.IsLoopback() || ip.IsUnspecified() || ip.IsMulticast() || ip == m.public {
		return Assignment{}, fmt.Errorf("gateway: the VM address %q is not an IPv4 address a VM can have; the gateway forwards to the VM's address on the private bridge", internalIP)
	}
	m.mu.Lock()
	if err := m.claim(contractID); err != nil {
		m.mu.Unlock()
		return Assignment{}, err
	}
	defer m.unclaim(contractID)
	r := m.j.byContract[contractID]
	fresh := r == nil
	switch {
	case fresh:
		base, err := m.j.freeBase(m.cfg.PortRangeStart, m.cfg.PortRangeEnd, m.cfg.PortsPerVM)
		if err != nil {
			m.mu.Unlock()
			return Assignment{}, fmt.Errorf("gateway: %w", err)
		}
		r = &record{slug: m.j.newSlug(), Base: base, Count: m.cfg.PortsPerVM, ContractID: contractID, State: stateAllocated}
	case r.State == stateReleasing:
		m.mu.Unlock()
		return Assignment{}, fmt.Errorf("gateway: contract %s's gateway is being released; finish with Release (or Reconcile) before assigning it again", contractID)
	}
	// full: the kernel may hold elements this change must remove (another
	// VM's on this address, this VM's on its old one): sync everything.
	full := !fresh && r.InternalIP != "" && r.InternalIP != ip.String()
	r.InternalIP = ip.String()
	// The address is this VM's now: a record that still forwards to it
	// belongs to a VM that is gone and must not reach this one.
	for _, o := range m.j.bySlug {
		if o != r && o.InternalIP == r.InternalIP && o.State != stateReleasing && !m.busy[o.ContractID] {
			m.log.Warn("gateway: address taken over; releasing the old forwarding", "address", o.InternalIP, "old_contract", o.ContractID, "contract", contractID)
			o.State = stateReleasing
			m.j.put(o)
			full = true
		}
	}
	m.j.put(r)
	err = m.j.save()
	state, slug := r.State, r.slug
	m.mu.Unlock()
	if err != nil {
		if fresh {
			m.mu.Lock()
			m.j.remove(r)
			m.mu.Unlock()
		}
		return Assignment{}, err
	}

	if state == stateAllocated {
		if !fresh {
			// An earlier create may have made the record; the API refuses
			// a duplicate, so start from none.
			if err := m.dns.DeleteRecord(ctx, slug, m.cfg.DCID); err != nil {
				return m.assignment(r), fmt.Errorf("gateway: remove the DNS record of %s before re-creating it: %w", slug, err)
			}
		}
		sub, err := m.dns.CreateRecord(ctx, slug, m.cfg.DCID, m.cfg.PublicIP)
		if err != nil {
			return m.assignment(r), fmt.Errorf("gateway: create the DNS record of %s: %w", slug, err)
		}
		if err := checkHostname(sub); err != nil {
			// Not even a name: it is not stored (it would go into Caddy's
			// config); the record stays allocated, deleted again on retry.
			return m.assignment(r), fmt.Errorf("gateway: the API answered the VM name %q: %v", truncate(sub, 300), err)
		}
		m.mu.Lock()
		r.Subdomain, r.State = sub, stateDNS
		m.j.put(r)
		err = m.j.save()
		m.mu.Unlock()
		if err != nil {
			return m.assignment(r), err
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := CheckSubdomain(r.Subdomain, r.slug, m.cfg.Zone()); err != nil {
		return m.assignmentLocked(r), fmt.Errorf("gateway: %w", err)
	}
	apply := m.applyLocked
	if !full {
		apply = func(ctx context.Context) error { return m.applyOneLocked(ctx, r) }
	}
	if err := apply(ctx); err != nil {
		return m.assignmentLocked(r), err
	}
	r.State = stateActive
	m.j.put(r)
	if err := m.j.save(); err != nil {
		return m.assignmentLocked(r), err
	}
	return m.assignmentLocked(r), nil
}

// Release removes a contract's gateway: forwarding and route first, then
// the DNS record, then the allocation (its ports are free after that).
// A contract without a gateway is not an error. On error the record stays
// in state releasing with its forwarding already gone; Release or
// Reconcile finishes it. Call it before the VM itself is destroyed, so the
// address is never reused while it is still forwarded.
func (m *Manager) Release(ctx context.Context, contractID string) error {
	m.mu.Lock()
	r := m.j.byContract[contractID]
	if r == nil {
		m.mu.Unlock()
		return nil
	}
	if err := m.claim(contractID); err != nil {
		m.mu.Unlock()
		return err
	}
	defer m.unclaim(contractID)
	r.State = stateReleasing
	m.j.put(r)
	err := m.j.save()
	if err == nil {
		err = m.unforwardLocked(ctx, r)
	}
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.finishRelease(ctx, r)
}

// finishRelease deletes the DNS record and then the record.
func (m *Manager) finishRelease(ctx context.Context, r *record) error {
	if err := m.dns.DeleteRecord(ctx, r.slug, m.cfg.DCID); err != nil {
		return fmt.Errorf("gateway: delete the DNS record of %s (contract %s): %w", r.slug, r.ContractID, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.j.remove(r)
	if err := m.j.save(); err != nil {
		m.j.put(r)
		return err
	}
	return nil
}

// ReconcileResult says what a Reconcile changed.
type ReconcileResult struct {
	// Released are the assignments of contracts that are gone.
	Released []Assignment
	// Rules and Routes count nftables elements and site files changed
	// (put back or removed).
	Rules, Routes int
}

// Reconcile makes the gateway match the contracts the agent still has:
// live must list every contract with a VM or a provision in flight (the
// agent's journal), complete — a missing contract loses its gateway, so
// do not call it when the backend could not be listed. Gateways of other
// contracts are released; forwarding and routes of the live ones are put
// back where missing; elements and site files no record explains are
// removed. Contracts inside Assign or Release are left alone.
func (m *Manager) Reconcile(ctx context.Context, live []string) (ReconcileResult, error) {
	keep := map[string]bool{}
	for _, c := range live {
		keep[c] = true
	}
	var res ReconcileResult
	m.mu.Lock()
	changed := false
	for _, r := range m.j.bySlug {
		if !keep[r.ContractID] && !m.busy[r.ContractID] && r.State != stateReleasing {
			r.State = stateReleasing
			m.j.put(r)
			changed = true
		}
	}
	var err error
	if changed {
		err = m.j.save()
	}
	if err == nil {
		res.Rules, err = m.nft.sync(m.forwards())
	}
	if err == nil {
		res.Routes, err = m.caddy.sync(ctx, m.sites(), false)
	}
	var gone []*record
	for _, r := range m.j.bySlug {
		if r.State == stateReleasing && !m.busy[r.ContractID] {
			gone = append(gone, r)
			m.busy[r.ContractID] = true
		}
	}
	m.mu.Unlock()
	if err != nil {
		for _, r := range gone {
			m.unclaim(r.ContractID)
		}
		return res, fmt.Errorf("gateway reconcile: %w", err)
	}
	var errs []error
	for _, r := range gone {
		a := m.assignment(r)
		if err := m.finishRelease(ctx, r); err != nil {
			errs = append(errs, err)
		} else {
			res.Released = append(res.Released, a)
		}
		m.unclaim(r.ContractID)
	}
	return res, errors.Join(errs...)
}

// Stats returns each forwarded VM's bytes in and out since its forwarding
// was put in place (the kernel's counters: they restart at zero when the
// host reboots), for the heartbeat's bandwidthStats.
func (m *Manager) Stats() ([]dcapi.VMBandwidthReport, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.nft.counters()
	if err != nil {
		return nil, err
	}
	var out []dcapi.VMBandwidthReport
	for _, r := range m.forwarded() {
		c := t[netip.MustParseAddr(r.InternalIP)]
		out = append(out, dcapi.VMBandwidthReport{GatewaySlug: r.slug, ContractID: r.ContractID, BytesIn: c.in, BytesOut: c.out})
	}
	slices.SortFunc(out, func(a, b dcapi.VMBandwidthReport) int { return strings.Compare(a.ContractID, b.ContractID) })
	return out, nil
}

// Get returns a contract's assignment.
func (m *Manager) Get(contractID string) (Assignment, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.j.byContract[contractID]
	if r == nil {
		return Assignment{}, false
	}
	return m.assignmentLocked(r), true
}

// Assignments lists every recorded assignment by port.
func (m *Manager) Assignments() []Assignment {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Assignment
	for _, r := range m.j.bySlug {
		out = append(out, m.assignmentLocked(r))
	}
	slices.SortFunc(out, func(a, b Assignment) int { return a.PortStart - b.PortStart })
	return out
}

func (m *Manager) claim(cid string) error {
	if m.busy[cid] {
		return fmt.Errorf("gateway: contract %s is being assigned or released by another call", cid)
	}
	m.busy[cid] = true
	return nil
}

func (m *Manager) unclaim(cid string) {
	m.mu.Lock()
	delete(m.busy, cid)
	m.mu.Unlock()
}

func (m *Manager) assignment(r *record) Assignment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.assignmentLocked(r)
}

func (m *Manager) assignmentLocked(r *record) Assignment {
	return Assignment{ContractID: r.ContractID, Slug: r.slug, Subdomain: r.Subdomain, InternalIP: r.InternalIP,
		PublicIP: m.cfg.PublicIP, PortStart: r.Base, PortEnd: r.end(), State: r.State}
}

// forwarded are the records whose VM is forwarded: DNS made (or being put
// back after a crash) and an address known.
func (m *Manager) forwarded() []*record {
	var out []*record
	for _, r := range m.j.bySlug {
		if (r.State == stateDNS || r.State == stateActive) && r.InternalIP != "" {
			out = append(out, r)
		}
	}
	return out
}

func (m *Manager) forwards() []forward {
	var out []forward
	for _, r := range m.forwarded() {
		out = append(out, forward{IP: netip.MustParseAddr(r.InternalIP), Base: r.Base, Count: r.Count})
	}
	return out
}

// sites are the routes of forwarded records whose name Caddy's wildcard
// serves.
func (m *Manager) sites() []site {
	var out []site
	for _, r := range m.forwarded() {
		if CheckSubdomain(r.Subdomain, r.slug, m.cfg.Zone()) != nil {
			continue
		}
		out = append(out, site{Slug: r.slug, Subdomain: r.Subdomain, ContractID: r.ContractID, InternalIP: r.InternalIP, Base: r.Base, Count: r.Count})
	}
	return out
}

func (m *Manager) applyNetfilter() error {
	_, err := m.nft.sync(m.forwards())
	return err
}

// applyOneLocked puts one record's forwarding and route in place without
// reading the whole table back (the cost of a sync grows with the number of
// VMs); when the kernel refuses the change, it syncs everything.
func (m *Manager) applyOneLocked(ctx context.Context, r *record) error {
	f := forward{IP: netip.MustParseAddr(r.InternalIP), Base: r.Base, Count: r.Count}
	if err := m.nft.add(f); err != nil {
		m.log.Info("gateway: nftables refused the VM's elements; syncing the table", "contract", r.ContractID, "err", err)
		if err := m.applyNetfilter(); err != nil {
			return fmt.Errorf("gateway: %w", err)
		}
	}
	if err := m.caddy.put(ctx, site{Slug: r.slug, Subdomain: r.Subdomain, ContractID: r.ContractID, InternalIP: r.InternalIP, Base: r.Base, Count: r.Count}); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// unforwardLocked removes a releasing record's forwarding and route, the
// same way: its own elements, or a sync when they are not all there or its
// address is forwarded for another record now.
func (m *Manager) unforwardLocked(ctx context.Context, r *record) error {
	if r.InternalIP != "" {
		shared := false
		for _, o := range m.forwarded() {
			shared = shared || o.InternalIP == r.InternalIP
		}
		err := errors.New("address shared")
		if !shared {
			err = m.nft.remove(forward{IP: netip.MustParseAddr(r.InternalIP), Base: r.Base, Count: r.Count})
		}
		if err != nil {
			if err := m.applyNetfilter(); err != nil {
				return fmt.Errorf("gateway: %w", err)
			}
		}
	}
	if err := m.caddy.drop(ctx, r.slug); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}

// applyLocked makes nftables and the site files match the journal.
func (m *Manager) applyLocked(ctx context.Context) error {
	if err := m.applyNetfilter(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	if _, err := m.caddy.sync(ctx, m.sites(), false); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	return nil
}
