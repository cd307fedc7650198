package config

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/decent-stuff/dc-agent/identity"
)

// InlineSecrets names the settings that hold a secret in the config text
// itself rather than in a 0600 file of its own (legacy forms, accepted
// with a warning).
func (c *Config) InlineSecrets() []string {
	var out []string
	if isInlineHexKey(c.API.AgentSecretKey) {
		out = append(out, "api.agent_secret_key")
	}
	for i, p := range c.AllProvisioners() {
		where := "provisioner"
		if i > 0 {
			where = fmt.Sprintf("additional_provisioners[%d]", i-1)
		}
		if p.Proxmox != nil && p.Proxmox.APITokenSecret != "" {
			out = append(out, where+".proxmox.api_token_secret")
		}
		if p.Hetzner != nil && p.Hetzner.APIToken != "" {
			out = append(out, where+".hetzner.api_token")
		}
		if p.DigitalOcean != nil && p.DigitalOcean.APIToken != "" {
			out = append(out, where+".digitalocean.api_token")
		}
	}
	return out
}

// CheckInlineSecretsMode holds a config file (c.Path) with inline secrets
// to the rule of a key file: nobody but its owner may read or write it.
func (c *Config) CheckInlineSecretsMode() error {
	names := c.InlineSecrets()
	if len(names) == 0 || c.Path == "" {
		return nil
	}
	path := c.Path
	err := identity.CheckSecretFileMode(path)
	if err == nil {
		return nil
	}
	msg := err.Error()
	if st, serr := os.Stat(path); serr == nil && errors.Is(err, identity.ErrKeyPermissions) {
		msg = fmt.Sprintf("mode %04o lets other users read it", st.Mode().Perm())
	}
	return &LoadError{Path: path, Problems: []string{fmt.Sprintf(
		"%s, and it holds secrets inline (%s): make it as private as a key file (chmod 600 %s), or better, move each secret into a 0600 file of its own (agent_secret_key = \"/etc/dc-agent/agent.key\", api_token_secret_file, api_token_file)",
		msg, strings.Join(names, ", "), path)}}
}
