package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// Finding 6 of issue 15: the root upgrade job read its settings
// (auto_update, release_url) from a config the service account could
// write. As root, `dc-agent upgrade` uses them only when the file and the
// directories above it are root's and nobody else can write them; the
// timer's --auto then does nothing and says how to fix it.
func TestRootUpgradeIgnoresServiceWritableConfig(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "the rule is for root")
	}
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	cfg := testutil.WriteFile(t, filepath.Join(dir, "dc-agent.toml"), fmt.Sprintf(`[api]
endpoint = "https://api.decent-cloud.org"
provider_pubkey = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
agent_secret_key = "agent.key"

[agent]
auto_update = true
release_url = %q

[provisioner]
type = "manual"
[provisioner.manual]
`, srv.URL), 0o640)
	bin := testutil.WriteFile(t, filepath.Join(t.TempDir(), "dc-agent"), "#!/bin/sh\n", 0o755)
	upgrade := func() result {
		return runAgent(t, runOpts{}, "--config", cfg, "upgrade", "--auto", "--no-restart", "--binary", bin)
	}

	// Written by the service account (uid 4242): not acted on.
	if err := os.Chown(cfg, 4242, 0); err != nil {
		t.Fatal(err)
	}
	r := upgrade()
	if r.code != 0 || !strings.Contains(r.stderr, "not using the settings in "+cfg+" as root: "+cfg+" belongs to uid 4242") ||
		!strings.Contains(r.stderr, "sudo dc-agent service install") || !strings.Contains(r.stderr, "doing nothing") {
		t.Fatalf("service-owned config:\n%v", r)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the upgrade job acted on a service-owned config: %d requests to its release_url", n)
	}
	// Root's, 0640: its settings are used (the job asks its release_url).
	if err := os.Chown(cfg, 0, 0); err != nil {
		t.Fatal(err)
	}
	r = upgrade()
	if strings.Contains(r.stderr, "not using the settings") || hits.Load() == 0 {
		t.Fatalf("root-owned config not used (%d requests):\n%v", hits.Load(), r)
	}
}
