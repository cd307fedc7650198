package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// tenantProv is memProv with tenant requests: it records every password
// set and key added, and fails as told.
type tenantProv struct {
	*memProv
	tmu       sync.Mutex
	passwords map[string][]string // contract → every password set, in order
	keys      map[string][]string // contract → keys added
	failTimes int                 // the next n calls fail (retryable)
	failWith  error               // then every call fails with this
}

func newTenantProv() *tenantProv {
	p := &tenantProv{memProv: newMemProv(), passwords: map[string][]string{}, keys: map[string][]string{}}
	p.feat.ResetPassword, p.feat.RotateSSHKey = true, true
	return p
}

func (p *tenantProv) fail() error {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	if p.failTimes > 0 {
		p.failTimes--
		return provisioners.Retryable(errors.New("guest agent busy"))
	}
	return p.failWith
}

func (p *tenantProv) ResetPassword(_ context.Context, cid, ext, pw string) (string, error) {
	if err := p.fail(); err != nil {
		return "", err
	}
	p.tmu.Lock()
	defer p.tmu.Unlock()
	p.passwords[cid] = append(p.passwords[cid], pw)
	return pw, nil
}

func (p *tenantProv) RotateSSHKey(_ context.Context, cid, ext, key string) error {
	if err := p.fail(); err != nil {
		return err
	}
	p.tmu.Lock()
	defer p.tmu.Unlock()
	p.keys[cid] = append(p.keys[cid], key)
	return nil
}

func (p *tenantProv) set(cid string) ([]string, []string) {
	p.tmu.Lock()
	defer p.tmu.Unlock()
	return append([]string(nil), p.passwords[cid]...), append([]string(nil), p.keys[cid]...)
}

// tenantWorld is an agent with backend b serving provider p of srv, and
// one provisioned contract whose requester holds reqKey.
type tenantWorld struct {
	h      *harness
	srv    *apitest.Server
	cid    string
	reqKey ed25519.PrivateKey
}

func newTenantWorld(t *testing.T, b provisioners.Provisioner, profile string, mods ...func(*apitest.Server, *Options)) *tenantWorld {
	t.Helper()
	srv := apitest.Start(t, apitest.WithProfile(profile))
	p := srv.NewProvider("Tenant Hosting")
	reqKey, _ := identity.GenerateKey()
	rp := identity.PublicHex(reqKey)
	spec := apitest.ContractSpec{RequesterPubkey: &rp}
	var agentKey ed25519.PrivateKey
	if profile == apiserver.ProfileLive {
		pool := srv.NewPool(p, "tenants", "europe", "script")
		agentKey = srv.NewPoolAgent(pool)
		spec.AgentPoolID = &pool.PoolID
	} else {
		agentKey = srv.NewAgent(p)
	}
	h := newHarness(t)
	h.useReferenceServer(srv, p, agentKey)
	cid := srv.CreateContract(p, spec)
	reg := provisioners.NewRegistry()
	reg.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) { return b, nil })
	h.start(func(o *Options) {
		o.Registry = reg
		for _, m := range mods {
			m(srv, o)
		}
	})
	srv.WaitForContract(cid, 20*time.Second, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
	return &tenantWorld{h: h, srv: srv, cid: cid, reqKey: reqKey}
}

func (w *tenantWorld) rootPassword(t *testing.T) string {
	t.Helper()
	d, ok := w.srv.InstanceDetails(w.cid)
	if !ok || d.RootPassword == "" {
		return ""
	}
	pw, err := identity.Open(d.RootPassword, w.reqKey)
	if err != nil {
		t.Fatalf("the tenant cannot open the root password: %v", err)
	}
	return string(pw)
}

func (w *tenantWorld) details() string {
	if d := w.srv.Contract(w.cid).InstanceDetails; d != nil {
		return *d
	}
	return ""
}

func (w *tenantWorld) request(t *testing.T, kind string) *store.TenantRequest {
	t.Helper()
	list, err := w.srv.Store.TenantRequests(context.Background(), w.cid)
	if err != nil {
		t.Fatal(err)
	}
	for i := range list {
		if list[i].Kind == kind {
			return &list[i]
		}
	}
	return nil
}

func (w *tenantWorld) journal(t *testing.T) []string {
	t.Helper()
	des, _ := os.ReadDir(filepath.Join(w.h.stateDir, tenantDir))
	var out []string
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// A reset sets one password, which the tenant opens from the contract; a
// rotation adds the checked key and makes it the contract's key; both end
// their requests and leave no journal. The two profiles deliver the
// password differently (sealed by the agent; plain, sealed by the server).
func TestTenantResetAndRotation(t *testing.T) {
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		t.Run(profile, func(t *testing.T) {
			b := newTenantProv()
			b.failTimes = 2 // transient failures are retried with the same password
			w := newTenantWorld(t, b, profile)
			before := w.details() // the provisioning password (on live, how it is sealed is live-agent's work)
			if _, err := w.srv.Store.RequestPasswordReset(context.Background(), w.cid, w.srv.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
			w.srv.API.WakeProvider(w.srv.Contract(w.cid).ProviderPubkey)
			eventually(t, "the reset reported", func() bool { r := w.request(t, store.RequestPasswordReset); return r != nil && r.DoneAtNs != nil })
			pws, _ := b.set(w.cid)
			got := w.rootPassword(t)
			if len(pws) != 1 || got != pws[0] || w.details() == before || len(got) != 24 {
				t.Fatalf("passwords set %q, tenant reads %q", pws, got)
			}
			key := apitest.NewSSHPubkey(t)
			if _, err := w.srv.Store.RequestKeyRotation(context.Background(), w.cid, "  "+key+"\t", w.srv.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
			eventually(t, "the rotation reported", func() bool { r := w.request(t, store.RequestKeyRotation); return r != nil && r.DoneAtNs != nil })
			if _, keys := b.set(w.cid); len(keys) != 1 || keys[0] != key || w.srv.Contract(w.cid).RequesterSSHPubkey != key {
				t.Fatalf("keys added %q, contract key %q", keys, w.srv.Contract(w.cid).RequesterSSHPubkey)
			}
			eventually(t, "no journal left", func() bool { return len(w.journal(t)) == 0 })
			if r := w.request(t, store.RequestPasswordReset); r.Error != nil {
				t.Fatalf("reset error %q", *r.Error)
			}
		})
	}
}

// Requests that cannot be done are one clear message to the tenant, and
// nothing is changed: on a server that takes failure reports the request
// ends with it; on the live API, which has none, it is a health check's
// details.
func TestTenantRequestFailures(t *testing.T) {
	cases := []struct {
		name    string
		backend func() provisioners.Provisioner
		kind    string
		key     string
		want    string
	}{
		{"not supported", func() provisioners.Provisioner { return newMemProv() }, store.RequestPasswordReset, "",
			"password reset failed: a password reset is not supported by this provider's script backend"},
		{"bad key", func() provisioners.Provisioner { return newTenantProv() }, store.RequestKeyRotation, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me",
			"SSH key rotation failed: the new SSH key is not usable: it is not an OpenSSH public key"},
		{"permanent backend failure", func() provisioners.Provisioner {
			p := newTenantProv()
			p.failWith = &provisioners.Error{Err: errors.New("/var/lib/secret host detail"), Tenant: "the VM's QEMU guest agent does not answer"}
			return p
		}, store.RequestPasswordReset, "", "password reset failed: the VM's QEMU guest agent does not answer"},
	}
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		for _, c := range cases {
			t.Run(profile+"/"+c.name, func(t *testing.T) {
				b := c.backend()
				w := newTenantWorld(t, b, profile)
				before := w.details()
				now := w.srv.Now().UnixNano()
				var err error
				if c.kind == store.RequestPasswordReset {
					_, err = w.srv.Store.RequestPasswordReset(context.Background(), w.cid, now)
				} else {
					_, err = w.srv.Store.RequestKeyRotation(context.Background(), w.cid, c.key, now)
				}
				if err != nil {
					t.Fatal(err)
				}
				if profile == apiserver.ProfileDefault {
					eventually(t, "the failure reported", func() bool { r := w.request(t, c.kind); return r != nil && r.Error != nil })
					if r := w.request(t, c.kind); !strings.HasPrefix(*r.Error, c.want) || strings.Contains(*r.Error, "/var/lib") {
						t.Fatalf("tenant reads %q, want %q", *r.Error, c.want)
					}
				} else {
					eventually(t, "the failure in a health check", func() bool {
						for _, hc := range w.srv.HealthChecks(w.cid) {
							if strings.HasPrefix(hc.Details, c.want) {
								return true
							}
						}
						return false
					})
					if r := w.request(t, c.kind); r.DoneAtNs != nil {
						t.Fatal("the live API's request ended without being carried out")
					}
				}
				if tp, ok := b.(*tenantProv); ok {
					if pws, keys := tp.set(w.cid); len(pws)+len(keys) != 0 {
						t.Fatalf("something was set: %q %q", pws, keys)
					}
				}
				if w.details() != before {
					t.Fatal("the instance details changed")
				}
				eventually(t, "no journal left", func() bool { return len(w.journal(t)) == 0 })
			})
		}
	}
}

// A job found on disk at start is carried on from its step: a taken reset
// sets the journaled password (not a new one) and reports it; an applied
// one is only reported.
func TestTenantJobResumed(t *testing.T) {
	b := newTenantProv()
	w := newTenantWorld(t, b, apiserver.ProfileDefault)
	w.h.stop()
	inst, _ := b.GetInstance(context.Background(), w.cid)
	if _, err := w.srv.Store.RequestPasswordReset(context.Background(), w.cid, w.srv.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	j := tenantJob{Kind: jobReset, ContractID: w.cid, RequestedAtNs: 1, Step: stepTaken, Provisioner: config.TypeScript, ExternalID: inst.ExternalID,
		Password: "journaled-password-0123456", SealTo: identity.PublicHex(w.reqKey)}
	if err := os.MkdirAll(filepath.Join(w.h.stateDir, tenantDir), 0o700); err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(j)
	if err := os.WriteFile(filepath.Join(w.h.stateDir, tenantDir, j.key()+".json"), b2, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := provisioners.NewRegistry()
	reg.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) { return b, nil })
	w.h.start(func(o *Options) { o.Registry = reg })
	eventually(t, "the reset reported", func() bool { r := w.request(t, store.RequestPasswordReset); return r != nil && r.DoneAtNs != nil })
	if pws, _ := b.set(w.cid); len(pws) != 1 || pws[0] != j.Password || w.rootPassword(t) != j.Password {
		t.Fatalf("passwords set %q, tenant reads %q", pws, w.rootPassword(t))
	}
}

func TestParseTenantJob(t *testing.T) {
	cid := strings.Repeat("a", 64)
	ok := `{"kind":"reset","contractId":"` + cid + `","step":"taken","password":"x"}`
	if _, err := parseTenantJob("reset-"+cid, []byte(ok)); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{
		"reset-" + cid:  `{"kind":"reset","contractId":"` + cid + `","step":"taken"}`,
		"rotate-" + cid: ok,
		"reset-x":       `{"kind":"reset","contractId":"x","step":"taken","password":"x"}`,
		"evil-" + cid:   `{"kind":"evil","contractId":"` + cid + `","step":"taken"}`,
	} {
		if _, err := parseTenantJob(name, []byte(body)); err == nil {
			t.Errorf("%s: %s accepted", name, body)
		}
	}
}

// FuzzTenantJob: a tenant journal file (the state directory is the
// agent's, but a file may be damaged) never panics the parser, and an
// accepted one names its file's request and can be resumed.
func FuzzTenantJob(f *testing.F) {
	cid := strings.Repeat("a", 64)
	f.Add("reset-"+cid, `{"kind":"reset","contractId":"`+cid+`","step":"taken","password":"x"}`)
	f.Add("rotate-"+cid, `{"kind":"rotate","contractId":"`+cid+`","step":"failed","error":"e"}`)
	f.Add("reset-"+cid, `{"kind":"reset","contractId":"`+cid+`","step":"applied","report":"{}"}`)
	f.Fuzz(func(t *testing.T, name, data string) {
		j, err := parseTenantJob(name, []byte(data))
		if err != nil {
			return
		}
		if j.key() != name || validContractID(j.ContractID) != nil || j.Step == stepTaken && j.Password == "" && j.SSHPubkey == "" {
			t.Fatalf("accepted %q as %+v", name, j)
		}
	})
}

// With the pending lists read only once an hour, a reset requested after
// the first read is carried out because the password-reset event stream
// announces it (both profiles); a server without the stream (404) leaves
// the agent polling, at TenantPoll.
func TestTenantResetByEventStream(t *testing.T) {
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		for _, stream := range []bool{true, false} {
			name := profile + "/stream"
			if !stream {
				name = profile + "/no-stream"
			}
			t.Run(name, func(t *testing.T) {
				tt := fastTiming()
				tt.TenantPoll, tt.TenantPollStreamed = time.Hour, time.Hour
				if !stream {
					tt.TenantPoll = 20 * time.Millisecond
				}
				b := newTenantProv()
				w := newTenantWorld(t, b, profile, func(srv *apitest.Server, o *Options) {
					o.Timing = fixedTiming(tt)
					if !stream {
						srv.FailNext("GET", "/password-reset-events", -1, 404)
					}
				})
				srvRef := w.srv
				// The first read of the list is done, and the stream is up (or
				// was refused).
				eventually(t, "the first read of the pending resets", func() bool {
					return srvRef.CountRequests("GET", "/pending-password-reset", 200) > 0
				})
				if stream {
					eventually(t, "the event stream up", func() bool { return w.h.a.tenant.streamUp.Load() })
				} else {
					eventually(t, "the event stream refused", func() bool { return srvRef.CountRequests("GET", "/password-reset-events", 404) > 0 })
				}
				reads := srvRef.CountRequests("GET", "/pending-password-reset", 0)
				if _, err := srvRef.Store.RequestPasswordReset(context.Background(), w.cid, srvRef.Now().UnixNano()); err != nil {
					t.Fatal(err)
				}
				eventually(t, "the reset reported", func() bool { r := w.request(t, store.RequestPasswordReset); return r != nil && r.DoneAtNs != nil })
				if pws, _ := b.set(w.cid); len(pws) != 1 || w.rootPassword(t) != pws[0] {
					t.Fatalf("passwords set %q", pws)
				}
				if stream && srvRef.CountRequests("GET", "/pending-password-reset", 0) != reads+1 {
					t.Fatalf("the list was read %d times after the request, want once (on the stream's word)", srvRef.CountRequests("GET", "/pending-password-reset", 0)-reads)
				}
			})
		}
	}
}
