package pve

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net/url"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// The guest side of the QEMU guest agent: what qemu-ga, running as root in
// a VM, reads and changes when PVE forwards set-user-password, file-read,
// file-write, exec and exec-status to it (qemu-server
// PVE/API2/Qemu/Agent.pm, PVE/QemuServer/Agent.pm; qemu-ga
// qga/commands-posix.c). The guest is made at the VM's first boot the way
// cloud-init would make it from the VM's ciuser, cipassword and sshkeys,
// and it keeps its state across reboots (it is the VM's disk).

// Guest is the inside of a VM as far as its guest agent can see it.
type Guest struct {
	Users map[string]*GuestUser `json:"users"`
	// Files are absolute paths; a directory has Dir set.
	Files map[string]*GuestFile `json:"files"`
	// Execs are the guest-exec processes by pid (they finish at once).
	Execs   map[int]*GuestExec `json:"execs,omitempty"`
	NextPID int                `json:"next_pid"`
}

// GuestUser is an account of the guest.
type GuestUser struct {
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	Home string `json:"home"`
	// PasswordHash is the current password's hash (HashPassword); "" none.
	PasswordHash string `json:"password_hash,omitempty"`
	// PasswordSets are the hashes every successful set-user-password
	// wrote, oldest first: a test sees how often a password was set.
	PasswordSets []string `json:"password_sets,omitempty"`
}

// GuestFile is a file or directory of the guest.
type GuestFile struct {
	Dir     bool   `json:"dir,omitempty"`
	Content []byte `json:"content,omitempty"`
	Mode    int    `json:"mode"`
	UID     int    `json:"uid"`
	GID     int    `json:"gid"`
}

// GuestExec is a finished guest-exec process.
type GuestExec struct {
	ExitCode int    `json:"exitcode"`
	Out      string `json:"out,omitempty"`
	Err      string `json:"err,omitempty"`
}

// HashPassword is the simulator's password hash (the form it also stores
// cipassword in): unsalted SHA-256, "$5$sim$<hex>".
func HashPassword(pw string) string {
	sum := sha256.Sum256([]byte(pw))
	return "$5$sim$" + hex.EncodeToString(sum[:])
}

// qgaNewFileMode is the mode qemu-ga gives a file guest-file-open creates
// (DEFAULT_NEW_FILE_MODE in qga/commands-posix.c): 0666, owned by root. An
// existing file keeps its owner and mode when it is rewritten.
const qgaNewFileMode = 0o666

// bootGuest makes the guest at a VM's first boot: root, the cloud-init
// user (ciuser; "root" when unset) with the cipassword hash, and the
// sshkeys in that user's ~/.ssh/authorized_keys (0600, in a 0700 .ssh, both
// owned by the user), as cloud-init writes them.
func bootGuest(vm *VM) *Guest {
	g := &Guest{Users: map[string]*GuestUser{"root": {UID: 0, GID: 0, Home: "/root"}}, Files: map[string]*GuestFile{}, NextPID: 1000}
	for _, d := range []string{"/", "/etc", "/home", "/root"} {
		g.Files[d] = &GuestFile{Dir: true, Mode: 0o755}
	}
	g.Files["/root"].Mode = 0o700
	user := vm.Config["ciuser"]
	if user == "" {
		user = "root"
	}
	u := g.Users[user]
	if u == nil {
		u = &GuestUser{UID: 1000, GID: 1000, Home: "/home/" + user}
		g.Users[user] = u
		g.Files[u.Home] = &GuestFile{Dir: true, Mode: 0o755, UID: u.UID, GID: u.GID}
	}
	if h := vm.Config["cipassword"]; h != "" {
		u.PasswordHash = h
	}
	if enc := vm.Config["sshkeys"]; enc != "" {
		if keys, err := url.QueryUnescape(enc); err == nil && strings.TrimSpace(keys) != "" {
			g.Files[u.Home+"/.ssh"] = &GuestFile{Dir: true, Mode: 0o700, UID: u.UID, GID: u.GID}
			g.Files[u.Home+"/.ssh/authorized_keys"] = &GuestFile{Content: []byte(strings.TrimRight(keys, "\n") + "\n"), Mode: 0o600, UID: u.UID, GID: u.GID}
		}
	}
	g.writePasswd()
	return g
}

// writePasswd renders /etc/passwd from the accounts.
func (g *Guest) writePasswd() {
	names := make([]string, 0, len(g.Users))
	for n := range g.Users {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return g.Users[names[i]].UID < g.Users[names[j]].UID })
	var b strings.Builder
	for _, n := range names {
		u := g.Users[n]
		fmt.Fprintf(&b, "%s:x:%d:%d:%s:%s:/bin/bash\n", n, u.UID, u.GID, n, u.Home)
	}
	g.Files["/etc/passwd"] = &GuestFile{Content: []byte(b.String()), Mode: 0o644}
}

// File returns a guest file (nil if none): for tests.
func (vm *VM) File(p string) *GuestFile {
	if vm.Guest == nil {
		return nil
	}
	return vm.Guest.Files[p]
}

// AgentCommandPrivs are the privileges PVE checks before it forwards a guest
// agent command with parameters, on /vms/{vmid}: any one of them will do.
// PVE 8 checks VM.Monitor for all of them; PVE 9 (qemu-server 9.x,
// Agent.pm) split it: set-user-password and exec need
// VM.GuestAgent.Unrestricted, file-read and file-write their own
// privilege or Unrestricted.
func AgentCommandPrivs(major int, cmd string) []string {
	if major < 9 {
		return []string{"VM.Monitor"}
	}
	switch cmd {
	case "file-read":
		return []string{"VM.GuestAgent.FileRead", "VM.GuestAgent.Unrestricted"}
	case "file-write":
		return []string{"VM.GuestAgent.FileWrite", "VM.GuestAgent.Unrestricted"}
	default:
		return []string{"VM.GuestAgent.Unrestricted"}
	}
}

// AgentTenantPriv is the privilege beyond AgentPrivileges that password
// resets and key rotations through the guest agent need on major: none on
// PVE 8 (VM.Monitor covers every agent command), VM.GuestAgent.Unrestricted
// on PVE 9 (set-user-password and exec demand it; it also allows file-read
// and file-write).
func AgentTenantPriv(major int) string {
	if major >= 9 {
		return "VM.GuestAgent.Unrestricted"
	}
	return ""
}

// guestFor checks what qemu-server checks before it talks to the agent:
// the privilege, then agentUp.
func (st *State) guestFor(actor, node string, vmid int, cmd string) (*VM, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return nil, err
	}
	if err := st.CheckAny(actor, vmPath(vmid), AgentCommandPrivs(st.Major(), cmd)...); err != nil {
		return nil, err
	}
	if err := st.agentUp(vm); err != nil {
		return nil, err
	}
	if vm.Guest == nil {
		vm.Guest = bootGuest(vm)
	}
	return vm, nil
}

// agentUp is assert_agent_available (PVE/QemuServer/Agent.pm): an agent
// in the config, a running VM, an agent that answers.
func (st *State) agentUp(vm *VM) error {
	switch {
	case !AgentEnabled(vm.Config["agent"]):
		return Fail("No QEMU guest agent configured")
	case vm.Status != "running":
		return Fail("VM %d is not running", vm.VMID)
	case vm.AgentNeverStarts || st.Now().Before(vm.BootAt):
		return Fail("QEMU guest agent is not running")
	}
	return nil
}

// agentError is a failed guest command as PVE reports it (check_agent_error).
func agentError(format string, args ...any) *Error {
	return Fail("Agent error: "+format, args...)
}

// SetUserPassword is POST .../agent/set-user-password: the guest's
// chpasswd sets the user's password (crypted: the password is a hash).
func (st *State) SetUserPassword(actor, node string, vmid int, username, password string, crypted bool) (any, error) {
	if len(password) < 5 || len(password) > 1024 {
		return nil, paramErr("password", "value must be between 5 and 1024 characters long")
	}
	vm, err := st.guestFor(actor, node, vmid, "set-user-password")
	if err != nil {
		return nil, err
	}
	u := vm.Guest.Users[username]
	if u == nil || strings.ContainsAny(username, ":\n") {
		return nil, agentError("child process has failed to set user password")
	}
	h := password
	if !crypted {
		h = HashPassword(password)
	}
	u.PasswordHash = h
	u.PasswordSets = append(u.PasswordSets, h)
	return map[string]any{"result": map[string]any{}}, nil
}

func cleanGuestPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return "", agentError("failed to open file '%s': No such file or directory", p)
	}
	return path.Clean(p), nil
}

// FileRead is GET .../agent/file-read?file=: the content (PVE reads at
// most 16 MiB and says truncated).
func (st *State) FileRead(actor, node string, vmid int, file string) (any, error) {
	vm, err := st.guestFor(actor, node, vmid, "file-read")
	if err != nil {
		return nil, err
	}
	p, err := cleanGuestPath(file)
	if err != nil {
		return nil, err
	}
	f := vm.Guest.Files[p]
	switch {
	case f == nil:
		return nil, agentError("failed to open file '%s' (mode: 'r'): No such file or directory", file)
	case f.Dir:
		return nil, agentError("failed to read file '%s': Is a directory", file)
	}
	const max = 16 << 20
	out := map[string]any{"content": string(f.Content[:min(len(f.Content), max)]), "bytes-read": min(len(f.Content), max)}
	if len(f.Content) > max {
		out["truncated"] = 1
	}
	return out, nil
}

// FileWrite is POST .../agent/file-write: opened with mode "w" (an
// existing file is truncated and keeps its owner and mode; a new one is
// created 0666 root:root in an existing directory), then written.
// content is base64 unless encode is true (PVE encodes it then).
func (st *State) FileWrite(actor, node string, vmid int, file, content string, encode bool) (any, error) {
	if len(content) > 60*1024 {
		return nil, paramErr("content", "value may only be 61440 characters long")
	}
	vm, err := st.guestFor(actor, node, vmid, "file-write")
	if err != nil {
		return nil, err
	}
	data := []byte(content)
	if !encode {
		if data, err = base64.StdEncoding.DecodeString(content); err != nil {
			return nil, agentError("Guest agent command failed, error was 'Invalid parameter type for 'buf-b64', expected: base64'")
		}
	}
	p, err := cleanGuestPath(file)
	if err != nil {
		return nil, err
	}
	g := vm.Guest
	if d := g.Files[path.Dir(p)]; d == nil || !d.Dir {
		return nil, agentError("failed to open file '%s' (mode: 'w'): No such file or directory", file)
	}
	f := g.Files[p]
	switch {
	case f == nil:
		f = &GuestFile{Mode: qgaNewFileMode}
		g.Files[p] = f
	case f.Dir:
		return nil, agentError("failed to open file '%s' (mode: 'w'): Is a directory", file)
	}
	f.Content = data
	return nil, nil
}

// Exec is POST .../agent/exec: the sim runs only what dc-agent runs,
// install(1) making a directory or an empty file with mode and owner;
// anything else exits 127. The process is finished at once.
func (st *State) Exec(actor, node string, vmid int, command []string) (any, error) {
	vm, err := st.guestFor(actor, node, vmid, "exec")
	if err != nil {
		return nil, err
	}
	if len(command) == 0 {
		return nil, Fail("command or input-data (or both) required")
	}
	g := vm.Guest
	if g.Execs == nil {
		g.Execs = map[int]*GuestExec{}
	}
	g.NextPID++
	pid := g.NextPID
	g.Execs[pid] = g.run(command)
	return map[string]any{"pid": pid}, nil
}

// ExecStatus is GET .../agent/exec-status?pid=.
func (st *State) ExecStatus(actor, node string, vmid, pid int) (any, error) {
	vm, err := st.guestFor(actor, node, vmid, "exec-status")
	if err != nil {
		return nil, err
	}
	x := vm.Guest.Execs[pid]
	if x == nil {
		return nil, agentError("Invalid parameter 'pid'")
	}
	out := map[string]any{"exited": 1, "exitcode": x.ExitCode}
	if x.Out != "" {
		out["out-data"] = x.Out
	}
	if x.Err != "" {
		out["err-data"] = x.Err
	}
	return out, nil
}

// run is the guest's install(1): `install -d [-m M] [-o U] [-g G] DIR...`
// (parents made 0755) and `install [-m M] [-o U] [-g G] SRC DEST` with SRC
// /dev/null (an empty file; DEST's directory must exist).
func (g *Guest) run(command []string) *GuestExec {
	if command[0] != "install" && command[0] != "/usr/bin/install" {
		return &GuestExec{ExitCode: 127, Err: command[0] + ": command not found (the simulated guest runs install only)"}
	}
	fail := func(format string, args ...any) *GuestExec {
		return &GuestExec{ExitCode: 1, Err: "install: " + fmt.Sprintf(format, args...) + "\n"}
	}
	dir, mode, uid, gid := false, 0o755, 0, 0
	var args []string
	for i := 1; i < len(command); i++ {
		a := command[i]
		val := func() (int, bool) {
			if i+1 >= len(command) {
				return 0, false
			}
			i++
			base := 10
			if a == "-m" {
				base = 8
			}
			n, err := strconv.ParseInt(command[i], base, 32)
			return int(n), err == nil && n >= 0
		}
		var ok bool
		switch a {
		case "-d":
			dir = true
		case "-m":
			if mode, ok = val(); !ok {
				return fail("invalid mode")
			}
		case "-o":
			if uid, ok = val(); !ok {
				return fail("invalid user (the simulated guest takes numeric ids)")
			}
		case "-g":
			if gid, ok = val(); !ok {
				return fail("invalid group (the simulated guest takes numeric ids)")
			}
		default:
			if strings.HasPrefix(a, "-") {
				return fail("invalid option -- '%s'", strings.TrimLeft(a, "-"))
			}
			args = append(args, a)
		}
	}
	if dir {
		for _, d := range args {
			d = path.Clean(d)
			for _, parent := range parents(d) {
				if f := g.Files[parent]; f == nil {
					g.Files[parent] = &GuestFile{Dir: true, Mode: 0o755}
				} else if !f.Dir {
					return fail("cannot create directory '%s': File exists", d)
				}
			}
			f := g.Files[d]
			if f == nil {
				f = &GuestFile{Dir: true}
				g.Files[d] = f
			} else if !f.Dir {
				return fail("cannot create directory '%s': File exists", d)
			}
			f.Mode, f.UID, f.GID = mode, uid, gid
		}
		return &GuestExec{}
	}
	if len(args) != 2 || args[0] != "/dev/null" {
		return fail("the simulated guest installs /dev/null only")
	}
	dest := path.Clean(args[1])
	if d := g.Files[path.Dir(dest)]; d == nil || !d.Dir {
		return fail("cannot create regular file '%s': No such file or directory", args[1])
	}
	if f := g.Files[dest]; f != nil && f.Dir {
		return fail("cannot overwrite directory '%s' with non-directory", args[1])
	}
	g.Files[dest] = &GuestFile{Mode: mode, UID: uid, GID: gid}
	return &GuestExec{}
}

// parents lists the directories above p, outermost first.
func parents(p string) []string {
	var out []string
	for d := path.Dir(p); d != "/" && d != "."; d = path.Dir(d) {
		out = append(out, d)
	}
	slices.Reverse(out)
	return out
}
