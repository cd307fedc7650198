package setup

import (
	"os"
	"syscall"

	"github.com/decent-stuff/dc-agent/identity"
)

// writeOwned writes data atomically with mode and gives the new file the
// owner of the file it replaces, or for a new file the owner of ref: after
// `dc-agent service install` the config and secrets belong to the service
// user, and a re-run of setup as root must not lock it out of them.
func writeOwned(path string, data []byte, mode os.FileMode, ref string) error {
	uid, gid, ok := ownerOf(path)
	if !ok && ref != "" {
		uid, gid, ok = ownerOf(ref)
	}
	if err := identity.WriteFileAtomic(path, data, mode); err != nil {
		return err
	}
	if ok && os.Geteuid() == 0 && (uid != 0 || gid != 0) {
		return os.Lchown(path, uid, gid)
	}
	return nil
}

func ownerOf(path string) (uid, gid int, ok bool) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, 0, false
	}
	sys, isStat := st.Sys().(*syscall.Stat_t)
	if !isStat {
		return 0, 0, false
	}
	return int(sys.Uid), int(sys.Gid), true
}
