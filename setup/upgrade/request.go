package upgrade

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/packaging"
)

// RequestFile is where the running agent leaves the version the API asked
// it to run (a heartbeat's upgradeToVersion, with agent.auto_update on),
// in its state directory: the agent runs unprivileged and cannot replace
// its binary; the root upgrade job (`dc-agent upgrade --auto`, started at
// once by dc-agent-upgrade.path, else by the daily timer) takes the
// request and installs that version — a signed release, only if it is
// newer than the installed one.
const RequestFile = packaging.UpgradeRequestFile

// WriteRequest records version in stateDir (atomically, 0600).
func WriteRequest(stateDir, version string) error {
	if err := ValidVersion(version); err != nil {
		return err
	}
	return identity.WriteFileAtomic(filepath.Join(stateDir, RequestFile), []byte(version+"\n"), 0o600)
}

// TakeRequest reads and removes the request in stateDir. ok is false when
// there is none; a request that is not a version is removed and refused.
func TakeRequest(stateDir string) (version string, ok bool, err error) {
	p := filepath.Join(stateDir, RequestFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		return "", false, rerr
	}
	v := strings.TrimSpace(string(b))
	if len(b) > 128 {
		return "", false, fmt.Errorf("%s is not a version (%d bytes); ignored", p, len(b))
	}
	if err := ValidVersion(v); err != nil {
		return "", false, fmt.Errorf("%s: %w; ignored", p, err)
	}
	return v, true, nil
}
