package setup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/decent-stuff/dc-agent/config"
)

// ConfigAnswers are the non-Proxmox parts of the config setup writes.
type ConfigAnswers struct {
	Path           string
	APIEndpoint    string
	ProviderPubkey string
	AgentKeyPath   string
	// StateDir is written to agent.state_dir when set.
	StateDir string
	// Pool is the agent pool of a setup-token registration: written as
	// api.pool_id, pool_name and pool_location when set (an empty Pool
	// clears them: the agent is registered otherwise); nil keeps them.
	Pool *Pool
}

// ProxmoxSettings are the [provisioner.proxmox] values setup found.
type ProxmoxSettings struct {
	APIURL         string
	TokenID        string
	TokenFile      string
	Node           string
	Storage        string
	Bridge         string
	Pool           string
	TLSFingerprint string
	// Templates maps image names to VMIDs; Default names the one
	// template_vmid points at.
	Templates map[string]int
	Default   string
	// Cluster: contracts go to every node (nodes = "auto");
	// NodeTemplates are the templates' copies on the other nodes
	// (node_templates, by image name).
	Cluster       bool
	NodeTemplates map[string]map[string]int
	// Gateway is the gateway chosen (nil: [gateway] stays as it is).
	Gateway *GatewayAnswer
}

// LoadForUpdate reads an existing config to update it in place: a valid
// one as it is, one with problems leniently (setup is how those get
// fixed), a missing one as empty. Unknown keys are an error, since saving
// would silently drop them.
func LoadForUpdate(path string) (*config.Config, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &config.Config{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	if cfg, err := config.Parse(data); err == nil {
		return cfg, data, nil
	}
	var cfg config.Config
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return nil, nil, Fixf("fix the syntax error or move "+path+" away and re-run", "config %s: %v", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		var keys []string
		for _, k := range u {
			keys = append(keys, k.String())
		}
		return nil, nil, Fixf("remove or correct them (dc-agent doctor explains each), then re-run",
			"config %s has unknown keys: %s", path, strings.Join(keys, ", "))
	}
	return &cfg, data, nil
}

// ConfigStep writes the complete dc-agent.toml (a new one 0600; see
// writeConfig), updating an existing one in place: only the keys setup
// owns change. px is called when the step runs, after the Proxmox steps
// filled in the values.
func ConfigStep(a ConfigAnswers, px func() ProxmoxSettings) Step {
	return ConfigStepWith(a, func(cfg *config.Config) string {
		if px == nil {
			return ""
		}
		return applyProxmox(cfg, px())
	})
}

// ConfigStepWith is ConfigStep for any backend: apply puts the backend's
// settings into the config when the step runs and returns a note for the
// provider ("" if none).
func ConfigStepWith(a ConfigAnswers, apply func(*config.Config) string) Step {
	return Step{ID: "config", Title: "Write " + a.Path, Run: func(ctx context.Context, r *Reporter) error {
		return updateConfig(r, a.Path, func(cfg *config.Config) {
			cfg.API.Endpoint = a.APIEndpoint
			cfg.API.ProviderPubkey = a.ProviderPubkey
			cfg.API.AgentSecretKey = a.AgentKeyPath
			if a.Pool != nil {
				setPool(cfg, *a.Pool)
			}
			if a.StateDir != "" {
				cfg.Agent.StateDir = a.StateDir
			}
			if note := apply(cfg); note != "" {
				r.Notef("%s", note)
			}
		})
	}}
}

// updateConfig changes the config at path in place (change sets what setup
// owns), checks the result and writes it when it differs.
func updateConfig(r *Reporter, path string, change func(*config.Config)) error {
	cfg, old, err := LoadForUpdate(path)
	if err != nil {
		return err
	}
	change(cfg)
	draft, err := config.Marshal(cfg)
	if err != nil {
		return err
	}
	final, err := config.Parse(draft)
	if err != nil {
		return WithFix(fmt.Errorf("the config setup would write is invalid: %w", err), "correct the answers named above and re-run")
	}
	msg, changed, err := writeConfig(path, old, final)
	if changed {
		r.Changed("%s", msg)
	} else if err == nil {
		r.Skip("%s", msg)
	}
	return err
}

func setPool(cfg *config.Config, p Pool) {
	cfg.API.PoolID, cfg.API.PoolName, cfg.API.PoolLocation = p.ID, p.Name, p.Location
}

// writeConfig writes cfg to path unless the file already holds it (old),
// atomically, keeping the file's owner. The mode agrees with `service
// install` (setup/service), which makes the system service's config
// root:dc-agent 0640: a config keeps the group's read access it has, and
// nothing more (a new one, or one holding a secret inline, is 0600), so a
// re-run of setup never locks the service out of its config.
func writeConfig(path string, old []byte, cfg *config.Config) (summary string, changed bool, err error) {
	cfg = withoutGatewayDefaults(cfg)
	data, err := config.Marshal(cfg)
	if err != nil {
		return "", false, err
	}
	mode := os.FileMode(0o600)
	if st, err := os.Stat(path); err == nil && len(cfg.InlineSecrets()) == 0 {
		mode = st.Mode().Perm()&0o640 | 0o600
	}
	if bytes.Equal(data, old) {
		if st, err := os.Stat(path); err == nil && st.Mode().Perm() != mode {
			if err := os.Chmod(path, mode); err != nil {
				return "", false, err
			}
			return fmt.Sprintf("%s unchanged; mode set to %04o", path, mode), true, nil
		}
		return path + " is up to date", false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", false, fmt.Errorf("create config dir: %w", err)
	}
	if err := writeOwned(path, data, mode, ""); err != nil {
		return "", false, WithFix(fmt.Errorf("write %s: %w", path, err), "run setup as a user that may write "+filepath.Dir(path))
	}
	if old == nil {
		return "wrote " + path, true, nil
	}
	return "updated " + path, true, nil
}

// applyProxmox puts the settings into the config's Proxmox provisioner.
func applyProxmox(cfg *config.Config, s ProxmoxSettings) string {
	target, note := provisionerSlot(cfg, config.TypeProxmox)
	if target.Proxmox == nil {
		target.Proxmox = &config.ProxmoxConfig{}
	}
	p := target.Proxmox
	p.APIURL = s.APIURL
	p.APITokenID = s.TokenID
	p.APITokenSecretFile = s.TokenFile
	p.APITokenSecret = ""
	p.Node = s.Node
	p.Storage = s.Storage
	p.Bridge = s.Bridge
	p.Pool = s.Pool
	p.TLSFingerprint = s.TLSFingerprint
	p.InsecureSkipVerify = false
	p.VerifySSL = nil
	if p.Templates == nil {
		p.Templates = map[string]int{}
	}
	names := make([]string, 0, len(s.Templates))
	for n, id := range s.Templates {
		p.Templates[n] = id
		names = append(names, n)
	}
	sort.Strings(names)
	if id, ok := s.Templates[s.Default]; ok {
		p.TemplateVMID = id
	} else if len(names) > 0 {
		p.TemplateVMID = s.Templates[names[0]]
	}
	if s.Cluster {
		p.Nodes = config.ProxmoxNodes{config.NodesAuto}
	}
	applyGateway(cfg, s.Gateway, true)
	for name, copies := range s.NodeTemplates {
		if len(copies) == 0 {
			delete(p.NodeTemplates, name)
			continue
		}
		if p.NodeTemplates == nil {
			p.NodeTemplates = map[string]map[string]int{}
		}
		p.NodeTemplates[name] = copies
	}
	return note
}

// provisionerSlot returns the config's provisioner of type typ: the default
// one if it is unset or of that type, else the additional one of that type,
// added if missing (with a note saying so).
func provisionerSlot(cfg *config.Config, typ string) (*config.ProvisionerConfig, string) {
	if cfg.Provisioner.Type == "" || cfg.Provisioner.Type == typ {
		cfg.Provisioner.Type = typ
		return &cfg.Provisioner, ""
	}
	for i := range cfg.AdditionalProvisioners {
		if cfg.AdditionalProvisioners[i].Type == typ {
			return &cfg.AdditionalProvisioners[i], ""
		}
	}
	cfg.AdditionalProvisioners = append(cfg.AdditionalProvisioners, config.ProvisionerConfig{Type: typ})
	return &cfg.AdditionalProvisioners[len(cfg.AdditionalProvisioners)-1],
		fmt.Sprintf("the default provisioner is %s; %s is added as an additional provisioner (contracts choose it with provisioner_type = %q)", cfg.Provisioner.Type, typ, typ)
}
