package hetzner

import (
	"context"
	"errors"
	"fmt"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// ResetPassword implements provisioners.PasswordResetter with Hetzner's
// reset_password server action (POST /servers/{id}/actions/reset_password),
// which sets a root password of Hetzner's choosing through the QEMU guest
// agent in the server and answers it: the agent's proposal is not used,
// the returned password is. SSH key rotation has no counterpart: Hetzner
// takes SSH keys only when a server is created or rebuilt, so this backend
// does not implement provisioners.KeyRotator.
func (p *Provisioner) ResetPassword(ctx context.Context, _, externalID, _ string) (string, error) {
	id, err := parseServerID(externalID)
	if err != nil {
		return "", provisioners.Permanent(err)
	}
	sv, _, err := p.c.Server.GetByID(ctx, id)
	if err != nil {
		return "", provisioners.ForTenant(p.classify(fmt.Sprintf("read server %d", id), err), "the provider's cloud API could not be reached; the reset is retried")
	}
	if sv == nil {
		msg := "the server of this contract no longer exists"
		return "", &provisioners.Error{Err: fmt.Errorf("server %d: %s", id, msg), Tenant: msg}
	}
	if sv.Status != hcloud.ServerStatusRunning {
		msg := fmt.Sprintf("the server is %s; a password can only be reset while it runs", sv.Status)
		return "", &provisioners.Error{Err: fmt.Errorf("server %s: %s", sv.Name, msg), Tenant: msg}
	}
	res, _, err := p.c.Server.ResetPassword(ctx, sv)
	if err == nil {
		err = p.wait(ctx, res.Action)
	}
	if err != nil {
		var ae hcloud.ActionError
		if errors.As(err, &ae) {
			// The action ran and failed: typically no guest agent answers in
			// the server. Retrying would fail the same way.
			msg := "the password could not be reset: " + ae.Message + " (Hetzner resets passwords through the QEMU guest agent, which must run in the server)"
			return "", &provisioners.Error{Err: fmt.Errorf("reset the root password of %s: %s (%s)", sv.Name, ae.Message, ae.Code), Tenant: msg}
		}
		return "", provisioners.ForTenant(p.classify("reset the root password of "+sv.Name, err), "the provider's cloud API refused the reset for now; it is retried")
	}
	if res.RootPassword == "" {
		return "", provisioners.Retryable(fmt.Errorf("reset the root password of %s: Hetzner answered no password", sv.Name))
	}
	return res.RootPassword, nil
}
