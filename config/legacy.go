package config

// Configs written by the Rust dc-agent (v0.6.0: dc-agent/src/config.rs, its
// `setup token` writer in dc-agent/src/setup_cmd.rs, setup/proxmox.rs and
// setup/gateway.rs in the live source) load. Its keys that our schema names
// differently are mapped here, each with a warning naming the new key;
// `dc-agent config migrate` (Migrate) writes the file in the current form.
// docs/config.md has the table of every Rust key and what happens to it.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"syscall"

	"github.com/BurntSushi/toml"

	"github.com/decent-stuff/dc-agent/identity"
)

// RustDockerImage is the Rust agent's default container image
// (default_docker_image in dc-agent/src/config.rs).
const RustDockerImage = "ghcr.io/decent-stuff/dc-agent-ssh:latest"

// migrateHint ends every warning about an old key (not the notes of a
// refusal: migrate needs a file that loads).
const migrateHint = " (`dc-agent config migrate --write` rewrites the file in the current form)"

// legacyConfig is the part of the Rust agent's format that our schema does
// not have. Every field is a key our schema lacks, so what this decodes is
// exactly the set of Rust keys in the file.
type legacyConfig struct {
	Polling struct {
		OrphanTrackerPath *string `toml:"orphan_tracker_path"`
	} `toml:"polling"`
	Provisioner            legacyProvisioner   `toml:"provisioner"`
	AdditionalProvisioners []legacyProvisioner `toml:"additional_provisioners"`
}

// legacyProvisioner holds the flat keys of the Rust RawProvisionerConfig:
// settings written directly under [provisioner] instead of in
// [provisioner.<type>]. The rust tag names the type they belong to and,
// where it differs, our key name in that section.
type legacyProvisioner struct {
	APIURL              *string `toml:"api_url" rust:"proxmox"`
	APITokenID          *string `toml:"api_token_id" rust:"proxmox"`
	APITokenSecret      *string `toml:"api_token_secret" rust:"proxmox"`
	Node                *string `toml:"node" rust:"proxmox"`
	TemplateVMID        *int    `toml:"template_vmid" rust:"proxmox"`
	Storage             *string `toml:"storage" rust:"proxmox"`
	Pool                *string `toml:"pool" rust:"proxmox"`
	VerifySSL           *bool   `toml:"verify_ssl" rust:"proxmox"`
	IPWaitAttempts      *int    `toml:"ip_wait_attempts" rust:"proxmox"`
	IPWaitIntervalSecs  *int    `toml:"ip_wait_interval_secs" rust:"proxmox"`
	Provision           *string `toml:"provision" rust:"script"`
	Terminate           *string `toml:"terminate" rust:"script"`
	HealthCheck         *string `toml:"health_check" rust:"script"`
	TimeoutSeconds      *int    `toml:"timeout_seconds" rust:"script"`
	NotificationWebhook *string `toml:"notification_webhook" rust:"manual"`
	SocketPath          *string `toml:"socket_path" rust:"docker,socket"`
	Network             *string `toml:"network" rust:"docker"`
	DefaultImage        *string `toml:"default_image" rust:"docker,image"`
	APIToken            *string `toml:"api_token" rust:"digitalocean"`
	DoSize              *string `toml:"do_size" rust:"digitalocean,default_size"`
	DoRegion            *string `toml:"do_region" rust:"digitalocean,default_region"`
	DoImage             *string `toml:"do_image" rust:"digitalocean,default_image"`

	Docker *legacyDocker `toml:"docker"`
}

// legacyDocker holds the Rust [provisioner.docker] keys we name differently.
type legacyDocker struct {
	SocketPath   *string `toml:"socket_path"`
	DefaultImage *string `toml:"default_image"`
	SSHPort      *int    `toml:"ssh_port"`
}

// legacyState is what applyLegacy found; it lives in Config.legacy.
// The Rust agent's [gateway] is our schema's (GatewayConfig, gateway.go):
// same keys, same defaults, nothing to map.
type legacyState struct {
	warnings []string // old keys mapped or ignored (without migrateHint); Migrate removes their cause
}

// loadWarnings are the findings of loading that Validate reports first.
func (c *Config) loadWarnings() []string {
	var w []string
	for _, s := range c.legacy.warnings {
		w = append(w, s+migrateHint)
	}
	if k := c.API.AgentSecretKey; strings.HasPrefix(k, "/root/") || strings.HasPrefix(k, "/home/") {
		// Where the Rust `setup token` put it ($HOME/.dc-agent/agent.key,
		// dc-agent/src/registration.rs).
		w = append(w, fmt.Sprintf("api.agent_secret_key %q is in a home directory, which the dc-agent system service cannot read (it runs as user dc-agent with ProtectHome=yes); copy the key beside the config: install -m 0600 -o dc-agent -g dc-agent %s /etc/dc-agent/agent.key, then set agent_secret_key = \"/etc/dc-agent/agent.key\" (the key stays the same, so its registration does too)", k, k))
	}
	if g := c.Gateway; g != nil {
		// Until the agent loop calls package gateway (its integration
		// step removes this warning).
		w = append(w, fmt.Sprintf("[gateway] (dc_id %q) is read, but `dc-agent run` does not start the gateway yet: new contracts get no gateway subdomain or port forwards (their VMs need their own public address)", g.DCID))
	}
	return w
}

// applyLegacy maps the Rust agent's keys among the keys the schema did not
// decode onto c, and returns the keys that are still unknown and the
// problems of the Rust keys we refuse. err is a decode error (a Rust key
// with a value of the wrong type).
func (c *Config) applyLegacy(data []byte, undecoded []toml.Key) (unknown []toml.Key, problems []string, err error) {
	c.legacy = legacyState{}
	if len(undecoded) == 0 && !c.dockerWithoutSection() {
		return nil, nil, nil
	}
	var lc legacyConfig
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&lc)
	if err != nil {
		return nil, nil, err
	}
	still := map[string]bool{}
	for _, k := range md.Undecoded() {
		still[k.String()] = true
	}
	for _, k := range undecoded {
		if still[k.String()] {
			unknown = append(unknown, k)
		}
	}
	r := &legacyResult{data: data}
	if p := lc.Polling.OrphanTrackerPath; p != nil {
		r.warn("polling.orphan_tracker_path (%q) is ignored: dc-agent keeps the first-seen time of orphaned instances in memory, so after a restart an orphan gets the full polling.orphan_grace_period_seconds again; remove the key", *p)
	}
	c.Provisioner.applyLegacy(&lc.Provisioner, "provisioner", r)
	for i := range c.AdditionalProvisioners {
		lp := legacyProvisioner{}
		if i < len(lc.AdditionalProvisioners) {
			lp = lc.AdditionalProvisioners[i]
		}
		c.AdditionalProvisioners[i].applyLegacy(&lp, fmt.Sprintf("additional_provisioners[%d]", i), r)
	}
	c.legacy = legacyState{warnings: r.warnings}
	return unknown, r.problems, nil
}

// dockerWithoutSection: some provisioner is a docker one without any
// section, as the Rust `setup token` writes it (the Rust agent then uses
// its defaults).
func (c *Config) dockerWithoutSection() bool {
	for _, p := range c.AllProvisioners() {
		if p.Type == TypeDocker && !p.hasSection() {
			return true
		}
	}
	return false
}

func (p *ProvisionerConfig) hasSection() bool {
	return p.Proxmox != nil || p.Hetzner != nil || p.Docker != nil || p.Script != nil || p.Manual != nil || p.DigitalOcean != nil || p.Vultr != nil
}

type legacyResult struct {
	data     []byte
	warnings []string
	problems []string
}

func (r *legacyResult) warn(format string, args ...any) {
	r.warnings = append(r.warnings, fmt.Sprintf(format, args...))
}

// refuse records a problem, with the line of key k when it is unambiguous.
func (r *legacyResult) refuse(where string, k toml.Key, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !strings.Contains(where, "[") { // [[additional_provisioners]] repeat their keys
		if line := findKeyLine(r.data, k); line > 0 {
			msg = fmt.Sprintf("line %d: %s", line, msg)
		}
	}
	r.problems = append(r.problems, msg)
}

// applyLegacy moves the flat keys of lp into p's section, as the Rust
// agent read them (deserialize_provisioner in dc-agent/src/config.rs), and
// maps the Rust docker keys.
func (p *ProvisionerConfig) applyLegacy(lp *legacyProvisioner, where string, r *legacyResult) {
	hadSection := p.hasSection()
	flat := map[string][]reflect.StructField{} // provisioner type → its flat keys present
	v := reflect.ValueOf(lp).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if typ, _, ok := strings.Cut(f.Tag.Get("rust")+",", ","); ok && typ != "" && !v.Field(i).IsNil() {
			flat[typ] = append(flat[typ], f)
		}
	}
	rustDocker := false
	for _, typ := range sortedKeys(flat) {
		fields := flat[typ]
		var olds, news []string
		for _, f := range fields {
			old := tomlName(f)
			olds = append(olds, where+"."+old)
			news = append(news, where+"."+typ+"."+ourName(f))
		}
		section := reflect.ValueOf(p).Elem().FieldByName(sectionField[typ])
		header := "[" + strings.Split(where, "[")[0] + "." + typ + "]" // its TOML table
		switch {
		case typ != p.Type:
			r.warn("%s: %s %s the Rust agent's flat form of %s settings, and type = %q: ignored, as the Rust agent ignored %s; remove %[6]s", where, strings.Join(olds, ", "), isAre(olds), typ, p.Type, itThem(olds))
		case !section.IsNil():
			r.warn("%s: %s %s ignored because %s is present, as the Rust agent ignored %s; remove %[5]s", where, strings.Join(olds, ", "), isAre(olds), header, itThem(olds))
		default:
			section.Set(reflect.New(section.Type().Elem()))
			for _, f := range fields {
				setByTag(section.Elem(), ourName(f), v.FieldByIndex(f.Index))
			}
			r.warn("%s: the Rust agent's flat keys now belong in %s: %s", where, header, renames(olds, news))
			rustDocker = rustDocker || typ == TypeDocker
		}
	}
	if d := lp.Docker; d != nil && p.Docker != nil {
		s := where + ".docker"
		for _, rn := range []struct {
			old      *string
			dst      *string
			from, to string
		}{{d.SocketPath, &p.Docker.Socket, "socket_path", "socket"}, {d.DefaultImage, &p.Docker.Image, "default_image", "image"}} {
			if rn.old == nil {
				continue
			}
			rustDocker = true
			if *rn.dst != "" {
				r.refuse(where, toml.Key{where, "docker", rn.from}, "%s has both %s (the Rust agent's name) and %s; keep one, named %[3]s", s, rn.from, rn.to)
			} else {
				*rn.dst = *rn.old
				r.warn("%[1]s.%[2]s is now %[1]s.%[3]s", s, rn.from, rn.to)
			}
		}
		if d.SSHPort != nil {
			rustDocker = true
			if *d.SSHPort == 22 {
				r.warn("%s.ssh_port = 22 is ignored: dc-agent always connects to sshd on port 22 inside the container; remove the key", s)
			} else {
				r.refuse(where, toml.Key{where, "docker", "ssh_port"}, "%s.ssh_port = %d: dc-agent connects to sshd on port 22 inside the container; use an image whose sshd listens on 22 and remove ssh_port", s, *d.SSHPort)
			}
		}
	}
	if p.Type == TypeDocker && !hadSection && p.Docker == nil {
		p.Docker = &DockerConfig{} // the Rust agent's docker defaults
		rustDocker = true
	}
	if rustDocker && p.Type == TypeDocker && p.Docker != nil && p.Docker.Image == "" {
		p.Docker.Image = RustDockerImage
		r.warn("%s.docker.image is not set: using %q, the Rust agent's default; dc-agent runs the image's own command, which must start sshd on port 22; set image to keep it", where, RustDockerImage)
	}
}

// sectionField is the ProvisionerConfig field of each flat key's type.
var sectionField = map[string]string{TypeProxmox: "Proxmox", TypeScript: "Script", TypeManual: "Manual", TypeDocker: "Docker", TypeDigitalOcean: "DigitalOcean"}

func tomlName(f reflect.StructField) string { return strings.Split(f.Tag.Get("toml"), ",")[0] }

// ourName is a flat key's name in our section.
func ourName(f reflect.StructField) string {
	if _, to, _ := strings.Cut(f.Tag.Get("rust"), ","); to != "" {
		return to
	}
	return tomlName(f)
}

// setByTag sets the field of struct dst whose toml name is tag to the value
// src points to (or to src itself where the field is a pointer).
func setByTag(dst reflect.Value, tag string, src reflect.Value) {
	for i := 0; i < dst.NumField(); i++ {
		if tomlName(dst.Type().Field(i)) != tag {
			continue
		}
		if f := dst.Field(i); f.Kind() == reflect.Pointer {
			f.Set(src)
		} else {
			f.Set(src.Elem())
		}
		return
	}
	panic("config: no key " + tag + " in " + dst.Type().Name()) // the tables above are wrong
}

func renames(olds, news []string) string {
	parts := make([]string, len(olds))
	for i := range olds {
		parts[i] = olds[i] + " → " + news[i]
	}
	return strings.Join(parts, ", ")
}

func itThem(s []string) string {
	if len(s) == 1 {
		return "it"
	}
	return "them"
}

func isAre(s []string) string {
	if len(s) == 1 {
		return "is"
	}
	return "are"
}

// NeedsMigration reports whether the file has keys of the Rust agent's
// format (or the deprecated verify_ssl) that Migrate rewrites.
func (c *Config) NeedsMigration() bool {
	if len(c.legacy.warnings) > 0 {
		return true
	}
	for _, p := range c.AllProvisioners() {
		if p.Proxmox != nil && p.Proxmox.VerifySSL != nil {
			return true
		}
	}
	return false
}

// Migrate returns cfg in the current form (our key names; comments are not
// kept) and that text loaded back. It refuses when the text would not load
// the same settings without the old keys' warnings.
func Migrate(cfg *Config) ([]byte, *Config, error) {
	c := *cfg
	c.Path, c.Warnings = "", nil
	c.legacy.warnings = nil
	c.Provisioner = c.Provisioner.migrated()
	c.AdditionalProvisioners = nil
	for _, p := range cfg.AdditionalProvisioners {
		c.AdditionalProvisioners = append(c.AdditionalProvisioners, p.migrated())
	}
	out, err := Marshal(&c)
	if err != nil {
		return nil, nil, err
	}
	back, err := Parse(out)
	if err != nil {
		return nil, nil, fmt.Errorf("the migrated config would not load, so it is not used (please report this): %w", err)
	}
	if len(back.legacy.warnings) > 0 {
		return nil, nil, fmt.Errorf("the migrated config still has old keys, so it is not used (please report this): %s", strings.Join(back.legacy.warnings, "; "))
	}
	return out, back, nil
}

// migrated replaces the deprecated verify_ssl by what it meant:
// verify_ssl = false already set insecure_skip_verify; verify_ssl = true
// is what dc-agent does anyway (it pins tls_fingerprint).
func (p ProvisionerConfig) migrated() ProvisionerConfig {
	if p.Proxmox != nil {
		px := *p.Proxmox
		px.VerifySSL = nil
		p.Proxmox = &px
	}
	return p
}

// Migration is the result of MigrateFile.
type Migration struct {
	Text     []byte  // the current form
	Loaded   *Config // the file as loaded, with its warnings
	Migrated *Config // Text loaded back
	Wrote    bool    // the file was replaced by Text
}

// MigrateFile returns the current form of cfg, loaded from cfg.Path. With
// write it also replaces that file with it (atomically, mode 0600, keeping
// the file's owner) when there is something to migrate. A file whose
// current form would not load is left as it is.
func MigrateFile(cfg *Config, write bool) (*Migration, error) {
	path := cfg.Path
	if path == "" {
		return nil, errors.New("config: MigrateFile needs a config loaded from a file")
	}
	out, back, err := Migrate(cfg)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w; the file is left as it is", path, err)
	}
	m := &Migration{Text: out, Loaded: cfg, Migrated: back}
	if !write || !cfg.NeedsMigration() {
		return m, nil
	}
	if err := writeKeepingOwner(path, out, 0o600); err != nil {
		return nil, fmt.Errorf("write config %s: %w", path, err)
	}
	m.Wrote = true
	return m, nil
}

// writeKeepingOwner replaces path atomically and, when run as root, gives
// the new file the owner of the one it replaces: a config the service user
// owns stays readable by it.
func writeKeepingOwner(path string, data []byte, mode os.FileMode) error {
	var owner *syscall.Stat_t
	if st, err := os.Stat(path); err == nil {
		owner, _ = st.Sys().(*syscall.Stat_t)
	}
	if err := identity.WriteFileAtomic(path, data, mode); err != nil {
		return err
	}
	if owner != nil && os.Geteuid() == 0 && (owner.Uid != 0 || owner.Gid != 0) {
		return os.Lchown(path, int(owner.Uid), int(owner.Gid))
	}
	return nil
}
