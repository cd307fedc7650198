package docker

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Tenant requests go through the Docker API, never through the
// container's sshd: chpasswd runs by exec with the password on stdin, and
// the key file is copied in as a tar archive with its owner and mode.

const (
	authorizedKeys = "/root/.ssh/authorized_keys"
	// maxAuthorizedKeys bounds the authorized_keys file read back.
	maxAuthorizedKeys = 1 << 20
)

// tenantContainer returns the contract's container for a tenant request,
// refusing one dc-agent did not create (managed); the tenant reads why it
// failed.
func (p *Provisioner) tenantContainer(ctx context.Context, externalID string) (*container.InspectResponse, error) {
	ct, err := p.managed(ctx, externalID, "change")
	switch {
	case err != nil && provisioners.RetryPossible(err):
		return nil, provisioners.ForTenant(err, "the provider's container host did not answer; the request is retried")
	case err != nil:
		return nil, err
	case ct == nil:
		msg := "the container of this contract no longer exists"
		return nil, &provisioners.Error{Err: fmt.Errorf("container %s: %s", strings.TrimSpace(externalID), msg), Tenant: msg}
	}
	return ct, nil
}

// ResetPassword implements provisioners.PasswordResetter: chpasswd in the
// running container, the password on its stdin (never on a command line).
func (p *Provisioner) ResetPassword(ctx context.Context, _, externalID, password string) (string, error) {
	ct, err := p.tenantContainer(ctx, externalID)
	if err != nil {
		return "", err
	}
	if ct.State == nil || !ct.State.Running || ct.State.Paused {
		msg := "the container is not running; a password can only be reset while it runs"
		return "", &provisioners.Error{Err: fmt.Errorf("container %s: %s", ct.ID, msg), Tenant: msg}
	}
	out, code, err := p.exec(ctx, ct.ID, []string{"chpasswd"}, []byte("root:"+password+"\n"))
	if err != nil {
		return "", provisioners.ForTenant(p.classify("run chpasswd in container "+ct.ID, err), "the provider's container host did not answer; the reset is retried")
	}
	if code != 0 {
		msg := "the password could not be set in the container (chpasswd failed)"
		return "", &provisioners.Error{Err: fmt.Errorf("chpasswd in container %s (image %s) exited %d: %s; use an image with chpasswd", ct.ID, p.cfg.Image, code, tail(out)), Tenant: msg}
	}
	return password, nil
}

// RotateSSHKey implements provisioners.KeyRotator: root's authorized_keys
// is read from the container, the key added (once), and the file copied
// back as root:root 0600 in /root/.ssh (0700), the modes sshd's StrictModes
// accepts. It works on a stopped container too.
func (p *Provisioner) RotateSSHKey(ctx context.Context, _, externalID, pubkey string) error {
	ct, err := p.tenantContainer(ctx, externalID)
	if err != nil {
		return err
	}
	cur, err := p.readAuthorizedKeys(ctx, ct.ID)
	if err != nil {
		return err
	}
	body, changed := provisioners.AddAuthorizedKey(cur, pubkey)
	if !changed {
		return nil
	}
	if err := p.putAuthorizedKeys(ctx, ct.ID, body, "root/.ssh/"); err != nil {
		return provisioners.ForTenant(p.classify("copy authorized_keys into container "+ct.ID, err), "the provider's container host did not take the key; the rotation is retried")
	}
	return nil
}

// readAuthorizedKeys returns root's authorized_keys (empty when there is
// none yet).
func (p *Provisioner) readAuthorizedKeys(ctx context.Context, id string) ([]byte, error) {
	res, err := p.cli.CopyFromContainer(ctx, id, client.CopyFromContainerOptions{SourcePath: authorizedKeys})
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, provisioners.ForTenant(p.classify("read authorized_keys of container "+id, err), "the provider's container host did not answer; the rotation is retried")
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	h, err := tr.Next()
	if err != nil {
		return nil, provisioners.Retryable(fmt.Errorf("read authorized_keys of container %s: %w", id, err))
	}
	if h.Typeflag != tar.TypeReg {
		msg := authorizedKeys + " in the container is not a regular file; the key was not added"
		return nil, &provisioners.Error{Err: fmt.Errorf("container %s: %s", id, msg), Tenant: msg}
	}
	b, err := io.ReadAll(io.LimitReader(tr, maxAuthorizedKeys+1))
	if err != nil {
		return nil, provisioners.Retryable(fmt.Errorf("read authorized_keys of container %s: %w", id, err))
	}
	if len(b) > maxAuthorizedKeys {
		msg := fmt.Sprintf("%s in the container is larger than %d bytes; the key was not added", authorizedKeys, maxAuthorizedKeys)
		return nil, &provisioners.Error{Err: fmt.Errorf("container %s: %s", id, msg), Tenant: msg}
	}
	return b, nil
}
