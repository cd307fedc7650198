package testutil

import (
	"fmt"
	"strings"
	"testing"
)

// AgentTOML is a dc-agent.toml for a test that runs the real binary: the
// [api] and [agent] keys every such config has, and what the test adds.
type AgentTOML struct {
	// [api]: the endpoint, the provider's public key, the agent key's file;
	// API has more lines of the section (pool_id).
	Endpoint, ProviderPubkey, AgentKey string
	API                                string
	// Polling is the [polling] section's lines; "" leaves it out.
	Polling string
	// [agent]: the state directory and the status socket; Agent has more
	// lines of the section.
	StateDir, StatusSocket string
	Agent                  string
	// Rest follows: the [provisioner] sections.
	Rest string
}

// String is the config's text.
func (c AgentTOML) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[api]\nendpoint = %q\nprovider_pubkey = %q\nagent_secret_key = %q\n", c.Endpoint, c.ProviderPubkey, c.AgentKey)
	section(&b, c.API)
	if c.Polling != "" {
		b.WriteString("[polling]\n")
		section(&b, c.Polling)
	}
	fmt.Fprintf(&b, "[agent]\nstate_dir = %q\nstatus_socket = %q\n", c.StateDir, c.StatusSocket)
	section(&b, c.Agent)
	b.WriteString(c.Rest)
	return b.String()
}

// section ends a section with its lines and a blank line.
func section(b *strings.Builder, lines string) {
	if lines = strings.TrimSpace(lines); lines != "" {
		b.WriteString(lines + "\n")
	}
	b.WriteString("\n")
}

// Write writes the config to path (0600) and returns path.
func (c AgentTOML) Write(t testing.TB, path string) string {
	t.Helper()
	return WriteFile(t, path, c.String(), 0o600)
}

// ScriptProvisionerTOML is the [provisioner] sections of the script
// backend with script as the program of each of actions (provision,
// terminate, health_check, …); more are further lines of
// [provisioner.script].
func ScriptProvisionerTOML(script string, actions []string, more string) string {
	var b strings.Builder
	b.WriteString("[provisioner]\ntype = \"script\"\n\n[provisioner.script]\n")
	for _, a := range actions {
		fmt.Fprintf(&b, "%s = %q\n", a, script)
	}
	section(&b, more)
	return b.String()
}
