package proxmox

import (
	"context"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// Finding 8 of issue 15: the provider's post-provision SSH key went into
// every VM, script or not, and stayed there. It goes into a VM only when
// the contract has a post-provision script, and is taken out of the VM's
// authorized_keys as soon as the script has run: the provider's key no
// longer logs in.
func TestPostProvisionKeyOnlyForScriptAndRemovedAfter(t *testing.T) {
	// The "guest" is a real sshd that reads authorized_keys from the login
	// user's ~/.ssh, where cloud-init puts sshkeys.
	sshd, s, p := sshGuest(t, testutil.SSHDOptions{HomeKeys: true}, nil)
	postBlob := strings.Fields(string(ssh.MarshalAuthorizedKey(sshd.ClientSigner.PublicKey())))[1]
	vmKeys := func(name string) string {
		t.Helper()
		for _, vm := range simVMs(t, s) {
			if vm.Name() == name {
				keys, err := url.PathUnescape(vm.Config["sshkeys"])
				if err != nil {
					t.Fatal(err)
				}
				return keys
			}
		}
		t.Fatalf("no VM %s", name)
		return ""
	}

	// No script: the provider's key is not given to the VM at all.
	plain := request(t, 30)
	inst, err := p.Provision(context.Background(), plain)
	if err != nil {
		t.Fatal(err)
	}
	if keys := vmKeys(inst.Name); strings.Contains(keys, postBlob) || !strings.Contains(keys, plain.RequesterSSHPubkey) {
		t.Errorf("VM without a post-provision script got sshkeys %q", keys)
	}
	if err := p.Terminate(context.Background(), inst.ExternalID); err != nil {
		t.Fatal(err)
	}

	// With a script: the key logs in for the script, then is gone.
	withScript := request(t, 31)
	withScript.PostProvisionScript = "echo configured\n"
	if _, err := p.Provision(context.Background(), withScript); err != nil {
		t.Fatalf("%v\nsshd log:\n%s", err, sshd.Log())
	}
	b, err := os.ReadFile(sshd.AuthorizedKeys)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), postBlob) {
		t.Fatalf("the post-provision key is still in the VM's authorized_keys:\n%s", b)
	}
	cfg := &ssh.ClientConfig{User: sshd.User, Auth: []ssh.AuthMethod{ssh.PublicKeys(sshd.ClientSigner)},
		HostKeyCallback: ssh.FixedHostKey(sshd.HostKey), Timeout: 10 * time.Second}
	if c, err := ssh.Dial("tcp", sshd.Addr(), cfg); err == nil {
		c.Close()
		t.Fatal("the provider's post-provision key still logs in to the VM after its script")
	}
}
