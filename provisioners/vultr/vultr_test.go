package vultr

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/vultr/govultr/v3"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	vultrsim "github.com/decent-stuff/dc-agent/internal/sim/vultr"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

var (
	cid    = cloudkittest.ContractID
	sshKey = cloudkittest.SSHKey
)

type fixture struct {
	sim *vultrsim.Sim
	p   *Provisioner
	url string
}

// newFixture makes a simulator (simOpts changes its options) and a
// provisioner using it (mod changes its config); nil: no change.
func newFixture(t *testing.T, mod func(*config.VultrConfig), simOpts func(*vultrsim.Options)) *fixture {
	t.Helper()
	// Millisecond polling would hit the 30/s limit: off, and the client's
	// pace raised to match.
	so := vultrsim.Options{CreateDuration: 6 * time.Millisecond, PerSecond: -1}
	if simOpts != nil {
		simOpts(&so)
	}
	sim := vultrsim.New(so)
	url := sim.Start(t)
	cfg := config.VultrConfig{Endpoint: url, DefaultRegion: "ewr", DefaultOSID: 2284, PlanType: "vc2", ActionTimeoutSeconds: 5, PollIntervalMs: 1, RequestsPerSecond: 100000}
	p := cloudkittest.Build(t, cfg, mod, func(cfg config.VultrConfig) (*Provisioner, error) { return New(cfg, sim.Token(), TestOptions()) })
	return &fixture{sim: sim, p: p, url: url}
}

func (f *fixture) request(n int) provisioners.Request { return cloudkittest.Request(n) }

func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	if in := f.sim.Instances(); len(in) != 0 {
		t.Errorf("instances left behind: %+v", in)
	}
	for _, k := range f.sim.Keys() {
		if strings.HasPrefix(k.Name, cloudkit.KeyNamePrefix) {
			t.Errorf("SSH key left behind: %+v", k)
		}
	}
}

func TestProvisionLifecycle(t *testing.T) {
	f := newFixture(t, nil, nil)
	req := f.request(1)
	req.DatacenterCity = "Frankfurt am Main"
	req.Config = map[string]any{"region": "fra"}
	req.PostProvisionScript = "echo 'hi' > /root/x\n"
	req, inst := cloudkittest.ProvisionedSteps(t, f.p, req, 4)
	list := f.sim.Instances()
	if len(list) != 1 {
		t.Fatalf("instances: %d", len(list))
	}
	in := list[0]
	if inst.ExternalID != in.ID || inst.ContractID != cid(1) || inst.SSHPort != 22 || inst.IPAddress != in.MainIP || inst.IPv6Address != in.V6MainIP || in.V6MainIP == "" || in.MainIP == "0.0.0.0" {
		t.Fatalf("instance %+v for %+v", inst, in)
	}
	if in.Label != "dc-"+cid(1)[:60] || in.Hostname != in.Label || in.Region != "fra" || in.Plan != "vc2-2c-4gb" || in.ServerStatus != "ok" || in.OsID != 2284 {
		t.Errorf("instance %s in %s as %s (%s)", in.Label, in.Region, in.Plan, in.ServerStatus)
	}
	if inst.RootPassword != "" {
		t.Error("root password returned with an SSH key")
	}
	keys := f.sim.Keys()
	if len(keys) != 1 || !strings.HasPrefix(keys[0].Name, "dc-key-") || !cloudkit.SameKey(keys[0].SSHKey, req.RequesterSSHPubkey) {
		t.Fatalf("keys %+v", keys)
	}
	if ids := f.sim.InstanceKeys(in.ID); len(ids) != 1 || ids[0] != keys[0].ID || !cloudkit.HasTag(in.Tags, cloudkit.KeyTag(keys[0].ID)) || cloudkit.ContractIDFromTags(in.Tags) != cid(1) {
		t.Fatalf("instance keys %v tags %v", ids, in.Tags)
	}
	cloudkittest.CloudConfig(t, f.sim.UserData(in.ID), req)

	cloudkittest.Lifecycle(t, f.p, req, inst, "instance", func() int { return len(f.sim.Instances()) }, f.assertEmpty)
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	state := func() string { in := f.sim.Instances()[0]; return in.PowerStatus + "/" + in.ServerStatus }
	inst := cloudkittest.PauseResume(t, f.p, f.request(1), state, "stopped/none", "running/ok", func(ext string) {
		if h, _ := f.p.HealthCheck(ctx, ext); h.Status != provisioners.Unhealthy || h.Reason != "instance is stopped" {
			t.Fatalf("health while paused: %+v", h)
		}
	})
	if h, _ := f.p.HealthCheck(ctx, inst.ExternalID); h.Status != provisioners.Healthy {
		t.Fatalf("health after resume: %+v", h)
	}
	f.sim.FailNext("halt", "Unable to halt server")
	if err := f.p.Pause(ctx, inst.ExternalID); err == nil || !strings.Contains(err.Error(), "Unable to halt server") || !provisioners.RetryPossible(err) {
		t.Fatalf("failed pause: %v", err)
	}
	f.sim.Halt(inst.ExternalID)
	f.sim.FailNext("start", "Unable to start server")
	if err := f.p.Resume(ctx, inst.ExternalID); err == nil || !strings.Contains(err.Error(), "Unable to start server") {
		t.Fatalf("failed resume: %v", err)
	}
	foreign := f.sim.AddInstance("providers-db", nil)
	if err := f.p.Pause(ctx, foreign); err == nil || !strings.Contains(err.Error(), "refusing to halt") {
		t.Fatalf("foreign pause: %v", err)
	}
	if err := f.p.Pause(ctx, "cb676a46-66fd-4dfb-b839-443f2e6c0b60"); err == nil || provisioners.RetryPossible(err) {
		t.Fatalf("gone instance: %v", err)
	}
}

func TestSSHKeySharedAndProviderKeysKept(t *testing.T) {
	f := newFixture(t, nil, nil)
	cloudkittest.SharedKey(t, f.p, f.request, func() int { return len(f.sim.Keys()) }, f.assertEmpty)
	// The provider's key line has a comment: the same key all the same.
	cloudkittest.ProviderKeyKept(t, f.p, func(name, pub string) string {
		k, _, err := f.p.c.SSHKey.Create(context.Background(), &govultr.SSHKeyReq{Name: name, SSHKey: pub + " me@laptop"})
		if err != nil {
			t.Fatal(err)
		}
		return k.ID
	}, func() map[string]string {
		keys := map[string]string{}
		for _, k := range f.sim.Keys() {
			keys[k.ID] = k.Name
		}
		return keys
	})
}

// Without an SSH key the requester gets Vultr's generated root password,
// which only the create response shows.
func TestPasswordOnlyWithoutKey(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	req := f.request(1)
	req.WantPassword = true
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.RootPassword == "" || len(f.sim.Keys()) != 0 {
		t.Fatalf("password %q, keys %d", inst.RootPassword, len(f.sim.Keys()))
	}
	if ud := f.sim.UserData(inst.ExternalID); !strings.Contains(ud, "ssh_pwauth: true") {
		t.Errorf("user data %s", ud)
	}
	// The password is lost with a crashed attempt: the instance is replaced.
	again, err := f.p.Provision(ctx, req)
	if err != nil || again.RootPassword == "" || again.RootPassword == inst.RootPassword || again.ExternalID == inst.ExternalID {
		t.Fatalf("resume: %+v %v", again, err)
	}
	if list := f.sim.Instances(); len(list) != 1 || list[0].ID != again.ExternalID {
		t.Fatalf("instances after replacement: %+v", list)
	}
	cloudkittest.RefusedAccess(t, f.p, func() int { return len(f.sim.Instances()) })
}

func TestPlanChoice(t *testing.T) {
	f := newFixture(t, func(c *config.VultrConfig) {
		c.Plans = map[string]string{"off-mapped": "vc2-4c-8gb", "off-bad": "vc2-99c", "off-hf": "vhf-2c-4gb"}
		c.Regions = map[string]string{"Berlin": "fra"}
	}, nil)
	cloudkittest.Choices(t, f.p, f.request, 100, "plan", "region", []cloudkittest.Choice{
		{Name: "cheapest fit", Mod: func(r *provisioners.Request) { r.CPUCores, r.MemoryMB, r.StorageGB = 1, 1500, 30 }, WantType: "vc2-1c-2gb", WantLoc: "ewr"},
		{Name: "mapped offering", Mod: func(r *provisioners.Request) { r.OfferingID = "off-mapped" }, WantType: "vc2-4c-8gb", WantLoc: "ewr"},
		{Name: "config plan wins", Mod: func(r *provisioners.Request) {
			r.OfferingID = "off-mapped"
			r.Config = map[string]any{"plan": "vhf-1c-1gb"}
		}, WantType: "vhf-1c-1gb", WantLoc: "ewr"},
		{Name: "configured city table", Mod: func(r *provisioners.Request) { r.DatacenterCity = "berlin" }, WantType: "vc2-2c-4gb", WantLoc: "fra"},
		{Name: "built-in city table", Mod: func(r *provisioners.Request) { r.DatacenterCity = "Tokyo, JP" }, WantType: "vc2-2c-4gb", WantLoc: "nrt"},
		{Name: "os id", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"os_id": float64(2136)} }, WantType: "vc2-2c-4gb", WantLoc: "ewr"},
		{Name: "bad os id", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"os_id": "ubuntu"} }, WantErr: "not an operating system id"},
		{Name: "unknown os id", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"os_id": 9999} }, WantErr: "Invalid operating system"},
		{Name: "unknown plan", Mod: func(r *provisioners.Request) { r.OfferingID = "off-bad" }, WantErr: `plan "vc2-99c"`},
		{Name: "plan not offered in region", Mod: func(r *provisioners.Request) { r.OfferingID = "off-hf"; r.DatacenterCity = "Sydney" }, WantErr: "not offered in region syd"},
		{Name: "too big", Mod: func(r *provisioners.Request) { r.CPUCores = 64 }, WantErr: "no Vultr vc2 plan offered in region ewr fits"},
		{Name: "unknown region", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"region": "mars"} }, WantErr: `region "mars" is not a Vultr region`},
	})
	f.assertEmpty(t)
}

func TestFailuresLeaveNothingBehind(t *testing.T) {
	cloudkittest.Failures(t, []cloudkittest.Failure[*vultrsim.Sim, vultrsim.Options]{
		{Name: "install fails", Inject: func(s *vultrsim.Sim) { s.FailNextInstall() },
			WantErr: []string{"stopped while installing", "Vultr halted it"}, Retryable: true},
		{Name: "rate limited", Inject: func(s *vultrsim.Sim) { s.RateLimitNext(1000) },
			WantErr: []string{"rate limit exceeded"}, Retryable: true},
		{Name: "plan sold out (list)", Inject: func(s *vultrsim.Sim) {
			for _, p := range vultrsim.DefaultPlans() {
				s.SetAvailable(p.ID, "ewr", false)
			}
		}, WantErr: []string{"in stock in region ewr", "vc2-2c-4gb", "capacity"}, Retryable: true},
		{Name: "plan sold out (placement)", Inject: func(s *vultrsim.Sim) { s.FailPlacement("vc2-2c-4gb", "ewr", true) },
			WantErr: []string{"cannot place the instance", "not available in region ewr", "plan vc2-2c-4gb, region ewr"}, Retryable: true},
		{Name: "never boots in time", Inject: func(s *vultrsim.Sim) {}, SimOpts: func(o *vultrsim.Options) { o.CreateDuration, o.DeleteDuration = time.Hour, time.Millisecond },
			WantErr: []string{"to install and boot", "timed out (action_timeout_seconds = 1)"}, Retryable: true},
	}, func(t *testing.T, simOpts func(*vultrsim.Options)) (provisioners.Provisioner, *vultrsim.Sim, func(*testing.T)) {
		f := newFixture(t, func(cfg *config.VultrConfig) { cfg.ActionTimeoutSeconds = 1 }, simOpts)
		return f.p, f.sim, f.assertEmpty
	})
}

func TestResumeAfterCrash(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	key := sshKey(t)
	pk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(key))
	k, err := f.p.ensureKey(ctx, cloudkit.Access{Key: pk, Line: key})
	if err != nil {
		t.Fatal(err)
	}
	id := f.sim.AddInstance(InstanceLabel(cid(5)), []string{cloudkit.TagManaged, cloudkit.ContractTag(cid(5)), cloudkit.KeyTag(k.ID)})
	f.sim.Halt(id)
	req := f.request(5)
	req.RequesterSSHPubkey = key
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != id || len(f.sim.Instances()) != 1 || f.sim.Instances()[0].PowerStatus != "running" {
		t.Fatalf("resume: %+v %+v", inst, f.sim.Instances())
	}
}

func TestForeignInstancesRefused(t *testing.T) {
	f := newFixture(t, nil, nil)
	foreign := f.sim.AddInstance("providers-db", []string{"db"})
	cloudkittest.Foreign(t, f.p, foreign, func() int { return len(f.sim.Instances()) }, func() int { return len(f.sim.Keys()) },
		func() { f.sim.AddInstance(InstanceLabel(cid(9)), nil) }, "did not create it for this contract")
}

func TestHealthStates(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	id := f.sim.AddInstance(InstanceLabel(cid(7)), []string{cloudkit.TagManaged, cloudkit.ContractTag(cid(7))})
	cloudkittest.Uptime(t, f.p, id, func(now time.Time) { f.p.instances.Now = func() time.Time { return now } }, 3500)
	f.sim.Halt(id)
	if h, err := f.p.HealthCheck(ctx, id); err != nil || h.Status != provisioners.Unhealthy || h.Reason != "instance is stopped" {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestNewRejectsBadTokens(t *testing.T) {
	f := newFixture(t, nil, nil)
	cloudkittest.BadTokens(t, func(tok string) (provisioners.Provisioner, error) {
		return New(config.VultrConfig{Endpoint: f.url, ActionTimeoutSeconds: 5, PollIntervalMs: 1}, tok, TestOptions())
	}, "rejected the API key", "Invalid API token")
}

// A short burst of 429s is absorbed by the transport's retries, and the
// client's own pace keeps under the per-second limit.
func TestRateLimits(t *testing.T) {
	f := newFixture(t, func(c *config.VultrConfig) { c.RequestsPerSecond = 25 }, func(o *vultrsim.Options) { o.PerSecond = 30 })
	f.sim.RateLimitNext(2)
	cloudkittest.ProvisionOne(t, f.p, f.request(1), func() int { return len(f.sim.Instances()) })
}

func TestFactoryReadsTokenFile(t *testing.T) {
	cloudkittest.TokenFile(t, Type, "VULTRKEY", Factory, func(pc *config.ProvisionerConfig, file string) {
		pc.Vultr = &config.VultrConfig{APITokenFile: file}
	})
}

// govultr's error strings come from the network.
func FuzzAPIMessage(f *testing.F) {
	f.Add(`error returned from api : Invalid API token.`)
	f.Add(`gave up after 1 attempts, last error: "{\"error\":\"Rate limit exceeded.\",\"status\":429}"`)
	f.Add(`gave up after 1 attempts, last error: "{\"error\":\"`)
	f.Fuzz(func(t *testing.T, s string) {
		m := apiMessage(s)
		if len(m) > len(s) {
			t.Fatalf("%q -> %q", s, m)
		}
	})
}

// The offering's os_id comes from the API as any JSON value.
func FuzzConfigInt(f *testing.F) {
	for _, s := range []string{`2284`, `"2136"`, `-1`, `1.5`, `"ubuntu"`, `null`, `1e300`, `{}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, js string) {
		var v any
		if json.Unmarshal([]byte(js), &v) != nil {
			return
		}
		n, err := configInt(provisioners.Request{Config: map[string]any{"os_id": v}}, "os_id", 7)
		if err != nil {
			if provisioners.RetryPossible(err) {
				t.Fatalf("retryable error for offering data: %v", err)
			}
			return
		}
		if n <= 0 {
			t.Fatalf("%s -> %d", js, n)
		}
	})
}
