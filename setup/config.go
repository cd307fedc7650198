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

// ConfigStep writes the complete dc-agent.toml (0600), updating an
// existing one in place: only the keys setup owns change. px is called
// when the step runs, after the Proxmox steps filled in the values.
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
		cfg, old, err := LoadForUpdate(a.Path)
		if err != nil {
			return err
		}
		cfg.API.Endpoint = a.APIEndpoint
		cfg.API.ProviderPubkey = a.ProviderPubkey
		cfg.API.AgentSecretKey = a.AgentKeyPath
		if a.StateDir != "" {
			cfg.Agent.StateDir = a.StateDir
		}
		if note := apply(cfg); note != "" {
			r.Notef("%s", note)
		}
		draft, err := config.Marshal(cfg)
		if err != nil {
			return err
		}
		final, err := config.Parse(draft)
		if err != nil {
			return WithFix(fmt.Errorf("the config setup would write is invalid: %w", err), "correct the answers named above and re-run")
		}
		data, err := config.Marshal(final)
		if err != nil {
			return err
		}
		if bytes.Equal(data, old) {
			if st, err := os.Stat(a.Path); err == nil && st.Mode().Perm() != 0o600 {
				if err := os.Chmod(a.Path, 0o600); err != nil {
					return err
				}
				r.Changed("%s unchanged; mode set to 0600", a.Path)
				return nil
			}
			r.Skip("%s is up to date", a.Path)
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(a.Path), 0o755); err != nil {
			return fmt.Errorf("create config dir: %w", err)
		}
		if err := writeOwned(a.Path, data, 0o600, ""); err != nil {
			return WithFix(fmt.Errorf("write %s: %w", a.Path, err), "run setup as a user that may write "+filepath.Dir(a.Path))
		}
		if old == nil {
			r.Changed("wrote %s", a.Path)
		} else {
			r.Changed("updated %s", a.Path)
		}
		return nil
	}}
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
