package doctor

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

// localSetup writes a manual-provisioner config, an agent key and a signed
// delegation (expiring at exp) and returns the config path.
func localSetup(t *testing.T, perms []string, exp *int64) (string, []byte) {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent.key")
	key, _, err := identity.EnsureAgentKey(keyPath, false)
	if err != nil {
		t.Fatal(err)
	}
	main, _ := identity.GenerateKey()
	cfg := &config.Config{
		API:         config.APIConfig{Endpoint: "http://127.0.0.1:1", ProviderPubkey: identity.PublicHex(main), AgentSecretKey: keyPath},
		Provisioner: config.ProvisionerConfig{Type: config.TypeManual, Manual: &config.ManualConfig{}},
	}
	path := filepath.Join(dir, "dc-agent.toml")
	if err := config.Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	d := identity.Delegation{AgentPubkey: identity.PublicHex(key), ProviderPubkey: identity.PublicHex(main), Permissions: perms, ExpiresAtNs: exp}
	sd, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.SaveDelegation(identity.DelegationPath(keyPath), sd); err != nil {
		t.Fatal(err)
	}
	return path, key
}

func status(r Report, check string) []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

func hasMsg(r Report, check, sub string) bool {
	for _, f := range status(r, check) {
		if strings.Contains(f.Message, sub) && f.Fix != "" {
			return true
		}
	}
	return false
}

func TestDoctorLocalChecks(t *testing.T) {
	ctx := context.Background()
	now := time.Now()

	path, _ := localSetup(t, identity.AllPermissions, nil)
	r := Run(ctx, Options{ConfigPath: path})
	if r.ExitCode() != 0 {
		t.Fatalf("good setup: %+v", r.Findings)
	}

	// Missing config: says how to create one.
	r = Run(ctx, Options{ConfigPath: filepath.Join(t.TempDir(), "none.toml")})
	if f := status(r, "config"); r.ExitCode() != 2 || len(f) != 1 || !strings.Contains(f[0].Fix, "dc-agent setup proxmox") {
		t.Fatalf("missing config: %+v", r.Findings)
	}

	// A key others can read: the chmod.
	path, _ = localSetup(t, identity.AllPermissions, nil)
	cfg, _ := config.Load(path)
	os.Chmod(cfg.AgentKeyPath(), 0o644)
	r = Run(ctx, Options{ConfigPath: path})
	if f, _ := r.Find("agent-key"); f.Status != Fail || f.Fix != "chmod 600 "+cfg.AgentKeyPath() {
		t.Fatalf("readable key: %+v", f)
	}

	// Expired delegation: fails and says how to renew.
	past := now.Add(-time.Minute).UnixNano()
	path, _ = localSetup(t, identity.AllPermissions, &past)
	r = Run(ctx, Options{ConfigPath: path})
	f := status(r, "delegation")
	if r.ExitCode() != 2 || len(f) != 1 || f[0].Status != Fail || !strings.Contains(f[0].Message, "expired") || !strings.Contains(f[0].Fix, "dc-agent register") {
		t.Fatalf("expired: %+v", f)
	}

	// Expiring within 7 days: a warning.
	soon := now.Add(3 * 24 * time.Hour).UnixNano()
	path, _ = localSetup(t, identity.AllPermissions, &soon)
	r = Run(ctx, Options{ConfigPath: path})
	if r.ExitCode() != 1 || !hasMsg(r, "delegation", "expires in") {
		t.Fatalf("expiring: %+v", r.Findings)
	}

	// Without heartbeat the agent never shows online: a failure.
	path, _ = localSetup(t, []string{identity.PermFetchContracts, identity.PermProvision}, nil)
	r = Run(ctx, Options{ConfigPath: path})
	if r.ExitCode() != 2 || !hasMsg(r, "delegation", "heartbeat") {
		t.Fatalf("missing permissions: %+v", r.Findings)
	}

	// No delegation kept at all.
	path, _ = localSetup(t, identity.AllPermissions, nil)
	cfg, _ = config.Load(path)
	os.Remove(identity.DelegationPath(cfg.AgentKeyPath()))
	r = Run(ctx, Options{ConfigPath: path})
	if f, _ := r.Find("delegation"); f.Status != Fail || !strings.Contains(f.Fix, "register") {
		t.Fatalf("no delegation: %+v", f)
	}
}
