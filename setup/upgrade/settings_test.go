package upgrade

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func TestCheckRootOwned(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "files owned by another uid need root")
	}
	dir := t.TempDir() // under /tmp: sticky, root's
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "dc-agent.toml")
	testutil.WriteFile(t, cfg, "x", 0o640)
	if err := CheckRootOwned(cfg); err != nil {
		t.Fatalf("root:root 0640 in a root dir: %v", err)
	}
	for _, tc := range []struct {
		name  string
		setup func()
		want  string
	}{
		{"service account owns the file", func() { os.Chown(cfg, 4242, 0) }, "belongs to uid 4242"},
		{"group-writable file", func() { os.Chmod(cfg, 0o660) }, "writable by group or others (mode 0660)"},
		{"service account owns the directory", func() { os.Chown(dir, 4242, 0) }, "belongs to uid 4242"},
		{"world-writable directory without sticky bit", func() { os.Chmod(dir, 0o777) }, "writable by group or others"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.setup()
			t.Cleanup(func() {
				os.Chown(cfg, 0, 0)
				os.Chmod(cfg, 0o640)
				os.Chown(dir, 0, 0)
				os.Chmod(dir, 0o750)
			})
			if err := CheckRootOwned(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
	link := filepath.Join(t.TempDir(), "link.toml")
	if err := os.Symlink(cfg, link); err != nil {
		t.Fatal(err)
	}
	os.Chown(cfg, 4242, 0)
	if err := CheckRootOwned(link); err == nil {
		t.Fatal("a symlink hid the file's owner")
	}
}
