package script

import (
	"context"
	"errors"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Pause implements provisioners.Pauser with the optional pause script:
// {"action":"pause","external_id",…} → {"success":true}. It must stop the
// instance and keep it (a paused contract: payment dispute); an instance
// that is stopped already is success.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	return p.powerAction(ctx, ActionPause, externalID)
}

// Resume implements provisioners.Pauser with the optional resume script:
// start the instance again; a running one is success.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	return p.powerAction(ctx, ActionResume, externalID)
}

func (p *Provisioner) powerAction(ctx context.Context, action, externalID string) error {
	if p.paths[action] == "" {
		return provisioners.Permanent(errors.New("no " + action + " script configured; set pause and resume in the [script] section"))
	}
	_, err := p.run(ctx, action, Input{ExternalID: &externalID})
	if err != nil {
		p.logStderr(err)
	}
	return err
}

var _ provisioners.Pauser = (*Provisioner)(nil)
