package pvecli

import (
	"fmt"
	"sort"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

const pveumUsage = "USAGE: pveum <COMMAND> [ARGS] [OPTIONS]"

// pveum's old single-word aliases.
var pveumAliases = map[string][]string{
	"useradd": {"user", "add"}, "usermod": {"user", "modify"}, "userdel": {"user", "delete"},
	"roleadd": {"role", "add"}, "rolemod": {"role", "modify"}, "roledel": {"role", "delete"},
	"aclmod": {"acl", "modify"}, "acldel": {"acl", "delete"},
}

func (c *cli) pveum(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintf(c.env.Stderr, "ERROR: no command specified\n%s\n", pveumUsage)
		return exitErr
	}
	if a, ok := pveumAliases[argv[0]]; ok {
		argv = append(append([]string{}, a...), argv[1:]...)
	}
	cmd := argv[0]
	sub := ""
	rest := argv[1:]
	if len(rest) > 0 {
		sub, rest = rest[0], rest[1:]
	}
	if cmd == "user" && sub == "token" && len(rest) > 0 {
		sub, rest = "token "+rest[0], rest[1:]
	}
	switch cmd + " " + sub {
	case "user add":
		return c.pveumUserAdd(rest)
	case "user list":
		return c.pveumUserList(rest)
	case "user delete":
		return c.pveumSimple(rest, "pveum user delete <userid>", 1, nil, func(st *pve.State, a args) error { return st.DeleteUser(pve.Root, a.pos[0]) })
	case "user token add":
		return c.pveumTokenAdd(rest)
	case "user token list":
		return c.pveumTokenList(rest)
	case "user token remove", "user token delete":
		return c.pveumSimple(rest, "pveum user token remove <userid> <tokenid>", 2, nil, func(st *pve.State, a args) error {
			return st.DeleteToken(pve.Root, a.pos[0], a.pos[1])
		})
	case "user token permissions":
		return c.pveumPermissions(rest, true)
	case "user permissions":
		return c.pveumPermissions(rest, false)
	case "role add":
		return c.pveumSimple(rest, "pveum role add <roleid> [OPTIONS]", 1, map[string]bool{"privs": true}, func(st *pve.State, a args) error {
			return roleErr("create", st.AddRole(pve.Root, a.pos[0], splitList(a.opts["privs"])))
		})
	case "role modify":
		return c.pveumSimple(rest, "pveum role modify <roleid> [OPTIONS]", 1, map[string]bool{"privs": true, "append": true}, func(st *pve.State, a args) error {
			return roleErr("update", st.ModifyRole(pve.Root, a.pos[0], splitList(a.opts["privs"]), boolOpt(a, "append")))
		})
	case "role delete":
		return c.pveumSimple(rest, "pveum role delete <roleid>", 1, nil, func(st *pve.State, a args) error { return st.DeleteRole(pve.Root, a.pos[0]) })
	case "role list":
		return c.pveumList(rest, "pveum role list [OPTIONS]", func(st *pve.State) any { return roleListData(st) })
	case "acl modify", "acl delete":
		return c.pveumACL(rest, sub == "delete")
	case "acl list":
		return c.pveumList(rest, "pveum acl list [OPTIONS]", func(st *pve.State) any { return aclListData(st) })
	case "pool add":
		return c.pveumSimple(rest, "pveum pool add <poolid> [OPTIONS]", 1, map[string]bool{"comment": true}, func(st *pve.State, a args) error {
			return st.AddPool(pve.Root, a.pos[0], a.opts["comment"])
		})
	case "pool list":
		return c.pveumList(rest, "pveum pool list [OPTIONS]", func(st *pve.State) any { return st.PoolsData(pve.Root) })
	}
	fmt.Fprintf(c.env.Stderr, "unknown command 'pveum %s'\n%s\n", strings.TrimSpace(strings.Join(argv, " ")), pveumUsage)
	return exitErr
}

// roleErr adds the prefix pve-access-control's lock_user_config puts on
// failures ("create role failed: invalid privilege 'VM.Monitor'").
func roleErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if pe, ok := err.(*pve.Error); ok && pe.Status == 500 && !strings.Contains(pe.Msg, " failed: ") {
		return &pve.Error{Status: 500, Msg: op + " role failed: " + pe.Msg}
	}
	return err
}

func splitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == ' ' })
}

// pveumSimple parses positional arguments and options and runs op.
func (c *cli) pveumSimple(argv []string, usage string, npos int, known map[string]bool, op func(st *pve.State, a args) error) int {
	if known == nil {
		known = map[string]bool{}
	}
	a, err := parseArgs(argv, nil, known)
	if err != nil {
		return c.failUsage(err, usage)
	}
	if len(a.pos) < npos {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	if len(a.pos) > npos {
		fmt.Fprintf(c.env.Stderr, "400 too many arguments\n%s\n", usage)
		return exitErr
	}
	if err := c.store.Update(func(st *pve.State) error { return op(st, a) }); err != nil {
		return c.fail(err, usage)
	}
	return 0
}

// pveumList prints a list with --output-format.
func (c *cli) pveumList(argv []string, usage string, data func(st *pve.State) any) int {
	a, err := parseArgs(argv, map[string]bool{"noborder": true, "noheader": true, "human-readable": true}, map[string]bool{"output-format": true, "full": true, "enabled": true})
	if err != nil {
		return c.failUsage(err, usage)
	}
	var v any
	if err := c.store.View(func(st *pve.State) error { v = data(st); return nil }); err != nil {
		return c.fail(err, usage)
	}
	return c.printData(a.opts["output-format"], v)
}

func (c *cli) pveumUserAdd(argv []string) int {
	const usage = "pveum user add <userid> [OPTIONS]"
	known := map[string]bool{"comment": true, "email": true, "firstname": true, "lastname": true, "groups": true, "expire": true, "enable": true, "password": true, "keys": true}
	return c.pveumSimple(argv, usage, 1, known, func(st *pve.State, a args) error {
		if a.has("password") {
			return fmt.Errorf("the simulator does not keep passwords")
		}
		var exp int64
		fmt.Sscan(a.opts["expire"], &exp)
		return st.AddUser(pve.Root, a.pos[0], pve.UserOptions{Comment: a.opts["comment"], Email: a.opts["email"],
			FirstName: a.opts["firstname"], LastName: a.opts["lastname"], Groups: splitList(a.opts["groups"]), Expire: exp,
			Disabled: a.has("enable") && !boolOpt(a, "enable")})
	})
}

func (c *cli) pveumUserList(argv []string) int {
	return c.pveumList(argv, "pveum user list [OPTIONS]", func(st *pve.State) any {
		var ids []string
		for id := range st.Users {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		out := []map[string]any{}
		for _, id := range ids {
			u := st.Users[id]
			_, realm, _ := strings.Cut(id, "@")
			d := map[string]any{"userid": id, "enable": b2i(u.Enable), "expire": u.Expire, "realm-type": realm}
			if u.Comment != "" {
				d["comment"] = u.Comment
			}
			if len(u.Groups) > 0 {
				d["groups"] = strings.Join(u.Groups, ",")
			}
			var toks []map[string]any
			for _, name := range sortedTokenNames(u) {
				toks = append(toks, tokenData(name, u.Tokens[name]))
			}
			if toks != nil {
				d["tokens"] = toks
			}
			out = append(out, d)
		}
		return out
	})
}

func sortedTokenNames(u *pve.User) []string {
	var names []string
	for n := range u.Tokens {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func tokenData(name string, t *pve.Token) map[string]any {
	d := map[string]any{"tokenid": name, "privsep": b2i(t.Privsep), "expire": t.Expire}
	if t.Comment != "" {
		d["comment"] = t.Comment
	}
	return d
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *cli) pveumTokenAdd(argv []string) int {
	const usage = "pveum user token add <userid> <tokenid> [OPTIONS]"
	a, err := parseArgs(argv, nil, map[string]bool{"privsep": true, "comment": true, "expire": true, "output-format": true})
	if err != nil {
		return c.failUsage(err, usage)
	}
	if len(a.pos) != 2 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	user, name := a.pos[0], a.pos[1]
	// PVE's default is a privilege-separated token.
	privsep := !a.has("privsep") || boolOpt(a, "privsep")
	var exp int64
	fmt.Sscan(a.opts["expire"], &exp)
	var secret string
	if err := c.store.Update(func(st *pve.State) error {
		var err error
		secret, err = st.AddToken(pve.Root, user, name, pve.TokenOptions{Privsep: privsep, Expire: exp, Comment: a.opts["comment"]})
		return err
	}); err != nil {
		return c.fail(err, usage)
	}
	info := map[string]any{"privsep": b2i(privsep), "expire": exp}
	if a.opts["comment"] != "" {
		info["comment"] = a.opts["comment"]
	}
	data := map[string]any{"full-tokenid": user + "!" + name, "info": info, "value": secret}
	if f := a.opts["output-format"]; f != "" && f != "text" {
		return c.printData(f, data)
	}
	c.out("┌──────────────┬──────────────────────────────────────┐\n")
	c.out("│ key          │ value                                │\n")
	c.out("╞══════════════╪══════════════════════════════════════╡\n")
	c.out("│ full-tokenid │ %-36s │\n", user+"!"+name)
	c.out("├──────────────┼──────────────────────────────────────┤\n")
	c.out("│ info         │ {\"privsep\":\"%d\"}%s │\n", b2i(privsep), strings.Repeat(" ", 21))
	c.out("├──────────────┼──────────────────────────────────────┤\n")
	c.out("│ value        │ %-36s │\n", secret)
	c.out("└──────────────┴──────────────────────────────────────┘\n")
	return 0
}

func (c *cli) pveumTokenList(argv []string) int {
	const usage = "pveum user token list <userid> [OPTIONS]"
	a, err := parseArgs(argv, map[string]bool{"noborder": true, "noheader": true}, map[string]bool{"output-format": true})
	if err != nil {
		return c.failUsage(err, usage)
	}
	if len(a.pos) != 1 {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	out := []map[string]any{}
	if err := c.store.View(func(st *pve.State) error {
		u := st.Users[a.pos[0]]
		if u == nil {
			return pve.Fail("no such user ('%s')", a.pos[0])
		}
		for _, n := range sortedTokenNames(u) {
			out = append(out, tokenData(n, u.Tokens[n]))
		}
		return nil
	}); err != nil {
		return c.fail(err, usage)
	}
	return c.printData(a.opts["output-format"], out)
}

// pveumPermissions is `pveum user [token] permissions`: the effective
// privileges per path; with --path only that path. A privilege's value
// is 1 (PVE marks whether it propagates; every grant here does).
func (c *cli) pveumPermissions(argv []string, token bool) int {
	usage := "pveum user permissions [<userid>] [OPTIONS]"
	npos := 1
	if token {
		usage, npos = "pveum user token permissions <userid> <tokenid> [OPTIONS]", 2
	}
	a, err := parseArgs(argv, nil, map[string]bool{"path": true, "output-format": true})
	if err != nil {
		return c.failUsage(err, usage)
	}
	if len(a.pos) != npos {
		fmt.Fprintf(c.env.Stderr, "400 not enough arguments\n%s\n", usage)
		return exitErr
	}
	authid := a.pos[0]
	if token {
		authid += "!" + a.pos[1]
	}
	out := map[string]any{}
	if err := c.store.View(func(st *pve.State) error {
		user, tok := pve.SplitAuthID(authid)
		if u := st.Users[user]; u == nil || (tok != "" && u.Tokens[tok] == nil) {
			if tok != "" {
				return pve.Fail("no such token '%s' for user '%s'", tok, user)
			}
			return pve.Fail("no such user ('%s')", user)
		}
		tree := map[string]map[string]bool{}
		if p := a.opts["path"]; p != "" {
			tree[p] = st.Permissions(authid, p)
		} else {
			tree = st.PermissionsTree(authid)
		}
		for p, privs := range tree {
			m := map[string]any{}
			for k, v := range privs {
				if v {
					m[k] = 1
				}
			}
			out[p] = m
		}
		return nil
	}); err != nil {
		return c.fail(err, usage)
	}
	return c.printData(a.opts["output-format"], out)
}

func (c *cli) pveumACL(argv []string, del bool) int {
	usage := "pveum acl modify <path> --roles <string> [OPTIONS]"
	if del {
		usage = "pveum acl delete <path> --roles <string> [OPTIONS]"
	}
	return c.pveumSimple(argv, usage, 1, map[string]bool{"roles": true, "users": true, "groups": true, "tokens": true, "propagate": true},
		func(st *pve.State, a args) error {
			prop := !a.has("propagate") || boolOpt(a, "propagate")
			return st.ModifyACL(pve.Root, pve.ACLChange{Path: a.pos[0], Roles: splitList(a.opts["roles"]), Users: splitList(a.opts["users"]),
				Groups: splitList(a.opts["groups"]), Tokens: splitList(a.opts["tokens"]), Propagate: prop, Delete: del})
		})
}

func roleListData(st *pve.State) []map[string]any {
	out := []map[string]any{}
	for name, privs := range pve.BuiltinRoles(st.Major()) {
		out = append(out, map[string]any{"roleid": name, "privs": strings.Join(privs, ","), "special": 1})
	}
	for name, r := range st.Roles {
		out = append(out, map[string]any{"roleid": name, "privs": strings.Join(r.Privs, ","), "special": 0})
	}
	sort.Slice(out, func(i, j int) bool { return out[i]["roleid"].(string) < out[j]["roleid"].(string) })
	return out
}

func aclListData(st *pve.State) []map[string]any {
	out := []map[string]any{}
	for _, e := range st.ACL {
		out = append(out, map[string]any{"path": e.Path, "type": e.Type, "ugid": e.UGID, "roleid": e.Role, "propagate": b2i(e.Propagate)})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i]["path"].(string) < out[j]["path"].(string) })
	return out
}
