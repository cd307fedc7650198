package proxmox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"

	"github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Tenant requests go through the QEMU guest agent, by the PVE API — never
// over SSH into the tenant's VM, and with no key of the provider's in it:
//
//   - a password reset is POST …/agent/set-user-password for the
//     cloud-init user (ciuser);
//   - a key rotation reads /etc/passwd (file-read) for that user's home,
//     uid and gid, reads ~/.ssh/authorized_keys, adds the key and writes
//     the file back (file-write: an existing file keeps its owner and
//     mode). Only when the file does not exist yet is it made first, empty,
//     with `install` through guest-exec (.ssh 0700 and the file 0600, owned
//     by the user), since qemu-ga would create it 0666 root:root, which
//     sshd refuses.
//
// The token needs, on PVE 8, VM.Monitor (already granted for the agent's
// address reads) and, on PVE 9, VM.GuestAgent.Unrestricted (set-user-password
// and exec demand it; qemu-server 9.x PVE/API2/Qemu/Agent.pm). `dc-agent
// setup proxmox` grants it (setup.AgentTenantPriv).

// maxAgentWrite is the largest file the agent writes through file-write:
// PVE takes at most 60 KiB of (base64) content.
const maxAgentWrite = 60 * 1024 / 4 * 3

// ResetPassword implements provisioners.PasswordResetter.
func (p *Provisioner) ResetPassword(ctx context.Context, _, externalID, password string) (string, error) {
	vm, err := p.tenantVM(externalID)
	if err != nil {
		return "", err
	}
	if err := vm.AgentSetUserPassword(ctx, password, p.cfg.CIUser); err != nil {
		return "", p.agentError(ctx, vm, "set the password of "+p.cfg.CIUser, "the password could not be reset", err)
	}
	return password, nil
}

// RotateSSHKey implements provisioners.KeyRotator.
func (p *Provisioner) RotateSSHKey(ctx context.Context, _, externalID, pubkey string) error {
	vm, err := p.tenantVM(externalID)
	if err != nil {
		return err
	}
	const failed = "the key could not be added"
	user := p.cfg.CIUser
	passwd, err := vm.AgentFileRead(ctx, "/etc/passwd")
	if err != nil {
		return p.agentError(ctx, vm, "read /etc/passwd", failed, err)
	}
	acct, err := ParsePasswd([]byte(passwd.Content), user)
	if err != nil {
		msg := fmt.Sprintf("%s: the VM's /etc/passwd %v", failed, err)
		return &provisioners.Error{Err: fmt.Errorf("VM %d: %s", vm.VMID, msg), Tenant: msg}
	}
	dir := path.Join(acct.Home, ".ssh")
	file := path.Join(dir, "authorized_keys")
	var cur []byte
	exists := true
	f, err := vm.AgentFileRead(ctx, file)
	switch {
	case err != nil && strings.Contains(err.Error(), "No such file or directory"):
		exists = false
	case err != nil:
		return p.agentError(ctx, vm, "read "+file, failed, err)
	case bool(f.Truncated):
		msg := fmt.Sprintf("%s: %s is too large", failed, file)
		return &provisioners.Error{Err: fmt.Errorf("VM %d: %s", vm.VMID, msg), Tenant: msg}
	default:
		cur = []byte(f.Content)
	}
	body, changed := provisioners.AddAuthorizedKey(cur, pubkey)
	if !changed {
		return nil
	}
	if len(body) > maxAgentWrite {
		msg := fmt.Sprintf("%s: %s would be larger than the %d bytes the guest agent can write", failed, file, maxAgentWrite)
		return &provisioners.Error{Err: fmt.Errorf("VM %d: %s", vm.VMID, msg), Tenant: msg}
	}
	if !exists {
		uid, gid := strconv.Itoa(acct.UID), strconv.Itoa(acct.GID)
		for _, cmd := range [][]string{
			{"install", "-d", "-m", "700", "-o", uid, "-g", gid, dir},
			{"install", "-m", "600", "-o", uid, "-g", gid, "/dev/null", file},
		} {
			if err := p.agentRun(ctx, vm, cmd, failed); err != nil {
				return err
			}
		}
	}
	if err := vm.AgentFileWrite(ctx, file, body); err != nil {
		return p.agentError(ctx, vm, "write "+file, failed, err)
	}
	return nil
}

func (p *Provisioner) tenantVM(externalID string) (*proxmox.VirtualMachine, error) {
	node, vmid, err := p.parseExternalID(externalID)
	if err != nil {
		return nil, provisioners.Permanent(err)
	}
	return p.vm(node, vmid), nil
}

// agentRun runs cmd in the guest (guest-exec) and waits for it to exit 0.
func (p *Provisioner) agentRun(ctx context.Context, vm *proxmox.VirtualMachine, cmd []string, failed string) error {
	what := "run " + strings.Join(cmd, " ")
	pid, err := vm.AgentExec(ctx, cmd, "")
	if err != nil {
		return p.agentError(ctx, vm, what, failed, err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.opts.TaskTimeout)
	defer cancel()
	for {
		st, err := vm.AgentExecStatus(ctx, pid)
		if err != nil {
			return p.agentError(ctx, vm, what, failed, err)
		}
		if st.Exited != 0 {
			if st.ExitCode != 0 {
				msg := failed + ": the guest could not create " + cmd[len(cmd)-1]
				return &provisioners.Error{Err: fmt.Errorf("VM %d: %s exited %d: %s", vm.VMID, what, st.ExitCode, strings.TrimSpace(st.ErrData)), Tenant: msg}
			}
			return nil
		}
		if err := sleep(ctx, p.opts.PollInterval); err != nil {
			return provisioners.Retryable(fmt.Errorf("VM %d: %s: %w", vm.VMID, what, err))
		}
	}
}

// agentError classifies a failed guest agent call: what the provider
// reads (with the privilege to grant, where that is the cause) and what
// the tenant reads, and whether trying again can help (only while the
// agent is not up yet, or the node did not answer).
func (p *Provisioner) agentError(ctx context.Context, vm *proxmox.VirtualMachine, what, failed string, err error) error {
	log := fmt.Errorf("VM %d: %s through the guest agent: %w", vm.VMID, what, err)
	tenant := func(why string, retry bool) error {
		return &provisioners.Error{Err: log, Tenant: failed + ": " + why, RetryPossible: retry}
	}
	msg := err.Error()
	switch {
	case proxmox.IsNotAuthorized(err):
		priv := "VM.Monitor"
		if v, verr := p.c.Version(ctx); verr == nil && majorOf(v.Version) >= 9 {
			priv = "VM.GuestAgent.Unrestricted"
		}
		log = fmt.Errorf("VM %d: %s: the API token may not use the guest agent: it needs %s on /vms/%d (re-run `dc-agent setup proxmox`, or: pveum role modify DCAgent --append 1 --privs %s)",
			vm.VMID, what, priv, vm.VMID, priv)
		return tenant("the provider's Proxmox setup does not allow it yet; the provider has been told", false)
	case transient(err):
		return tenant("the provider's Proxmox host did not answer", true)
	case strings.Contains(msg, "No QEMU guest agent configured"):
		return tenant("the VM has no QEMU guest agent configured, which this needs", false)
	case strings.Contains(msg, "guest agent is not running"):
		return tenant("the VM's QEMU guest agent does not answer; make sure qemu-guest-agent runs in the VM (systemctl enable --now qemu-guest-agent), then ask again", true)
	case strings.Contains(msg, "does not exist"):
		return tenant("the VM of this contract no longer exists", false)
	case strings.Contains(msg, "not running"):
		return tenant("the VM is not running; start it, then ask again", false)
	case strings.Contains(msg, "failed to set user password"):
		return tenant(fmt.Sprintf("the guest could not set the password of user %q (does it exist in the VM?)", p.cfg.CIUser), false)
	case strings.Contains(msg, "No such file or directory"):
		return tenant("a file it needs is missing in the VM", false)
	}
	return tenant("the guest agent refused", false)
}

// majorOf is the major number of a PVE version ("9.1.1" → 9).
func majorOf(v string) int {
	n, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	return n
}

// PasswdEntry is a user's line of /etc/passwd.
type PasswdEntry struct {
	UID, GID int
	Home     string
}

// ParsePasswd finds user in the content of /etc/passwd (read from the
// tenant's VM: untrusted). The home must be an absolute path without ".."
// and the ids numbers; anything else is an error naming what is wrong.
func ParsePasswd(data []byte, user string) (PasswdEntry, error) {
	var e PasswdEntry
	if user == "" {
		return e, errors.New("names no user")
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) < 7 || f[0] != user {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			return e, fmt.Errorf("has no numeric uid and gid for user %q", user)
		}
		home := f[5]
		if !strings.HasPrefix(home, "/") || path.Clean(home) != home || strings.ContainsAny(home, "\x00\n") {
			return e, fmt.Errorf("gives user %q the home %q, which is not a clean absolute path", user, home)
		}
		return PasswdEntry{UID: uid, GID: gid, Home: home}, nil
	}
	if err := sc.Err(); err != nil {
		return e, fmt.Errorf("could not be read: %v", err)
	}
	return e, fmt.Errorf("has no user %q", user)
}
