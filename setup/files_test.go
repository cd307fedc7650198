package setup

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func TestWriteOwnedKeepsTheServiceUsersOwnership(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "changing a file's owner needs root")
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	os.WriteFile(cfg, []byte("old"), 0o600)
	os.Chown(cfg, 4242, 4343)
	if err := writeOwned(cfg, []byte("new"), 0o600, ""); err != nil {
		t.Fatal(err)
	}
	if uid, gid, _ := ownerOf(cfg); uid != 4242 || gid != 4343 {
		t.Fatalf("replaced file owned by %d:%d", uid, gid)
	}
	tok := filepath.Join(dir, "proxmox-token")
	if err := writeOwned(tok, []byte("s"), 0o600, cfg); err != nil {
		t.Fatal(err)
	}
	if uid, _, _ := ownerOf(tok); uid != 4242 {
		t.Fatalf("new file owned by %d, not the config's owner", uid)
	}
	if b, _ := os.ReadFile(cfg); string(b) != "new" {
		t.Fatal("content not written")
	}
}
