package service

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// account is a resolved service account.
type account struct {
	name     string
	uid, gid int
}

// lookupAccount finds name in root's /etc/passwd (root "" is the host).
// found is false when there is no such user. The service account is a
// local system user, so the files are the source of truth (no NSS).
func lookupAccount(root, name string) (a account, found bool, err error) {
	data, err := os.ReadFile(filepath.Join(root, "/etc/passwd"))
	if err != nil {
		return account{}, false, fmt.Errorf("read user database: %w", err)
	}
	uid, gid, found, err := parsePasswd(data, name)
	if err != nil || !found {
		return account{}, found, err
	}
	return account{name: name, uid: uid, gid: gid}, true, nil
}

// parsePasswd returns the uid and gid of name in passwd(5) text.
func parsePasswd(data []byte, name string) (uid, gid int, found bool, err error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil || uid < 0 || gid < 0 {
			return 0, 0, false, fmt.Errorf("user database line %d: malformed entry for %q", n, name)
		}
		return uid, gid, true, nil
	}
	if err := sc.Err(); err != nil {
		return 0, 0, false, fmt.Errorf("read user database: %w", err)
	}
	return 0, 0, false, nil
}

// nologinShell is the login shell of the service account.
func nologinShell(root string) string {
	for _, p := range []string{"/usr/sbin/nologin", "/sbin/nologin"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			return p
		}
	}
	return "/bin/false"
}

// ensureAccount returns the system user name, creating it (with its own
// group, no home directory, no login) when missing. dbRoot != "" makes
// useradd work on dbRoot's user database (tests).
func ensureAccount(ctx context.Context, useradd, dbRoot, name, home string) (a account, created bool, err error) {
	a, found, err := lookupAccount(dbRoot, name)
	if err != nil || found {
		return a, false, err
	}
	args := []string{"--system", "--user-group", "--home-dir", home, "--no-create-home",
		"--shell", nologinShell(dbRoot), "--comment", "Decent Cloud provider agent", name}
	if dbRoot != "" {
		args = append([]string{"--prefix", dbRoot}, args...)
	}
	if out, err := exec.CommandContext(ctx, useradd, args...).CombinedOutput(); err != nil {
		return account{}, false, fmt.Errorf("create system user %s: useradd: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	a, found, err = lookupAccount(dbRoot, name)
	if err != nil {
		return account{}, false, err
	}
	if !found {
		return account{}, false, errors.New("useradd succeeded but user " + name + " is not in /etc/passwd")
	}
	return a, true, nil
}

// removeAccount deletes the system user (and its group) if it exists.
func removeAccount(ctx context.Context, userdel, dbRoot, name string) (removed bool, err error) {
	if _, found, err := lookupAccount(dbRoot, name); err != nil || !found {
		return false, err
	}
	var args []string
	if dbRoot != "" {
		args = append(args, "--prefix", dbRoot)
	}
	if out, err := exec.CommandContext(ctx, userdel, append(args, name)...).CombinedOutput(); err != nil {
		return false, fmt.Errorf("remove system user %s: userdel: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return true, nil
}
