package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Finding 8 of issue 15: a dc-agent.toml holding secrets inline was
// accepted whatever its mode. It is held to the rule of a key file: no
// access for group or others.
func TestInlineSecretsNeedPrivateConfig(t *testing.T) {
	const seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	inlineKey := strings.Replace(minimal, `agent_secret_key = "agent.key"`, `agent_secret_key = "`+seed+`"`, 1)
	inlineToken := minimal + "\n[[additional_provisioners]]\ntype = \"hetzner\"\n[additional_provisioners.hetzner]\napi_token = \"hcloud-secret\"\n"
	for _, tc := range []struct {
		name, text string
		mode       os.FileMode
		want       string // "" : loads
	}{
		{"inline key, 0644", inlineKey, 0o644, "mode 0644 lets other users read it, and it holds secrets inline (api.agent_secret_key): make it as private as a key file (chmod 600"},
		{"inline key, 0640", inlineKey, 0o640, "mode 0640"},
		{"inline key, 0604", inlineKey, 0o604, "mode 0604"},
		{"inline token, 0644", inlineToken, 0o644, "(additional_provisioners[0].hetzner.api_token)"},
		{"inline DigitalOcean token, 0640", minimal + "\n[[additional_provisioners]]\ntype = \"digitalocean\"\n[additional_provisioners.digitalocean]\napi_token = \"dop_v1_secret\"\n", 0o640, "(additional_provisioners[0].digitalocean.api_token)"},
		{"inline key, 0600", inlineKey, 0o600, ""},
		{"inline key, 0400", inlineKey, 0o400, ""},
		{"no inline secret, 0644", minimal, 0o644, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "dc-agent.toml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// Finding 8 of issue 15: http:// endpoints were accepted for any host.
func TestPlainHTTPEndpointOnlyForLoopback(t *testing.T) {
	set := func(endpoint string) string {
		return strings.Replace(minimal, `endpoint = "https://api.decent-cloud.org"`, `endpoint = "`+endpoint+`"`, 1)
	}
	hetzner := func(endpoint string) string {
		return minimal + "\n[[additional_provisioners]]\ntype = \"hetzner\"\n[additional_provisioners.hetzner]\napi_token_file = \"t\"\nendpoint = \"" + endpoint + "\"\n"
	}
	for _, tc := range []struct {
		name, text, want string
	}{
		{"https", set("https://api.decent-cloud.org"), ""},
		{"loopback", set("http://127.0.0.1:8080"), ""},
		{"localhost", set("http://localhost:8080"), ""},
		{"other host", set("http://api.decent-cloud.org"), `api.endpoint "http://api.decent-cloud.org" uses plain http to another machine, which anyone on the path could read and answer; use https://`},
		{"userinfo trick", set("http://127.0.0.1@evil.example"), "use https://"},
		{"hetzner loopback", hetzner("http://127.0.0.1:9/v1"), ""},
		{"hetzner other host", hetzner("http://hetzner.internal/v1"), `endpoint "http://hetzner.internal/v1" would send the API token over plain http; use https://`},
		{"vultr other host", minimal + "\n[[additional_provisioners]]\ntype = \"vultr\"\n[additional_provisioners.vultr]\napi_token_file = \"t\"\nendpoint = \"http://vultr.internal\"\n", `endpoint "http://vultr.internal" would send the API token over plain http; use https://`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.text))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}
