package digitalocean

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

var (
	cid    = cloudkittest.ContractID
	sshKey = cloudkittest.SSHKey
)

type fixture struct {
	sim *dosim.Sim
	p   *Provisioner
	url string
}

// newFixture makes a simulator (simOpts changes its options) and a
// provisioner using it (mod changes its config); nil: no change.
func newFixture(t *testing.T, mod func(*config.DigitalOceanConfig), simOpts func(*dosim.Options)) *fixture {
	t.Helper()
	// Millisecond polling would hit the burst limit (250 a minute): off.
	so := dosim.Options{CreateDuration: 4 * time.Millisecond, RetryAfter: -1, BurstLimit: -1}
	if simOpts != nil {
		simOpts(&so)
	}
	sim := dosim.New(so)
	url := sim.Start(t)
	cfg := config.DigitalOceanConfig{Endpoint: url, DefaultRegion: "nyc3", DefaultImage: "ubuntu-24-04-x64", ActionTimeoutSeconds: 5, PollIntervalMs: 1}
	p := cloudkittest.Build(t, cfg, mod, func(cfg config.DigitalOceanConfig) (*Provisioner, error) { return New(cfg, sim.Token(), TestOptions()) })
	return &fixture{sim: sim, p: p, url: url}
}

func (f *fixture) request(n int) provisioners.Request { return cloudkittest.Request(n) }

// assertEmpty checks that nothing the agent creates is left in the account.
func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	if d := f.sim.Droplets(); len(d) != 0 {
		t.Errorf("droplets left behind: %+v", d)
	}
	for _, k := range f.sim.Keys() {
		if strings.HasPrefix(k.Name, cloudkit.KeyNamePrefix) {
			t.Errorf("SSH key left behind: %+v", k)
		}
	}
	for _, tag := range f.sim.Tags() {
		if strings.HasPrefix(tag, TagContractPrefix) || strings.HasPrefix(tag, TagKeyPrefix) {
			t.Errorf("tag left behind: %s", tag)
		}
	}
}

func TestProvisionLifecycle(t *testing.T) {
	f := newFixture(t, nil, nil)
	req := f.request(1)
	req.DatacenterCity = "Amsterdam, NL"
	req.PostProvisionScript = "echo 'hi' > /root/x\n"
	req, inst := cloudkittest.ProvisionedSteps(t, f.p, req, 4)
	ds := f.sim.Droplets()
	if len(ds) != 1 {
		t.Fatalf("droplets: %d", len(ds))
	}
	d := ds[0]
	v4, _ := d.PublicIPv4()
	v6, _ := d.PublicIPv6()
	if inst.ExternalID != strconv.Itoa(d.ID) || inst.ContractID != cid(1) || inst.SSHPort != 22 || inst.IPAddress != v4 || inst.IPv6Address != v6 || v4 == "" || v6 == "" {
		t.Fatalf("instance %+v for %+v", inst, d)
	}
	if d.Name != "dc-"+cid(1)[:60] || inst.Name != d.Name || d.Region.Slug != "ams3" || d.SizeSlug != "s-2vcpu-4gb" || d.Status != "active" {
		t.Errorf("droplet %s in %s as %s (%s)", d.Name, d.Region.Slug, d.SizeSlug, d.Status)
	}
	if inst.RootPassword != "" {
		t.Error("root password returned with an SSH key")
	}
	keys := f.sim.Keys()
	if len(keys) != 1 || !strings.HasPrefix(keys[0].Name, "dc-key-") || !cloudkit.SameKey(keys[0].PublicKey, req.RequesterSSHPubkey) {
		t.Fatalf("keys %+v", keys)
	}
	if ids := f.sim.DropletKeys(d.ID); len(ids) != 1 || ids[0] != keys[0].ID || !hasTag(d.Tags, keyTag(keys[0].ID)) || ContractIDFromTags(d.Tags) != cid(1) {
		t.Fatalf("droplet keys %v tags %v", ids, d.Tags)
	}
	cloudkittest.CloudConfig(t, f.sim.UserData(d.ID), req)

	cloudkittest.Lifecycle(t, f.p, req, inst, "droplet", func() int { return len(f.sim.Droplets()) }, f.assertEmpty)
}

func TestPauseResume(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	inst := cloudkittest.PauseResume(t, f.p, f.request(1), func() string { return f.sim.Droplets()[0].Status }, "off", "active", func(ext string) {
		if h, _ := f.p.HealthCheck(ctx, ext); h.Status != provisioners.Unhealthy || h.Reason != "droplet is off" {
			t.Fatalf("health while paused: %+v", h)
		}
	})
	if h, _ := f.p.HealthCheck(ctx, inst.ExternalID); h.Status != provisioners.Healthy {
		t.Fatalf("health after resume: %+v", h)
	}
	if len(f.sim.Droplets()) != 1 || len(f.sim.Keys()) != 1 {
		t.Fatal("pause/resume changed what exists")
	}
	// A failing power action is reported; the droplet stays.
	f.sim.FailNextAction("power_off")
	if err := f.p.Pause(ctx, inst.ExternalID); err == nil || !strings.Contains(err.Error(), "power_off action") || !provisioners.RetryPossible(err) {
		t.Fatalf("failed pause: %v", err)
	}
	f.sim.FailNextAction("power_off")
	f.sim.PowerOff(f.sim.Droplets()[0].ID)
	f.sim.FailNextAction("power_on")
	if err := f.p.Resume(ctx, inst.ExternalID); err == nil || !strings.Contains(err.Error(), "power_on action") {
		t.Fatalf("failed resume: %v", err)
	}
	// Foreign droplets are never powered off.
	foreign := f.sim.AddDroplet("providers-db", nil)
	if err := f.p.Pause(ctx, strconv.Itoa(foreign)); err == nil || !strings.Contains(err.Error(), "refusing to power off") {
		t.Fatalf("foreign pause: %v", err)
	}
	if err := f.p.Pause(ctx, "999"); err == nil || provisioners.RetryPossible(err) {
		t.Fatalf("gone droplet: %v", err)
	}
}

func TestSSHKeySharedAndProviderKeysKept(t *testing.T) {
	f := newFixture(t, nil, nil)
	cloudkittest.SharedKey(t, f.p, f.request, func() int { return len(f.sim.Keys()) }, f.assertEmpty)
	cloudkittest.ProviderKeyKept(t, f.p, func(name, pub string) string {
		k, _, err := f.p.c.Keys.Create(context.Background(), &godo.KeyCreateRequest{Name: name, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(k.ID)
	}, func() map[string]string {
		keys := map[string]string{}
		for _, k := range f.sim.Keys() {
			keys[strconv.Itoa(k.ID)] = k.Name
		}
		return keys
	})
	f.assertEmpty(t)
}

// Without an SSH key the agent makes the password (the API sends none; it
// would e-mail one to the account owner) and cloud-init sets its hash.
func TestPasswordOnlyWithoutKey(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	req := f.request(1)
	req.WantPassword = true
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if len(inst.RootPassword) != 24 || len(f.sim.Keys()) != 0 {
		t.Fatalf("password %q, keys %d", inst.RootPassword, len(f.sim.Keys()))
	}
	ud := f.sim.UserData(f.sim.Droplets()[0].ID)
	if !strings.Contains(ud, "ssh_pwauth: true") || !strings.Contains(ud, "password: '$6$") || strings.Contains(ud, inst.RootPassword) {
		t.Errorf("user data %s", ud)
	}
	// Crash after creation: the password is lost, so the droplet is
	// replaced by a new one with a new password, never duplicated.
	again, err := f.p.Provision(ctx, req)
	if err != nil || again.RootPassword == "" || again.RootPassword == inst.RootPassword || again.ExternalID == inst.ExternalID {
		t.Fatalf("resume: %+v %v", again, err)
	}
	if ds := f.sim.Droplets(); len(ds) != 1 || strconv.Itoa(ds[0].ID) != again.ExternalID {
		t.Fatalf("droplets after replacement: %+v", ds)
	}
	cloudkittest.RefusedAccess(t, f.p, func() int { return len(f.sim.Droplets()) })
}

func TestSizeChoice(t *testing.T) {
	f := newFixture(t, func(c *config.DigitalOceanConfig) {
		c.Sizes = map[string]string{"off-mapped": "s-4vcpu-8gb", "off-bad": "s-99vcpu", "off-cpu": "c-2"}
		c.Regions = map[string]string{"Berlin": "fra1"}
	}, nil)
	cloudkittest.Choices(t, f.p, f.request, 100, "size", "region", []cloudkittest.Choice{
		{Name: "smallest fit", Mod: func(r *provisioners.Request) { r.CPUCores, r.MemoryMB, r.StorageGB = 1, 1500, 30 }, WantType: "s-1vcpu-2gb", WantLoc: "nyc3"},
		{Name: "default size", Mod: func(r *provisioners.Request) { r.CPUCores, r.MemoryMB, r.StorageGB = 0, 0, 0 }, WantType: "s-1vcpu-512mb-10gb", WantLoc: "nyc3"},
		{Name: "mapped offering", Mod: func(r *provisioners.Request) { r.OfferingID = "off-mapped" }, WantType: "s-4vcpu-8gb", WantLoc: "nyc3"},
		{Name: "config size wins", Mod: func(r *provisioners.Request) {
			r.OfferingID = "off-mapped"
			r.Config = map[string]any{"size": "s-8vcpu-16gb"}
		}, WantType: "s-8vcpu-16gb", WantLoc: "nyc3"},
		{Name: "configured city table", Mod: func(r *provisioners.Request) { r.DatacenterCity = "berlin" }, WantType: "s-2vcpu-4gb", WantLoc: "fra1"},
		{Name: "offering region", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"region": "sgp1"} }, WantType: "s-2vcpu-4gb", WantLoc: "sgp1"},
		{Name: "unknown size", Mod: func(r *provisioners.Request) { r.OfferingID = "off-bad" }, WantErr: `droplet size "s-99vcpu"`},
		{Name: "size not in region", Mod: func(r *provisioners.Request) { r.OfferingID = "off-cpu"; r.DatacenterCity = "Singapore" }, WantErr: "not available in region sgp1", Retryable: true},
		{Name: "too big", Mod: func(r *provisioners.Request) { r.CPUCores = 64 }, WantErr: "no DigitalOcean droplet size fits"},
		{Name: "unknown region", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"region": "mars1"} }, WantErr: "no droplet size for 2 vCPUs", Retryable: true},
	})
	f.assertEmpty(t)
}

// default_size (the earlier agent's key) is used only when it covers the offering.
func TestDefaultSize(t *testing.T) {
	f := newFixture(t, func(c *config.DigitalOceanConfig) { c.DefaultSize = "s-2vcpu-2gb" }, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		mem  int64
		want string
	}{{1024, "s-2vcpu-2gb"}, {8192, "s-4vcpu-8gb"}, {3000, "s-2vcpu-4gb"}} {
		req := f.request(int(tc.mem))
		req.RequesterSSHPubkey = sshKey(t)
		req.CPUCores, req.MemoryMB, req.StorageGB = 1, tc.mem, 10
		inst, err := f.p.Provision(ctx, req)
		if err != nil || inst.AdditionalDetails["size"] != tc.want {
			t.Fatalf("%d MB: %v %v", tc.mem, inst.AdditionalDetails["size"], err)
		}
	}
}

func TestFailuresLeaveNothingBehind(t *testing.T) {
	cloudkittest.Failures(t, []cloudkittest.Failure[*dosim.Sim, dosim.Options]{
		{Name: "create action error", Inject: func(s *dosim.Sim) { s.FailNextAction("create") },
			WantErr: []string{"create action", "errored"}, Retryable: true},
		{Name: "rate limited", Inject: func(s *dosim.Sim) { s.RateLimitNext(1000) },
			WantErr: []string{"rate limit exceeded"}, Retryable: true},
		{Name: "size unavailable (list)", Inject: func(s *dosim.Sim) {
			for _, sz := range dosim.DefaultSizes() {
				s.SetSizeAvailable(sz.Slug, "nyc3", false)
			}
		}, WantErr: []string{"available in region nyc3", "s-2vcpu-4gb", "capacity"}, Retryable: true},
		{Name: "size unavailable (placement)", Inject: func(s *dosim.Sim) { s.FailPlacement("s-2vcpu-4gb", "nyc3", true) },
			WantErr: []string{"cannot do this now", "not available in this region", "size s-2vcpu-4gb, region nyc3"}, Retryable: true},
		{Name: "no address in time", Inject: func(s *dosim.Sim) {}, SimOpts: func(o *dosim.Options) { o.IPDelay = time.Hour },
			WantErr: []string{"for its public address", "timed out (action_timeout_seconds = 1)"}, Retryable: true},
	}, func(t *testing.T, simOpts func(*dosim.Options)) (provisioners.Provisioner, *dosim.Sim, func(*testing.T)) {
		f := newFixture(t, func(cfg *config.DigitalOceanConfig) { cfg.ActionTimeoutSeconds = 1 }, simOpts)
		return f.p, f.sim, f.assertEmpty
	})
}

// A droplet of the contract left by an interrupted attempt, in any state,
// is taken over: never a second one.
func TestResumeAfterCrash(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	key := sshKey(t)
	// Upload the key as the first attempt did.
	pk, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(key))
	k, err := f.p.ensureKey(ctx, pk, key)
	if err != nil {
		t.Fatal(err)
	}
	tags := []string{TagManaged, contractTag(cid(5)), keyTag(k.ID)}
	id := f.sim.AddDroplet(DropletName(cid(5)), tags)
	f.sim.PowerOff(id)
	req := f.request(5)
	req.RequesterSSHPubkey = key
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != strconv.Itoa(id) || len(f.sim.Droplets()) != 1 || f.sim.Droplets()[0].Status != "active" {
		t.Fatalf("resume: %+v %+v", inst, f.sim.Droplets())
	}
	// One whose creation failed is replaced.
	req6 := f.request(6)
	req6.RequesterSSHPubkey = key
	f.sim.FailNextAction("create")
	if _, err := f.p.Provision(ctx, req6); err == nil {
		t.Fatal("failed creation succeeded")
	}
	f.sim.FailNextAction("create")
	d6, _, err := f.p.c.Droplets.Create(ctx, &godo.DropletCreateRequest{Name: DropletName(cid(6)), Region: "nyc3", Size: "s-1vcpu-1gb",
		Image: godo.DropletCreateImage{Slug: "ubuntu-24-04-x64"}, SSHKeys: []godo.DropletCreateSSHKey{{ID: k.ID}}, Tags: []string{TagManaged, contractTag(cid(6)), keyTag(k.ID)}})
	if err != nil {
		t.Fatal(err)
	}
	for f.sim.Droplets()[1].Locked { // the create action errors
		time.Sleep(time.Millisecond)
	}
	inst6, err := f.p.Provision(ctx, req6)
	if err != nil || inst6.ExternalID == strconv.Itoa(d6.ID) {
		t.Fatalf("errored droplet taken over: %+v %v", inst6, err)
	}
	if n := len(f.sim.Droplets()); n != 2 {
		t.Fatalf("%d droplets", n)
	}
}

// The earlier Rust agent tagged its droplets dc-agent and dc-contract-<id>
// (and named them dc-<64 hex>): they are found, listed and removed.
func TestRustAgentDropletsManaged(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	id := f.sim.AddDroplet("dc-"+cid(8), []string{"dc-agent", "dc-contract-" + cid(8)})
	got, err := f.p.GetInstance(ctx, cid(8))
	if err != nil || got == nil || got.ExternalID != strconv.Itoa(id) {
		t.Fatalf("%+v %v", got, err)
	}
	list, err := f.p.List(ctx)
	if err != nil || len(list) != 1 || list[0].ContractID != cid(8) {
		t.Fatalf("%+v %v", list, err)
	}
	if err := f.p.Terminate(ctx, got.ExternalID); err != nil {
		t.Fatal(err)
	}
	f.assertEmpty(t)
}

func TestForeignDropletsRefused(t *testing.T) {
	f := newFixture(t, nil, nil)
	foreign := strconv.Itoa(f.sim.AddDroplet("providers-db", []string{"db"}))
	cloudkittest.Foreign(t, f.p, foreign, func() int { return len(f.sim.Droplets()) }, func() int { return len(f.sim.Keys()) },
		func() { f.sim.AddDroplet(DropletName(cid(9)), nil) }, "did not create it for this contract")
}

func TestHealthStates(t *testing.T) {
	f := newFixture(t, nil, nil)
	ctx := context.Background()
	id := f.sim.AddDroplet(DropletName(cid(7)), []string{TagManaged, contractTag(cid(7))})
	ext := strconv.Itoa(id)
	cloudkittest.Uptime(t, f.p, ext, func(now time.Time) { f.p.droplets.Now = func() time.Time { return now } }, 3500)
	f.sim.PowerOff(id)
	h, err := f.p.HealthCheck(ctx, ext)
	if err != nil || h.Status != provisioners.Unhealthy || h.Reason != "droplet is off" {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestNewRejectsBadTokens(t *testing.T) {
	f := newFixture(t, nil, nil)
	cloudkittest.BadTokens(t, func(tok string) (provisioners.Provisioner, error) {
		return New(config.DigitalOceanConfig{Endpoint: f.url, ActionTimeoutSeconds: 5, PollIntervalMs: 1}, tok, TestOptions())
	}, "rejected the API token")
}

// A short burst of 429s is absorbed by the transport's retries.
func TestTransientRateLimitRecovers(t *testing.T) {
	f := newFixture(t, nil, nil)
	f.sim.RateLimitNext(2)
	cloudkittest.ProvisionOne(t, f.p, f.request(1), func() int { return len(f.sim.Droplets()) })
}

func TestFactoryReadsTokenFile(t *testing.T) {
	cloudkittest.TokenFile(t, Type, "tok123", Factory, func(pc *config.ProvisionerConfig, file string) {
		pc.DigitalOcean = &config.DigitalOceanConfig{APITokenFile: file}
	})
	// The earlier agent's inline token still works (config warns about it).
	pc := config.ProvisionerConfig{Type: Type, DigitalOcean: &config.DigitalOceanConfig{APIToken: "dop_v1_inline"}}
	if _, err := Factory(pc, provisioners.Deps{Config: &config.Config{Path: t.TempDir() + "/dc-agent.toml"}}); err != nil {
		t.Fatal(err)
	}
}
