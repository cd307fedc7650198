package proxmox

import (
	"context"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// provisioned makes one VM for contract n and returns it.
func provisioned(t *testing.T, s *pveapi.TestSim, p *Provisioner, n int) (provisioners.Request, provisioners.Instance) {
	t.Helper()
	req := request(t, n)
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return req, inst
}

func guestOf(t *testing.T, s *pveapi.TestSim, vmid int) *pve.VM {
	t.Helper()
	vm := simVMs(t, s)[vmid]
	if vm == nil || vm.Guest == nil {
		t.Fatalf("VM %d has no guest: %+v", vmid, vm)
	}
	return vm
}

// The reset goes through set-user-password for the cloud-init user; the
// rotation adds the key to that user's authorized_keys, keeping the file's
// owner and mode, once however often it is repeated.
func TestTenantRequestsThroughGuestAgent(t *testing.T) {
	for _, version := range []string{"8.4.1", "9.1.1"} {
		t.Run(version, func(t *testing.T) {
			s := pveapi.StartTest(t, pveapi.TestOptions{Version: version})
			for _, user := range []string{"root", "debian"} {
				t.Run(user, func(t *testing.T) {
					p := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.CIUser = user })
					n := map[string]int{"root": 1, "debian": 2}[user]
					req, inst := provisioned(t, s, p, n)
					ctx := context.Background()
					got, err := p.ResetPassword(ctx, req.ContractID, inst.ExternalID, "new-secret-pw")
					if err != nil || got != "new-secret-pw" {
						t.Fatalf("reset: %q %v", got, err)
					}
					vmid := 99 + n
					u := guestOf(t, s, vmid).Guest.Users[user]
					if u == nil || u.PasswordHash != pve.HashPassword("new-secret-pw") || len(u.PasswordSets) != 1 {
						t.Fatalf("guest user %s: %+v", user, u)
					}
					key := testPubKey(t)
					for range 2 {
						if err := p.RotateSSHKey(ctx, req.ContractID, inst.ExternalID, key); err != nil {
							t.Fatalf("rotate: %v", err)
						}
					}
					home := map[string]string{"root": "/root", "debian": "/home/debian"}[user]
					vm := guestOf(t, s, vmid)
					f := vm.File(home + "/.ssh/authorized_keys")
					uid := map[string]int{"root": 0, "debian": 1000}[user]
					lines := strings.Split(strings.TrimSpace(string(f.Content)), "\n")
					if len(lines) != 2 || lines[0] != req.RequesterSSHPubkey || lines[1] != key || f.Mode != 0o600 || f.UID != uid || f.GID != uid {
						t.Fatalf("authorized_keys: %+v %q", f, f.Content)
					}
				})
			}
		})
	}
}

// A VM provisioned with a password only has no authorized_keys: it is made
// with install (0700/0600, the user's) before the key is written, never
// left as qemu-ga would create it (0666 root).
func TestRotateCreatesAuthorizedKeys(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.CIUser = "alice" })
	req := request(t, 3)
	req.RequesterSSHPubkey, req.WantPassword = "", true
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	key := testPubKey(t)
	if err := p.RotateSSHKey(context.Background(), req.ContractID, inst.ExternalID, key); err != nil {
		t.Fatal(err)
	}
	vm := guestOf(t, s, 100)
	d, f := vm.File("/home/alice/.ssh"), vm.File("/home/alice/.ssh/authorized_keys")
	if d == nil || !d.Dir || d.Mode != 0o700 || d.UID != 1000 || f == nil || f.Mode != 0o600 || f.UID != 1000 || f.GID != 1000 || string(f.Content) != key+"\n" {
		t.Fatalf("dir %+v file %+v", d, f)
	}
}

// Every refusal is one clear message for the tenant, the provider's
// detail in the log text, and nothing changed in the guest. The missing
// privilege is each major's own: VM.Monitor on PVE 8, where every guest
// agent call needs it, VM.GuestAgent.Unrestricted on PVE 9, which
// set-user-password and exec need (qemu-server 9.x Agent.pm).
func TestTenantRequestFailures(t *testing.T) {
	for version, priv := range map[string]string{"8.4.1": "VM.Monitor", "9.1.1": "VM.GuestAgent.Unrestricted"} {
		t.Run(version, func(t *testing.T) { tenantRequestFailures(t, version, priv) })
	}
}

func tenantRequestFailures(t *testing.T, version, priv string) {
	s := pveapi.StartTest(t, pveapi.TestOptions{Version: version})
	p := newProv(t, s, nil)
	req, inst := provisioned(t, s, p, 4)
	ctx := context.Background()
	before := func() string { return guestOf(t, s, 100).Guest.Users["root"].PasswordHash }
	h0 := before()
	cases := []struct {
		name          string
		break_        func(st *pve.State)
		tenant, log   string
		retryPossible bool
	}{
		{"no agent configured", func(st *pve.State) { st.VMs[100].Config["agent"] = "0" },
			"the VM has no QEMU guest agent configured", "No QEMU guest agent configured", false},
		{"agent not answering", func(st *pve.State) { st.VMs[100].AgentNeverStarts = true },
			"guest agent does not answer", "guest agent is not running", true},
		{"missing privilege", func(st *pve.State) {
			r := st.Roles["DCAgent"]
			r.Privs = slices.DeleteFunc(slices.Clone(r.Privs), func(p string) bool { return p == priv })
		}, "does not allow it yet", priv + " on /vms/100", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var privs []string
			var agent string
			s.Update(t, func(st *pve.State) error {
				privs, agent = slices.Clone(st.Roles["DCAgent"].Privs), st.VMs[100].Config["agent"]
				c.break_(st)
				return nil
			})
			defer s.Update(t, func(st *pve.State) error {
				st.Roles["DCAgent"].Privs = privs
				st.VMs[100].Config["agent"] = agent
				st.VMs[100].AgentNeverStarts = false
				return nil
			})
			_, err := p.ResetPassword(ctx, req.ContractID, inst.ExternalID, "another-pw")
			if err == nil || !strings.Contains(provisioners.TenantMessage(err), c.tenant) || !strings.Contains(err.Error(), c.log) ||
				provisioners.RetryPossible(err) != c.retryPossible {
				t.Fatalf("reset: tenant %q, log %v, retry %v", provisioners.TenantMessage(err), err, provisioners.RetryPossible(err))
			}
			if strings.Contains(provisioners.TenantMessage(err), "/vms/") {
				t.Errorf("tenant message names host details: %q", provisioners.TenantMessage(err))
			}
			if err := p.RotateSSHKey(ctx, req.ContractID, inst.ExternalID, testPubKey(t)); err == nil || !strings.Contains(provisioners.TenantMessage(err), c.tenant) {
				t.Fatalf("rotate: %v", err)
			}
			if before() != h0 || len(strings.Split(strings.TrimSpace(string(guestOf(t, s, 100).File("/root/.ssh/authorized_keys").Content)), "\n")) != 1 {
				t.Fatal("the guest changed")
			}
		})
	}
}

func TestParsePasswd(t *testing.T) {
	const passwd = "root:x:0:0:root:/root:/bin/bash\nbad line\nbob:x:1001:1002:Bob:/home/bob:/bin/sh\nevil:x:5:5::../etc:/bin/sh\nnum:x:a:1::/h:/bin/sh\n"
	if e, err := ParsePasswd([]byte(passwd), "bob"); err != nil || e != (PasswdEntry{UID: 1001, GID: 1002, Home: "/home/bob"}) {
		t.Fatalf("bob: %+v %v", e, err)
	}
	for user, want := range map[string]string{"evil": "not a clean absolute path", "num": "no numeric uid", "nobody": `has no user "nobody"`, "": "names no user"} {
		if _, err := ParsePasswd([]byte(passwd), user); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", user, err, want)
		}
	}
}

// FuzzParsePasswd: /etc/passwd comes from the tenant's VM. Nothing may
// panic, and an accepted home is a clean absolute path.
func FuzzParsePasswd(f *testing.F) {
	f.Add("root:x:0:0:root:/root:/bin/bash\n", "root")
	f.Add("u:x:1:2:::\nu:x:1:2::/a/../b:/bin/sh\n", "u")
	f.Add("u:x:-1:2::/h:/bin/sh", "u")
	f.Fuzz(func(t *testing.T, data, user string) {
		e, err := ParsePasswd([]byte(data), user)
		if err != nil {
			return
		}
		if !strings.HasPrefix(e.Home, "/") || path.Clean(e.Home) != e.Home || e.UID < 0 || e.GID < 0 {
			t.Fatalf("accepted %+v", e)
		}
	})
}
