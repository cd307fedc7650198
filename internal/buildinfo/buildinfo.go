// Package buildinfo carries the version stamped into release binaries.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by the linker: -X github.com/decent-stuff/dc-agent/internal/buildinfo.Version=...
var (
	Version = "dev"
	Commit  = ""
	Date    = ""
	// ReleaseKeys are the public keys whose signature on a release's
	// SHA256SUMS `dc-agent upgrade` accepts, comma-separated in the form of
	// internal/releasesig; `make release` sets them from its keys file.
	ReleaseKeys = ""
)

// CommitOrVCS returns the stamped commit, or the VCS revision Go recorded.
func CommitOrVCS() string {
	if Commit != "" {
		return Commit
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return "unknown"
}

// String is the one-line version text.
func String(program string) string {
	return fmt.Sprintf("%s %s (commit %s, %s, %s/%s)", program, Version, CommitOrVCS(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
