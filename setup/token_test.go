package setup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
)

var profiles = []string{apiserver.ProfileDefault, apiserver.ProfileLive}

// TestRegisterSetupToken registers against dc-api in both profiles (the
// live one answers refusals as HTTP 200 success:false, the default one
// with status codes): the answer names the provider and pool, and each
// refusal is one clear message with the dashboard as its fix.
func TestRegisterSetupToken(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			srv := apitest.Start(t, apitest.WithProfile(profile))
			prov := srv.NewProvider("Acme")
			pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
			key, _ := identity.GenerateKey()
			tok := srv.SetupToken(pool, time.Hour)

			reg, err := RegisterSetupToken(context.Background(), srv.URL, tok, key, "test")
			if err != nil {
				t.Fatal(err)
			}
			if reg.ProviderPubkey != prov.Pubkey || reg.Pool != (Pool{ID: pool.PoolID, Name: "eu-proxmox", Location: "europe"}) || reg.Endpoint != srv.URL {
				t.Fatalf("%+v", reg)
			}
			if d := srv.Delegation(prov, identity.PublicHex(key)); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}

			expired := srv.SetupToken(pool, 0)
			for _, c := range []struct {
				name, token, reason, want string
			}{
				{"used", tok, "used", "already used"},
				{"expired", expired, "expired", "expired"},
				{"unknown", "apt_europe_0123456789abcdef", "unknown", "does not know this setup token"},
				{"a delegation", "dcds1:AAAA", "malformed", "not a setup token"},
				{"a key", prov.Pubkey, "malformed", "not a setup token"},
				{"two words", "apt_europe 0123", "malformed", "not a setup token"},
			} {
				other, _ := identity.GenerateKey()
				_, err := RegisterSetupToken(context.Background(), srv.URL, c.token, other, "test")
				var te *TokenError
				if !errors.As(err, &te) || te.Reason != c.reason || !strings.Contains(err.Error(), c.want) || !strings.Contains(FixOf(err), "dashboard") {
					t.Errorf("%s: %v (fix %q)", c.name, err, FixOf(err))
				}
				if strings.Contains(err.Error(), c.token) && c.reason != "malformed" {
					t.Errorf("%s: the message shows the token: %v", c.name, err)
				}
			}
		})
	}
}

// TestTokenRefusedByLiveDelegationPOST: the live API has no POST
// .../agent-delegations (405); registering a delegation there says to use
// a setup token and where to get one.
func TestDelegationRefusedByLiveAPI(t *testing.T) {
	srv := apitest.Start(t, apitest.WithProfile(apiserver.ProfileLive))
	prov := srv.NewProvider("Acme")
	key, _ := identity.GenerateKey()
	sd := srv.SignDelegation(prov, identity.PublicHex(key))
	c := srv.Client(prov, key)
	_, err := Register(context.Background(), c, sd)
	if err == nil || !strings.Contains(err.Error(), "405") || !strings.Contains(FixOf(err), "--setup-token") || !strings.Contains(FixOf(err), "Agents > your pool > Add Agent") {
		t.Fatalf("%v\nfix: %s", err, FixOf(err))
	}
}

func TestReadSetupToken(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "token")
	if err := os.WriteFile(good, []byte("apt_europe_0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("apt_europe_0123456789abcdef\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		v, stdin, want, err string
	}{
		{"file:" + good, "", "apt_europe_0123456789abcdef", ""},
		{"-", " apt_x_1\n", "apt_x_1", ""},
		{"apt_x_2", "", "apt_x_2", ""},
		{"file:" + open, "", "", "0600"},
		{"file:" + filepath.Join(dir, "missing"), "", "", "missing"},
		{"", "", "", "required"},
	} {
		got, err := ReadSetupToken(c.v, strings.NewReader(c.stdin))
		if got != c.want && c.err == "" || (c.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error()+FixOf(err), c.err) {
			t.Errorf("%q: %q, %v", c.v, got, err)
		}
	}
}

// TestSaveRegistrationKeepsTheServiceMode: a registration written into a
// config the service install made root:dc-agent 0640 keeps it so (a
// re-run of setup must not lock the service out); a new config is 0600.
func TestSaveRegistrationKeepsTheServiceMode(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dc-agent.toml")
	reg := TokenRegistration{Endpoint: "https://api.example", ProviderPubkey: strings.Repeat("ab", 32), Pool: Pool{ID: "eu-1", Name: "EU", Location: "europe"}}
	if changed, err := SaveRegistration(path, filepath.Join(dir, "agent.key"), reg); err != nil || !changed {
		t.Fatal(changed, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("a new config is %v", st.Mode())
	}
	cfg, _, err := LoadForUpdate(path)
	if err != nil || cfg.API.PoolID != "eu-1" || cfg.API.PoolName != "EU" || cfg.API.PoolLocation != "europe" || cfg.API.ProviderPubkey != reg.ProviderPubkey {
		t.Fatalf("%+v %v", cfg.API, err)
	}
	if changed, err := SaveRegistration(path, filepath.Join(dir, "agent.key"), reg); err != nil || changed {
		t.Fatalf("an unchanged registration rewrote the config: %v %v", changed, err)
	}
	// As `service install` leaves it: root's, read through the group.
	if err := os.Chown(path, 0, 65534); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	reg.Pool.Name = "EU 2"
	for range 2 { // changed, then unchanged
		if _, err := SaveRegistration(path, filepath.Join(dir, "agent.key"), reg); err != nil {
			t.Fatal(err)
		}
		st, _ := os.Stat(path)
		if st.Mode().Perm() != 0o640 || gidOf(t, path) != 65534 {
			t.Fatalf("setup changed the service's config to %v gid %d", st.Mode(), gidOf(t, path))
		}
	}
	// World access is taken away; the group's read stays.
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	if _, err := SaveRegistration(path, filepath.Join(dir, "agent.key"), reg); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("0664 became %v", st.Mode())
	}
}

// TestFlowSetupToken walks the flow with a setup token against both
// profiles: no delegation question, no registration phase, the config
// names provider and pool; a re-run (token used, or none) keeps the
// registration; a refused token is asked for again with the reason.
func TestFlowSetupToken(t *testing.T) {
	for _, profile := range profiles {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "9.1.1")
			srv := apitest.Start(t, apitest.WithProfile(profile))
			prov := srv.NewProvider("Acme")
			pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
			o := f.flowOptions(srv.URL, "")
			used := srv.SetupToken(pool, 0) // expired: refused first
			o.SetupToken = used
			good := srv.SetupToken(pool, time.Hour)
			apiCalls := 0
			ui := &scriptUI{}
			ui.api = func(q APIQuestion) (APIAnswer, error) {
				apiCalls++
				if !slices.Equal(q.Methods, []RegistrationMethod{MethodSetupToken, MethodDelegation}) || q.Answer.Method != MethodSetupToken {
					t.Errorf("methods %v, prefill %q", q.Methods, q.Answer.Method)
				}
				a := q.Answer
				if apiCalls == 2 {
					var te *TokenError
					if !errors.As(q.Err, &te) || te.Reason != "expired" {
						t.Errorf("asked again without the reason: %v", q.Err)
					}
					a.SetupToken = good
				}
				return a, nil
			}
			ui.ended = func(p Phase, err error) (bool, error) {
				if p == PhaseNode && err != nil {
					return false, ErrBack
				}
				return false, err
			}
			flow := NewFlow(o, ui)
			if err := flow.Run(context.Background()); err != nil {
				t.Fatalf("%v\nasked %v", err, ui.asked)
			}
			want := []string{"prereqs", "api", "ssh", "hostkey", "started:connect", "choose", "started:node", "api", "started:node"}
			if !slices.Equal(ui.asked, want) || flow.Stage() != StageRegistered {
				t.Fatalf("asked %v, want %v; stage %d", ui.asked, want, flow.Stage())
			}
			key := flow.Summary().Key
			if d := srv.Delegation(prov, key.Pubkey); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}
			cfg, err := config.Load(o.Answers.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.API.ProviderPubkey != prov.Pubkey || cfg.API.PoolID != pool.PoolID || cfg.API.PoolName != "eu-proxmox" || cfg.API.PoolLocation != "europe" {
				t.Fatalf("config [api] %+v", cfg.API)
			}
			if s := flow.Summary().Answers; s.ProviderPubkey != prov.Pubkey || s.Pool.ID != pool.PoolID {
				t.Fatalf("summary %+v", s)
			}
			before, _ := os.ReadFile(o.Answers.ConfigPath)

			// Again: with the used token, and with none.
			for _, tok := range []string{good, ""} {
				o.SetupToken = tok
				again := &scriptUI{}
				flow := NewFlow(o, again)
				if err := flow.Run(context.Background()); err != nil {
					t.Fatalf("re-run with %q: %v", tok, err)
				}
				skipped := again.texts(PhaseNode, EventSkipped)
				if !slices.ContainsFunc(skipped, func(s string) bool { return strings.Contains(s, "registered already: pool eu-proxmox") }) {
					t.Errorf("re-run with %q: the registration is not reported as kept: %q", tok, skipped)
				}
				if done := again.texts(PhaseNode, EventDone); len(done) != 0 {
					t.Errorf("re-run with %q changed: %q", tok, done)
				}
				if after, _ := os.ReadFile(o.Answers.ConfigPath); string(after) != string(before) {
					t.Errorf("re-run with %q changed the config:\n%s", tok, after)
				}
			}
		})
	}
}

func gidOf(t *testing.T, path string) int {
	t.Helper()
	_, gid, ok := ownerOf(path)
	if !ok {
		t.Fatal("no owner")
	}
	return gid
}
