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
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	vultrsim "github.com/decent-stuff/dc-agent/internal/sim/vultr"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// cloudUI is scriptUI offering the cloud backends: backend picks one,
// cloud answers the token and region questions.
type cloudUI struct {
	scriptUI
	backend   string
	backendFn func() string // each answer in turn (instead of backend)
	cloud     func(q CloudQuestion) (CloudChoice, error)
}

func (u *cloudUI) Backend(_ context.Context, q BackendQuestion) (string, error) {
	u.note("backend", nil)
	if !slices.Equal(q.Backends, Backends) {
		return "", errors.New("unexpected backend question")
	}
	if u.backendFn != nil {
		return u.backendFn(), nil
	}
	return u.backend, nil
}

func (u *cloudUI) Cloud(_ context.Context, q CloudQuestion) (CloudChoice, error) {
	if q.Catalog == nil {
		u.note("cloud-token", q.Err)
	} else {
		u.note("cloud-region", q.Err)
	}
	return u.cloud(q)
}

// TestFlowCloudBackend: a front end that offers the cloud backends sets up
// DigitalOcean or Vultr through the flow: a wrong token and an unknown
// region are asked again with the reason, the setup token registers the
// agent, the config names the backend, its token file and region and the
// pool; no SSH or node question is asked. A re-run changes nothing.
// DigitalOcean against dc-api's default profile, Vultr against the live one.
func TestFlowCloudBackend(t *testing.T) {
	for _, tc := range []struct {
		typ, region, profile string
		start                func(t *testing.T) (url, token string)
	}{
		{config.TypeDigitalOcean, "ams3", apiserver.ProfileDefault, func(t *testing.T) (string, string) {
			s := dosim.New(dosim.Options{CreateDuration: time.Millisecond})
			return s.Start(t), s.Token()
		}},
		{config.TypeVultr, "fra", apiserver.ProfileLive, func(t *testing.T) (string, string) {
			s := vultrsim.New(vultrsim.Options{CreateDuration: time.Millisecond})
			return s.Start(t), s.Token()
		}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			t.Parallel()
			url, token := tc.start(t)
			dir := t.TempDir()
			good, wrong := filepath.Join(dir, "token"), filepath.Join(dir, "wrong")
			if err := os.WriteFile(good, []byte(token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(wrong, []byte("not-the-token\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			srv := apitest.Start(t, apitest.WithProfile(tc.profile))
			prov := srv.NewProvider("Acme")
			pool := srv.NewPool(prov, "eu-cloud", "europe", tc.typ)
			cfgPath := filepath.Join(dir, "etc", "dc-agent.toml")
			o := FlowOptions{Answers: ProxmoxAnswers{ConfigPath: cfgPath, StateDir: filepath.Join(dir, "state"), APIEndpoint: srv.URL},
				SetupToken: srv.SetupToken(pool, time.Hour), Cloud: CloudAnswers{Endpoint: url}}
			ui := &cloudUI{backend: tc.typ}
			tokens, regions := 0, 0
			ui.cloud = func(q CloudQuestion) (CloudChoice, error) {
				a := q.Answer
				if q.Type != tc.typ {
					t.Errorf("asked for %s", q.Type)
				}
				if q.Catalog == nil {
					tokens++
					switch tokens {
					case 1:
						a.TokenFile = wrong
					case 2:
						if q.Err == nil || !strings.Contains(q.Err.Error(), "rejected") {
							t.Errorf("wrong token: asked again with %v", q.Err)
						}
						a.TokenFile = good
					}
					return a, nil
				}
				regions++
				switch regions {
				case 1:
					if def := map[string]string{config.TypeDigitalOcean: config.DefaultDORegion, config.TypeVultr: config.DefaultVultrRegion}[tc.typ]; q.Answer.Region != def {
						t.Errorf("region prefill %q, want the default %q", q.Answer.Region, def)
					}
					if !slices.ContainsFunc(q.Catalog.Regions, func(r provisioners.CatalogRegion) bool { return r.ID == tc.region }) {
						t.Errorf("catalog regions %v", q.Catalog.Regions)
					}
					a.Region = "atlantis"
				case 2:
					if q.Err == nil || !strings.Contains(q.Err.Error(), `region "atlantis" is not available`) {
						t.Errorf("unknown region: asked again with %v", q.Err)
					}
					a.Region = tc.region
				}
				return a, nil
			}
			flow := NewFlow(o, ui)
			if err := flow.Run(context.Background()); err != nil {
				t.Fatalf("%v\nasked %v", err, ui.asked)
			}
			want := []string{"prereqs", "api", "backend", "cloud-token", "cloud-token", "cloud-region", "cloud-region", "started:node"}
			if !slices.Equal(ui.asked, want) || flow.Stage() != StageRegistered {
				t.Fatalf("asked %v, want %v; stage %d", ui.asked, want, flow.Stage())
			}
			s := flow.Summary()
			if s.Cloud == nil || s.Cloud.Type != tc.typ || s.Cloud.Token != "" || s.Key == nil || s.Discovery != nil {
				t.Fatalf("summary %+v", s)
			}
			if d := srv.Delegation(prov, s.Key.Pubkey); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}
			cfg, err := config.Load(cfgPath)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.API.ProviderPubkey != prov.Pubkey || cfg.API.PoolID != pool.PoolID || cfg.Provisioner.Type != tc.typ {
				t.Fatalf("config [api] %+v, provisioner %s", cfg.API, cfg.Provisioner.Type)
			}
			kept, region := "", ""
			if d := cfg.Provisioner.DigitalOcean; d != nil {
				kept, region = d.APITokenFile, d.DefaultRegion
			}
			if v := cfg.Provisioner.Vultr; v != nil {
				kept, region = v.APITokenFile, v.DefaultRegion
			}
			if got, err := ReadCloudToken(kept); err != nil || got != token || region != tc.region {
				t.Fatalf("token file %s (%v), region %q", kept, err, region)
			}
			before, _ := os.ReadFile(cfgPath)

			// Again, the token used: nothing changes.
			again := &cloudUI{backend: tc.typ, cloud: func(q CloudQuestion) (CloudChoice, error) {
				a := q.Answer
				if q.Catalog == nil {
					a.TokenFile = good
				}
				return a, nil
			}}
			flow = NewFlow(o, again)
			if err := flow.Run(context.Background()); err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if done := again.texts(PhaseNode, EventDone); len(done) != 0 {
				t.Errorf("re-run changed: %q", done)
			}
			if after, _ := os.ReadFile(cfgPath); string(after) != string(before) {
				t.Errorf("re-run changed the config:\n%s", after)
			}
		})
	}
}

// TestFlowCloudBack: esc on the cloud account goes back to the backend
// question (not to a Proxmox question the cloud path skipped), and
// Proxmox chosen there goes on to the SSH question.
func TestFlowCloudBack(t *testing.T) {
	backends := []string{config.TypeDigitalOcean, config.TypeProxmox}
	ui := &cloudUI{cloud: func(CloudQuestion) (CloudChoice, error) { return CloudChoice{}, ErrBack }}
	stop := errors.New("stop here")
	ui.ssh = func(SSHQuestion) (SSHAnswer, error) { return SSHAnswer{}, stop }
	ui.api = func(q APIQuestion) (APIAnswer, error) {
		a := q.Answer
		a.Endpoint, a.Method, a.SetupToken = "https://api.example.org", MethodSetupToken, "apt_europe_0123456789abcdef"
		return a, nil
	}
	ui.backendFn = func() string { b := backends[0]; backends = backends[1:]; return b }
	o := FlowOptions{Answers: ProxmoxAnswers{ConfigPath: filepath.Join(t.TempDir(), "dc-agent.toml")}}
	if err := NewFlow(o, ui).Run(context.Background()); !errors.Is(err, stop) {
		t.Fatalf("err %v", err)
	}
	if want := []string{"prereqs", "api", "backend", "cloud-token", "backend", "ssh"}; !slices.Equal(ui.asked, want) {
		t.Fatalf("asked %v, want %v", ui.asked, want)
	}
}
