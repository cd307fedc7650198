package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const examplePath = "../packaging/dc-agent.toml.example"

// minimal is the smallest valid config: everything else has a default.
const minimal = `
[api]
endpoint = "https://api.decent-cloud.org"
provider_pubkey = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
agent_secret_key = "agent.key"

[provisioner]
type = "script"
[provisioner.script]
provision = "/opt/dc/provision.sh"
terminate = "/opt/dc/terminate.sh"
health_check = "/opt/dc/health.sh"
`

func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(text))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, text)
	}
	return cfg
}

func TestDefaults(t *testing.T) {
	cfg := mustParse(t, minimal)
	checks := map[string][2]any{
		"interval":        {cfg.Polling.IntervalSeconds, 30},
		"health interval": {cfg.Polling.HealthCheckIntervalSeconds, 300},
		"reconcile":       {cfg.Polling.ReconcileIntervalSeconds, 300},
		"orphan grace":    {cfg.Polling.OrphanGracePeriodSeconds, 3600},
		"state dir":       {cfg.Agent.StateDir, "/var/lib/dc-agent"},
		"status socket":   {cfg.Agent.StatusSocket, "/run/dc-agent/status.sock"},
		"max concurrent":  {cfg.Agent.MaxConcurrentProvisions, 4},
		"shutdown grace":  {cfg.Agent.ShutdownGraceSeconds, 300},
		"metrics":         {cfg.Agent.MetricsListen, ""},
		"script timeout":  {cfg.Provisioner.Script.TimeoutSeconds, 300},
		"script output":   {cfg.Provisioner.Script.MaxOutputBytes, 1 << 20},
		"long poll unset": {cfg.Polling.LongPoll == nil, true},
	}
	for name, c := range checks {
		if !reflect.DeepEqual(c[0], c[1]) {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("warnings: %v", cfg.Warnings)
	}

	cfg2 := mustParse(t, strings.Split(minimal, "[provisioner]")[0]+`
[provisioner]
type = "proxmox"
[provisioner.proxmox]
api_url = "https://10.0.0.2:8006"
api_token_id = "dc-agent@pve!agent"
api_token_secret_file = "pve-token"
node = "pve1"
template_vmid = 9000
insecure_skip_verify = true

[[additional_provisioners]]
type = "docker"
[additional_provisioners.docker]
image = "ubuntu-sshd:24.04"

[[additional_provisioners]]
type = "hetzner"
[additional_provisioners.hetzner]
api_token_file = "hcloud-token"

[[additional_provisioners]]
type = "manual"
`)
	p := cfg2.Provisioner.Proxmox
	if p.Storage != "local-lvm" || p.Bridge != "vmbr0" || p.MaxParallelClones != 2 || p.IPWaitAttempts != 30 || p.IPWaitIntervalSec != 5 || p.CIUser != "root" {
		t.Errorf("proxmox defaults: %+v", p)
	}
	d := cfg2.AdditionalProvisioners[0].Docker
	if d.Socket != "/var/run/docker.sock" || d.SSHPortRangeStart != 20000 || d.SSHPortRangeEnd != 20999 || d.PublishIP != "0.0.0.0" || d.RestartPolicy != "unless-stopped" || d.PullTimeoutSecond != 600 {
		t.Errorf("docker defaults: %+v", d)
	}
	h := cfg2.AdditionalProvisioners[1].Hetzner
	if h.DefaultLocation != "fsn1" || h.DefaultImage != "ubuntu-24.04" || h.ActionTimeoutSecond != 300 {
		t.Errorf("hetzner defaults: %+v", h)
	}
	if cfg2.AdditionalProvisioners[2].Manual == nil {
		t.Error("manual without a section gets an empty one")
	}
}

// uncommentExample enables every commented-out setting of the example,
// including the [[additional_provisioners]] blocks.
func uncommentExample(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	setting := regexp.MustCompile(`^# ([a-z_]+ = .*|\[\[?additional_provisioners[a-z_.]*\]\]?|\[gateway\])$`)
	lines := strings.Split(string(b), "\n")
	n := 0
	for i, l := range lines {
		if m := setting.FindStringSubmatch(l); m != nil {
			lines[i] = m[1]
			n++
		}
	}
	if n < 30 {
		t.Fatalf("only %d commented settings found in the example", n)
	}
	return strings.Join(lines, "\n")
}

func TestExampleLoads(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("the shipped example does not load: %v", err)
	}
	if cfg.Provisioner.Type != TypeProxmox || cfg.Provisioner.Proxmox == nil || cfg.Path != examplePath {
		t.Fatalf("example: %+v", cfg.Provisioner)
	}
	if len(cfg.Warnings) != 0 {
		t.Errorf("the example causes warnings: %v", cfg.Warnings)
	}
	// Every documented optional setting is a valid key with a valid value.
	all := mustParse(t, uncommentExample(t))
	var types []string
	for _, p := range all.AdditionalProvisioners {
		types = append(types, p.Type)
	}
	if strings.Join(types, ",") != "docker,hetzner,digitalocean,vultr,script,manual" {
		t.Fatalf("additional provisioners in the example: %v", types)
	}
	if all.Gateway == nil || all.Gateway.DCID != "dc-lk" || all.Gateway.PortsPerVM != 10 {
		t.Fatalf("[gateway] in the example: %+v", all.Gateway)
	}
	if all.Provisioner.Proxmox.Templates["debian-12"] != 9001 || all.AdditionalProvisioners[1].Hetzner.Locations["Helsinki"] != "hel1" {
		t.Fatalf("inline tables not decoded: %+v", all.Provisioner.Proxmox.Templates)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	cfg := mustParse(t, uncommentExample(t))
	yes := true
	cfg.Polling.LongPoll = &yes
	cfg.Agent.MetricsListen = "127.0.0.1:9464"
	path := filepath.Join(t.TempDir(), "etc", "dc-agent.toml")
	if err := Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("saved mode %v, %v; want 0600", st.Mode(), err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	if back.Path != path {
		t.Errorf("Path %q", back.Path)
	}
	back.Path, cfg.Path = "", ""
	if !reflect.DeepEqual(back, cfg) {
		t.Fatalf("round trip changed the config:\nsaved  %+v\nloaded %+v", cfg, back)
	}
	// Saving again replaces atomically: same mode, no temp files left.
	cfg.Polling.IntervalSeconds = 45
	if err := Save(path, cfg); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("%d files in the config dir after two saves", len(entries))
	}
	if again, _ := Load(path); again.Polling.IntervalSeconds != 45 {
		t.Fatal("second save not visible")
	}
}

func TestProvisionerSelection(t *testing.T) {
	cfg := mustParse(t, uncommentExample(t))
	for typ, want := range map[string]string{"": "proxmox", "proxmox": "proxmox", "docker": "docker", "hetzner": "hetzner", "digitalocean": "digitalocean", "vultr": "vultr", "script": "script", "manual": "manual"} {
		p, ok := cfg.ProvisionerFor(typ)
		if !ok || p.Type != want {
			t.Errorf("ProvisionerFor(%q) = %q, %v; want %q", typ, p.Type, ok, want)
		}
	}
	if p, ok := cfg.ProvisionerFor("docker"); !ok || p.Docker == nil || p.Docker.Image != "ghcr.io/example/ubuntu-sshd:24.04" {
		t.Errorf("docker settings not carried: %+v", p)
	}
	if _, ok := cfg.ProvisionerFor("vmware"); ok {
		t.Error("unknown type selected")
	}
	if got := len(cfg.AllProvisioners()); got != 7 {
		t.Errorf("AllProvisioners: %d", got)
	}
}

// problems returns the problems Parse reports for text.
func problems(t *testing.T, text string) []string {
	t.Helper()
	_, err := Parse([]byte(text))
	if err == nil {
		t.Fatalf("accepted:\n%s", text)
	}
	var le *LoadError
	if !errors.As(err, &le) {
		t.Fatalf("error %T is not a *LoadError: %v", err, err)
	}
	return le.Problems
}

func TestValidationMessages(t *testing.T) {
	base := minimal
	set := func(old, new string) string {
		if !strings.Contains(base, old) {
			t.Fatalf("test setup: %q not in base", old)
		}
		return strings.Replace(base, old, new, 1)
	}
	add := func(section, line string) string {
		if !strings.Contains(base, section+"\n") {
			return base + "\n" + section + "\n" + line + "\n"
		}
		return strings.Replace(base, section+"\n", section+"\n"+line+"\n", 1)
	}
	script := "[provisioner.script]"
	proxmoxBase := strings.Split(base, "[provisioner]")[0] + `[provisioner]
type = "proxmox"
[provisioner.proxmox]
api_url = "https://10.0.0.2:8006"
api_token_id = "dc-agent@pve!agent"
api_token_secret_file = "pve-token"
node = "pve1"
template_vmid = 9000
tls_fingerprint = "` + strings.Repeat("ab", 32) + `"
`
	mustParse(t, proxmoxBase)
	px := func(old, new string) string {
		if !strings.Contains(proxmoxBase, old) {
			t.Fatalf("test setup: %q not in proxmox base", old)
		}
		return strings.Replace(proxmoxBase, old, new, 1)
	}
	pxAdd := func(line string) string { return proxmoxBase + line + "\n" }
	extra := func(block string) string { return base + "\n" + block }

	cases := []struct{ name, text, want string }{
		{"missing endpoint", set(`endpoint = "https://api.decent-cloud.org"`, ""), `api.endpoint is missing; set it to the Decent Cloud API URL, e.g. endpoint = "https://api.decent-cloud.org"`},
		{"endpoint not url", set(`"https://api.decent-cloud.org"`, `"api.decent-cloud.org"`), `api.endpoint "api.decent-cloud.org" is not an API URL; use e.g.`},
		{"endpoint no host", set(`"https://api.decent-cloud.org"`, `"https://"`), "is not an API URL"},
		{"missing provider", set(`provider_pubkey = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"`, ""), "api.provider_pubkey is missing; set it to your provider public key"},
		{"bad provider", set(`"197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"`, `"197f"`), "api.provider_pubkey: public key must be 64 hex characters, got 4; copy the 64-hex provider public key"},
		{"missing agent key", set(`agent_secret_key = "agent.key"`, ""), "api.agent_secret_key is missing; register with a setup token (dc-agent register --setup-token file:PATH creates the key and sets it)"},
		{"legacy main key", add("[api]", `provider_secret_key = "x"`), "must not live on the agent host; remove it"},
		{"negative timeout", add("[api]", "timeout_seconds = -1"), "api.timeout_seconds = -1 must not be negative"},
		{"interval", add("[polling]", "interval_seconds = 7200"), "polling.interval_seconds = 7200 is out of range; use 1..3600 (default 30)"},
		{"health interval", add("[polling]", "health_check_interval_seconds = 5"), "polling.health_check_interval_seconds = 5 is out of range; use 10..86400"},
		{"reconcile", add("[polling]", "reconcile_interval_seconds = 3"), "polling.reconcile_interval_seconds = 3 is too small; use at least 10"},
		{"orphan grace", add("[polling]", "orphan_grace_period_seconds = -1"), "polling.orphan_grace_period_seconds = -1 must not be negative"},
		{"max concurrent", add("[agent]", "max_concurrent_provisions = 1000"), "agent.max_concurrent_provisions = 1000 is out of range; use 1..256"},
		{"shutdown grace", add("[agent]", "shutdown_grace_seconds = -2"), "agent.shutdown_grace_seconds = -2 must not be negative"},
		{"metrics listen", add("[agent]", `metrics_listen = "9464"`), `agent.metrics_listen "9464" is not host:port; use e.g. "127.0.0.1:9464"`},
		{"missing type", set(`type = "script"`, ""), "provisioner.type is missing; set it to one of proxmox, hetzner, digitalocean, vultr, docker, script, manual"},
		{"typo type", set(`type = "script"`, `type = "scirpt"`), `provisioner.type "scirpt" is not a provisioner; did you mean "script"?`},
		{"unknown type", set(`type = "script"`, `type = "vmware"`), `provisioner.type "vmware" is not a provisioner; use one of proxmox`},
		{"missing section", proxmoxBase[:strings.Index(proxmoxBase, "[provisioner.proxmox]")], `provisioner.type is "proxmox" but [provisioner.proxmox] is missing; add that section`},
		{"section for another type", set(`type = "script"`, `type = "docker"`), `provisioner.type is "docker" but the section is [provisioner.script]; set type = "script" or rename the section to [provisioner.docker]`},
		{"negative max_concurrent", add("[provisioner]", "max_concurrent = -1"), "provisioner.max_concurrent = -1 must not be negative"},
		{"allow not a key", add("[provisioner]", `instance_config_allow = ["ip config"]`), `provisioner.instance_config_allow entry "ip config" is not a key name; use top-level instance_config keys`},
		{"allow empty", add("[provisioner]", `instance_config_allow = [""]`), `provisioner.instance_config_allow entry "" is not a key name`},
		{"allow twice", add("[provisioner]", `instance_config_allow = ["hostname", "hostname"]`), `provisioner.instance_config_allow lists "hostname" twice; remove one`},
		{"allow additional", extra("[[additional_provisioners]]\ntype = \"docker\"\ninstance_config_allow = [\"a*\"]\n[additional_provisioners.docker]\nimage = \"x\"\n"), `additional_provisioners[0].instance_config_allow entry "a*" is not a key name`},
		{"script provision", set(`provision = "/opt/dc/provision.sh"`, ""), "provisioner.script.provision is missing; set the path of the script that creates an instance"},
		{"script terminate", set(`terminate = "/opt/dc/terminate.sh"`, ""), "provisioner.script.terminate is missing"},
		{"script health", set(`health_check = "/opt/dc/health.sh"`, ""), "provisioner.script.health_check is missing"},
		{"script timeout", add(script, "timeout_seconds = 100000"), "provisioner.script.timeout_seconds = 100000 is out of range; use 1..86400"},
		{"script placeholder", set(`"/opt/dc/health.sh"`, `"/path/to/your-script.sh"`), `looks like a placeholder; set the real script path`},
		{"duplicate additional", extra("[[additional_provisioners]]\ntype = \"script\"\n[additional_provisioners.script]\nprovision=\"a\"\nterminate=\"b\"\nhealth_check=\"c\"\n"), `additional_provisioners[0]: type "script" is configured twice`},
		{"docker image", extra("[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nsocket = \"/run/docker.sock\"\n"), "additional_provisioners[0].docker.image is missing"},
		{"docker ports", extra("[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nimage = \"x\"\nssh_port_range_start = 3000\nssh_port_range_end = 2000\n"), "(3000..2000) is not a valid port range; use e.g. 20000..20999"},
		{"docker publish ip", extra("[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nimage = \"x\"\npublish_ip = \"localhost\"\n"), `publish_ip "localhost" is not an IP address`},
		{"docker restart", extra("[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nimage = \"x\"\nrestart_policy = \"sometimes\"\n"), `restart_policy "sometimes" is not one of no, always, unless-stopped, on-failure`},
		{"hetzner token", extra("[[additional_provisioners]]\ntype = \"hetzner\"\n[additional_provisioners.hetzner]\ndefault_location = \"hel1\"\n"), "additional_provisioners[0].hetzner.api_token_file is missing; put the Hetzner Cloud API token in a 0600 file"},
		{"hetzner endpoint", extra("[[additional_provisioners]]\ntype = \"hetzner\"\n[additional_provisioners.hetzner]\napi_token_file = \"t\"\nendpoint = \"hetzner\"\n"), `endpoint "hetzner" is not a URL`},
		{"manual webhook", extra("[[additional_provisioners]]\ntype = \"manual\"\n[additional_provisioners.manual]\nnotification_webhook = \"https://example.com/hook\"\n"), "is not a usable URL; set your real https:// webhook"},
		{"section for other type", extra("[provisioner.docker]\nimage = \"x\"\n"), `provisioner has a [provisioner.docker] section but type = "script"; remove the section or add it as [[additional_provisioners]]`},
		{"proxmox api_url missing", px(`api_url = "https://10.0.0.2:8006"`, ""), "provisioner.proxmox.api_url is missing; set it to https://<proxmox-host>:8006"},
		{"proxmox api_url http", px(`"https://10.0.0.2:8006"`, `"http://10.0.0.2:8006"`), "must be an https:// URL"},
		{"proxmox api_url placeholder", px(`"https://10.0.0.2:8006"`, `"https://your-proxmox:8006"`), "looks like a placeholder; set your Proxmox host"},
		{"proxmox token id missing", px(`api_token_id = "dc-agent@pve!agent"`, ""), "provisioner.proxmox.api_token_id is missing"},
		{"proxmox token id form", px(`"dc-agent@pve!agent"`, `"dc-agent"`), `api_token_id "dc-agent" must look like user@realm!tokenname`},
		{"proxmox secret missing", px(`api_token_secret_file = "pve-token"`, ""), "api_token_secret_file is missing; put the token secret in a 0600 file"},
		{"proxmox secret placeholder", px(`api_token_secret_file = "pve-token"`, `api_token_secret = "your-secret-here"`), "api_token_secret is a placeholder"},
		{"proxmox node", px(`node = "pve1"`, ""), "provisioner.proxmox.node is missing; set the Proxmox node name"},
		{"proxmox vmid", px("template_vmid = 9000", "template_vmid = 5"), "template_vmid = 5 is not a VMID; set the template's VMID (100..999999999)"},
		{"proxmox templates", pxAdd(`templates = { "deb" = 1 }`), "provisioner.proxmox.templates.deb = 1 is not a VMID"},
		{"proxmox fingerprint", px(`tls_fingerprint = "`+strings.Repeat("ab", 32)+`"`, `tls_fingerprint = "AA:BB"`), `is not a SHA-256 fingerprint (64 hex digits, colons allowed); copy ssl_fingerprint`},
		{"proxmox fingerprint missing", px(`tls_fingerprint = "`+strings.Repeat("ab", 32)+`"`, ""), "tls_fingerprint is missing; pin the node certificate"},
		{"proxmox clones", pxAdd("max_parallel_clones = 64"), "max_parallel_clones = 64 is out of range; use 1..32"},
		{"proxmox ip wait", pxAdd("ip_wait_attempts = -1"), "ip_wait_attempts (-1) and ip_wait_interval_secs (5) must be positive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := problems(t, c.text)
			if len(p) != 1 {
				t.Fatalf("want exactly one problem, got %d: %q", len(p), p)
			}
			if !strings.Contains(p[0], c.want) {
				t.Fatalf("problem %q does not contain %q", p[0], c.want)
			}
		})
	}
}

func TestSeveralProblemsListed(t *testing.T) {
	_, err := Parse([]byte(strings.NewReplacer(`endpoint = "https://api.decent-cloud.org"`, "", `provision = "/opt/dc/provision.sh"`, "", "[polling]", "").Replace(minimal) + "[agent]\nmax_concurrent_provisions = -1\n"))
	if err == nil || !strings.Contains(err.Error(), "has 3 problems:\n  - api.endpoint is missing") {
		t.Fatalf("%v", err)
	}
}

func TestWarnings(t *testing.T) {
	cfg := mustParse(t, strings.Replace(minimal, `agent_secret_key = "agent.key"`, `agent_secret_key = "`+strings.Repeat("ab", 32)+`"`, 1))
	if len(cfg.Warnings) != 1 || !strings.Contains(cfg.Warnings[0], "move it to a 0600 file") {
		t.Fatalf("inline key warnings: %v", cfg.Warnings)
	}
	if cfg.AgentKeyPath() != "" {
		t.Fatal("inline key has a path")
	}
	k, err := cfg.LoadAgentKey()
	if err != nil || len(k) != 64 {
		t.Fatalf("inline key: %v", err)
	}
	// Validate twice: the warning is not duplicated.
	cfg.Validate()
	if len(cfg.Warnings) != 1 {
		t.Fatalf("warnings after a second Validate: %v", cfg.Warnings)
	}
	allow := mustParse(t, strings.Replace(minimal, "[provisioner]\n", "[provisioner]\ninstance_config_allow = [\"ipconfig0\", \"template_vmid\"]\n", 1))
	if !slices.Equal(allow.Provisioner.InstanceConfigAllow, []string{"ipconfig0", "template_vmid"}) || len(allow.Warnings) != 0 {
		t.Fatalf("instance_config_allow = %q, warnings %v", allow.Provisioner.InstanceConfigAllow, allow.Warnings)
	}
	all := mustParse(t, strings.Replace(minimal, "[provisioner]\n", "[provisioner]\ninstance_config_allow = [\"*\"]\n", 1))
	if len(all.Warnings) != 1 || !strings.Contains(all.Warnings[0], `provisioner.instance_config_allow has "*": a contract's requester may set every config key`) {
		t.Fatalf("allow-all warnings: %v", all.Warnings)
	}
	legacy := mustParse(t, strings.Split(minimal, "[provisioner]")[0]+`
[provisioner]
type = "proxmox"
[provisioner.proxmox]
api_url = "https://10.0.0.2:8006"
api_token_id = "dc-agent@pve!agent"
api_token_secret = "0d7c1f7e-1234-4c1a-9c1e-abcdefabcdef"
node = "pve1"
template_vmid = 9000
verify_ssl = false
`)
	if !legacy.Provisioner.Proxmox.InsecureSkipVerify {
		t.Error("verify_ssl = false does not map to insecure_skip_verify")
	}
	if w := strings.Join(legacy.Warnings, "\n"); !strings.Contains(w, "verify_ssl = false is deprecated") || !strings.Contains(w, "api_token_secret holds the secret inline") {
		t.Errorf("legacy warnings: %v", legacy.Warnings)
	}
}

func TestUnknownKeysAndTypes(t *testing.T) {
	cases := []struct{ name, text, want string }{
		{"typo in [api]", strings.Replace(minimal, "endpoint =", "endpont =", 1), `line 3: unknown key "endpont" in [api]; did you mean "endpoint"?`},
		{"typo at top level", "polling_interval = 3\n" + minimal, `line 1: unknown key "polling_interval" at top level`},
		{"typo'd section", strings.ReplaceAll(minimal, "[provisioner.script]", "[provisioner.scrpit]"), `line 9: unknown section "scrpit" in [provisioner]; did you mean "script"?`},
		{"unknown key no suggestion", strings.Replace(minimal, "[api]\n", "[api]\ncolour = 1\n", 1), `unknown key "colour" in [api]; remove it (see packaging/dc-agent.toml.example for the valid keys)`},
		{"typo in additional", minimal + "[[additional_provisioners]]\ntype = \"docker\"\n[additional_provisioners.docker]\nimagee = \"x\"\n", `line 16: unknown key "imagee" in [additional_provisioners.docker]; did you mean "image"?`},
		{"string for int", minimal + "[polling]\ninterval_seconds = \"30\"\n", `line 14: polling.interval_seconds must be a whole number, not text in quotes; write it as interval_seconds = 30 (no quotes)`},
		{"int for string", strings.Replace(minimal, `endpoint = "https://api.decent-cloud.org"`, "endpoint = 5", 1), `line 3: api.endpoint must be text in quotes, not a whole number; write it as endpoint = "..."`},
		{"string for bool", minimal + "[agent]\nauto_update = \"yes\"\n", "agent.auto_update must be true or false, not text in quotes"},
		{"syntax", "[api\n", "line 2: expected '.' or ']' to end table name"},
		{"unquoted text", "[api]\nendpoint = https://x\n", "line 2:"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := problems(t, c.text)
			if len(p) != 1 || !strings.Contains(p[0], c.want) {
				t.Fatalf("problems %q, want one containing %q", p, c.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "nope.toml")); err == nil || !strings.Contains(err.Error(), "does not exist; create it with: dc-agent setup proxmox") {
		t.Fatalf("missing file: %v", err)
	}
	p := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(p, []byte("[api]\nendpont = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p)
	if err == nil || !strings.HasPrefix(err.Error(), "config "+p+": line 2: unknown key") {
		t.Fatalf("error does not name the file first: %v", err)
	}
}

func TestPathsAndSecrets(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dc-agent.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AgentKeyPath() != filepath.Join(dir, "agent.key") || cfg.ResolvePath("/abs") != "/abs" || cfg.ResolvePath("") != "" {
		t.Fatalf("paths: %s", cfg.AgentKeyPath())
	}
	if _, err := cfg.LoadAgentKey(); err == nil || !strings.Contains(err.Error(), "run: dc-agent init") {
		t.Fatalf("missing agent key: %v", err)
	}
	secret := filepath.Join(dir, "token")
	if err := os.WriteFile(secret, []byte("tok3n\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.ReadSecret("token", "", "proxmox token"); err == nil || !strings.Contains(err.Error(), "proxmox token: ") || !strings.Contains(err.Error(), "chmod 600 "+secret) {
		t.Fatalf("world-readable secret: %v", err)
	}
	if err := os.Chmod(secret, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := cfg.ReadSecret("token", "inline", "proxmox token"); err != nil || s != "tok3n" {
		t.Fatalf("secret file: %q %v", s, err)
	}
	if s, err := cfg.ReadSecret("", "inline", "x"); err != nil || s != "inline" {
		t.Fatalf("inline: %q %v", s, err)
	}
	if _, err := cfg.ReadSecret("", "", "hetzner token"); err == nil || !strings.Contains(err.Error(), "hetzner token is not configured") {
		t.Fatalf("none: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cfg.ReadSecret(empty, "", "t"); err == nil || !strings.Contains(err.Error(), "is empty") {
		t.Fatalf("empty: %v", err)
	}
}

func TestNormalizeFingerprint(t *testing.T) {
	want := strings.Repeat("ab", 32)
	for _, in := range []string{want, strings.ToUpper(want), strings.TrimSuffix(strings.Repeat("AB:", 32), ":")} {
		if got, err := NormalizeFingerprint(in); err != nil || got != want {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	if _, err := NormalizeFingerprint("AB:CD"); err == nil {
		t.Error("short fingerprint accepted")
	}
}
