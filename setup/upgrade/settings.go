package upgrade

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CheckRootOwned reports whether root may act on the settings in path: the
// file and every directory above it must be root's and writable by no one
// else (a directory with the sticky bit, like /tmp, only lets owners
// rename their entries, so it may be). The upgrade job runs as root and
// reads agent.auto_update and agent.release_url from the config: settings
// the service account could write would let a compromised agent steer it
// (service install makes the config root:dc-agent 0640).
func CheckRootOwned(path string) error {
	p, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	if p, err = filepath.EvalSymlinks(p); err != nil {
		return err
	}
	for cur := p; ; cur = filepath.Dir(cur) {
		st, err := os.Stat(cur)
		if err != nil {
			return err
		}
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no owner information", cur)
		}
		mode := st.Mode()
		switch {
		case sys.Uid != 0:
			return fmt.Errorf("%s belongs to uid %d, not root", cur, sys.Uid)
		case mode.Perm()&0o022 != 0 && !(mode.IsDir() && mode&os.ModeSticky != 0):
			return fmt.Errorf("%s is writable by group or others (mode %04o)", cur, mode.Perm())
		}
		if cur == filepath.Dir(cur) {
			return nil
		}
	}
}
