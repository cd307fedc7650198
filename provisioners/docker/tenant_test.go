package docker

import (
	"context"
	"strings"
	"testing"

	"github.com/moby/moby/client"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

func shadowMatches(t *testing.T, p *Provisioner, id, pw string) bool {
	t.Helper()
	out, code, err := p.exec(context.Background(), id, []string{"cat", "/etc/shadow"}, nil)
	if err != nil || code != 0 {
		t.Fatalf("read /etc/shadow: %v %d %s", err, code, out)
	}
	ok, err := testutil.ShadowMatches([]byte(out), "root", pw)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// A reset runs chpasswd in the container (the password on stdin); a
// rotation adds the key to root's authorized_keys, once, root:root 0600 in
// a 0700 .ssh, also when the container had none.
func TestTenantRequests(t *testing.T) {
	t.Parallel()
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+700, testPortStart+709
	})
	ctx := context.Background()
	for n, withKey := range map[int]bool{71: true, 72: false} {
		inst := provision(t, p, n, func(r *provisioners.Request) {
			if !withKey {
				r.RequesterSSHPubkey, r.WantPassword = "", true
			}
		})
		got, err := p.ResetPassword(ctx, cid(n), inst.ExternalID, "New-Password-0042")
		if err != nil || got != "New-Password-0042" || !shadowMatches(t, p, inst.ExternalID, "New-Password-0042") {
			t.Fatalf("reset: %q %v", got, err)
		}
		key := sshKey(t)
		for range 2 {
			if err := p.RotateSSHKey(ctx, cid(n), inst.ExternalID, key+" new@key"); err != nil {
				t.Fatal(err)
			}
		}
		out, _ := run(t, p, inst.ExternalID, "cat /root/.ssh/authorized_keys; ls -ln /root/.ssh/authorized_keys; ls -lnd /root/.ssh")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		want := 4
		if !withKey {
			want = 3
		}
		if len(lines) != want || lines[want-3] != key+" new@key" ||
			!strings.HasPrefix(lines[want-2], "-rw-------    1 0        0 ") || !strings.HasPrefix(lines[want-1], "drwx------") {
			t.Fatalf("with key %v:\n%s", withKey, out)
		}
	}
}

// A stopped container cannot get a password; a container the agent did
// not make is not touched.
func TestTenantRequestRefusals(t *testing.T) {
	t.Parallel()
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+710, testPortStart+719
	})
	ctx := context.Background()
	inst := provision(t, p, 73, nil)
	secs := 1
	if _, err := p.cli.ContainerStop(ctx, inst.ExternalID, client.ContainerStopOptions{Timeout: &secs}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.ResetPassword(ctx, cid(73), inst.ExternalID, "pw-12345"); err == nil || provisioners.TenantMessage(err) != "the container is not running; a password can only be reset while it runs" {
		t.Fatalf("stopped: %v", err)
	}
	if _, err := p.ResetPassword(ctx, cid(74), "no-such-container", "pw-12345"); err == nil || provisioners.TenantMessage(err) != "the container of this contract no longer exists" {
		t.Fatalf("missing: %v", err)
	}
}
