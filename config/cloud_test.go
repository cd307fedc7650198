package config

import (
	"strings"
	"testing"
)

// The earlier Rust agent's [provisioner.digitalocean] section (keys of
// dc-agent/src/config.rs DigitalOceanConfig) loads unchanged; the inline
// token and default_size, whose meaning differs here, are warned about.
func TestRustDigitalOceanSectionLoads(t *testing.T) {
	api := strings.Split(minimal, "[provisioner]")[0]
	cfg := mustParse(t, api+`
[provisioner]
type = "digitalocean"
[provisioner.digitalocean]
api_token = "dop_v1_0123456789abcdef"
default_size = "s-2vcpu-4gb"
default_region = "ams3"
default_image = "debian-12-x64"
`)
	d := cfg.Provisioner.DigitalOcean
	if d == nil || d.APIToken != "dop_v1_0123456789abcdef" || d.DefaultSize != "s-2vcpu-4gb" || d.DefaultRegion != "ams3" || d.DefaultImage != "debian-12-x64" {
		t.Fatalf("section: %+v", d)
	}
	if d.ActionTimeoutSeconds != 300 || d.PollIntervalMs != 5000 {
		t.Fatalf("defaults: %+v", d)
	}
	w := strings.Join(cfg.Warnings, "\n")
	if len(cfg.Warnings) != 2 || !strings.Contains(w, "api_token holds the token inline") || !strings.Contains(w, `default_size = "s-2vcpu-4gb" is used only for offerings`) {
		t.Fatalf("warnings: %q", cfg.Warnings)
	}
	// Only the key that the earlier agent required: its defaults apply.
	cfg = mustParse(t, api+"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\napi_token_file = \"do-token\"\n")
	if d := cfg.Provisioner.DigitalOcean; d.DefaultRegion != "nyc3" || d.DefaultImage != "ubuntu-24-04-x64" || len(cfg.Warnings) != 0 {
		t.Fatalf("defaults: %+v %q", d, cfg.Warnings)
	}
}

func TestCloudSectionProblems(t *testing.T) {
	api := strings.Split(minimal, "[provisioner]")[0]
	for _, tc := range []struct{ section, want string }{
		{"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\ndefault_region = \"ams3\"\n", "provisioner.digitalocean.api_token_file is missing"},
		{"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\napi_token = \"YOUR_TOKEN\"\n", "provisioner.digitalocean.api_token is a placeholder"},
		{"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\napi_token_file = \"t\"\nendpoint = \"digitalocean\"\n", `endpoint "digitalocean" is not a URL`},
		{"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\napi_token_file = \"t\"\npoll_interval_ms = -5\n", "poll_interval_ms = -5 is out of range"},
		{"[provisioner]\ntype = \"digitalocean\"\n[provisioner.digitalocean]\napi_token_file = \"t\"\ndefault_sise = \"x\"\n", `unknown key "default_sise" in [provisioner.digitalocean]; did you mean "default_size"?`},
		{"[provisioner]\ntype = \"vultr\"\n[provisioner.vultr]\ndefault_region = \"ams\"\n", "provisioner.vultr.api_token_file is missing"},
		{"[provisioner]\ntype = \"vultr\"\n[provisioner.vultr]\napi_token_file = \"t\"\nrequests_per_second = 100\n", "requests_per_second = 100 is out of range; use 1..30"},
		{"[provisioner]\ntype = \"vultr\"\n[provisioner.vultr]\napi_token_file = \"t\"\naction_timeout_seconds = 99999\n", "action_timeout_seconds = 99999 is out of range"},
		{"[provisioner]\ntype = \"vultr\"\n[provisioner.digitalocean]\napi_token_file = \"t\"\n", `the section is [provisioner.digitalocean]; set type = "digitalocean"`},
	} {
		_, err := Parse([]byte(api + tc.section))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.section, err, tc.want)
		}
	}
	cfg := mustParse(t, api+"[provisioner]\ntype = \"vultr\"\n[provisioner.vultr]\napi_token_file = \"t\"\n")
	if v := cfg.Provisioner.Vultr; v.DefaultRegion != "ewr" || v.DefaultOSID != 2284 || v.PlanType != "vc2" || v.RequestsPerSecond != 20 || len(cfg.Warnings) != 0 {
		t.Fatalf("vultr defaults %+v %q", v, cfg.Warnings)
	}
}

// The Rust agent's flat form (dc-agent/src/config.rs RawProvisionerConfig:
// api_token, do_size, do_region, do_image under [provisioner]) moves into
// [provisioner.digitalocean], and migrate writes it there.
func TestRustFlatDigitalOceanKeys(t *testing.T) {
	api := strings.Split(minimal, "[provisioner]")[0]
	cfg := mustParse(t, api+`
[provisioner]
type = "digitalocean"
api_token = "dop_v1_flat"
do_size = "s-1vcpu-2gb"
do_region = "fra1"
do_image = "debian-12-x64"
`)
	d := cfg.Provisioner.DigitalOcean
	if d == nil || d.APIToken != "dop_v1_flat" || d.DefaultSize != "s-1vcpu-2gb" || d.DefaultRegion != "fra1" || d.DefaultImage != "debian-12-x64" || d.PollIntervalMs != DefaultCloudPollIntervalMs {
		t.Fatalf("section %+v", d)
	}
	w := strings.Join(cfg.Warnings, "\n")
	if !strings.Contains(w, "provisioner.do_size → provisioner.digitalocean.default_size") || !strings.Contains(w, "api_token holds the token inline") {
		t.Fatalf("warnings %q", cfg.Warnings)
	}
	out, back, err := Migrate(cfg)
	if err != nil || !strings.Contains(string(out), "[provisioner.digitalocean]") || back.Provisioner.DigitalOcean.DefaultRegion != "fra1" {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	// Flat keys of another type are ignored, as the Rust agent ignored them.
	cfg = mustParse(t, api+"[provisioner]\ntype = \"vultr\"\ndo_size = \"x\"\n[provisioner.vultr]\napi_token_file = \"t\"\n")
	if !strings.Contains(strings.Join(cfg.Warnings, "\n"), "do_size is the Rust agent's flat form of digitalocean settings") || cfg.Provisioner.DigitalOcean != nil {
		t.Fatalf("warnings %q", cfg.Warnings)
	}
}
