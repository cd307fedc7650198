package tenante2e

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
	hcloudsim "github.com/decent-stuff/dc-agent/internal/sim/hcloud"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// proxmoxSection is the agent's config for sim (its least-privilege token).
func proxmoxSection(t *testing.T, w *world, sim *pveapi.TestSim) string {
	return sim.ProvisionerTOML(t, filepath.Join(w.dir, "pve-token"), `node = "pve1"
linked_clone = true
ip_wait_attempts = 5
ip_wait_interval_secs = 1
task_poll_interval_ms = 50`)
}

// guestVM returns a copy of the simulator's VM vmid.
func guestVM(t *testing.T, sim *pveapi.TestSim, vmid int) *pve.VM {
	t.Helper()
	var vm pve.VM
	sim.Update(t, func(st *pve.State) error {
		if v := st.VMs[vmid]; v != nil {
			vm = *v
		}
		return nil
	})
	if vm.Guest == nil {
		t.Fatalf("VM %d has no guest", vmid)
	}
	return &vm
}

func vmidOf(t *testing.T, w *world, cid string) int {
	t.Helper()
	d, _ := w.api.InstanceDetails(cid)
	_, id, _ := strings.Cut(d.ExternalID, "/")
	n, err := strconv.Atoi(id)
	if err != nil {
		t.Fatalf("external id %q", d.ExternalID)
	}
	return n
}

// On simulated Proxmox, through the guest agent: the reset's password is
// what the guest's root account has (its hash, set once), the rotated key
// is appended to root's authorized_keys (0600, root's) and becomes the
// contract's key. Nothing logs the password.
func TestProxmox(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			w := newWorld(t, profile)
			sim := pveapi.StartTest(t, pveapi.TestOptions{Timing: &pve.Timing{}})
			w.run(w.config(proxmoxSection(t, w, sim)))
			oldKey := apitest.NewSSHPubkey(t)
			cid := w.contract(apitest.ContractSpec{RequesterSSHPubkey: oldKey})
			w.waitLive(cid)
			vmid := vmidOf(t, w, cid)

			w.tenant("reset-password", cid)
			if r := w.waitDone(cid, store.RequestPasswordReset); r.Error != nil {
				t.Fatalf("reset failed: %s", *r.Error)
			}
			pw := w.password(cid)
			u := guestVM(t, sim, vmid).Guest.Users["root"]
			if u.PasswordHash != pve.HashPassword(pw) || len(u.PasswordSets) != 1 {
				t.Fatalf("guest root: %+v; the tenant's password does not match or was set more than once", u)
			}
			w.noLeak(pw)

			newKey := apitest.NewSSHPubkey(t)
			w.tenant("rotate-ssh-key", cid, "--ssh-pubkey", newKey)
			if r := w.waitDone(cid, store.RequestKeyRotation); r.Error != nil {
				t.Fatalf("rotation failed: %s", *r.Error)
			}
			f := guestVM(t, sim, vmid).File("/root/.ssh/authorized_keys")
			if f == nil || string(f.Content) != oldKey+"\n"+newKey+"\n" || f.Mode != 0o600 || f.UID != 0 {
				t.Fatalf("authorized_keys %+v %q", f, f.Content)
			}
			if got := w.api.Contract(cid).RequesterSSHPubkey; got != newKey {
				t.Fatalf("contract key %q", got)
			}
		})
	}
}

// A VM without a guest agent, one whose guest agent does not answer, a
// token without the privilege, a bad key: each is one clear message for
// the tenant, and nothing in the guest changed.
func TestProxmoxFailures(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			w := newWorld(t, profile)
			sim := pveapi.StartTest(t, pveapi.TestOptions{Timing: &pve.Timing{}})
			a := w.run(w.config(proxmoxSection(t, w, sim)))
			var cids []string
			for range 4 {
				cids = append(cids, w.contract(apitest.ContractSpec{}))
			}
			for _, cid := range cids {
				w.waitLive(cid)
			}
			unchanged := func(cid string) {
				t.Helper()
				vm := guestVM(t, sim, vmidOf(t, w, cid))
				f := vm.File("/root/.ssh/authorized_keys")
				if len(vm.Guest.Users["root"].PasswordSets) != 0 || f == nil || strings.Count(string(f.Content), "\n") != 1 {
					t.Fatalf("the guest of %s changed: %+v %q", cid, vm.Guest.Users["root"], f.Content)
				}
			}

			// No guest agent configured on the first VM.
			sim.Update(t, func(st *pve.State) error {
				st.VMs[vmidOf(t, w, cids[0])].Config["agent"] = "0"
				return nil
			})
			w.tenant("reset-password", cids[0])
			if msg := w.waitFailure(cids[0], store.RequestPasswordReset); msg != "password reset failed: the password could not be reset: the VM has no QEMU guest agent configured, which this needs" {
				t.Fatalf("tenant reads %q", msg)
			}
			unchanged(cids[0])

			// The token lacks VM.GuestAgent.Unrestricted (PVE 9).
			var privs []string
			sim.Update(t, func(st *pve.State) error {
				r := st.Roles["DCAgent"]
				privs = slices.Clone(r.Privs)
				r.Privs = slices.DeleteFunc(r.Privs, func(p string) bool { return p == "VM.GuestAgent.Unrestricted" })
				return nil
			})
			w.tenant("reset-password", cids[1])
			if msg := w.waitFailure(cids[1], store.RequestPasswordReset); msg != "password reset failed: the password could not be reset: the provider's Proxmox setup does not allow it yet; the provider has been told" {
				t.Fatalf("tenant reads %q", msg)
			}
			if !strings.Contains(a.out.String(), "needs VM.GuestAgent.Unrestricted on /vms/") {
				t.Fatal("the provider's log does not name the privilege to grant")
			}
			unchanged(cids[1])
			sim.Update(t, func(st *pve.State) error {
				st.Roles["DCAgent"].Privs = privs
				return nil
			})

			// The guest agent is configured but does not answer (qemu-ga not
			// running in the VM): tried again with backoff, then the tenant
			// is told what to do.
			sim.Update(t, func(st *pve.State) error {
				st.VMs[vmidOf(t, w, cids[3])].AgentNeverStarts = true
				return nil
			})
			w.tenant("reset-password", cids[3])
			if msg := w.waitFailure(cids[3], store.RequestPasswordReset); msg != "password reset failed: the password could not be reset: the VM's QEMU guest agent does not answer; "+
				"make sure qemu-guest-agent runs in the VM (systemctl enable --now qemu-guest-agent), then ask again" {
				t.Fatalf("tenant reads %q", msg)
			}
			if !strings.Contains(a.out.String(), "password reset failed; retrying") {
				t.Fatal("the agent did not try again while the guest agent did not answer")
			}
			sim.Update(t, func(st *pve.State) error {
				st.VMs[vmidOf(t, w, cids[3])].AgentNeverStarts = false
				return nil
			})
			unchanged(cids[3])

			// A key that looks like one (the API's check) but is not.
			w.tenant("rotate-ssh-key", cids[2], "--ssh-pubkey", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 not-a-key")
			if msg := w.waitFailure(cids[2], store.RequestKeyRotation); !strings.HasPrefix(msg, "SSH key rotation failed: the new SSH key is not usable: it is not an OpenSSH public key") {
				t.Fatalf("tenant reads %q", msg)
			}
			unchanged(cids[2])
		})
	}
}

// SIGKILL at each step of a reset, on both profiles: after the restart the
// reset is carried out once — every password the guest was given is the
// one the tenant opens (a crash between the guest agent call and the
// journal makes the restart give the same password again, never another
// one) — and nothing was reported before the guest had it.
func TestResetSurvivesSIGKILL(t *testing.T) {
	for _, profile := range profiles {
		for _, point := range agent.TenantCrashPoints {
			t.Run(profile+"/"+point, func(t *testing.T) {
				w := newWorld(t, profile)
				sim := pveapi.StartTest(t, pveapi.TestOptions{Timing: &pve.Timing{}})
				cfg := w.config(proxmoxSection(t, w, sim))
				a := w.run(cfg, "--crash-at", point)
				cid := w.contract(apitest.ContractSpec{})
				w.waitLive(cid)
				vmid := vmidOf(t, w, cid)
				w.tenant("reset-password", cid)
				w.killed(a)

				// At the kill: the guest has the password only from the
				// backend call on, the API has it only once reported.
				sets := guestVM(t, sim, vmid).Guest.Users["root"].PasswordSets
				reported := w.request(cid, store.RequestPasswordReset).DoneAtNs != nil
				wantSets := map[string]int{agent.CrashTenantJournaled: 0, agent.CrashTenantApplied: 1, agent.CrashTenantReported: 1}[point]
				if len(sets) != wantSets || reported != (point == agent.CrashTenantReported) {
					t.Fatalf("killed at %s: the guest was given %d passwords (want %d), reported %v", point, len(sets), wantSets, reported)
				}

				w.run(cfg)
				if r := w.waitDone(cid, store.RequestPasswordReset); r.Error != nil {
					t.Fatalf("reset failed: %s", *r.Error)
				}
				pw := w.password(cid)
				sets = guestVM(t, sim, vmid).Guest.Users["root"].PasswordSets
				want := map[string]int{agent.CrashTenantJournaled: 1, agent.CrashTenantApplied: 2, agent.CrashTenantReported: 1}[point]
				if len(sets) != want {
					t.Fatalf("the guest agent set a password %d times, want %d", len(sets), want)
				}
				for _, h := range sets {
					if h != pve.HashPassword(pw) {
						t.Fatal("the guest was given a password other than the one reported")
					}
				}
				w.noLeak(pw)
			})
		}
	}
}

// On Docker (a real dockerd): chpasswd in the container, whose shadow
// hash then matches the password the tenant opens; the key copied in, once,
// root:root 0600. The test network has no route into the containers, so
// the result is checked inside them.
func TestDocker(t *testing.T) {
	d := dockerEnv.Require(t)
	dc, err := client.New(client.WithHost(d.Host))
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	for i, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			w := newWorld(t, profile)
			start := 46200 + 20*i
			w.run(w.config(fmt.Sprintf(`[provisioner]
type = "docker"

[provisioner.docker]
socket = %q
image = %q
ssh_port_range_start = %d
ssh_port_range_end = %d
publish_ip = "127.0.0.1"
public_host = "198.51.100.30"
`, d.Socket, dockerImage, start, start+9)))
			cid := w.contract(apitest.ContractSpec{MemoryAmount: apitest.Ptr("256 MB")})
			w.waitLive(cid)
			d, _ := w.api.InstanceDetails(cid)
			w.tenant("reset-password", cid)
			if r := w.waitDone(cid, store.RequestPasswordReset); r.Error != nil {
				t.Fatalf("reset failed: %s", *r.Error)
			}
			shadow, _ := readFile(t, dc, d.ExternalID, "/etc/shadow")
			if ok, err := testutil.ShadowMatches(shadow, "root", w.password(cid)); err != nil || !ok {
				t.Fatalf("the container's root password is not the tenant's: %v\n%s", err, shadow)
			}
			w.noLeak(w.password(cid))
			key := apitest.NewSSHPubkey(t)
			w.tenant("rotate-ssh-key", cid, "--ssh-pubkey", key)
			if r := w.waitDone(cid, store.RequestKeyRotation); r.Error != nil {
				t.Fatalf("rotation failed: %s", *r.Error)
			}
			keys, h := readFile(t, dc, d.ExternalID, "/root/.ssh/authorized_keys")
			if !strings.HasSuffix(string(keys), "\n"+key+"\n") || strings.Count(string(keys), "\n") != 2 || h.Mode&0o777 != 0o600 || h.Uid != 0 {
				t.Fatalf("authorized_keys (mode %o uid %d):\n%s", h.Mode, h.Uid, keys)
			}
		})
	}
}

// readFile copies one file out of a container.
func readFile(t *testing.T, dc *client.Client, id, path string) ([]byte, *tar.Header) {
	t.Helper()
	res, err := dc.CopyFromContainer(context.Background(), id, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		t.Fatal(err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		t.Fatal(err)
	}
	return b, h
}

// On the Hetzner simulator: the reset_password action's password (chosen
// by Hetzner) is what the tenant opens; a key rotation, which Hetzner's
// API cannot do, is a clear refusal.
func TestHetzner(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			sim := hcloudsim.New(hcloudsim.Options{ActionDuration: 5 * time.Millisecond})
			url := sim.Start(t)
			w := newWorld(t, profile)
			token := testutil.WriteFile(t, filepath.Join(w.dir, "hcloud.token"), sim.Token()+"\n", 0o600)
			w.run(w.config(fmt.Sprintf(`[provisioner]
type = "hetzner"

[provisioner.hetzner]
api_token_file = %q
endpoint = %q
default_location = "fsn1"
default_image = "ubuntu-24.04"
action_timeout_seconds = 30
`, token, url)))
			cid := w.contract(apitest.ContractSpec{})
			w.waitLive(cid)
			d, _ := w.api.InstanceDetails(cid)
			id, _ := strconv.ParseInt(d.ExternalID, 10, 64)
			w.tenant("reset-password", cid)
			if r := w.waitDone(cid, store.RequestPasswordReset); r.Error != nil {
				t.Fatalf("reset failed: %s", *r.Error)
			}
			if pw, n := sim.RootPassword(id); pw != w.password(cid) || n != 1 {
				t.Fatalf("server password after %d resets does not match the tenant's", n)
			}
			w.noLeak(w.password(cid))
			w.tenant("rotate-ssh-key", cid, "--ssh-pubkey", apitest.NewSSHPubkey(t))
			if msg := w.waitFailure(cid, store.RequestKeyRotation); msg != "SSH key rotation failed: an SSH key rotation is not supported by this provider's hetzner backend" {
				t.Fatalf("tenant reads %q", msg)
			}
		})
	}
}

// Through the script protocol (the demo backend): reset_password gets the
// password on stdin and the tenant opens the same; rotate_ssh_key adds the
// checked key.
func TestScript(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			w := newWorld(t, profile)
			b := &demobackend.Backend{Dir: filepath.Join(w.dir, "pool")}
			if err := b.Set("delay", "10ms"); err != nil {
				t.Fatal(err)
			}
			wrapper := filepath.Join(w.dir, "backend.sh")
			if err := demobackend.WriteWrapper(wrapper, demoBackend, b.Dir); err != nil {
				t.Fatal(err)
			}
			w.run(w.config(fmt.Sprintf(`[provisioner]
type = "script"

[provisioner.script]
provision = %[1]q
terminate = %[1]q
health_check = %[1]q
get_instance = %[1]q
list = %[1]q
reset_password = %[1]q
rotate_ssh_key = %[1]q
timeout_seconds = 30
`, wrapper)))
			cid := w.contract(apitest.ContractSpec{})
			w.waitLive(cid)
			w.tenant("reset-password", cid)
			if r := w.waitDone(cid, store.RequestPasswordReset); r.Error != nil {
				t.Fatalf("reset failed: %s", *r.Error)
			}
			key := apitest.NewSSHPubkey(t)
			w.tenant("rotate-ssh-key", cid, "--ssh-pubkey", key)
			if r := w.waitDone(cid, store.RequestKeyRotation); r.Error != nil {
				t.Fatalf("rotation failed: %s", *r.Error)
			}
			insts := b.Instances()
			if len(insts) != 1 || insts[0].PasswordHash != demobackend.PasswordHash(w.password(cid)) || insts[0].PasswordSets != 1 ||
				!slices.Equal(insts[0].AuthorizedKeys, []string{key}) {
				t.Fatalf("instance %+v", insts)
			}
			w.noLeak(w.password(cid))
		})
	}
}
