package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

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
		a.live.expect(loopHeartbeat, 2*e.reqTimeout)
		resp, err := e.client.Heartbeat(ctx, hb)
		a.releaseEnv(e)
		if err != nil {
			return 0, nil, err
		}
		a.obs.update(func(o *observer) { o.lastHeartbeat = a.now() })
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
	}
	slices.Sort(caps)
	return slices.Compact(caps)
}

// resources asks the default backend for its capacity, if it can tell.
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
	out := &dcapi.Resources{CPUCores: r.CPUCores, MemoryMB: r.MemoryMB, MemoryFreeMB: r.MemoryFreeMB, Templates: r.Templates, Nodes: r.Nodes}
	for _, p := range r.StoragePools {
		out.StoragePools = append(out.StoragePools, dcapi.StoragePool{Name: p.Name, TotalGB: p.TotalGB, AvailGB: p.AvailGB})
	}
	return out
}
