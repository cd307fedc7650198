package pve

import (
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Root is the auth id of the superuser, which the CLI tools act as.
const Root = "root@pam"

var privsCommon = []string{
	"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
	"Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify",
	"Pool.Allocate", "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser",
	"SDN.Allocate", "SDN.Audit", "SDN.Use",
	"Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
	"User.Modify",
	"VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
	"VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
	"VM.Console", "VM.Migrate", "VM.PowerMgmt", "VM.Snapshot", "VM.Snapshot.Rollback",
}

// Privileges lists every privilege name PVE major version major knows.
// PVE 9.0 dropped VM.Monitor and added the VM.GuestAgent.* privileges.
func Privileges(major int) []string {
	out := slices.Clone(privsCommon)
	if major >= 9 {
		out = append(out, "VM.GuestAgent.Audit", "VM.GuestAgent.FileRead", "VM.GuestAgent.FileWrite",
			"VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.Unrestricted")
	} else {
		out = append(out, "VM.Monitor")
	}
	sort.Strings(out)
	return out
}

// AgentAuditPriv is the privilege guest-agent reads need on major.
func AgentAuditPriv(major int) string {
	if major >= 9 {
		return "VM.GuestAgent.Audit"
	}
	return "VM.Monitor"
}

// BuiltinRoles returns PVE's predefined roles for major.
func BuiltinRoles(major int) map[string][]string {
	all := Privileges(major)
	with := func(prefixes ...string) []string {
		var out []string
		for _, p := range all {
			for _, pre := range prefixes {
				if strings.HasPrefix(p, pre) {
					out = append(out, p)
					break
				}
			}
		}
		return out
	}
	var audit []string
	for _, p := range all {
		if strings.HasSuffix(p, ".Audit") {
			audit = append(audit, p)
		}
	}
	vmUser := []string{"VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.PowerMgmt"}
	if major >= 9 {
		vmUser = append(vmUser, "VM.GuestAgent.Audit")
	}
	var admin []string
	for _, p := range all {
		switch p {
		case "Permissions.Modify", "Realm.Allocate", "Sys.Modify", "Sys.PowerMgmt":
		default:
			admin = append(admin, p)
		}
	}
	return map[string][]string{
		"Administrator":     all,
		"NoAccess":          nil,
		"PVEAdmin":          admin,
		"PVEAuditor":        audit,
		"PVEVMAdmin":        with("VM."),
		"PVEVMUser":         vmUser,
		"PVETemplateUser":   {"VM.Audit", "VM.Clone"},
		"PVEDatastoreAdmin": with("Datastore."),
		"PVEDatastoreUser":  {"Datastore.AllocateSpace", "Datastore.Audit"},
		"PVEPoolAdmin":      {"Pool.Allocate", "Pool.Audit"},
		"PVEPoolUser":       {"Pool.Audit"},
		"PVESDNAdmin":       with("SDN."),
		"PVESDNUser":        {"SDN.Audit", "SDN.Use"},
		"PVESysAdmin":       with("Sys."),
		"PVEUserAdmin":      {"Group.Allocate", "Realm.AllocateUser", "User.Modify"},
		"PVEMappingAdmin":   with("Mapping."),
		"PVEMappingUser":    {"Mapping.Audit", "Mapping.Use"},
	}
}

// RolePrivs returns the privileges of a built-in or custom role.
func (st *State) RolePrivs(role string) ([]string, bool) {
	if p, ok := BuiltinRoles(st.Major())[role]; ok {
		return p, true
	}
	if r := st.Roles[role]; r != nil {
		return r.Privs, true
	}
	return nil, false
}

var (
	userIDRe  = regexp.MustCompile(`^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$`)
	tokenRe   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9.\-_]+$`)
	roleIDRe  = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
	groupIDRe = regexp.MustCompile(`^[A-Za-z0-9.\-_]+$`)
)

// SplitAuthID splits "user@realm!token" into the user and token name.
func SplitAuthID(authid string) (user, token string) {
	user, token, _ = strings.Cut(authid, "!")
	return user, token
}

// requireUserAdmin: user, group, role and token administration needs
// User.Modify on /access (root has it).
func (st *State) requireUserAdmin(actor string) error {
	if actor != Root && !st.Has(actor, "/access", "User.Modify") {
		return PermError("/access", "User.Modify")
	}
	return nil
}

// UserOptions are the optional user fields.
type UserOptions struct {
	Comment, Email, FirstName, LastName string
	Groups                              []string
	Expire                              int64
	Disabled                            bool
}

// AddUser creates a user ("name@realm").
func (st *State) AddUser(actor, userid string, o UserOptions) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if !userIDRe.MatchString(userid) {
		return paramErr("userid", "invalid format - value '%s' does not look like a valid user name", userid)
	}
	_, realm, _ := strings.Cut(userid, "@")
	if realm != "pve" && realm != "pam" {
		return Fail("create user failed: domain '%s' does not exist", realm)
	}
	if st.Users[userid] != nil {
		return Fail("create user failed: user '%s' already exists", userid)
	}
	for _, g := range o.Groups {
		if st.Groups[g] == nil {
			return Fail("create user failed: no such group '%s'", g)
		}
	}
	st.Users[userid] = &User{ID: userid, Enable: !o.Disabled, Expire: o.Expire, Comment: o.Comment,
		Email: o.Email, FirstName: o.FirstName, LastName: o.LastName, Groups: o.Groups}
	return nil
}

// ModifyUser changes a user's enable flag, comment and groups (nil keeps).
func (st *State) ModifyUser(actor, userid string, enable *bool, comment *string, groups []string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	u := st.Users[userid]
	if u == nil {
		return Fail("update user failed: no such user ('%s')", userid)
	}
	if enable != nil {
		u.Enable = *enable
	}
	if comment != nil {
		u.Comment = *comment
	}
	if groups != nil {
		for _, g := range groups {
			if st.Groups[g] == nil {
				return Fail("update user failed: no such group '%s'", g)
			}
		}
		u.Groups = groups
	}
	return nil
}

// DeleteUser removes a user, its tokens and their ACL entries.
func (st *State) DeleteUser(actor, userid string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if userid == Root {
		return Fail("delete user failed: cannot delete root@pam")
	}
	if st.Users[userid] == nil {
		return Fail("delete user failed: no such user ('%s')", userid)
	}
	delete(st.Users, userid)
	st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool {
		u, _ := SplitAuthID(e.UGID)
		return (e.Type == "user" || e.Type == "token") && u == userid
	})
	return nil
}

// AddGroup creates a group.
func (st *State) AddGroup(actor, groupid, comment string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if !groupIDRe.MatchString(groupid) {
		return paramErr("groupid", "invalid format - value does not look like a valid group id")
	}
	if st.Groups[groupid] != nil {
		return Fail("create group failed: group '%s' already exists", groupid)
	}
	st.Groups[groupid] = &Group{ID: groupid, Comment: comment}
	return nil
}

// TokenOptions are the options of a new token.
type TokenOptions struct {
	Privsep bool
	Expire  int64
	Comment string
}

// AddToken creates an API token and returns its secret, which is shown
// only once (`pveum user token add`).
func (st *State) AddToken(actor, userid, name string, o TokenOptions) (string, error) {
	if actor != Root {
		if u, _ := SplitAuthID(actor); u != userid && !st.Has(actor, "/access/users/"+userid, "User.Modify") {
			return "", PermError("/access/users/"+userid, "User.Modify")
		}
	}
	if !tokenRe.MatchString(name) {
		return "", paramErr("tokenid", "invalid format - value does not look like a valid token ID")
	}
	u := st.Users[userid]
	if u == nil {
		return "", Fail("no such user ('%s')", userid)
	}
	if u.Tokens[name] != nil {
		return "", Fail("Token already exists.")
	}
	if u.Tokens == nil {
		u.Tokens = map[string]*Token{}
	}
	secret, err := randomUUID()
	if err != nil {
		return "", err
	}
	u.Tokens[name] = &Token{Value: secret, Privsep: o.Privsep, Expire: o.Expire, Comment: o.Comment}
	return secret, nil
}

// DeleteToken removes a token and its ACL entries.
func (st *State) DeleteToken(actor, userid, name string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	u := st.Users[userid]
	if u == nil || u.Tokens[name] == nil {
		return Fail("no such token '%s' for user '%s'", name, userid)
	}
	delete(u.Tokens, name)
	full := userid + "!" + name
	st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool { return e.Type == "token" && e.UGID == full })
	return nil
}

// AddRole creates a custom role; every privilege must exist on this
// version.
func (st *State) AddRole(actor, roleid string, privs []string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if !roleIDRe.MatchString(roleid) {
		return paramErr("roleid", "invalid format - value does not look like a valid role id")
	}
	if _, builtin := BuiltinRoles(st.Major())[roleid]; builtin || st.Roles[roleid] != nil {
		return Fail("create role failed: role '%s' already exists", roleid)
	}
	checked, err := st.checkPrivs(privs)
	if err != nil {
		return err
	}
	st.Roles[roleid] = &Role{ID: roleid, Privs: checked}
	return nil
}

// ModifyRole replaces (or with appendPrivs adds to) a custom role's privileges.
func (st *State) ModifyRole(actor, roleid string, privs []string, appendPrivs bool) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if _, builtin := BuiltinRoles(st.Major())[roleid]; builtin {
		return Fail("update role failed: cannot modify builtin role '%s'", roleid)
	}
	r := st.Roles[roleid]
	if r == nil {
		return Fail("update role failed: role '%s' does not exist", roleid)
	}
	checked, err := st.checkPrivs(privs)
	if err != nil {
		return err
	}
	if appendPrivs {
		checked = append(slices.Clone(r.Privs), checked...)
		sort.Strings(checked)
		checked = slices.Compact(checked)
	}
	r.Privs = checked
	return nil
}

// DeleteRole removes a custom role and the ACL entries using it.
func (st *State) DeleteRole(actor, roleid string) error {
	if err := st.requireUserAdmin(actor); err != nil {
		return err
	}
	if st.Roles[roleid] == nil {
		return Fail("role '%s' does not exist", roleid)
	}
	delete(st.Roles, roleid)
	st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool { return e.Role == roleid })
	return nil
}

func (st *State) checkPrivs(privs []string) ([]string, error) {
	known := Privileges(st.Major())
	var out []string
	for _, p := range privs {
		for _, q := range strings.FieldsFunc(p, func(r rune) bool { return r == ',' || r == ' ' || r == ';' }) {
			if !slices.Contains(known, q) {
				return nil, Fail("invalid privilege '%s'", q)
			}
			out = append(out, q)
		}
	}
	sort.Strings(out)
	return slices.Compact(out), nil
}

// ACLChange is one `pveum acl modify` (or `acl delete` with Delete).
type ACLChange struct {
	Path      string
	Roles     []string
	Users     []string
	Groups    []string
	Tokens    []string
	Propagate bool
	Delete    bool
}

var aclPathRe = regexp.MustCompile(`^/(|access(/(groups|realm|users)(/[^/]+)?)?|vms(/\d+)?|storage(/[^/]+)?|nodes(/[^/]+)?|pool(/[^/]+)?|sdn(/zones(/[^/]+(/[^/]+(/\d+)?)?)?|/vnets(/[^/]+)?)?|mapping(/(pci|usb|dir)(/[^/]+)?)?)$`)

// ModifyACL adds (or removes) ACL entries.
func (st *State) ModifyACL(actor string, c ACLChange) error {
	if actor != Root && !st.Has(actor, c.Path, "Permissions.Modify") {
		return PermError(c.Path, "Permissions.Modify")
	}
	if !aclPathRe.MatchString(c.Path) {
		return paramErr("path", "invalid ACL path '%s'", c.Path)
	}
	if len(c.Roles) == 0 {
		return paramErr("roles", "property is missing and it is not optional")
	}
	if len(c.Users)+len(c.Groups)+len(c.Tokens) == 0 {
		return Fail("either 'users', 'groups' or 'tokens' is required.")
	}
	for _, r := range c.Roles {
		if _, ok := st.RolePrivs(r); !ok {
			return Fail("role '%s' does not exist", r)
		}
	}
	type ug struct{ typ, id string }
	var ugs []ug
	for _, u := range c.Users {
		if st.Users[u] == nil && !c.Delete {
			return Fail("user '%s' does not exist", u)
		}
		ugs = append(ugs, ug{"user", u})
	}
	for _, g := range c.Groups {
		if st.Groups[g] == nil && !c.Delete {
			return Fail("group '%s' does not exist", g)
		}
		ugs = append(ugs, ug{"group", g})
	}
	for _, t := range c.Tokens {
		user, name := SplitAuthID(t)
		if (st.Users[user] == nil || st.Users[user].Tokens[name] == nil) && !c.Delete {
			return Fail("token '%s' does not exist", t)
		}
		ugs = append(ugs, ug{"token", t})
	}
	for _, r := range c.Roles {
		for _, x := range ugs {
			st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool {
				return e.Path == c.Path && e.Type == x.typ && e.UGID == x.id && e.Role == r
			})
			if !c.Delete {
				st.ACL = append(st.ACL, ACLEntry{Path: c.Path, Type: x.typ, UGID: x.id, Role: r, Propagate: c.Propagate})
			}
		}
	}
	return nil
}

// Authenticate checks a PVEAPIToken value ("user@realm!name=secret") and
// returns the token's auth id.
func (st *State) Authenticate(value string) (string, error) {
	id, secret, ok := strings.Cut(value, "=")
	if !ok {
		return "", &Error{Status: 401, Msg: "invalid token value!"}
	}
	user, name := SplitAuthID(id)
	u := st.Users[user]
	if name == "" || u == nil || u.Tokens[name] == nil {
		return "", &Error{Status: 401, Msg: "authentication failure"}
	}
	tok := u.Tokens[name]
	if subtle.ConstantTimeCompare([]byte(tok.Value), []byte(secret)) != 1 {
		return "", &Error{Status: 401, Msg: "authentication failure"}
	}
	now := st.Now().Unix()
	if !u.Enable || (u.Expire != 0 && u.Expire < now) || (tok.Expire != 0 && tok.Expire < now) {
		return "", &Error{Status: 401, Msg: "authentication failure"}
	}
	return id, nil
}

// Has reports whether authid holds every one of privs on path.
func (st *State) Has(authid, path string, privs ...string) bool {
	have := st.Permissions(authid, path)
	for _, p := range privs {
		if !have[p] {
			return false
		}
	}
	return true
}

// HasAny reports whether authid holds at least one of privs on path.
func (st *State) HasAny(authid, path string, privs ...string) bool {
	have := st.Permissions(authid, path)
	for _, p := range privs {
		if have[p] {
			return true
		}
	}
	return false
}

// Check returns a 403 unless authid holds every one of privs on path.
func (st *State) Check(authid, path string, privs ...string) error {
	if !st.Has(authid, path, privs...) {
		return PermError(path, privs...)
	}
	return nil
}

// CheckAny returns a 403 unless authid holds one of privs on path.
func (st *State) CheckAny(authid, path string, privs ...string) error {
	if !st.HasAny(authid, path, privs...) {
		return PermError(path, privs...)
	}
	return nil
}

// Permissions computes authid's effective privileges on path as
// pve-access-control does: ACLs on deeper paths replace those above them,
// entries above the path count only when they propagate, a user's own
// entries beat its groups', NoAccess empties the set, members of a pool
// also get the pool's privileges, and a privilege-separated token gets the
// intersection of its own and its user's privileges.
func (st *State) Permissions(authid, path string) map[string]bool {
	user, token := SplitAuthID(authid)
	u := st.Users[user]
	if u == nil || !u.Enable {
		return map[string]bool{}
	}
	if token != "" && u.Tokens[token] == nil {
		return map[string]bool{}
	}
	userPrivs := st.privsWithPools(user, "", path)
	if token == "" || !u.Tokens[token].Privsep {
		return userPrivs
	}
	tokPrivs := st.privsWithPools(user, token, path)
	out := map[string]bool{}
	for p := range tokPrivs {
		if userPrivs[p] {
			out[p] = true
		}
	}
	return out
}

func (st *State) privsWithPools(user, token, path string) map[string]bool {
	out := st.privsAt(user, token, path)
	if pool := st.poolOf(path); pool != "" {
		for p := range st.privsAt(user, token, "/pool/"+pool) {
			out[p] = true
		}
	}
	return out
}

// poolOf names the pool a /vms/<id> or /storage/<id> path belongs to.
func (st *State) poolOf(path string) string {
	var vmid int
	if _, err := fmt.Sscanf(path, "/vms/%d", &vmid); err == nil && path == fmt.Sprintf("/vms/%d", vmid) {
		if vm := st.VMs[vmid]; vm != nil {
			return vm.Pool
		}
		return ""
	}
	if sid, ok := strings.CutPrefix(path, "/storage/"); ok && !strings.Contains(sid, "/") {
		for _, p := range st.Pools {
			if slices.Contains(p.Storages, sid) {
				return p.ID
			}
		}
	}
	return ""
}

func (st *State) privsAt(user, token, path string) map[string]bool {
	if user == Root && token == "" {
		out := map[string]bool{}
		for _, p := range Privileges(st.Major()) {
			out[p] = true
		}
		return out
	}
	roles := st.rolesAt(user, token, path)
	out := map[string]bool{}
	if roles["NoAccess"] {
		return out
	}
	for r := range roles {
		privs, _ := st.RolePrivs(r)
		for _, p := range privs {
			out[p] = true
		}
	}
	return out
}

// rolesAt walks "/", "/a", "/a/b" ... as AccessControl::roles does.
func (st *State) rolesAt(user, token, path string) map[string]bool {
	chain := []string{"/"}
	cur := ""
	for _, seg := range strings.Split(strings.Trim(path, "/"), "/") {
		if seg == "" {
			continue
		}
		cur += "/" + seg
		chain = append(chain, cur)
	}
	var groups []string
	if u := st.Users[user]; u != nil {
		groups = u.Groups
	}
	roles := map[string]bool{}
	for i, p := range chain {
		final := i == len(chain)-1
		collect := func(match func(e ACLEntry) bool) map[string]bool {
			var m map[string]bool
			for _, e := range st.ACL {
				if e.Path != p || !match(e) || !(final || e.Propagate) {
					continue
				}
				if m == nil {
					m = map[string]bool{}
				}
				m[e.Role] = true
			}
			return m
		}
		if token != "" {
			if m := collect(func(e ACLEntry) bool { return e.Type == "token" && e.UGID == user+"!"+token }); m != nil {
				roles = m
			}
			continue
		}
		if m := collect(func(e ACLEntry) bool { return e.Type == "user" && e.UGID == user }); m != nil {
			roles = m
			continue
		}
		if m := collect(func(e ACLEntry) bool { return e.Type == "group" && slices.Contains(groups, e.UGID) }); m != nil {
			roles = m
		}
	}
	return roles
}

// PermissionsTree lists authid's privileges on every path that has an ACL
// entry plus the standard ones (`pveum user token permissions`).
func (st *State) PermissionsTree(authid string) map[string]map[string]bool {
	paths := map[string]bool{"/": true, "/vms": true, "/storage": true, "/nodes": true, "/access": true, "/sdn": true}
	for _, e := range st.ACL {
		paths[e.Path] = true
	}
	out := map[string]map[string]bool{}
	for p := range paths {
		if privs := st.Permissions(authid, p); len(privs) > 0 {
			out[p] = privs
		}
	}
	return out
}

// randomUUID makes a token secret: random, unlike the state's other ids,
// so two simulators never share a secret.
func randomUUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]), nil
}
