package config

import (
	"fmt"
	"net/url"

	"github.com/decent-stuff/dc-agent/internal/safeurl"
)

// DigitalOcean and Vultr provisioner types.
const (
	TypeDigitalOcean = "digitalocean"
	TypeVultr        = "vultr"
)

// Defaults of the DigitalOcean and Vultr sections. The DigitalOcean ones
// are the earlier Rust agent's (dc-agent/src/config.rs default_do_region,
// default_do_image), so a migrated config means the same.
const (
	DefaultDORegion               = "nyc3"
	DefaultDOImage                = "ubuntu-24-04-x64"
	DefaultVultrRegion            = "ewr"
	DefaultVultrOSID              = 2284 // Ubuntu 24.04 LTS x64
	DefaultVultrPlanType          = "vc2"
	DefaultVultrRequestsPerSecond = 20 // Vultr allows 30 per second per IP
	DefaultCloudActionTimeout     = 300
	DefaultCloudPollIntervalMs    = 5000
)

// DigitalOceanConfig is [provisioner.digitalocean]. The earlier Rust agent's
// keys (api_token, default_size, default_region, default_image) load; the
// inline api_token and default_size are accepted with a warning (Validate).
type DigitalOceanConfig struct {
	// APITokenFile is the 0600 file holding a read/write personal access token.
	APITokenFile string `toml:"api_token_file,omitempty"`
	// APIToken is the earlier agent's inline token (warned).
	APIToken      string `toml:"api_token,omitempty"`
	Endpoint      string `toml:"endpoint,omitempty"`
	DefaultRegion string `toml:"default_region"`
	DefaultImage  string `toml:"default_image"`
	// DefaultSize is the size slug of offerings with no size of their own
	// and no sizes entry, used only when it covers the offering.
	DefaultSize string `toml:"default_size,omitempty"`
	// Sizes maps offering ids to size slugs; otherwise the smallest size
	// that fits the offering is chosen.
	Sizes map[string]string `toml:"sizes,omitempty"`
	// Regions maps datacenter cities to region slugs.
	Regions map[string]string `toml:"regions,omitempty"`
	// ActionTimeoutSeconds bounds each wait (an action, the droplet becoming
	// active with an address, its deletion).
	ActionTimeoutSeconds int `toml:"action_timeout_seconds,omitempty"`
	// PollIntervalMs is how often actions and droplets are polled.
	PollIntervalMs int `toml:"poll_interval_ms,omitempty"`
}

// VultrConfig is [provisioner.vultr].
type VultrConfig struct {
	// APITokenFile is the 0600 file holding the Vultr API key.
	APITokenFile  string `toml:"api_token_file,omitempty"`
	Endpoint      string `toml:"endpoint,omitempty"`
	DefaultRegion string `toml:"default_region"`
	// DefaultOSID is the operating system (GET /v2/os) of new instances.
	DefaultOSID int `toml:"default_os_id"`
	// PlanType is the plan family sizes are picked from ("vc2" regular
	// cloud compute, "vhf" high frequency, ...).
	PlanType string `toml:"plan_type,omitempty"`
	// Plans maps offering ids to plan ids; otherwise the smallest plan of
	// PlanType that fits the offering is chosen.
	Plans map[string]string `toml:"plans,omitempty"`
	// Regions maps datacenter cities to region ids.
	Regions              map[string]string `toml:"regions,omitempty"`
	ActionTimeoutSeconds int               `toml:"action_timeout_seconds,omitempty"`
	PollIntervalMs       int               `toml:"poll_interval_ms,omitempty"`
	// RequestsPerSecond paces API calls (Vultr answers 429 above 30 per
	// second from one address).
	RequestsPerSecond int `toml:"requests_per_second,omitempty"`
}

func (d *DigitalOceanConfig) applyDefaults() {
	setDefault(&d.DefaultRegion, DefaultDORegion)
	setDefault(&d.DefaultImage, DefaultDOImage)
	setDefault(&d.ActionTimeoutSeconds, DefaultCloudActionTimeout)
	setDefault(&d.PollIntervalMs, DefaultCloudPollIntervalMs)
}

func (v *VultrConfig) applyDefaults() {
	setDefault(&v.DefaultRegion, DefaultVultrRegion)
	setDefault(&v.DefaultOSID, DefaultVultrOSID)
	setDefault(&v.PlanType, DefaultVultrPlanType)
	setDefault(&v.ActionTimeoutSeconds, DefaultCloudActionTimeout)
	setDefault(&v.PollIntervalMs, DefaultCloudPollIntervalMs)
	setDefault(&v.RequestsPerSecond, DefaultVultrRequestsPerSecond)
}

func (d *DigitalOceanConfig) validate(s string, warn func(string, ...any)) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	switch {
	case d.APITokenFile == "" && d.APIToken == "":
		add("%s.api_token_file is missing; put a DigitalOcean personal access token (read and write) in a 0600 file and set api_token_file to its path", s)
	case d.APIToken != "" && placeholderRe.MatchString(d.APIToken):
		add("%s.api_token is a placeholder; put the real token in a 0600 file and set api_token_file", s)
	case d.APIToken != "" && d.APITokenFile != "":
		warn("%s has both api_token_file and the inline api_token; the file is used, remove api_token", s)
	case d.APIToken != "":
		warn("%s.api_token holds the token inline (the earlier agent's key); move it to a 0600 file and use api_token_file", s)
	}
	if d.DefaultSize != "" {
		warn("%s.default_size = %q is used only for offerings without a size (sizes table or the offering's \"size\") that it covers; larger offerings get the smallest size that fits (the earlier agent used default_size for every offering)", s, d.DefaultSize)
	}
	out = append(out, checkCloudCommon(s, "DigitalOcean", "https://api.digitalocean.com", d.Endpoint, d.ActionTimeoutSeconds, d.PollIntervalMs)...)
	return out
}

func (v *VultrConfig) validate(s string) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if v.APITokenFile == "" {
		add("%s.api_token_file is missing; put the Vultr API key (Account > API) in a 0600 file and set api_token_file to its path", s)
	}
	if v.DefaultOSID < 1 {
		add("%s.default_os_id = %d is not an operating system id; use one listed by GET /v2/os, e.g. %d (Ubuntu 24.04 LTS x64)", s, v.DefaultOSID, DefaultVultrOSID)
	}
	if v.RequestsPerSecond < 1 || v.RequestsPerSecond > 30 {
		add("%s.requests_per_second = %d is out of range; use 1..30 (Vultr answers 429 above 30 per second; default %d)", s, v.RequestsPerSecond, DefaultVultrRequestsPerSecond)
	}
	out = append(out, checkCloudCommon(s, "Vultr", "https://api.vultr.com", v.Endpoint, v.ActionTimeoutSeconds, v.PollIntervalMs)...)
	return out
}

func checkCloudCommon(s, provider, example, endpoint string, timeout, pollMs int) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if u, err := url.Parse(endpoint); endpoint != "" && (err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "") {
		add("%s.endpoint %q is not a URL; remove it to use the %s API, or set e.g. %q", s, endpoint, provider, example)
	} else if endpoint != "" && safeurl.Check(u) != nil {
		add("%s.endpoint %q would send the API token over plain http; use https:// (http:// only for a loopback address)", s, endpoint)
	}
	checkRange(add, s+".action_timeout_seconds", timeout, 1, 3600, DefaultCloudActionTimeout)
	checkRange(add, s+".poll_interval_ms", pollMs, 1, 60000, DefaultCloudPollIntervalMs)
	return out
}
