package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

const rustDir = "testdata/rust" // see its README.md for where each file comes from

// realTokenSecret replaces the Rust tests' placeholder token secret, which
// dc-agent refuses as a placeholder.
const realTokenSecret = "8f2c6a1e-3b4d-4c5e-9f60-7a8b9c0d1e2f"

func readRust(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(rustDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// containsAll checks that got has exactly len(want) entries and that the
// i-th contains want[i].
func containsAll(t *testing.T, what string, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d, want %d:\n  %s", what, len(got), len(want), strings.Join(got, "\n  "))
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("%s[%d] = %q, want it to contain %q", what, i, got[i], want[i])
		}
	}
}

const (
	wInlineSecret = "provisioner.proxmox.api_token_secret holds the secret inline; move it to a 0600 file"
	wVerifySSL    = "provisioner.proxmox.verify_ssl = false is deprecated"
	wPrivateIP    = "gateway.public_ip 10.0.0.1 is a private address"
	wGateway      = "[gateway] (dc_id "
	wHomeKey      = `api.agent_secret_key "/root/.dc-agent/agent.key" is in a home directory, which the dc-agent system service cannot read (it runs as user dc-agent with ProtectHome=yes); copy the key beside the config: install -m 0600 -o dc-agent -g dc-agent /root/.dc-agent/agent.key /etc/dc-agent/agent.key`
)

// TestRustConfigsLoad loads every config the Rust agent ships or writes
// (testdata/rust), checks the values and warnings, and migrates it: the
// current form reloads to the same settings without the old keys.
func TestRustConfigsLoad(t *testing.T) {
	cases := []struct {
		file  string
		edit  func(string) string // a change the test names (nil: the file as it is)
		warns []string            // in order
		after []string            // warnings left after migrate (not about key names)
		check func(t *testing.T, c *Config)
	}{
		{
			file:  "setup-token-proxmox-gateway.toml",
			warns: []string{wHomeKey, wGateway + `"dc-sl") is read, but ` + "`dc-agent run`" + ` does not start the gateway yet`, wInlineSecret, wVerifySSL},
			after: []string{wHomeKey, wGateway, wInlineSecret},
			check: func(t *testing.T, c *Config) {
				px := c.Provisioner.Proxmox
				if c.API.PoolID != "sl-8eba3c90" || c.API.AgentSecretKey != "/root/.dc-agent/agent.key" || c.Polling.IntervalSeconds != 30 ||
					px.APIURL != "https://127.0.0.1:8006" || px.APITokenID != "root@pam!dc-agent" || px.APITokenSecret != realTokenSecret ||
					px.Node != "pve1" || px.TemplateVMID != 9000 || px.Storage != "local-lvm" || !px.InsecureSkipVerify {
					t.Errorf("values: api %+v proxmox %+v", c.API, px)
				}
				if g := c.Gateway; g == nil || g.DCID != "dc-sl" || g.PublicIP != "203.0.113.1" || g.PortRangeEnd != 59999 || g.PortAllocationsPath != "/var/lib/dc-agent/port-allocations.json" {
					t.Errorf("gateway: %+v", g)
				}
			},
		},
		{
			file:  "setup-token-script.toml",
			warns: []string{wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				s := c.Provisioner.Script
				if c.API.PoolID != "sl-8eba3c90" || s.Provision != "/opt/dc-agent/provision.sh" || s.HealthCheck != "/opt/dc-agent/health.sh" || s.TimeoutSeconds != 300 {
					t.Errorf("values: %+v %+v", c.API, s)
				}
			},
		},
		{
			file:  "setup-token-manual.toml",
			warns: []string{wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				if c.Provisioner.Type != TypeManual || c.Provisioner.Manual == nil || c.Provisioner.Manual.NotificationWebhook != "" {
					t.Errorf("manual: %+v", c.Provisioner)
				}
			},
		},
		{
			file:  "setup-token-docker.toml",
			warns: []string{`provisioner.docker.image is not set: using "ghcr.io/decent-stuff/dc-agent-ssh:latest", the Rust agent's default`, wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				d := c.Provisioner.Docker
				if d == nil || d.Image != RustDockerImage || d.Socket != DefaultDockerSocket || d.Network != "" {
					t.Errorf("docker: %+v", d)
				}
			},
		},
		{
			file:  "setup-proxmox.toml",
			warns: []string{wHomeKey, wInlineSecret, wVerifySSL},
			after: []string{wHomeKey, wInlineSecret},
			check: func(t *testing.T, c *Config) {
				if c.API.AgentSecretKey != "/root/.dc-agent/agent.key" || c.API.PoolID != "" || c.Provisioner.Proxmox.Node != "pve1" {
					t.Errorf("values: %+v", c.API)
				}
			},
		},
		{
			// The shipped example with its placeholders filled in and the
			// refused provider_secret_key replaced by what the refusal says.
			file: "example.toml",
			edit: func(s string) string {
				return strings.NewReplacer(
					`"your_ed25519_public_key_hex"`, `"197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"`,
					`provider_secret_key = "your_ed25519_secret_key_hex"`, `agent_secret_key = "/root/.dc-agent/agent.key"`,
					"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", realTokenSecret).Replace(s)
			},
			warns: []string{wHomeKey, wInlineSecret, wVerifySSL},
			after: []string{wHomeKey, wInlineSecret},
			check: func(t *testing.T, c *Config) {
				px := c.Provisioner.Proxmox
				if px.APIURL != "https://proxmox.local:8006" || px.Pool != "dc-vms" || px.Storage != "local-lvm" || !px.InsecureSkipVerify {
					t.Errorf("proxmox: %+v", px)
				}
			},
		},
		{
			file: "test-flat-proxmox.toml",
			edit: func(s string) string {
				return strings.Replace(s, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", realTokenSecret, 1)
			},
			warns: []string{"provisioner: the Rust agent's flat keys now belong in [provisioner.proxmox]: provisioner.api_url → provisioner.proxmox.api_url, provisioner.api_token_id → provisioner.proxmox.api_token_id, provisioner.api_token_secret → provisioner.proxmox.api_token_secret, provisioner.node → provisioner.proxmox.node, provisioner.template_vmid → provisioner.proxmox.template_vmid, provisioner.storage → provisioner.proxmox.storage, provisioner.pool → provisioner.proxmox.pool, provisioner.verify_ssl → provisioner.proxmox.verify_ssl (`dc-agent config migrate --write` rewrites the file in the current form)", wHomeKey, wInlineSecret, wVerifySSL},
			after: []string{wHomeKey, wInlineSecret},
			check: func(t *testing.T, c *Config) {
				px := c.Provisioner.Proxmox
				if c.Polling.IntervalSeconds != 45 || c.Polling.HealthCheckIntervalSeconds != 600 || px.APIURL != "https://proxmox.local:8006" ||
					px.Storage != "local-zfs" || px.Pool != "dc-vms" || px.TemplateVMID != 9000 || px.VerifySSL == nil || !px.InsecureSkipVerify {
					t.Errorf("values: %+v %+v", c.Polling, px)
				}
			},
		},
		{
			file:  "test-flat-script.toml",
			warns: []string{"provisioner.provision → provisioner.script.provision, provisioner.terminate → provisioner.script.terminate, provisioner.health_check → provisioner.script.health_check, provisioner.timeout_seconds → provisioner.script.timeout_seconds", wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				if s := c.Provisioner.Script; s.Terminate != "/opt/dc-agent/terminate.sh" || s.TimeoutSeconds != 600 {
					t.Errorf("script: %+v", s)
				}
			},
		},
		{
			file:  "test-flat-manual.toml",
			warns: []string{"provisioner.notification_webhook → provisioner.manual.notification_webhook", wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				if c.Provisioner.Manual.NotificationWebhook != "https://slack.webhook/xyz" {
					t.Errorf("manual: %+v", c.Provisioner.Manual)
				}
			},
		},
		{
			// The Rust test's Proxmox has no verify_ssl = false, and
			// dc-agent pins the certificate (that refusal is tested below).
			file: "test-additional-flat.toml",
			edit: func(s string) string {
				return strings.Replace(strings.Replace(s, "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", realTokenSecret, 1),
					"template_vmid = 9000\n", "template_vmid = 9000\nverify_ssl = false\n", 1)
			},
			warns: []string{
				"provisioner: the Rust agent's flat keys now belong in [provisioner.proxmox]",
				"additional_provisioners[0]: the Rust agent's flat keys now belong in [additional_provisioners.script]: additional_provisioners[0].provision → additional_provisioners[0].script.provision",
				"additional_provisioners[1]: the Rust agent's flat keys now belong in [additional_provisioners.manual]: additional_provisioners[1].notification_webhook → additional_provisioners[1].manual.notification_webhook",
				wHomeKey, wInlineSecret, wVerifySSL,
			},
			after: []string{wHomeKey, wInlineSecret},
			check: func(t *testing.T, c *Config) {
				a := c.AdditionalProvisioners
				if len(a) != 2 || a[0].Script.Provision != "/opt/dc-agent/provision.sh" || a[1].Manual.NotificationWebhook != "https://slack.webhook/xyz" || !c.Provisioner.Proxmox.InsecureSkipVerify {
					t.Errorf("additional: %+v", a)
				}
			},
		},
		{
			file:  "test-gateway-custom.toml",
			warns: []string{wHomeKey, wGateway + `"dc-us")`, wPrivateIP},
			after: []string{wHomeKey, wGateway, wPrivateIP},
			check: func(t *testing.T, c *Config) {
				if g := c.Gateway; g == nil || g.PortRangeStart != 30000 || g.PortsPerVM != 5 || g.CaddySitesDir != "/custom/caddy" || g.Domain != DefaultGatewayDomain {
					t.Errorf("gateway: %+v", g)
				}
			},
		},
		{
			file:  "test-orphan-tracker.toml",
			warns: []string{`polling.orphan_tracker_path ("/custom/path/orphans.json") is ignored: dc-agent keeps the first-seen time of orphaned instances in memory`, wHomeKey},
			after: []string{wHomeKey},
		},
		{
			file:  "test-docker-defaults.toml",
			warns: []string{"provisioner.docker.image is not set", wHomeKey},
			after: []string{wHomeKey},
		},
		{
			file:  "test-nested-docker.toml",
			edit:  func(s string) string { return strings.Replace(s, "ssh_port = 2222", "ssh_port = 22", 1) },
			warns: []string{"provisioner.docker.socket_path is now provisioner.docker.socket", "provisioner.docker.default_image is now provisioner.docker.image", "provisioner.docker.ssh_port = 22 is ignored", wHomeKey},
			after: []string{wHomeKey},
			check: func(t *testing.T, c *Config) {
				if d := c.Provisioner.Docker; d.Socket != "/custom/docker.sock" || d.Network != "host" || d.Image != "alpine:3.19" {
					t.Errorf("docker: %+v", d)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			text := readRust(t, tc.file)
			if tc.edit != nil {
				edited := tc.edit(text)
				if edited == text {
					t.Fatal("the edit changed nothing")
				}
				text = edited
			}
			cfg := mustParse(t, text)
			containsAll(t, "warnings", cfg.Warnings, tc.warns)
			if tc.check != nil {
				tc.check(t, cfg)
			}
			if cfg.NeedsMigration() != (len(tc.warns) > len(tc.after)) {
				t.Errorf("NeedsMigration = %v", cfg.NeedsMigration())
			}
			out, back, err := Migrate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			again := mustParse(t, string(out))
			if !reflect.DeepEqual(again, back) {
				t.Fatal("Migrate's reloaded config is not what its text loads to")
			}
			containsAll(t, "warnings after migrate", back.Warnings, tc.after)
			if back.NeedsMigration() {
				t.Error("the migrated config still needs migration")
			}
			if want := migratedWant(cfg); !reflect.DeepEqual(back, want) {
				t.Errorf("migrated config differs:\n got  %+v\n want %+v\n%s", back, want, out)
			}
			if out2, _, err := Migrate(back); err != nil || string(out2) != string(out) {
				t.Errorf("migrating twice changes the text (%v):\n%s\n---\n%s", err, out, out2)
			}
		})
	}
}

// migratedWant is what cfg should reload to after Migrate: the same
// settings, verify_ssl replaced by what it meant, and only the warnings
// that are not about key names.
func migratedWant(cfg *Config) *Config {
	w := *cfg
	w.Path = ""
	w.Provisioner = w.Provisioner.migrated()
	w.AdditionalProvisioners = nil
	for _, p := range cfg.AdditionalProvisioners {
		w.AdditionalProvisioners = append(w.AdditionalProvisioners, p.migrated())
	}
	w.Warnings = nil
	for _, s := range withoutLegacyWarnings(cfg) {
		if !strings.Contains(s, "verify_ssl = false is deprecated") {
			w.Warnings = append(w.Warnings, s)
		}
	}
	w.legacy.warnings = nil
	return &w
}

// withoutLegacyWarnings is cfg.Warnings without those about old keys.
func withoutLegacyWarnings(cfg *Config) []string {
	var out []string
	for _, s := range cfg.Warnings {
		if !slices.Contains(cfg.legacy.warnings, strings.TrimSuffix(s, migrateHint)) {
			out = append(out, s)
		}
	}
	return out
}

// TestRustConfigsRefused: what dc-agent does not take from the Rust
// format, each refusal naming the key and the fix.
func TestRustConfigsRefused(t *testing.T) {
	cases := []struct {
		name, text string
		problems   []string
		notes      []string
	}{
		{"shipped example as it is", readRust(t, "example.toml"), []string{
			"api.provider_pubkey: public key must be 64 hex characters, got 27; copy the 64-hex provider public key from the Decent Cloud dashboard",
			"api.provider_secret_key is the provider's main key and must not live on the agent host; remove it and register an agent key with a setup token from the Decent Cloud dashboard (dc-agent register --setup-token TOKEN)",
			"provisioner.proxmox.api_token_secret is a placeholder; set api_token_secret_file",
		}, nil},
		{"setup token without Proxmox setup", readRust(t, "setup-token-proxmox-placeholder.toml"), []string{
			`provisioner.proxmox.api_url "https://YOUR-PROXMOX-HOST:8006" looks like a placeholder; set your Proxmox host`,
			"provisioner.proxmox.api_token_secret is a placeholder",
		}, nil},
		{"setup proxmox without [api]", readRust(t, "setup-proxmox-incomplete.toml"), []string{
			"[api] is missing: register this agent with a setup token from the Decent Cloud dashboard (Agents > your pool > Add Agent): dc-agent register --setup-token file:PATH",
		}, nil},
		{"flat proxmox without a pinned certificate", strings.Replace(readRust(t, "test-additional-flat.toml"), "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", realTokenSecret, 1), []string{
			"provisioner.proxmox.tls_fingerprint is missing; pin the node certificate",
		}, []string{
			"provisioner: the Rust agent's flat keys now belong in [provisioner.proxmox]: provisioner.api_url → provisioner.proxmox.api_url",
			"additional_provisioners[0]:", "additional_provisioners[1]:",
		}},
		{"docker sshd on another port", readRust(t, "test-nested-docker.toml"), []string{
			"line 17: provisioner.docker.ssh_port = 2222: dc-agent connects to sshd on port 22 inside the container; use an image whose sshd listens on 22 and remove ssh_port",
		}, []string{"provisioner.docker.socket_path is now provisioner.docker.socket", "provisioner.docker.default_image is now provisioner.docker.image"}},
		{"docker socket under both names", strings.Replace(readRust(t, "test-nested-docker.toml"), "ssh_port = 2222", `socket = "/run/docker.sock"`, 1), []string{
			"line 14: provisioner.docker has both socket_path (the Rust agent's name) and socket; keep one, named socket",
		}, []string{"provisioner.docker.default_image is now provisioner.docker.image"}},
		{"docker image under both names, additional", minimal + "[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nimage = \"a\"\ndefault_image = \"b\"\n", []string{
			"additional_provisioners[0].docker has both default_image (the Rust agent's name) and image; keep one, named image",
		}, nil},
		{"Rust key of the wrong type", minimal + "[polling]\norphan_tracker_path = 5\n", []string{
			`line 14: polling.orphan_tracker_path must be text in quotes, not a whole number; write it as orphan_tracker_path = "..."`,
		}, nil},
		{"flat key of the wrong type", strings.Replace(readRust(t, "test-flat-script.toml"), `timeout_seconds = 600`, `timeout_seconds = "600"`, 1), []string{
			"provisioner.timeout_seconds must be a whole number, not text in quotes; write it as timeout_seconds = 30 (no quotes)",
		}, nil},
		{"gateway typo", readRust(t, "test-gateway-custom.toml") + "dcid = \"x\"\n", []string{
			`line 21: unknown key "dcid" in [gateway]; did you mean "dc_id"?`,
		}, nil},
		{"gateway value of the wrong type", strings.Replace(readRust(t, "test-gateway-custom.toml"), "ports_per_vm = 5", `ports_per_vm = "5"`, 1), []string{
			"gateway.ports_per_vm must be a whole number",
		}, nil},
		{"unknown flat key", strings.Replace(readRust(t, "test-flat-manual.toml"), "[provisioner]\n", "[provisioner]\nwebhook = \"x\"\n", 1), []string{
			`unknown key "webhook" in [provisioner]`,
		}, []string{"provisioner.notification_webhook → provisioner.manual.notification_webhook"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse([]byte(c.text))
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("not refused: %v", err)
			}
			containsAll(t, "problems", le.Problems, c.problems)
			containsAll(t, "notes", le.Notes, c.notes)
			if strings.Contains(le.Error(), "config migrate") {
				t.Errorf("a refusal points to migrate, which needs a file that loads:\n%s", le.Error())
			}
			for _, n := range c.notes {
				if !strings.Contains(le.Error(), "\n  note: ") || !strings.Contains(le.Error(), n) {
					t.Errorf("the message does not show the note %q:\n%s", n, le.Error())
				}
			}
		})
	}
}

// TestRustFlatKeysIgnored: flat keys the Rust agent ignored (a section of
// the same type present, or another type's settings) are ignored with a
// warning, and migrate drops them.
func TestRustFlatKeysIgnored(t *testing.T) {
	both := strings.Replace(readRust(t, "setup-token-script.toml"), "[provisioner]\ntype = \"script\"\n",
		"[provisioner]\ntype = \"script\"\nprovision = \"/old/provision.sh\"\napi_url = \"https://old:8006\"\nsocket_path = \"/x.sock\"\n", 1)
	cfg := mustParse(t, both)
	containsAll(t, "warnings", cfg.Warnings, []string{
		`provisioner: provisioner.socket_path is the Rust agent's flat form of docker settings, and type = "script": ignored, as the Rust agent ignored it; remove it`,
		`provisioner: provisioner.api_url is the Rust agent's flat form of proxmox settings, and type = "script": ignored`,
		"provisioner: provisioner.provision is ignored because [provisioner.script] is present, as the Rust agent ignored it; remove it",
		wHomeKey,
	})
	if cfg.Provisioner.Script.Provision != "/opt/dc-agent/provision.sh" || cfg.Provisioner.Proxmox != nil || cfg.Provisioner.Docker != nil {
		t.Fatalf("ignored keys were used: %+v", cfg.Provisioner)
	}
	out, back, err := Migrate(cfg)
	if err != nil || len(back.Warnings) != 1 || strings.Contains(string(out), "/old/") {
		t.Fatalf("migrate: %v %v\n%s", err, back.Warnings, out)
	}
}

// TestMigrateRefusesWhatWouldNotLoad: Migrate checks its own output.
func TestMigrateRefusesWhatWouldNotLoad(t *testing.T) {
	cfg := mustParse(t, minimal)
	cfg.API.Endpoint = "ftp://x" // set in memory, past validation
	if _, _, err := Migrate(cfg); err == nil || !strings.Contains(err.Error(), "the migrated config would not load") || !strings.Contains(err.Error(), "api.endpoint") {
		t.Fatalf("err = %v", err)
	}
}

func TestMigrateFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dc-agent.toml")
	// The key beside the config, so that the only warning is the old keys'.
	orig := strings.Replace(readRust(t, "test-flat-script.toml"), "/root/.dc-agent/agent.key", "agent.key", 1)
	if err := os.WriteFile(path, []byte(orig), 0o644); err != nil { // as the Rust agent's File::create leaves it
		t.Fatal(err)
	}
	// Without write: printed only.
	m, err := MigrateFile(mustLoad(t, path), false)
	if err != nil || m.Wrote || len(m.Loaded.Warnings) != 1 || len(m.Migrated.Warnings) != 0 || !strings.Contains(string(m.Text), "[provisioner.script]") {
		t.Fatalf("print: %v %+v", err, m)
	}
	out := m.Text
	if b, _ := os.ReadFile(path); string(b) != orig {
		t.Fatal("the file changed without write")
	}
	// A reader holding the old file keeps reading it: the file is replaced
	// by a rename, never rewritten in place.
	old, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	m, err = MigrateFile(mustLoad(t, path), true)
	if err != nil || !m.Wrote || string(m.Text) != string(out) {
		t.Fatalf("write: %v %+v", err, m)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v); want 0600", st.Mode(), err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(out) {
		t.Fatal("the file does not hold the printed form")
	}
	if b := make([]byte, len(orig)+1); func() bool { n, _ := old.ReadAt(b, 0); return string(b[:n]) != orig }() {
		t.Fatal("the old file was modified in place")
	}
	if ost, _ := old.Stat(); os.SameFile(ost, st) {
		t.Fatal("the file was not replaced")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left in the directory: %v", entries)
	}
	back, err := Load(path)
	if err != nil || len(back.Warnings) != 0 || back.Provisioner.Script.TimeoutSeconds != 600 {
		t.Fatalf("reload: %v %v", err, back)
	}
	// Nothing to migrate: not rewritten.
	before, _ := os.Stat(path)
	if m, err := MigrateFile(mustLoad(t, path), true); err != nil || m.Wrote {
		t.Fatalf("current file: %+v, %v", m, err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Fatal("a current file was rewritten")
	}
	// A file whose current form would not load is left as it is.
	cfg := mustLoad(t, path)
	cfg.API.Endpoint = "ftp://x" // set in memory, past validation
	cfg.legacy.warnings = []string{"x"}
	if _, err := MigrateFile(cfg, true); err == nil || !strings.Contains(err.Error(), `api.endpoint "ftp://x" is not an API URL`) || !strings.Contains(err.Error(), "the file is left as it is") {
		t.Fatalf("bad migration: %v", err)
	}
	if after, _ := os.Stat(path); !os.SameFile(before, after) {
		t.Fatal("the file was replaced by a migration that does not load")
	}
}

func mustLoad(t *testing.T, path string) *Config {
	t.Helper()
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestMigrateFileKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "changing a file's owner needs root")
	}
	path := filepath.Join(t.TempDir(), "dc-agent.toml")
	os.WriteFile(path, []byte(readRust(t, "test-flat-manual.toml")), 0o600)
	if err := os.Chown(path, 4242, 4343); err != nil {
		t.Fatal(err)
	}
	if m, err := MigrateFile(mustLoad(t, path), true); err != nil || !m.Wrote {
		t.Fatal(m, err)
	}
	st, _ := os.Stat(path)
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 4242 || sys.Gid != 4343 {
		t.Fatalf("owner %d:%d after migrate", sys.Uid, sys.Gid)
	}
}
