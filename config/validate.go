package config

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"regexp"
	"strings"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/safeurl"
)

// Defaults.
const (
	DefaultEndpoint                   = "https://api.decent-cloud.org"
	DefaultIntervalSeconds            = 30
	DefaultHealthCheckIntervalSeconds = 300
	DefaultReconcileIntervalSeconds   = 300
	DefaultOrphanGracePeriodSeconds   = 3600
	DefaultStateDir                   = "/var/lib/dc-agent"
	DefaultStatusSocket               = "/run/dc-agent/status.sock"
	DefaultMaxConcurrentProvisions    = 4
	DefaultShutdownGraceSeconds       = 300
	DefaultProvisionRetrySeconds      = 600
	MaxProvisionRetrySeconds          = 1800 // well inside the live API's 1 h provisioning timeout
	DefaultMaxReadsPerMinute          = 60   // half the live API's per-IP read limit
	DefaultScriptTimeoutSeconds       = 300
	DefaultProxmoxStorage             = "local-lvm"
	DefaultProxmoxBridge              = "vmbr0"
	DefaultMaxParallelClones          = 2
	DefaultDockerSocket               = "/var/run/docker.sock"
	DefaultHetznerLocation            = "fsn1"
	DefaultHetznerImage               = "ubuntu-24.04"
	DefaultReleaseURL                 = "https://github.com/decent-stuff/dc-agent/releases"
)

// setDefault sets *p to def when it is unset (the zero value).
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

// checkRange adds the problem of an integer key outside lo..hi.
func checkRange(add func(string, ...any), key string, v, lo, hi, def int) {
	if v < lo || v > hi {
		add("%s = %d is out of range; use %d..%d (default %d)", key, v, lo, hi, def)
	}
}

func (c *Config) applyDefaults() {
	setDefault(&c.Polling.IntervalSeconds, DefaultIntervalSeconds)
	setDefault(&c.Polling.HealthCheckIntervalSeconds, DefaultHealthCheckIntervalSeconds)
	setDefault(&c.Polling.ReconcileIntervalSeconds, DefaultReconcileIntervalSeconds)
	setDefault(&c.Polling.OrphanGracePeriodSeconds, DefaultOrphanGracePeriodSeconds)
	setDefault(&c.Agent.StateDir, DefaultStateDir)
	setDefault(&c.Agent.StatusSocket, DefaultStatusSocket)
	setDefault(&c.Agent.MaxConcurrentProvisions, DefaultMaxConcurrentProvisions)
	setDefault(&c.Agent.ShutdownGraceSeconds, DefaultShutdownGraceSeconds)
	setDefault(&c.Agent.ReleaseURL, DefaultReleaseURL)
	c.Provisioner.applyDefaults()
	for i := range c.AdditionalProvisioners {
		c.AdditionalProvisioners[i].applyDefaults()
	}
	if c.Gateway != nil {
		c.Gateway.applyDefaults()
	}
}

func (p *ProvisionerConfig) applyDefaults() {
	if px := p.Proxmox; px != nil {
		setDefault(&px.Storage, DefaultProxmoxStorage)
		setDefault(&px.Bridge, DefaultProxmoxBridge)
		setDefault(&px.MaxParallelClones, DefaultMaxParallelClones)
		setDefault(&px.IPWaitAttempts, 30)
		setDefault(&px.IPWaitIntervalSec, 5)
		setDefault(&px.CIUser, "root")
	}
	if px := p.Proxmox; px != nil && px.VerifySSL != nil && !*px.VerifySSL {
		px.InsecureSkipVerify = true // legacy switch; Validate warns about it
	}
	if h := p.Hetzner; h != nil {
		setDefault(&h.DefaultLocation, DefaultHetznerLocation)
		setDefault(&h.DefaultImage, DefaultHetznerImage)
		setDefault(&h.ActionTimeoutSecond, 300)
	}
	if d := p.DigitalOcean; d != nil {
		d.applyDefaults()
	}
	if v := p.Vultr; v != nil {
		v.applyDefaults()
	}
	if d := p.Docker; d != nil {
		setDefault(&d.Socket, DefaultDockerSocket)
		if d.SSHPortRangeStart == 0 && d.SSHPortRangeEnd == 0 {
			d.SSHPortRangeStart, d.SSHPortRangeEnd = 20000, 20999
		}
		setDefault(&d.PublishIP, "0.0.0.0")
		setDefault(&d.RestartPolicy, "unless-stopped")
		setDefault(&d.PullTimeoutSecond, 600)
	}
	if s := p.Script; s != nil {
		setDefault(&s.TimeoutSeconds, DefaultScriptTimeoutSeconds)
		setDefault(&s.MaxOutputBytes, 1<<20)
	}
	if p.Type == TypeManual && p.Manual == nil {
		p.Manual = &ManualConfig{}
	}
}

var placeholderRe = regexp.MustCompile(`(?i)your[-_]|replace[-_]with|changeme|xxxxxxxx|example\.com`)

// Validate returns one actionable message per problem (nil if none) and
// records warnings in c.Warnings.
func (c *Config) Validate() []string {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	c.Warnings = c.loadWarnings() // Validate may run more than once; report each finding once
	warn := func(format string, args ...any) { c.Warnings = append(c.Warnings, fmt.Sprintf(format, args...)) }

	// [api]
	noAPI := strings.TrimSpace(c.API.Endpoint) == "" && c.API.ProviderPubkey == "" && c.API.AgentSecretKey == "" && c.API.ProviderSecretKey == ""
	switch {
	case noAPI:
		add("[api] is missing: register this agent with a setup token from the Decent Cloud dashboard (Agents > your pool > Add Agent): dc-agent register --setup-token file:PATH creates the agent key and writes endpoint, provider_pubkey, agent_secret_key and pool_id here")
	case strings.TrimSpace(c.API.Endpoint) == "":
		add("api.endpoint is missing; set it to the Decent Cloud API URL, e.g. endpoint = %q", DefaultEndpoint)
	default:
		if u, err := url.Parse(c.API.Endpoint); err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			add("api.endpoint %q is not an API URL; use e.g. endpoint = %q", c.API.Endpoint, DefaultEndpoint)
		} else if safeurl.Check(u) != nil {
			add("api.endpoint %q uses plain http to another machine, which anyone on the path could read and answer; use https:// (http:// only for a loopback address such as http://127.0.0.1:8080)", c.API.Endpoint)
		}
	}
	switch {
	case noAPI:
	case c.API.ProviderPubkey == "":
		add("api.provider_pubkey is missing; set it to your provider public key (64 hex characters, shown on the Decent Cloud dashboard), or register with a setup token (dc-agent register --setup-token file:PATH), which writes it")
	default:
		if _, err := identity.ParsePublicKeyHex(c.API.ProviderPubkey); err != nil {
			add("api.provider_pubkey: %v; copy the 64-hex provider public key from the Decent Cloud dashboard", err)
		}
	}
	switch {
	case noAPI:
	case c.API.ProviderSecretKey != "":
		add("api.provider_secret_key is the provider's main key and must not live on the agent host; remove it and register an agent key with a setup token from the Decent Cloud dashboard (dc-agent register --setup-token TOKEN), or run `dc-agent init` and delegate the agent key (dc-agent delegation request)")
	case c.API.AgentSecretKey == "":
		add("api.agent_secret_key is missing; register with a setup token (dc-agent register --setup-token file:PATH creates the key and sets it), or run `dc-agent init` and set agent_secret_key = \"/etc/dc-agent/agent.key\"")
	case isInlineHexKey(c.API.AgentSecretKey):
		warn("api.agent_secret_key holds the key inline; move it to a 0600 file (dc-agent init writes one) and set agent_secret_key to its path")
	}
	if c.API.TimeoutSeconds < 0 {
		add("api.timeout_seconds = %d must not be negative; remove it for the default (30) or set e.g. 30", c.API.TimeoutSeconds)
	}

	// [polling]
	checkRange(add, "polling.interval_seconds", c.Polling.IntervalSeconds, 1, 3600, DefaultIntervalSeconds)
	checkRange(add, "polling.health_check_interval_seconds", c.Polling.HealthCheckIntervalSeconds, 10, 86400, DefaultHealthCheckIntervalSeconds)
	if c.Polling.ReconcileIntervalSeconds < 10 {
		add("polling.reconcile_interval_seconds = %d is too small; use at least 10 (default %d)", c.Polling.ReconcileIntervalSeconds, DefaultReconcileIntervalSeconds)
	}
	if c.Polling.OrphanGracePeriodSeconds < 0 {
		add("polling.orphan_grace_period_seconds = %d must not be negative; remove it for the default (%d)", c.Polling.OrphanGracePeriodSeconds, DefaultOrphanGracePeriodSeconds)
	}

	// [agent]
	checkRange(add, "agent.max_concurrent_provisions", c.Agent.MaxConcurrentProvisions, 1, 256, DefaultMaxConcurrentProvisions)
	if c.Agent.ShutdownGraceSeconds < 0 {
		add("agent.shutdown_grace_seconds = %d must not be negative; remove it for the default (%d)", c.Agent.ShutdownGraceSeconds, DefaultShutdownGraceSeconds)
	}
	if r := c.Agent.ProvisionRetrySeconds; r != nil && (*r < 0 || *r > MaxProvisionRetrySeconds) {
		add("agent.provision_retry_seconds = %d is out of range; use 0 (report a failure at once) ..%d (the live API fails a contract still provisioning after an hour; default %d)", *r, MaxProvisionRetrySeconds, DefaultProvisionRetrySeconds)
	}
	if n := c.Polling.MaxReadsPerMinute; n < 0 || n > 1200 {
		add("polling.max_reads_per_minute = %d is out of range; use 1..1200 (the live API allows 120 per client IP; default %d)", n, DefaultMaxReadsPerMinute)
	}
	if c.Agent.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.Agent.MetricsListen); err != nil {
			add("agent.metrics_listen %q is not host:port; use e.g. \"127.0.0.1:9464\"", c.Agent.MetricsListen)
		}
	}

	// provisioners
	p = append(p, c.Provisioner.validate("provisioner", warn)...)
	seen := map[string]bool{c.Provisioner.Type: true}
	for i, ap := range c.AdditionalProvisioners {
		where := fmt.Sprintf("additional_provisioners[%d]", i)
		p = append(p, ap.validate(where, warn)...)
		if seen[ap.Type] {
			add("%s: type %q is configured twice; each type may appear once (contracts choose it by provisioner_type)", where, ap.Type)
		}
		seen[ap.Type] = true
	}

	// [gateway]
	if c.Gateway != nil {
		p = append(p, c.Gateway.Validate(warn)...)
	}
	return p
}

func (p *ProvisionerConfig) validate(where string, warn func(string, ...any)) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	sections := map[string]bool{
		TypeProxmox: p.Proxmox != nil, TypeHetzner: p.Hetzner != nil, TypeDocker: p.Docker != nil,
		TypeScript: p.Script != nil, TypeManual: p.Manual != nil,
		TypeDigitalOcean: p.DigitalOcean != nil, TypeVultr: p.Vultr != nil,
	}
	switch {
	case p.Type == "":
		add("%s.type is missing; set it to one of %s", where, strings.Join(ProvisionerTypes, ", "))
		return out
	case !knownType(p.Type):
		if s := suggest(p.Type, ProvisionerTypes); s != "" {
			add("%s.type %q is not a provisioner; did you mean %q?", where, p.Type, s)
		} else {
			add("%s.type %q is not a provisioner; use one of %s", where, p.Type, strings.Join(ProvisionerTypes, ", "))
		}
		return out
	case !sections[p.Type]:
		var present []string
		for _, t := range sortedKeys(sections) {
			if sections[t] {
				present = append(present, t)
			}
		}
		if len(present) == 1 {
			// One mistake, not two: the type and the section disagree.
			add("%s.type is %q but the section is [%s.%s]; set type = %q or rename the section to [%s.%s]", where, p.Type, where, present[0], present[0], where, p.Type)
			return out
		}
		add("%s.type is %q but [%s.%s] is missing; add that section (see packaging/dc-agent.toml.example)", where, p.Type, where, p.Type)
	}
	for _, t := range sortedKeys(sections) {
		if sections[t] && t != p.Type {
			add("%s has a [%s.%s] section but type = %q; remove the section or add it as [[additional_provisioners]]", where, where, t, p.Type)
		}
	}
	if p.MaxConcurrent < 0 {
		add("%s.max_concurrent = %d must not be negative; 0 means agent.max_concurrent_provisions", where, p.MaxConcurrent)
	}
	seen := map[string]bool{}
	for _, k := range p.InstanceConfigAllow {
		switch {
		case !instanceKeyRe.MatchString(k):
			add("%s.instance_config_allow entry %q is not a key name; use top-level instance_config keys like \"ipconfig0\" (letters, digits, _ - .), or \"*\" for every key", where, k)
		case seen[k]:
			add("%s.instance_config_allow lists %q twice; remove one", where, k)
		}
		seen[k] = true
	}
	if seen["*"] {
		warn("%s.instance_config_allow has \"*\": a contract's requester may set every config key of this backend (addresses, templates, ...); list the keys you mean instead", where)
	}
	s := where + "." + p.Type
	switch p.Type {
	case TypeProxmox:
		if px := p.Proxmox; px != nil {
			out = append(out, px.validate(s, warn)...)
		}
	case TypeHetzner:
		if h := p.Hetzner; h != nil {
			if h.APITokenFile == "" && h.APIToken == "" {
				add("%s.api_token_file is missing; put the Hetzner Cloud API token in a 0600 file and set api_token_file to its path", s)
			}
			if h.APIToken != "" {
				warn("%s.api_token holds the token inline; move it to a 0600 file and use api_token_file", s)
			}
			if u, err := url.Parse(h.Endpoint); h.Endpoint != "" && (err != nil || u.Scheme != "https" && u.Scheme != "http" || u.Host == "") {
				add("%s.endpoint %q is not a URL; remove it to use the Hetzner Cloud API, or set e.g. \"https://api.hetzner.cloud/v1\"", s, h.Endpoint)
			} else if h.Endpoint != "" && safeurl.Check(u) != nil {
				add("%s.endpoint %q would send the API token over plain http; use https:// (http:// only for a loopback address)", s, h.Endpoint)
			}
		}
	case TypeDigitalOcean:
		if d := p.DigitalOcean; d != nil {
			out = append(out, d.validate(s, warn)...)
		}
	case TypeVultr:
		if v := p.Vultr; v != nil {
			out = append(out, v.validate(s)...)
		}
	case TypeDocker:
		if d := p.Docker; d != nil {
			if d.Image == "" {
				add("%s.image is missing; set the image each contract's container runs, e.g. image = \"ubuntu:24.04\" with sshd", s)
			}
			if d.SSHPortRangeStart < 1 || d.SSHPortRangeEnd > 65535 || d.SSHPortRangeStart > d.SSHPortRangeEnd {
				add("%s: ssh_port_range_start..ssh_port_range_end (%d..%d) is not a valid port range; use e.g. 20000..20999 (within 1..65535, start ≤ end)", s, d.SSHPortRangeStart, d.SSHPortRangeEnd)
			}
			if net.ParseIP(d.PublishIP) == nil {
				add("%s.publish_ip %q is not an IP address; use e.g. \"0.0.0.0\" (all interfaces) or one of the host's addresses", s, d.PublishIP)
			}
			switch d.RestartPolicy {
			case "no", "always", "unless-stopped", "on-failure":
			default:
				add("%s.restart_policy %q is not one of no, always, unless-stopped, on-failure", s, d.RestartPolicy)
			}
			if d.PidsLimit < 0 {
				add("%s.pids_limit = %d must not be negative; remove it for the default (1024) or set e.g. 1024", s, d.PidsLimit)
			}
		}
	case TypeScript:
		if sc := p.Script; sc != nil {
			if sc.Provision == "" {
				add("%s.provision is missing; set the path of the script that creates an instance", s)
			}
			if sc.Terminate == "" {
				add("%s.terminate is missing; set the path of the script that removes an instance", s)
			}
			if sc.HealthCheck == "" {
				add("%s.health_check is missing; set the path of the script that checks an instance", s)
			}
			checkRange(add, s+".timeout_seconds", sc.TimeoutSeconds, 1, 86400, DefaultScriptTimeoutSeconds)
			for _, v := range []string{sc.Provision, sc.Terminate, sc.HealthCheck} {
				if placeholderRe.MatchString(v) {
					add("%s: %q looks like a placeholder; set the real script path", s, v)
				}
			}
		}
	case TypeManual:
		if m := p.Manual; m != nil && m.NotificationWebhook != "" {
			if u, err := url.Parse(m.NotificationWebhook); err != nil || u.Scheme == "" || u.Host == "" || placeholderRe.MatchString(m.NotificationWebhook) {
				add("%s.notification_webhook %q is not a usable URL; set your real https:// webhook or remove the key", s, m.NotificationWebhook)
			}
		}
	}
	return out
}

func (px *ProxmoxConfig) validate(s string, warn func(string, ...any)) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	if px.APIURL == "" {
		add("%s.api_url is missing; set it to https://<proxmox-host>:8006 (dc-agent setup proxmox fills it in)", s)
	} else if u, err := url.Parse(px.APIURL); err != nil || u.Scheme != "https" || u.Host == "" {
		add("%s.api_url %q must be an https:// URL like https://pve.example:8006", s, px.APIURL)
	} else if placeholderRe.MatchString(px.APIURL) {
		add("%s.api_url %q looks like a placeholder; set your Proxmox host", s, px.APIURL)
	}
	if px.APITokenID == "" {
		add("%s.api_token_id is missing; set it to the token id, e.g. \"dc-agent@pve!agent\"", s)
	} else if !strings.Contains(px.APITokenID, "!") || !strings.Contains(px.APITokenID, "@") {
		add("%s.api_token_id %q must look like user@realm!tokenname", s, px.APITokenID)
	}
	switch {
	case px.APITokenSecretFile == "" && px.APITokenSecret == "":
		add("%s.api_token_secret_file is missing; put the token secret in a 0600 file and set api_token_secret_file to its path", s)
	case px.APITokenSecret != "":
		if placeholderRe.MatchString(px.APITokenSecret) {
			add("%s.api_token_secret is a placeholder; set api_token_secret_file to a 0600 file with the real secret", s)
		} else {
			warn("%s.api_token_secret holds the secret inline; move it to a 0600 file and use api_token_secret_file", s)
		}
	}
	if px.Node == "" && len(px.Nodes) == 0 {
		add("%s.node is missing; set the Proxmox node name (see `pvesh get /nodes`), or nodes = [...] / \"auto\" for a cluster", s)
	}
	if px.TemplateVMID < 100 || px.TemplateVMID > 999999999 {
		add("%s.template_vmid = %d is not a VMID; set the template's VMID (100..999999999)", s, px.TemplateVMID)
	}
	for _, name := range sortedKeys(px.Templates) {
		if id := px.Templates[name]; id < 100 || id > 999999999 {
			add("%s.templates.%s = %d is not a VMID; use the template's VMID (100..999999999)", s, name, id)
		}
	}
	if px.VerifySSL != nil && !*px.VerifySSL {
		warn("%s.verify_ssl = false is deprecated; set tls_fingerprint to pin the node certificate instead", s)
	}
	if px.TLSFingerprint != "" {
		if _, err := NormalizeFingerprint(px.TLSFingerprint); err != nil {
			add("%s.tls_fingerprint: %v; copy ssl_fingerprint from `pvesh get /nodes --output-format json`", s, err)
		}
	} else if !px.InsecureSkipVerify {
		add("%s.tls_fingerprint is missing; pin the node certificate (pvesh get /nodes --output-format json shows ssl_fingerprint), or set insecure_skip_verify = true", s)
	}
	checkRange(add, s+".max_parallel_clones", px.MaxParallelClones, 1, 32, DefaultMaxParallelClones)
	if px.IPWaitAttempts < 1 || px.IPWaitIntervalSec < 1 {
		add("%s: ip_wait_attempts (%d) and ip_wait_interval_secs (%d) must be positive; remove them for the defaults (30 and 5)", s, px.IPWaitAttempts, px.IPWaitIntervalSec)
	}
	if px.TaskPollIntervalMs != 0 && (px.TaskPollIntervalMs < 50 || px.TaskPollIntervalMs > 60000) {
		add("%s.task_poll_interval_ms = %d is out of range; use 50..60000 (default 1000)", s, px.TaskPollIntervalMs)
	}
	return append(out, px.ProxmoxPlacement.validate(s, px.Templates)...)
}

var fpRe = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// instanceKeyRe is an instance_config_allow entry: a key name, or "*".
var instanceKeyRe = regexp.MustCompile(`^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,63})$`)

// NormalizeFingerprint turns "AA:BB:..." or plain hex into lowercase hex of
// the 32-byte SHA-256.
func NormalizeFingerprint(fp string) (string, error) {
	h := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fp), ":", ""))
	if !fpRe.MatchString(h) {
		return "", fmt.Errorf("%q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", fp)
	}
	return h, nil
}

func knownType(t string) bool {
	for _, k := range ProvisionerTypes {
		if k == t {
			return true
		}
	}
	return false
}

// tomlKeys lists the toml tag names of a struct value's fields.
func tomlKeys(v any) []string {
	t := reflect.TypeOf(v)
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		switch {
		case f.Anonymous && tag == "" && f.Type.Kind() == reflect.Struct:
			out = append(out, tomlKeys(reflect.Zero(f.Type).Interface())...) // embedded: its keys are the section's
		case tag != "" && tag != "-":
			out = append(out, tag)
		}
	}
	return out
}
