package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Finding 6 of issue 15: the config becomes root:dc-agent 0640 (the root
// upgrade job acts on it), so it may hold no secret: a config with one
// inline is refused, before anything changes, with the way out.
func TestInstallRefusesInlineSecretsForSystemService(t *testing.T) {
	root := t.TempDir()
	cfg := writeConfig(t, root)
	b, _ := os.ReadFile(cfg)
	inline := strings.Replace(string(b), `agent_secret_key = "/etc/dc-agent/agent.key"`, `agent_secret_key = "`+strings.Repeat("ab", 32)+`"`, 1)
	if err := os.WriteFile(cfg, []byte(inline), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Install(context.Background(), Options{Root: root, Binary: "/usr/bin/dc-agent"})
	if err == nil || !strings.Contains(err.Error(), "holds secrets inline (api.agent_secret_key)") || !strings.Contains(err.Error(), "0600 file") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/dc-agent.service")); err == nil {
		t.Fatal("a unit was written for a refused config")
	}
	if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o600 {
		t.Fatalf("the refused config's mode changed to %04o", st.Mode().Perm())
	}
}
