package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Pause implements provisioners.Pauser: the contract is paused (a payment
// dispute), so the container is stopped (SIGTERM, then SIGKILL after the
// stop timeout) and kept with its filesystem. A stopped container is
// success. Only managed containers are touched.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	ct, err := p.managed(ctx, externalID, "stop")
	if err != nil || ct == nil {
		return err
	}
	if ct.State != nil && !ct.State.Running {
		return nil
	}
	secs := int(p.opts.StopTimeout.Seconds())
	if _, err := p.cli.ContainerStop(ctx, ct.ID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		return p.classify("stop container "+ct.ID, err)
	}
	return nil
}

// Resume implements provisioners.Pauser: the container of a resumed
// contract is started again; a running one is success.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	ct, err := p.managed(ctx, externalID, "start")
	if err != nil {
		return err
	}
	if ct == nil {
		return provisioners.Permanent(fmt.Errorf("container %s no longer exists", externalID))
	}
	if ct.State != nil && ct.State.Running {
		return nil
	}
	if _, err := p.cli.ContainerStart(ctx, ct.ID, client.ContainerStartOptions{}); err != nil {
		return p.classify("start container "+ct.ID, err)
	}
	return nil
}

// managed inspects a container dc-agent created (nil if it is gone).
func (p *Provisioner) managed(ctx context.Context, externalID, verb string) (*container.InspectResponse, error) {
	id := strings.TrimSpace(externalID)
	if id == "" {
		return nil, provisioners.Permanent(errors.New("empty container id"))
	}
	ct, err := p.inspect(ctx, id)
	if err != nil {
		return nil, p.classify("inspect container "+id, err)
	}
	if ct == nil {
		return nil, nil
	}
	if ct.Config == nil || ct.Config.Labels[LabelManaged] != "true" {
		return nil, provisioners.Permanent(fmt.Errorf("container %s (%s) has no %s=true label, so dc-agent did not create it; refusing to %s it", id, strings.TrimPrefix(ct.Name, "/"), LabelManaged, verb))
	}
	return ct, nil
}

var _ provisioners.Pauser = (*Provisioner)(nil)
