package hetzner

import (
	"context"
	"fmt"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Pause implements provisioners.Pauser: the contract is paused (a payment
// dispute), so the server is powered off (POST …/actions/poweroff) and
// kept with its disk. Hetzner bills a powered-off server all the same; the
// provider's cost goes on until the contract resumes or is cancelled. An
// off server is success. Only managed servers are touched.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	sv, err := p.managedServer(ctx, externalID, "power off")
	if err != nil || sv == nil {
		return err
	}
	if sv.Status == hcloud.ServerStatusOff {
		return nil
	}
	a, _, err := p.c.Server.Poweroff(ctx, sv)
	if err != nil {
		return p.classify(fmt.Sprintf("power off server %d", sv.ID), err)
	}
	return p.wait(ctx, a)
}

// Resume implements provisioners.Pauser: the server of a resumed contract
// is powered on again; a running one is success.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	sv, err := p.managedServer(ctx, externalID, "power on")
	if err != nil {
		return err
	}
	if sv == nil {
		return provisioners.Permanent(fmt.Errorf("server %s no longer exists", externalID))
	}
	if sv.Status == hcloud.ServerStatusRunning {
		return nil
	}
	a, _, err := p.c.Server.Poweron(ctx, sv)
	if err != nil {
		return p.classify(fmt.Sprintf("power on server %d", sv.ID), err)
	}
	return p.wait(ctx, a)
}

// managedServer reads a server dc-agent created (nil if it is gone).
func (p *Provisioner) managedServer(ctx context.Context, externalID, verb string) (*hcloud.Server, error) {
	id, err := parseServerID(externalID)
	if err != nil {
		return nil, provisioners.Permanent(err)
	}
	sv, _, err := p.c.Server.GetByID(ctx, id)
	if err != nil {
		return nil, p.classify(fmt.Sprintf("look up server %d", id), err)
	}
	if sv == nil {
		return nil, nil
	}
	if sv.Labels[LabelManaged] != "true" {
		return nil, provisioners.Permanent(fmt.Errorf("server %d (%s) has no %s=true label, so dc-agent did not create it; refusing to %s it", id, sv.Name, LabelManaged, verb))
	}
	return sv, nil
}

var _ provisioners.Pauser = (*Provisioner)(nil)
