// Package config is the dc-agent.toml schema: strict loading (an unknown key
// is an error with its line), defaults, validation with one actionable
// message per problem, and atomic 0600 writes.
//
// Key names follow the earlier dc-agent.toml format so providers who move
// over keep their files; secrets are referenced by *_file paths.
package config

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/decent-stuff/dc-agent/identity"
)

// DefaultPath is where the service looks for its config.
const DefaultPath = "/etc/dc-agent/dc-agent.toml"

// Provisioner type names.
const (
	TypeProxmox = "proxmox"
	TypeHetzner = "hetzner"
	TypeDocker  = "docker"
	TypeScript  = "script"
	TypeManual  = "manual"
)

// ProvisionerTypes lists every built-in provisioner type.
var ProvisionerTypes = []string{TypeProxmox, TypeHetzner, TypeDigitalOcean, TypeVultr, TypeDocker, TypeScript, TypeManual}

// Config is the whole dc-agent.toml.
type Config struct {
	API                    APIConfig           `toml:"api"`
	Polling                PollingConfig       `toml:"polling"`
	Agent                  AgentConfig         `toml:"agent"`
	Provisioner            ProvisionerConfig   `toml:"provisioner"`
	AdditionalProvisioners []ProvisionerConfig `toml:"additional_provisioners,omitempty"`
	// Gateway is [gateway] (nil: VMs are reached on their own addresses).
	Gateway *GatewayConfig `toml:"gateway,omitempty"`

	// Path is the file the config was loaded from ("" if built in memory).
	Path string `toml:"-"`
	// Warnings are non-fatal findings of Load (inline secrets, legacy keys).
	Warnings []string `toml:"-"`

	// legacy is what Parse found of the Rust agent's format (legacy.go).
	legacy legacyState
}

// APIConfig is [api].
type APIConfig struct {
	Endpoint       string `toml:"endpoint"`
	ProviderPubkey string `toml:"provider_pubkey"`
	// AgentSecretKey is the path of the 0600 agent key file. An inline
	// 64-hex value is accepted with a warning.
	AgentSecretKey string `toml:"agent_secret_key"`
	// ProviderSecretKey is the legacy main-key setting; it is refused.
	ProviderSecretKey string `toml:"provider_secret_key,omitempty"`
	TimeoutSeconds    int    `toml:"timeout_seconds,omitempty"`
	// PoolID is the agent pool this agent belongs to; PoolName and
	// PoolLocation are shown beside it. Setup-token registration writes all
	// three (the Rust agent wrote pool_id only).
	PoolID       string `toml:"pool_id,omitempty"`
	PoolName     string `toml:"pool_name,omitempty"`
	PoolLocation string `toml:"pool_location,omitempty"`
}

// PollingConfig is [polling].
type PollingConfig struct {
	IntervalSeconds            int `toml:"interval_seconds"`
	HealthCheckIntervalSeconds int `toml:"health_check_interval_seconds"`
	// LongPoll asks the server to hold pending-provision open (extension;
	// detected, falls back to interval polling). Default true.
	LongPoll                 *bool `toml:"long_poll,omitempty"`
	ReconcileIntervalSeconds int   `toml:"reconcile_interval_seconds,omitempty"`
	// OrphanGracePeriodSeconds: an instance the API does not know is only
	// reported after this long (legacy key).
	OrphanGracePeriodSeconds int `toml:"orphan_grace_period_seconds,omitempty"`
	// MaxReadsPerMinute bounds all the agent's GET requests together (the
	// live API allows 120 per minute per client IP; the default takes
	// half, leaving room for other machines behind the same address).
	MaxReadsPerMinute int `toml:"max_reads_per_minute,omitzero"`
}

// AgentConfig is [agent].
type AgentConfig struct {
	StateDir                string `toml:"state_dir"`
	StatusSocket            string `toml:"status_socket"`
	MetricsListen           string `toml:"metrics_listen,omitempty"`
	MaxConcurrentProvisions int    `toml:"max_concurrent_provisions"`
	// ShutdownGraceSeconds is how long SIGTERM waits for in-flight provisions.
	ShutdownGraceSeconds int    `toml:"shutdown_grace_seconds,omitempty"`
	ReleaseURL           string `toml:"release_url,omitempty"`
	AutoUpdate           bool   `toml:"auto_update,omitempty"`
	// ProvisionRetrySeconds is how long a provision that fails with a
	// transient backend error is retried locally before provisioning_failed
	// is reported (the live API refunds the tenant at once and never offers
	// the contract again). nil: the default; 0: report at once.
	ProvisionRetrySeconds *int `toml:"provision_retry_seconds,omitempty"`
}

// ProvisionerConfig is [provisioner] and each [[additional_provisioners]].
type ProvisionerConfig struct {
	Type string `toml:"type"`
	// MaxConcurrent limits parallel provisions on this backend (0: the agent's limit).
	MaxConcurrent int `toml:"max_concurrent,omitempty"`
	// InstanceConfigAllow lists instance_config keys a contract may set on
	// this backend (any value) beyond those the backend itself declares;
	// "*" allows every key. The requester chooses instance_config.
	InstanceConfigAllow []string            `toml:"instance_config_allow,omitempty"`
	Proxmox             *ProxmoxConfig      `toml:"proxmox,omitempty"`
	Hetzner             *HetznerConfig      `toml:"hetzner,omitempty"`
	DigitalOcean        *DigitalOceanConfig `toml:"digitalocean,omitempty"`
	Vultr               *VultrConfig        `toml:"vultr,omitempty"`
	Docker              *DockerConfig       `toml:"docker,omitempty"`
	Script              *ScriptConfig       `toml:"script,omitempty"`
	Manual              *ManualConfig       `toml:"manual,omitempty"`
}

// ProxmoxConfig is [provisioner.proxmox].
type ProxmoxConfig struct {
	APIURL     string `toml:"api_url"`
	APITokenID string `toml:"api_token_id"`
	// APITokenSecretFile is the 0600 file holding the token secret.
	APITokenSecretFile string `toml:"api_token_secret_file,omitempty"`
	// APITokenSecret is the legacy inline secret (accepted with a warning).
	APITokenSecret string `toml:"api_token_secret,omitempty"`
	Node           string `toml:"node"`
	TemplateVMID   int    `toml:"template_vmid"`
	// Templates maps template names (instance_config "template") to VMIDs.
	Templates map[string]int `toml:"templates,omitempty"`
	Storage   string         `toml:"storage"`
	Pool      string         `toml:"pool,omitempty"`
	Bridge    string         `toml:"bridge,omitempty"`
	// TLSFingerprint pins the node certificate (SHA-256, AA:BB:.. or hex).
	TLSFingerprint     string `toml:"tls_fingerprint,omitempty"`
	InsecureSkipVerify bool   `toml:"insecure_skip_verify,omitempty"`
	// VerifySSL is the legacy switch; false means insecure_skip_verify.
	VerifySSL         *bool `toml:"verify_ssl,omitempty"`
	LinkedClone       bool  `toml:"linked_clone,omitempty"`
	MaxParallelClones int   `toml:"max_parallel_clones,omitempty"`
	IPWaitAttempts    int   `toml:"ip_wait_attempts,omitempty"`
	IPWaitIntervalSec int   `toml:"ip_wait_interval_secs,omitempty"`
	// TaskPollIntervalMs is how often Proxmox task status is polled
	// (default 1000).
	TaskPollIntervalMs int `toml:"task_poll_interval_ms,omitempty"`
	// CIUser is the cloud-init user (default root).
	CIUser string `toml:"ciuser,omitempty"`
	// SetRootPassword generates a password (sealed for the requester).
	SetRootPassword *bool `toml:"set_root_password,omitempty"`
	// SSHProbe adds a TCP probe of port 22 to health checks.
	SSHProbe *bool `toml:"ssh_probe,omitempty"`
	// PostProvisionKeyFile is the private key used to run
	// post_provision_script over SSH (its public half goes into sshkeys of
	// a VM whose contract has a script, and out of the guest after it).
	PostProvisionKeyFile string `toml:"post_provision_key_file,omitempty"`
	// Cluster placement (docs/proxmox-cluster.md): the nodes contracts
	// may go to, per-node template copies, overcommit and headroom.
	ProxmoxPlacement
}

// HetznerConfig is [provisioner.hetzner].
type HetznerConfig struct {
	APITokenFile    string `toml:"api_token_file,omitempty"`
	APIToken        string `toml:"api_token,omitempty"` // legacy inline, warned
	Endpoint        string `toml:"endpoint,omitempty"`
	DefaultLocation string `toml:"default_location"`
	DefaultImage    string `toml:"default_image"`
	// ServerTypes maps offering ids to server types; otherwise the smallest
	// type that fits the offering is chosen.
	ServerTypes map[string]string `toml:"server_types,omitempty"`
	// Locations maps datacenter cities to Hetzner locations.
	Locations           map[string]string `toml:"locations,omitempty"`
	ActionTimeoutSecond int               `toml:"action_timeout_seconds,omitempty"`
}

// DockerConfig is [provisioner.docker].
type DockerConfig struct {
	Socket            string `toml:"socket"`
	Image             string `toml:"image"`
	Network           string `toml:"network,omitempty"`
	SSHPortRangeStart int    `toml:"ssh_port_range_start,omitempty"`
	SSHPortRangeEnd   int    `toml:"ssh_port_range_end,omitempty"`
	PublishIP         string `toml:"publish_ip,omitempty"`
	PublicHost        string `toml:"public_host,omitempty"`
	RestartPolicy     string `toml:"restart_policy,omitempty"`
	PullTimeoutSecond int    `toml:"pull_timeout_seconds,omitempty"`
	// PidsLimit caps the processes of one container (0: the backend's
	// default, 1024), so a fork bomb stays inside its tenant.
	PidsLimit int `toml:"pids_limit,omitempty"`
}

// ScriptConfig is [provisioner.script].
type ScriptConfig struct {
	Provision   string `toml:"provision"`
	Terminate   string `toml:"terminate"`
	HealthCheck string `toml:"health_check"`
	GetInstance string `toml:"get_instance,omitempty"`
	List        string `toml:"list,omitempty"`
	// Pause and Resume (optional, both or neither) stop and start an
	// instance without destroying it: reconcile's pause of a disputed
	// contract, and its resumption.
	Pause          string `toml:"pause,omitempty"`
	Resume         string `toml:"resume,omitempty"`
	TimeoutSeconds int    `toml:"timeout_seconds"`
	MaxOutputBytes int    `toml:"max_output_bytes,omitempty"`
	// ResetPassword and RotateSSHKey serve tenant requests (optional).
	ResetPassword string `toml:"reset_password,omitempty"`
	RotateSSHKey  string `toml:"rotate_ssh_key,omitempty"`
}

// ManualConfig is [provisioner.manual].
type ManualConfig struct {
	NotificationWebhook string `toml:"notification_webhook,omitempty"`
}

// LoadError is a config that cannot be used; Problems has one line each.
type LoadError struct {
	Path     string
	Problems []string
	// Notes say how old keys were read (legacy.go), so that a problem
	// naming the new key can be matched to the file.
	Notes []string
}

func (e *LoadError) Error() string {
	name := "config"
	if e.Path != "" {
		name += " " + e.Path
	}
	var b strings.Builder
	if len(e.Problems) == 1 {
		fmt.Fprintf(&b, "%s: %s", name, e.Problems[0])
	} else {
		fmt.Fprintf(&b, "%s has %d problems:", name, len(e.Problems))
		for _, p := range e.Problems {
			b.WriteString("\n  - " + p)
		}
	}
	for _, n := range e.Notes {
		b.WriteString("\n  note: " + n)
	}
	return b.String()
}

// Load reads, strictly decodes, defaults and validates a config file, and
// refuses one that holds secrets inline while others may read it
// (CheckInlineSecretsMode).
func Load(path string) (*Config, error) {
	cfg, err := Read(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.CheckInlineSecretsMode(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Read is Load without the file-mode rule, for the tool that rewrites the
// file (config migrate writes it 0600).
func Read(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist; create it with: dc-agent setup proxmox (or copy packaging/dc-agent.toml.example)", path)
		}
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		var le *LoadError
		if errors.As(err, &le) {
			le.Path = path
		}
		return nil, err
	}
	cfg.Path = path
	return cfg, nil
}

// Parse decodes and validates config text (Path is left empty).
func Parse(data []byte) (*Config, error) {
	var cfg Config
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		return nil, &LoadError{Problems: []string{describeDecodeError(err)}}
	}
	// Keys of the Rust agent's format are mapped (legacy.go). One problem
	// per key still unknown; the keys inside an unknown table are not
	// reported again (the table's name is the typo).
	undecoded, problems, err := cfg.applyLegacy(data, md.Undecoded())
	if err != nil {
		return nil, &LoadError{Problems: []string{describeDecodeError(err)}}
	}
	unknown := map[string]bool{}
	for _, k := range undecoded {
		unknown[k.String()] = true
		if underUnknown(k, unknown) {
			continue
		}
		problems = append(problems, unknownKeyProblem(data, k, md.Type(k...)))
	}
	if len(problems) > 0 {
		return nil, &LoadError{Problems: problems, Notes: cfg.legacy.warnings}
	}
	cfg.applyDefaults()
	if problems := cfg.Validate(); len(problems) > 0 {
		return nil, &LoadError{Problems: problems, Notes: cfg.legacy.warnings}
	}
	return &cfg, nil
}

func underUnknown(k toml.Key, unknown map[string]bool) bool {
	for i := 1; i < len(k); i++ {
		if unknown[k[:i].String()] {
			return true
		}
	}
	return false
}

// typeErrRe matches BurntSushi/toml's type mismatch, which is a plain error
// (not a ParseError) carrying line and key in its text.
var typeErrRe = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): incompatible types: TOML value has type (.+); destination has type (.+)$`)
var keyErrRe = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]*)"\): (.+)$`)

func describeDecodeError(err error) string {
	var pe toml.ParseError
	if errors.As(err, &pe) {
		msg := pe.Message
		if pe.LastKey != "" {
			msg = fmt.Sprintf("%s (after key %q)", msg, pe.LastKey)
		}
		return fmt.Sprintf("line %d: %s; check the TOML syntax (quotes around text, [section] headers)", pe.Position.Line, msg)
	}
	if m := typeErrRe.FindStringSubmatch(err.Error()); m != nil {
		key := m[2]
		name := key[strings.LastIndexByte(key, '.')+1:]
		return fmt.Sprintf("line %s: %s must be %s, not %s; write it as %s", m[1], key, tomlTypeName(m[4]), tomlTypeName(m[3]), typeExample(name, m[4]))
	}
	if m := keyErrRe.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Sprintf("line %s: %s: %s", m[1], m[2], m[3])
	}
	return strings.TrimPrefix(err.Error(), "toml: ")
}

// tomlTypeName says a Go or TOML type name the way a config author thinks of it.
func tomlTypeName(t string) string {
	switch {
	case t == "string":
		return "text in quotes"
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") || t == "integer":
		return "a whole number"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool" || t == "boolean":
		return "true or false"
	case strings.HasPrefix(t, "[]") || t == "slice" || t == "array":
		return "a list"
	case strings.HasPrefix(t, "map") || t == "struct":
		return "a table"
	case strings.Contains(t, "Time"):
		return "a date"
	}
	return t
}

func typeExample(name, dst string) string {
	switch tomlTypeName(dst) {
	case "text in quotes":
		return name + ` = "..."`
	case "a whole number":
		return name + " = 30 (no quotes)"
	case "true or false":
		return name + " = true (no quotes)"
	case "a list":
		return name + ` = ["...", "..."]`
	case "a table":
		return "a [" + name + "] section or " + name + " = { key = value }"
	}
	return "the type shown in packaging/dc-agent.toml.example"
}

// unknownKeyProblem names an undecoded key, its line and the closest known key.
func unknownKeyProblem(data []byte, k toml.Key, typ string) string {
	name := k[len(k)-1]
	section := strings.Join(k[:len(k)-1], ".")
	where := "at top level"
	if section != "" {
		where = "in [" + section + "]"
	}
	what := "key"
	if typ == "Hash" || typ == "ArrayHash" {
		what = "section"
	}
	msg := fmt.Sprintf("unknown %s %q %s", what, name, where)
	if line := findKeyLine(data, k); line > 0 {
		msg = fmt.Sprintf("line %d: %s", line, msg)
	}
	if s := suggest(name, knownKeys(section)); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	} else {
		msg += "; remove it (see packaging/dc-agent.toml.example for the valid keys)"
	}
	return msg
}

var headerRe = regexp.MustCompile(`^\s*\[\[?\s*([^\]]+?)\s*\]\]?`)

// findKeyLine locates the line that defines key k (1-based, 0 if not found).
func findKeyLine(data []byte, k toml.Key) int {
	section := strings.Join(k[:len(k)-1], ".")
	name := k[len(k)-1]
	keyRe := regexp.MustCompile(`^\s*"?` + regexp.QuoteMeta(name) + `"?\s*=`)
	cur := ""
	for i, line := range strings.Split(string(data), "\n") {
		if m := headerRe.FindStringSubmatch(line); m != nil {
			cur = strings.ReplaceAll(m[1], " ", "")
			if cur == strings.Join(k, ".") {
				return i + 1 // an unknown table
			}
			continue
		}
		if cur == section && keyRe.MatchString(line) {
			return i + 1
		}
	}
	return 0
}

// knownKeys returns the valid key names of a section, from the struct tags.
func knownKeys(section string) []string {
	sections := map[string]any{"": Config{}, "api": APIConfig{}, "polling": PollingConfig{}, "agent": AgentConfig{},
		"provisioner": ProvisionerConfig{}, "additional_provisioners": ProvisionerConfig{}, "gateway": GatewayConfig{}}
	// A backend's table stands under [provisioner] and each [[additional_provisioners]].
	backends := map[string]any{"proxmox": ProxmoxConfig{}, "hetzner": HetznerConfig{}, "digitalocean": DigitalOceanConfig{},
		"vultr": VultrConfig{}, "docker": DockerConfig{}, "script": ScriptConfig{}, "manual": ManualConfig{}}
	t, ok := sections[section]
	if parent, backend, sub := strings.Cut(section, "."); sub && (parent == "provisioner" || parent == "additional_provisioners") {
		t, ok = backends[backend]
	}
	if !ok {
		return nil
	}
	return tomlKeys(t)
}

func suggest(name string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := levenshtein(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if bestD <= max(2, len(name)/3) {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// Marshal encodes cfg as dc-agent.toml text (what Save writes).
func Marshal(cfg *Config) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# dc-agent configuration. Written by dc-agent; comments are not kept.\n")
	buf.WriteString("# Reference: https://github.com/decent-stuff/dc-agent/blob/main/packaging/dc-agent.toml.example\n\n")
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// Save writes cfg to path atomically with mode 0600.
func Save(path string, cfg *Config) error {
	data, err := Marshal(cfg)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	if err := identity.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("write config %s: %w", path, err)
	}
	return nil
}

// ResolvePath makes a relative path in the config relative to the config
// file's directory.
func (c *Config) ResolvePath(p string) string {
	if p == "" || filepath.IsAbs(p) || c.Path == "" {
		return p
	}
	return filepath.Join(filepath.Dir(c.Path), p)
}

// AgentKeyPath is the agent key file ("" when the key is inline).
func (c *Config) AgentKeyPath() string {
	if isInlineHexKey(c.API.AgentSecretKey) {
		return ""
	}
	return c.ResolvePath(c.API.AgentSecretKey)
}

// LoadAgentKey returns the agent's signing key.
func (c *Config) LoadAgentKey() (ed25519.PrivateKey, error) {
	if isInlineHexKey(c.API.AgentSecretKey) {
		return identity.KeyFromSeedHex(c.API.AgentSecretKey)
	}
	return identity.LoadAgentKey(c.AgentKeyPath())
}

// ReadSecret returns a secret from its *_file path, or the legacy inline value.
func (c *Config) ReadSecret(file, inline, what string) (string, error) {
	if file != "" {
		s, err := identity.ReadSecretFile(c.ResolvePath(file))
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		if s == "" {
			return "", fmt.Errorf("%s: file %s is empty", what, c.ResolvePath(file))
		}
		return s, nil
	}
	if inline != "" {
		return inline, nil
	}
	return "", fmt.Errorf("%s is not configured", what)
}

func isInlineHexKey(s string) bool {
	s = strings.TrimSpace(s)
	if len(s) != 64 {
		return false
	}
	_, err := identity.KeyFromSeedHex(s)
	return err == nil
}

// AllProvisioners returns the default provisioner followed by the additional ones.
func (c *Config) AllProvisioners() []ProvisionerConfig {
	return append([]ProvisionerConfig{c.Provisioner}, c.AdditionalProvisioners...)
}

// ProvisionerFor returns the provisioner config for a contract's
// provisioner_type ("" means the default).
func (c *Config) ProvisionerFor(typ string) (ProvisionerConfig, bool) {
	if typ == "" {
		return c.Provisioner, true
	}
	for _, p := range c.AllProvisioners() {
		if p.Type == typ {
			return p, true
		}
	}
	return ProvisionerConfig{}, false
}

// sortedKeys is used for deterministic messages.
func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
