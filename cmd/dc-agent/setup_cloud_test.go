package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	vultrsim "github.com/decent-stuff/dc-agent/internal/sim/vultr"
)

// `dc-agent setup digitalocean|vultr` against the simulators: the token is
// checked, regions and sizes listed, the config written (and migrated from
// the earlier agent's inline token), and a re-run changes nothing.
func TestSetupCloudCLI(t *testing.T) {
	main, _ := identity.GenerateKey()
	provider := identity.PublicHex(main)
	for _, tc := range []struct {
		typ, region, otherRegion, size string
		start                          func(t *testing.T) (url, token string)
	}{
		{config.TypeDigitalOcean, "nyc3", "ams3", "s-1vcpu-1gb", func(t *testing.T) (string, string) {
			s := dosim.New(dosim.Options{CreateDuration: time.Millisecond})
			return s.Start(t), s.Token()
		}},
		{config.TypeVultr, "ewr", "fra", "vc2-1c-1gb", func(t *testing.T) (string, string) {
			s := vultrsim.New(vultrsim.Options{CreateDuration: time.Millisecond})
			return s.Start(t), s.Token()
		}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			url, token := tc.start(t)
			dir := t.TempDir()
			cfgPath := filepath.Join(dir, "etc", "dc-agent.toml")
			tokFile := filepath.Join(dir, "token")
			if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			run := func(extra ...string) result {
				args := append([]string{"--no-tui", "--config", cfgPath, "setup", tc.typ, "--endpoint", url, "--state-dir", filepath.Join(dir, "state")}, extra...)
				return runAgent(t, runOpts{}, args...)
			}

			if r := run(); r.code != exitUsage || !strings.Contains(r.stderr, "--token-file is required") || !strings.Contains(r.stderr, "DC_AGENT_TOKEN_FILE") {
				t.Fatalf("no token file: %s", r)
			}
			loose := filepath.Join(dir, "loose")
			_ = os.WriteFile(loose, []byte(token), 0o600)
			_ = os.Chmod(loose, 0o644)
			if r := run("--token-file", loose); r.code != exitUsage || !strings.Contains(r.stderr, "chmod 600") {
				t.Fatalf("world-readable token file: %s", r)
			}
			wrong := filepath.Join(dir, "wrong")
			_ = os.WriteFile(wrong, []byte("not-the-token\n"), 0o600)
			if r := run("--token-file", wrong, "--provider-pubkey", provider); r.code != exitAuth || !strings.Contains(r.stderr, "rejected the API") {
				t.Fatalf("wrong token: %s", r)
			}

			r := run("--token-file", tokFile, "--list")
			if r.code != 0 || !strings.Contains(r.stdout, tc.region) || !strings.Contains(r.stdout, tc.size) || !strings.Contains(r.stdout, "provider@example.invalid") {
				t.Fatalf("list: %s", r)
			}
			if _, err := os.Stat(cfgPath); !os.IsNotExist(err) {
				t.Fatal("--list wrote a config")
			}
			r = run("--token-file", tokFile, "--list", "--json")
			var cat struct {
				Kind    string `json:"kind"`
				Regions []struct{ ID string }
				Sizes   []struct {
					ID       string
					MemoryMB int64 `json:"memory_mb"`
				}
			}
			if err := json.Unmarshal([]byte(strings.SplitN(r.stdout, "\n", 2)[0]), &cat); err != nil || cat.Kind != "catalog" || len(cat.Regions) < 5 || len(cat.Sizes) < 5 || cat.Sizes[0].MemoryMB <= 0 {
				t.Fatalf("json catalogue %+v %v: %s", cat, err, r)
			}

			if r := run("--token-file", tokFile, "--provider-pubkey", provider, "--region", "mars1"); r.code != exitUsage || !strings.Contains(r.stderr, "not available to this account") || !strings.Contains(r.stderr, tc.region) {
				t.Fatalf("bad region: %s", r)
			}
			if r := run("--token-file", tokFile); r.code != exitUsage || !strings.Contains(r.stderr, "--provider-pubkey is required") {
				t.Fatalf("no provider key: %s", r)
			}

			r = run("--token-file", tokFile, "--provider-pubkey", provider, "--region", tc.otherRegion)
			if r.code != 0 {
				t.Fatalf("setup: %s", r)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatalf("the written config does not load: %v", err)
			}
			pc, ok := cfg.ProvisionerFor(tc.typ)
			keep := filepath.Join(dir, "etc", tc.typ+"-token")
			switch {
			case !ok || cfg.Provisioner.Type != tc.typ:
				t.Fatalf("provisioner %+v", cfg.Provisioner)
			case pc.DigitalOcean != nil && (pc.DigitalOcean.APITokenFile != keep || pc.DigitalOcean.DefaultRegion != tc.otherRegion || pc.DigitalOcean.Endpoint != url):
				t.Fatalf("section %+v", pc.DigitalOcean)
			case pc.Vultr != nil && (pc.Vultr.APITokenFile != keep || pc.Vultr.DefaultRegion != tc.otherRegion || pc.Vultr.Endpoint != url):
				t.Fatalf("section %+v", pc.Vultr)
			}
			if cfg.API.ProviderPubkey != provider || len(cfg.Warnings) != 0 {
				t.Fatalf("api %+v warnings %q", cfg.API, cfg.Warnings)
			}
			for _, p := range []string{cfgPath, keep, cfg.AgentKeyPath()} {
				if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o600 {
					t.Fatalf("%s: %v %v", p, st, err)
				}
			}
			if b, _ := os.ReadFile(keep); strings.TrimSpace(string(b)) != token {
				t.Fatal("token not kept")
			}
			before, _ := os.ReadFile(cfgPath)
			// Again: nothing changes; the region stays the chosen one.
			r = run("--token-file", tokFile)
			after, _ := os.ReadFile(cfgPath)
			if r.code != 0 || string(before) != string(after) || !strings.Contains(r.stdout, "up to date") {
				t.Fatalf("re-run changed the config: %s\n%s\n---\n%s", r, before, after)
			}
		})
	}
}

// The earlier Rust agent's config with an inline DigitalOcean token is
// taken over: the token moves to a 0600 file, its other keys stay.
func TestSetupDigitalOceanMigratesInlineToken(t *testing.T) {
	s := dosim.New(dosim.Options{CreateDuration: time.Millisecond})
	url := s.Start(t)
	main, _ := identity.GenerateKey()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "dc-agent.toml")
	agentKey := filepath.Join(dir, "agent.key")
	k, _ := identity.GenerateKey()
	if err := identity.SaveAgentKey(agentKey, k, false); err != nil {
		t.Fatal(err)
	}
	rust := `[api]
endpoint = "https://api.decent-cloud.org"
provider_pubkey = "` + identity.PublicHex(main) + `"
agent_secret_key = "` + agentKey + `"

[provisioner]
type = "digitalocean"

[provisioner.digitalocean]
api_token = "` + s.Token() + `"
default_size = "s-2vcpu-4gb"
default_region = "ams3"
default_image = "debian-12-x64"
`
	if err := os.WriteFile(cfgPath, []byte(rust), 0o600); err != nil {
		t.Fatal(err)
	}
	before, err := config.Load(cfgPath)
	if err != nil || len(before.Warnings) != 2 {
		t.Fatalf("the earlier agent's config: %v %q", err, before.Warnings)
	}
	tokFile := filepath.Join(dir, "do-token")
	_ = os.WriteFile(tokFile, []byte(s.Token()), 0o600)
	r := runAgent(t, runOpts{}, "--no-tui", "--config", cfgPath, "setup", "digitalocean", "--endpoint", url, "--token-file", tokFile, "--verbose")
	if r.code != 0 || !strings.Contains(r.stdout, "inline api_token is replaced") {
		t.Fatalf("%s", r)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	d := cfg.Provisioner.DigitalOcean
	if d.APIToken != "" || d.APITokenFile != filepath.Join(dir, "digitalocean-token") || d.DefaultRegion != "ams3" || d.DefaultSize != "s-2vcpu-4gb" || d.DefaultImage != "debian-12-x64" {
		t.Fatalf("section %+v", d)
	}
	if b, _ := os.ReadFile(cfgPath); strings.Contains(string(b), s.Token()) {
		t.Fatal("the token is still in the config")
	}
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "default_size") {
		t.Fatalf("warnings %q", cfg.Warnings)
	}
}
