package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/setup"
)

// tokenFile keeps tok in a 0600 file and returns "file:PATH".
func tokenFile(t *testing.T, tok string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "setup-token")
	testutil.WriteFile(t, p, tok+"\n", 0o600)
	return "file:" + p
}

// TestRegisterSetupToken: `dc-agent register --setup-token` against dc-api
// in both profiles: on a bare host it creates the agent key and writes
// the provider and pool into the config; again it says it is registered;
// each refusal is one message with its fix and exit code, and the token
// never shows in the output.
func TestRegisterSetupToken(t *testing.T) {
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			srv := apitest.Start(t, apitest.WithProfile(profile))
			prov := srv.NewProvider("Acme")
			pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
			tok := srv.SetupToken(pool, time.Hour)
			dir := t.TempDir()
			cfg := filepath.Join(dir, "dc-agent.toml")
			r := runAgent(t, runOpts{}, "--config", cfg, "register", "--setup-token", tokenFile(t, tok), "--api-endpoint", srv.URL)
			if r.code != 0 || !strings.Contains(r.stdout, "Registered with "+srv.URL) || !strings.Contains(r.stdout, "pool eu-proxmox ("+pool.PoolID+", europe)") ||
				!strings.Contains(r.stderr, "Next: set up the backend (dc-agent setup proxmox") {
				t.Fatalf("register: %s", r)
			}
			if strings.Contains(r.stdout+r.stderr, tok) {
				t.Error("the token was printed")
			}
			c, _, err := setup.LoadForUpdate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.API.Endpoint != srv.URL || c.API.ProviderPubkey != prov.Pubkey || c.API.PoolID != pool.PoolID || c.API.PoolName != "eu-proxmox" ||
				c.API.PoolLocation != "europe" || c.API.AgentSecretKey != filepath.Join(dir, "agent.key") {
				t.Fatalf("config [api]: %+v", c.API)
			}
			key, err := identity.LoadAgentKey(filepath.Join(dir, "agent.key"))
			if err != nil {
				t.Fatal(err)
			}
			if d := srv.Delegation(prov, identity.PublicHex(key)); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}
			if st, _ := os.Stat(cfg); st.Mode().Perm() != 0o600 {
				t.Errorf("config mode %v", st.Mode())
			}
			// Again with the same (now used) token, from the environment.
			r = runAgent(t, runOpts{env: []string{"DC_AGENT_SETUP_TOKEN=" + tokenFile(t, tok)}}, "--config", cfg, "register")
			if r.code != 0 || !strings.Contains(r.stderr, "registered already") {
				t.Fatalf("again: %s", r)
			}

			// On the live profile an offline-signed delegation is refused
			// with the way that works.
			if profile == apiserver.ProfileLive {
				cfg, key := agentHost(t, srv, prov)
				sd := srv.SignDelegation(prov, identity.PublicHex(key))
				r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", encode(t, sd))
				if r.code == 0 || !strings.Contains(r.stderr, "405") || !strings.Contains(r.stderr, "fix: register with a setup token") ||
					!strings.Contains(r.stderr, "Agents > your pool > Add Agent") {
					t.Fatalf("delegation on live: %s", r)
				}
			}

			expired := srv.SetupToken(pool, 0)
			for _, c := range []struct {
				name  string
				args  []string
				env   []string
				code  int
				wants []string
			}{
				{"used", []string{"--setup-token", tokenFile(t, tok)}, nil, exitAuth, []string{"already used", "fix: make a new setup token on the Decent Cloud dashboard: Agents > your pool > Add Agent"}},
				{"expired", []string{"--setup-token", tokenFile(t, expired)}, nil, exitAuth, []string{"has expired", "fix: make a new setup token"}},
				{"unknown", []string{"--setup-token", tokenFile(t, "apt_europe_00000000deadbeef")}, nil, exitAuth, []string{"does not know this setup token", "a token works only on the API it was made on"}},
				{"a key instead", []string{"--setup-token", prov.Pubkey}, nil, exitUsage, []string{"not a setup token", "warning: a setup token on the command line is visible"}},
				{"both ways", []string{"--setup-token", tokenFile(t, tok), "--delegation", "dcds1:x"}, nil, exitUsage, []string{"two ways to register"}},
				{"unreachable", []string{"--setup-token", tokenFile(t, srv.SetupToken(pool, time.Hour)), "--api-endpoint", "http://127.0.0.1:9"}, nil, exitFailure, []string{"did not answer", "the token is not used"}},
			} {
				d := t.TempDir()
				r := runAgent(t, runOpts{env: c.env}, append([]string{"--config", filepath.Join(d, "dc-agent.toml"), "register", "--api-endpoint", srv.URL}, c.args...)...)
				if r.code != c.code {
					t.Errorf("%s: exit %d, want %d\n%s", c.name, r.code, c.code, r)
				}
				for _, w := range c.wants {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("%s: stderr lacks %q\n%s", c.name, w, r)
					}
				}
				if _, err := os.Stat(filepath.Join(d, "dc-agent.toml")); err == nil {
					t.Errorf("%s: a refused registration wrote a config", c.name)
				}
			}
			// A token file others can read is refused before it is sent.
			open := filepath.Join(t.TempDir(), "token")
			testutil.WriteFile(t, open, srv.SetupToken(pool, time.Hour)+"\n", 0o644)
			r = runAgent(t, runOpts{}, "--config", filepath.Join(t.TempDir(), "dc-agent.toml"), "register", "--setup-token", "file:"+open, "--api-endpoint", srv.URL)
			if r.code != exitUsage || !strings.Contains(r.stderr, "0600") {
				t.Errorf("a 0644 token file: %s", r)
			}
		})
	}
}

// TestNoTUISetupToken: the scripted setup with a setup token, against both
// profiles (`setup proxmox` on one, the bare --no-tui on the other): the
// node is set up, the agent registered in the pool without offline
// signing, the service installed; a re-run changes nothing and keeps the
// mode `service install` gives the config; a used token on a fresh host
// is refused with its fix.
func TestNoTUISetupToken(t *testing.T) {
	testutil.RequireBinary(t, "sshd")
	for _, c := range []struct{ profile, via string }{{apiserver.ProfileLive, "bare"}, {apiserver.ProfileDefault, "setup proxmox"}} {
		t.Run(c.profile, func(t *testing.T) {
			t.Parallel()
			w := startNodeWorld(t, "9.1.1", apitest.WithProfile(c.profile))
			h, srv, prov := w.host, w.api, w.prov
			pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
			tok := srv.SetupToken(pool, time.Hour)
			dir := t.TempDir()
			cfg := filepath.Join(dir, "dc-agent.toml")
			root := filepath.Join(dir, "root")
			args := func(cfg string) []string {
				a := []string{"--no-tui", "--config", cfg}
				if c.via != "bare" {
					a = append(a, "setup", "proxmox")
				}
				a = append(a, "--host", h.Host, "--port", strconv.Itoa(h.Port), "--user", h.User, "--identity-file", h.ClientKeyFile,
					"--host-key-fingerprint", h.HostKeyFingerprint(), "--api-endpoint", srv.URL, "--proxmox-api-url", w.pveAPI.URL,
					"--image-mirror", w.images.URL, "--image-dir", filepath.Join(h.Dir, "images"), "--state-dir", filepath.Join(filepath.Dir(cfg), "state"))
				if c.via == "bare" {
					a = append(a, "--service-root", root)
				}
				return a
			}
			r := runSetup(t, dcAgent, []string{"DC_AGENT_SETUP_TOKEN=" + tokenFile(t, tok)}, args(cfg)...)
			if r.code != 0 {
				t.Fatalf("setup: %d\n%s\n%s", r.code, r.out, r.err)
			}
			if !strings.Contains(r.out, "Register with the setup token") || !strings.Contains(r.out, "in pool eu-proxmox") ||
				strings.Contains(r.out, "dcdr1:") || strings.Contains(r.out+r.err, tok) {
				t.Errorf("setup output:\n%s", r.out)
			}
			if c.via == "bare" && !strings.Contains(r.out, "Service installed") {
				t.Errorf("the service was not installed:\n%s", r.out)
			}
			if c.via != "bare" && !strings.Contains(r.out, "The agent is registered") {
				t.Errorf("not reported registered:\n%s", r.out)
			}
			conf, err := config.Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if conf.API.ProviderPubkey != prov.Pubkey || conf.API.PoolID != pool.PoolID || conf.Provisioner.Proxmox == nil || conf.Provisioner.Proxmox.TemplateVMID == 0 {
				t.Fatalf("config: %+v %+v", conf.API, conf.Provisioner.Proxmox)
			}
			key, err := conf.LoadAgentKey()
			if err != nil {
				t.Fatal(err)
			}
			if d := srv.Delegation(prov, identity.PublicHex(key)); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}

			// As the system service install leaves it: root:dc-agent 0640.
			// A re-run (the token now used) changes nothing, that included.
			if err := os.Chown(cfg, 0, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(cfg, 0o640); err != nil {
				t.Fatal(err)
			}
			before, _ := os.ReadFile(cfg)
			r = runSetup(t, dcAgent, []string{"DC_AGENT_SETUP_TOKEN=" + tokenFile(t, tok)}, args(cfg)...)
			if r.code != 0 || !strings.Contains(r.out, "registered already: pool eu-proxmox") {
				t.Fatalf("re-run: %d\n%s\n%s", r.code, r.out, r.err)
			}
			after, _ := os.ReadFile(cfg)
			st, _ := os.Stat(cfg)
			if string(before) != string(after) || st.Mode().Perm() != 0o640 {
				t.Errorf("the re-run changed the config (mode %v):\n%s", st.Mode(), after)
			}

			// A fresh host with the used token: refused, with the fix, and
			// nothing registered for it.
			fresh := filepath.Join(t.TempDir(), "dc-agent.toml")
			r = runSetup(t, dcAgent, []string{"DC_AGENT_SETUP_TOKEN=" + tokenFile(t, tok)}, args(fresh)...)
			if r.code != exitAuth || !strings.Contains(r.err, "already used") || !strings.Contains(r.err, "fix: make a new setup token on the Decent Cloud dashboard") {
				t.Fatalf("a used token on a fresh host: %d\n%s\n%s", r.code, r.out, r.err)
			}
		})
	}
}
