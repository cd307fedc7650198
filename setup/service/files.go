package service

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/decent-stuff/dc-agent/identity"
)

// owner is a uid/gid pair; nil means "leave ownership alone" (--root,
// --user).
type owner struct{ uid, gid int }

// ensureDir creates dir (and parents, 0755) and gives it mode and owner.
// It reports whether anything changed.
func ensureDir(dir string, mode fs.FileMode, own *owner) (changed bool, err error) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return false, fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
		}
		if err := os.Mkdir(dir, mode); err != nil {
			return false, fmt.Errorf("create %s: %w", dir, err)
		}
		changed = true
		if st, err = os.Stat(dir); err != nil {
			return true, err
		}
	case err != nil:
		return false, err
	case !st.IsDir():
		return false, fmt.Errorf("%s exists and is not a directory; move it away", dir)
	}
	c, err := ensureModeOwner(dir, st, mode, own)
	return changed || c, err
}

// ensureModeOwner sets path's permission bits and owner when they differ.
func ensureModeOwner(path string, st fs.FileInfo, mode fs.FileMode, own *owner) (changed bool, err error) {
	if st.Mode().Perm() != mode.Perm() {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			return false, fmt.Errorf("chmod %s: %w", path, err)
		}
		changed = true
	}
	if own != nil {
		sys, ok := st.Sys().(*syscall.Stat_t)
		if !ok || int(sys.Uid) != own.uid || int(sys.Gid) != own.gid {
			if err := os.Lchown(path, own.uid, own.gid); err != nil {
				return changed, fmt.Errorf("chown %s: %w", path, err)
			}
			changed = true
		}
	}
	return changed, nil
}

// configFile is how the config itself is kept: its name in the config
// directory, its mode and owner.
type configFile struct {
	name string
	mode fs.FileMode
	own  *owner
}

// secureConfigFiles makes the files directly in the config directory
// readable by the service account and nobody else: the config as cfg
// says, every other (secret) file 0600, public keys and examples 0644,
// owned by own. It returns the files it changed.
func secureConfigFiles(dir string, cfg configFile, own *owner) (changed []string, err error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, e.Name())
		st, err := os.Lstat(path)
		if err != nil {
			return changed, err
		}
		mode, o := fs.FileMode(0o600), own
		switch {
		case e.Name() == cfg.name:
			mode, o = cfg.mode, cfg.own
		case isPublicFile(e.Name()):
			mode = 0o644
		}
		c, err := ensureModeOwner(path, st, mode, o)
		if err != nil {
			return changed, err
		}
		if c {
			changed = append(changed, path)
		}
	}
	return changed, nil
}

func isPublicFile(name string) bool {
	return strings.HasSuffix(name, ".pub") || strings.HasSuffix(name, ".example")
}

// writeIfChanged writes data to path atomically unless it already holds
// exactly data with mode; it reports whether it wrote.
func writeIfChanged(path string, data []byte, mode fs.FileMode) (bool, error) {
	if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, data) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() == mode {
			return false, nil
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	if err := identity.WriteFileAtomic(path, data, mode); err != nil {
		return false, fmt.Errorf("write %s: %w", path, err)
	}
	return true, nil
}

// removeIfExists removes a file and reports whether it was there.
func removeIfExists(path string) (bool, error) {
	err := os.Remove(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("remove %s: %w", path, err)
	}
}
