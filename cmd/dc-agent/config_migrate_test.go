package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
)

// TestConfigMigrate runs `dc-agent config migrate` on a config the Rust
// agent's `setup token` wrote (config/testdata/rust).
func TestConfigMigrate(t *testing.T) {
	orig, err := os.ReadFile("../../config/testdata/rust/setup-token-proxmox-gateway.toml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "dc-agent.toml")
	if err := os.WriteFile(path, orig, 0o644); err != nil {
		t.Fatal(err)
	}

	// Printed; the config named by the environment; the file untouched.
	r := runAgent(t, runOpts{env: []string{"DC_AGENT_CONFIG=" + path}}, "config", "migrate")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: provisioner.proxmox.verify_ssl = false is deprecated") ||
		!strings.Contains(r.stderr, "Not written; `dc-agent config migrate --config "+path+" --write`") {
		t.Fatalf("print:\n%s", r)
	}
	printed, err := config.Parse([]byte(r.stdout))
	if err != nil || printed.API.PoolID != "sl-8eba3c90" || !printed.Provisioner.Proxmox.InsecureSkipVerify || printed.NeedsMigration() {
		t.Fatalf("printed form: %v\n%s", err, r.stdout)
	}
	if b, _ := os.ReadFile(path); string(b) != string(orig) {
		t.Fatal("printing changed the file")
	}

	// Written: the printed text, mode 0600, loads without the old keys.
	w := runAgent(t, runOpts{}, "config", "migrate", "--config", path, "--write")
	if w.code != 0 || w.stdout != "" || !strings.Contains(w.stderr, "Wrote "+path+" in the current form (mode 0600).\nWarnings left:\n  - api.agent_secret_key \"/root/.dc-agent/agent.key\" is in a home directory") ||
		!strings.Contains(w.stderr, "\n  - [gateway] (dc_id \"dc-sl\")") {
		t.Fatalf("write:\n%s", w)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", st.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != r.stdout {
		t.Fatalf("the file is not the printed form:\n%s", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("files left beside the config: %v", entries)
	}
	cfg, err := config.Load(path)
	if err != nil || cfg.NeedsMigration() || strings.Contains(strings.Join(cfg.Warnings, "\n"), "verify_ssl") {
		t.Fatalf("reload: %v %v", err, cfg)
	}

	// Again: nothing to do, not rewritten.
	if a := runAgent(t, runOpts{}, "config", "migrate", "--config", path, "--write"); a.code != 0 || !strings.Contains(a.stderr, path+" has no old keys; left as it is.") {
		t.Fatalf("second write:\n%s", a)
	}

	// A config that does not load: exit 3, the key and the fix, file kept.
	bad := filepath.Join(dir, "bad.toml")
	badText := strings.Replace(string(orig), "[provisioner.proxmox]\n", "[provisioner.proxmox]\nssh_port = 22\n", 1)
	os.WriteFile(bad, []byte(badText), 0o644)
	b := runAgent(t, runOpts{}, "config", "migrate", "--config", bad, "--write")
	if b.code != exitConfig || !strings.Contains(b.stderr, `line 19: unknown key "ssh_port" in [provisioner.proxmox]; remove it`) {
		t.Fatalf("bad config:\n%s", b)
	}
	if got, _ := os.ReadFile(bad); string(got) != badText {
		t.Fatal("a config that does not load was changed")
	}
	if m := runAgent(t, runOpts{}, "config", "migrate", "--config", filepath.Join(dir, "none.toml")); m.code != exitConfig || !strings.Contains(m.stderr, "does not exist") {
		t.Fatalf("missing config:\n%s", m)
	}
	if u := runAgent(t, runOpts{}, "config", "migrate", "extra"); u.code != exitUsage {
		t.Fatalf("extra argument:\n%s", u)
	}
}
