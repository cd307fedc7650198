package agent

import (
	"cmp"
	"context"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup/upgrade"
)

// problemHeartbeatParts is the key of the notice that the API refused the
// heartbeat's optional parts.
const problemHeartbeatParts = "heartbeat-parts"

// heartbeatLoop keeps the provider "online": one heartbeat at start, then
// one every nextHeartbeatSeconds (as the server asks, clamped to stay well
// inside the 5 minute online window).
func (a *Agent) heartbeatLoop(ctx context.Context) error {
	var (
		resMu      sync.Mutex
		res        *dcapi.Resources
		resAt      time.Time
		refreshing bool
	)
	first := true
	hs := &heartbeatState{}
	return a.repeat(ctx, loopHeartbeat, func(ctx context.Context) (time.Duration, <-chan struct{}, error) {
		t := a.timing()
		e := a.acquireEnv()
		resMu.Lock()
		if !refreshing && (resAt.IsZero() || a.now().Sub(resAt) > t.InventoryEvery) {
			// Inventory asks the backend, which may be slow: never let it
			// hold a heartbeat back. The next heartbeat carries it.
			refreshing = true
			go func() {
				ie := a.acquireEnv()
				defer a.releaseEnv(ie)
				inv := a.resources(ctx, ie)
				resMu.Lock()
				defer resMu.Unlock()
				res, resAt, refreshing = inv, a.now(), false
			}()
		}
		cur := res
		resMu.Unlock()
		hb := dcapi.Heartbeat{
			Version:         a.version,
			ProvisionerType: e.defType,
			Capabilities:    capabilities(e),
			ActiveContracts: a.activeCount(),
			Resources:       cur,
			BandwidthStats:  a.gatewayStats(),
		}
		a.live.expect(loopHeartbeat, 3*e.reqTimeout)
		resp, err := a.sendHeartbeat(ctx, e, hb, hs)
		a.releaseEnv(e)
		if err != nil {
			return 0, nil, err
		}
		a.obs.update(func(o *observer) { o.lastHeartbeat = a.now() })
		a.heartbeatAnswer(ctx, resp)
		next := t.HeartbeatDefault
		if resp.NextHeartbeatSeconds > 0 {
			next = time.Duration(resp.NextHeartbeatSeconds) * time.Second
		}
		next = min(max(next, t.HeartbeatMin), t.HeartbeatMax)
		if first {
			a.obs.emit(status.EventHeartbeat, status.LevelInfo, loopHeartbeat, "", "heartbeat accepted: provider online", "next_in", next)
			first = false
		}
		return next, nil, nil
	})
}

// heartbeatState remembers that the API refused the heartbeat's optional
// parts, so they are left out until refusedUntil (then tried once more).
type heartbeatState struct {
	refusedUntil time.Time
	bare         bool // even version, provisioner type and capabilities were refused
}

// sendHeartbeat posts hb. A heartbeat the API refuses as a bad request
// (400/422: the live API refuses a whole heartbeat when one field of its
// inventory is not in the shape it parses, api/src/openapi/agents.rs)
// never takes the provider offline: it is sent again without the optional
// parts (resources, bandwidth stats), then, if need be, as the bare
// required minimum ({activeContracts}), and what was refused is said once
// (log, event, status and monitor). The parts are tried again after
// Timing.BatchRetry.
func (a *Agent) sendHeartbeat(ctx context.Context, e *env, hb dcapi.Heartbeat, hs *heartbeatState) (dcapi.HeartbeatResponse, error) {
	now := a.now()
	full := now.After(hs.refusedUntil)
	if !full {
		hb.Resources, hb.BandwidthStats = nil, nil
		if hs.bare {
			hb = dcapi.Heartbeat{ActiveContracts: hb.ActiveContracts}
		}
	}
	resp, err := e.client.Heartbeat(ctx, hb)
	if err == nil {
		if full {
			a.obs.clearProblem(problemHeartbeatParts)
		}
		return resp, nil
	}
	bare := dcapi.Heartbeat{ActiveContracts: hb.ActiveContracts}
	if !badRequest(err) || hb.Version == "" && hb.ProvisionerType == "" && hb.Capabilities == nil && hb.Resources == nil && hb.BandwidthStats == nil {
		return resp, err
	}
	refused := err
	parts := "its resources and bandwidth stats"
	hs.bare = false
	if hb.Resources != nil || hb.BandwidthStats != nil {
		hb.Resources, hb.BandwidthStats = nil, nil
		resp, err = e.client.Heartbeat(ctx, hb)
	}
	if badRequest(err) {
		parts = "everything but activeContracts (version, provisioner type, capabilities, resources, bandwidth stats)"
		hs.bare = true
		resp, err = e.client.Heartbeat(ctx, bare)
	}
	if err != nil {
		return resp, err
	}
	hs.refusedUntil = now.Add(a.timing().BatchRetry)
	msg := "the API refused the heartbeat's optional parts (" + refused.Error() + "); heartbeats go without " + parts + " and the provider stays online"
	if !a.obs.hasProblem(problemHeartbeatParts, msg) {
		a.obs.emit(status.EventNotice, status.LevelWarn, loopHeartbeat, "", msg)
	}
	a.obs.setProblem(problemHeartbeatParts, msg, "upgrade dc-agent (sudo dc-agent upgrade): a newer agent may send them in the form this API takes")
	return resp, nil
}

// badRequest reports whether the API refused a request for its body.
func badRequest(err error) bool {
	c := dcapi.StatusCode(err)
	return dcapi.IsPermanent(err) && (c == 400 || c == 422)
}

// heartbeatAnswer applies what a heartbeat's answer carries besides the
// interval: the agent's pool, and a requested upgrade.
func (a *Agent) heartbeatAnswer(ctx context.Context, resp dcapi.HeartbeatResponse) {
	pool := status.Pool{ID: deref(resp.PoolID), Name: deref(resp.PoolName)}
	want := deref(resp.UpgradeToVersion)
	a.obs.update(func(o *observer) { o.pool = pool })
	if want == "" || want == a.version {
		a.obs.update(func(o *observer) { o.upgrade = nil })
		return
	}
	a.requestUpgrade(ctx, want)
}

// requestUpgrade acts on the API's upgradeToVersion (live:
// common/src/api_types.rs HeartbeatResponse; the Rust agent upgrades
// itself at once, dc-agent/src/runtime/mod.rs): with agent.auto_update on
// it starts the existing upgrade path (Options.Upgrade: the same
// checksum-verified, rolled-back-on-failure `dc-agent upgrade` the timer
// runs, which restarts the service only when no provision is in flight),
// once per version; otherwise the request shows in status and the monitor
// with the command that does it.
func (a *Agent) requestUpgrade(ctx context.Context, want string) {
	if err := upgrade.ValidVersion(want); err != nil {
		a.warnOnce("upgrade-version:"+want, time.Hour, func() {
			a.obs.emit(status.EventNotice, status.LevelWarn, loopHeartbeat, "", "the API asks for an upgrade to a version that is not a release version; ignored: "+err.Error())
		})
		return
	}
	if !upgrade.Newer(want, a.version) {
		a.obs.update(func(o *observer) { o.upgrade = nil })
		return
	}
	e := a.acquireEnv()
	auto := e.cfg.Agent.AutoUpdate
	a.releaseEnv(e)
	a.obs.update(func(o *observer) {
		if o.upgrade != nil && o.upgrade.Version == want && (o.upgrade.State != status.UpgradeOffered || !auto) {
			return
		}
		st := status.UpgradeOffered
		fix := "auto_update is off: install it with sudo dc-agent upgrade --version " + want
		if auto && a.opts.Upgrade != nil {
			st, fix = status.UpgradeStarted, ""
		} else if auto {
			fix = "this agent cannot start an upgrade by itself: sudo dc-agent upgrade --version " + want
		}
		o.upgrade = &status.Upgrade{Version: want, State: st, Note: fix}
		if st == status.UpgradeStarted {
			go a.runUpgrade(ctx, want)
		}
	})
	a.warnOnce("upgrade:"+want, 24*time.Hour, func() {
		a.obs.emit(status.EventNotice, status.LevelInfo, loopHeartbeat, "", "the API asks for dc-agent "+want+" (running "+a.version+")", "auto_update", auto)
	})
}

func (a *Agent) runUpgrade(ctx context.Context, want string) {
	err := a.opts.Upgrade(ctx, want)
	a.obs.update(func(o *observer) {
		if o.upgrade == nil || o.upgrade.Version != want {
			return
		}
		if err != nil {
			o.upgrade.State, o.upgrade.Note = status.UpgradeFailed, err.Error()+"; install it by hand: sudo dc-agent upgrade --version "+want
		}
	})
	if err != nil {
		a.obs.emit(status.EventNotice, status.LevelWarn, loopHeartbeat, "", "starting the upgrade to "+want+" failed", "err", err)
		return
	}
	a.obs.emit(status.EventNotice, status.LevelInfo, loopHeartbeat, "", "upgrade to "+want+" started")
}

func (a *Agent) activeCount() int {
	a.workMu.Lock()
	defer a.workMu.Unlock()
	return a.active
}

// capabilities names what this agent can do: its provisioner types and the
// protocol features it uses.
func capabilities(e *env) []string {
	caps := []string{"sealed_credentials", "health_check"}
	for typ, b := range e.backends {
		caps = append(caps, "provisioner:"+typ)
		if b.feat.List {
			caps = append(caps, "reconcile")
		}
		if b.feat.Pause {
			caps = append(caps, "pause")
		}
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

// resources asks the default backend for its capacity, if it can tell,
// in the live API's ResourceInventory shape.
func (a *Agent) resources(ctx context.Context, e *env) *dcapi.Resources {
	b := e.backends[e.defType]
	if b == nil {
		return nil
	}
	inv, ok := b.p.(provisioners.Inventory)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.timing().InventoryTime)
	defer cancel()
	r, err := inv.Resources(ctx)
	if err != nil {
		a.log.Debug("inventory failed", "provisioner", b.typ, "err", err)
		return nil
	}
	return inventory(r)
}

// inventory converts a backend's Resources to the wire shape: unsigned
// and bounded (a negative or huge value from a backend must not make the
// API refuse the heartbeat), physical cores = threads where the backend
// cannot tell them apart (as the live Rust agent reports Docker's).
func inventory(r provisioners.Resources) *dcapi.Resources {
	u32 := func(n int) uint32 { return uint32(min(max(n, 0), math.MaxUint32)) }
	u64 := func(n int64) uint64 { return uint64(max(n, 0)) }
	out := &dcapi.Resources{
		CPUCores: u32(r.CPUCores), CPUThreads: u32(r.CPUThreads),
		MemoryTotalMB: u64(r.MemoryMB), MemoryAvailableMB: u64(min(r.MemoryFreeMB, r.MemoryMB)),
	}
	if out.CPUCores == 0 {
		out.CPUCores = out.CPUThreads
	}
	if out.CPUThreads == 0 {
		out.CPUThreads = out.CPUCores
	}
	if r.CPUModel != "" {
		m := r.CPUModel
		out.CPUModel = &m
	}
	if r.CPUMhz > 0 {
		mhz := u32(r.CPUMhz)
		out.CPUMhz = &mhz
	}
	for _, p := range r.StoragePools {
		out.StoragePools = append(out.StoragePools, dcapi.StoragePool{Name: p.Name, TotalGB: u64(p.TotalGB), AvailableGB: u64(min(p.AvailGB, p.TotalGB)),
			StorageType: cmp.Or(p.Type, "unknown")})
	}
	for _, g := range r.GPUs {
		d := dcapi.GPUDevice{PCIID: g.PCIID, Name: g.Name, Vendor: g.Vendor}
		if g.MemoryMB > 0 {
			mb := u32(g.MemoryMB)
			d.MemoryMB = &mb
		}
		out.GPUDevices = append(out.GPUDevices, d)
	}
	for _, t := range r.Templates {
		if t.VMID > 0 {
			out.Templates = append(out.Templates, dcapi.Template{VMID: u32(t.VMID), Name: t.Name})
		}
	}
	return out
}
