package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodConfig = `[api]
endpoint = "https://api.decent-cloud.org"
provider_pubkey = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
agent_secret_key = "agent.key"

[polling]
interval_seconds = 30

[provisioner]
type = "manual"
`

// Each bad input gets exactly one line on stderr that names the problem and
// the fix, and a non-zero exit code (3 for config and key files).
func TestBadInputMessages(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		config string // "" = no config file
		keyMod os.FileMode
		args   []string
		code   int
		want   []string
	}{
		{"typo'd key", strings.Replace(goodConfig, "endpoint =", "endpont =", 1), 0o600, []string{"init"}, 3,
			[]string{`line 2: unknown key "endpont" in [api]; did you mean "endpoint"?`}},
		{"typo'd key, request", strings.Replace(goodConfig, "interval_seconds", "intervall_seconds", 1), 0o600, []string{"delegation", "request"}, 3,
			[]string{`line 7: unknown key "intervall_seconds" in [polling]; did you mean "interval_seconds"?`}},
		{"wrong type", strings.Replace(goodConfig, "interval_seconds = 30", `interval_seconds = "30"`, 1), 0o600, []string{"init"}, 3,
			[]string{"line 7: polling.interval_seconds must be a whole number, not text in quotes; write it as interval_seconds = 30 (no quotes)"}},
		{"missing endpoint", strings.Replace(goodConfig, `endpoint = "https://api.decent-cloud.org"`, "", 1), 0o600, []string{"delegation", "request"}, 3,
			[]string{`api.endpoint is missing; set it to the Decent Cloud API URL, e.g. endpoint = "https://api.decent-cloud.org"`}},
		{"world-readable key", goodConfig, 0o644, []string{"delegation", "request"}, 3,
			[]string{"has mode 0644; run: chmod 600 ", "agent.key"}},
		{"world-readable key, init", goodConfig, 0o604, []string{"init"}, 3,
			[]string{"has mode 0604; run: chmod 600 "}},
		{"truncated dcds1", "", 0, []string{"delegation", "show", "dcds1:ZGVjZW50LWNsb3VkIGFnZW50IGRlbGVnYXRpb24gdjEKYWdlbnQ6IDE5N2Y2YjIz"}, 1,
			[]string{"signed delegation is truncated; copy the whole dcds1: code again"}},
		{"no provider", "", 0o600, []string{"delegation", "request"}, 2,
			[]string{"--provider is required: your provider public key"}},
		{"unknown flag", "", 0, []string{"delegation", "request", "--provder", "x"}, 2,
			[]string{"unknown flag: --provder; see 'dc-agent delegation request --help' for the flags"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "dc-agent.toml")
			if c.config != "" {
				writeFile(t, cfg, c.config, 0o600)
			}
			if c.keyMod != 0 {
				writeFile(t, filepath.Join(dir, "agent.key"), strings.Repeat("4a", 32)+"\n", c.keyMod)
			}
			r := runAgent(t, runOpts{}, append([]string{"--config", cfg}, c.args...)...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d", r.code, c.code)
			}
			if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.HasPrefix(r.stderr, "error: ") {
				t.Errorf("want exactly one error line on stderr")
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q", w)
				}
			}
			if t.Failed() {
				t.Logf("%s", r)
			}
			// Nothing half-done: a refused init creates no key.
			if c.args[0] == "init" && c.keyMod == 0o600 {
				if b, _ := os.ReadFile(filepath.Join(dir, "agent.key")); strings.TrimSpace(string(b)) != strings.Repeat("4a", 32) {
					t.Error("init changed the key file despite the error")
				}
			}
		})
	}
}
