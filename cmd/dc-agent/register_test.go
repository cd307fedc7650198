package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
)

// agentHost writes a config for provider p at srv and an agent key.
func agentHost(t *testing.T, srv *apitest.Server, p *apitest.Provider) (cfgPath string, key []byte) {
	t.Helper()
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent.key")
	key, _, err := identity.EnsureAgentKey(keyPath, false)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(dir, "dc-agent.toml")
	if err := config.Save(cfgPath, &config.Config{
		API:         config.APIConfig{Endpoint: srv.URL, ProviderPubkey: p.Pubkey, AgentSecretKey: keyPath},
		Provisioner: config.ProvisionerConfig{Type: config.TypeManual, Manual: &config.ManualConfig{}},
	}); err != nil {
		t.Fatal(err)
	}
	return cfgPath, key
}

func encode(t *testing.T, sd identity.SignedDelegation) string {
	t.Helper()
	code, err := sd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestRegister(t *testing.T) {
	srv := apitest.Start(t)
	prov := srv.NewProvider("Acme")
	cfg, key := agentHost(t, srv, prov)
	pub := identity.PublicHex(key)

	// Signed offline (what `delegation sign` prints), passed as a file.
	code := encode(t, srv.SignDelegation(prov, pub))
	file := filepath.Join(t.TempDir(), "signed")
	os.WriteFile(file, []byte(code+"\n"), 0o600)
	r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", "file:"+file)
	if r.code != 0 || !strings.Contains(r.stdout, "Registered with "+srv.URL) {
		t.Fatalf("register: %s", r)
	}
	if _, err := srv.ProviderClient(prov).GetDelegation(t.Context(), pub); err != nil {
		t.Fatalf("the API does not hold the delegation: %v", err)
	}
	// Again, from the kept copy: harmless, and says so.
	r = runAgent(t, runOpts{}, "--config", cfg, "register")
	if r.code != 0 || !strings.Contains(r.stdout, "egistered") {
		t.Fatalf("re-register: %s", r)
	}

	t.Run("wrong provider", func(t *testing.T) {
		other := srv.NewProvider("Other")
		r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", encode(t, srv.SignDelegation(other, pub)))
		if r.code != exitConfig || !strings.Contains(r.stderr, "signed by provider "+other.Pubkey) || !strings.Contains(r.stderr, "fix:") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("expired", func(t *testing.T) {
		sd := srv.SignDelegation(prov, pub, apitest.ExpiresAt(time.Now().Add(-time.Minute)))
		r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", encode(t, sd))
		if r.code != exitConfig || !strings.Contains(r.stderr, "expired at") || !strings.Contains(r.stderr, "dc-agent delegation request") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("for another agent", func(t *testing.T) {
		k2, _ := identity.GenerateKey()
		r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", encode(t, srv.SignDelegation(prov, identity.PublicHex(k2))))
		if r.code != exitConfig || !strings.Contains(r.stderr, "this host's agent key is "+pub) {
			t.Fatalf("%s", r)
		}
	})
	t.Run("provider unknown to the API", func(t *testing.T) {
		stranger, _ := identity.GenerateKey()
		c2, k2 := agentHost(t, srv, &apitest.Provider{Key: stranger, Pubkey: identity.PublicHex(stranger)})
		d := identity.Delegation{AgentPubkey: identity.PublicHex(k2), ProviderPubkey: identity.PublicHex(stranger), Permissions: identity.AllPermissions}
		sd, _ := d.Sign(stranger)
		r := runAgent(t, runOpts{}, "--config", c2, "register", "--delegation", encode(t, sd))
		if r.code != exitFailure || !strings.Contains(r.stderr, "does not know provider "+identity.PublicHex(stranger)) || !strings.Contains(r.stderr, "fix:") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("no delegation and no terminal", func(t *testing.T) {
		c2, _ := agentHost(t, srv, prov)
		r := runAgent(t, runOpts{}, "--config", c2, "register")
		if r.code != exitUsage || !strings.Contains(r.stderr, "--delegation is required") {
			t.Fatalf("%s", r)
		}
	})
	t.Run("a request instead of the signed code", func(t *testing.T) {
		req, _ := identity.Delegation{AgentPubkey: pub, ProviderPubkey: prov.Pubkey, Permissions: identity.AllPermissions}.EncodeRequest()
		r := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", req)
		if r.code != exitConfig || !strings.Contains(r.stderr, "not the signed delegation") {
			t.Fatalf("%s", r)
		}
	})
}
