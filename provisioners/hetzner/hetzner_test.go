package hetzner

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud"

	"github.com/decent-stuff/dc-agent/config"
	hcloudsim "github.com/decent-stuff/dc-agent/internal/sim/hcloud"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

var (
	cid    = cloudkittest.ContractID
	sshKey = cloudkittest.SSHKey
)

type fixture struct {
	sim *hcloudsim.Sim
	p   *Provisioner
	url string
}

func newFixture(t *testing.T, mod func(*config.HetznerConfig)) *fixture {
	t.Helper()
	sim := hcloudsim.New(hcloudsim.Options{ActionDuration: 3 * time.Millisecond})
	url := sim.Start(t)
	cfg := config.HetznerConfig{Endpoint: url, DefaultLocation: "fsn1", DefaultImage: "ubuntu-24.04", ActionTimeoutSecond: 5}
	p := cloudkittest.Build(t, cfg, mod, func(cfg config.HetznerConfig) (*Provisioner, error) { return New(cfg, sim.Token(), TestOptions()) })
	return &fixture{sim: sim, p: p, url: url}
}

func (f *fixture) request(n int) provisioners.Request { return cloudkittest.Request(n) }

// assertEmpty checks that nothing the agent creates is left in the project.
func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	if s := f.sim.Servers(); len(s) != 0 {
		t.Errorf("servers left behind: %+v", s)
	}
	for _, k := range f.sim.SSHKeys() {
		if k.Labels[LabelManaged] == "true" {
			t.Errorf("SSH key left behind: %+v", k)
		}
	}
}

func TestProvisionLifecycle(t *testing.T) {
	f := newFixture(t, nil)
	req := f.request(1)
	req.DatacenterCity = "Helsinki"
	req.PostProvisionScript = "echo 'hi' > /root/x\n"
	req, inst := cloudkittest.ProvisionedSteps(t, f.p, req, 3)
	servers := f.sim.Servers()
	if len(servers) != 1 {
		t.Fatalf("servers: %d", len(servers))
	}
	sv := servers[0]
	if inst.ExternalID != strconv.FormatInt(sv.ID, 10) || inst.ContractID != cid(1) || inst.SSHPort != 22 {
		t.Fatalf("instance %+v", inst)
	}
	if sv.Name != "dc-"+cid(1)[:60] || len(sv.Name) != 63 || inst.Name != sv.Name {
		t.Errorf("name %q", sv.Name)
	}
	if sv.Location.Name != "hel1" || sv.ServerType.Name != "cx23" || sv.Status != "running" {
		t.Errorf("placed as %s/%s/%s", sv.Location.Name, sv.ServerType.Name, sv.Status)
	}
	if inst.IPAddress != sv.PublicNet.IPv4.IP || net.ParseIP(inst.IPAddress) == nil {
		t.Errorf("ipv4 %q vs %q", inst.IPAddress, sv.PublicNet.IPv4.IP)
	}
	_, n6, _ := net.ParseCIDR(sv.PublicNet.IPv6.IP)
	if ip := net.ParseIP(inst.IPv6Address); ip == nil || !n6.Contains(ip) || !strings.HasSuffix(inst.IPv6Address, "::1") {
		t.Errorf("ipv6 %q for %s", inst.IPv6Address, sv.PublicNet.IPv6.IP)
	}
	if inst.RootPassword != "" {
		t.Error("root password returned with an SSH key")
	}
	if ContractIDFromLabels(sv.Labels) != cid(1) {
		t.Errorf("labels %v", sv.Labels)
	}
	keys := f.sim.SSHKeys()
	if len(keys) != 1 || keys[0].Labels[LabelManaged] != "true" || keys[0].PublicKey != req.RequesterSSHPubkey || sv.Labels[LabelSSHKey] != strconv.FormatInt(keys[0].ID, 10) {
		t.Fatalf("keys %+v labels %v", keys, sv.Labels)
	}
	cloudkittest.CloudConfig(t, f.sim.UserData(sv.ID), req)

	cloudkittest.Lifecycle(t, f.p, req, inst, "server", func() int { return len(f.sim.Servers()) }, f.assertEmpty)
}

func TestSSHKeySharedAndProviderKeysKept(t *testing.T) {
	f := newFixture(t, nil)
	cloudkittest.SharedKey(t, f.p, f.request, func() int { return len(f.sim.SSHKeys()) }, f.assertEmpty)
	cloudkittest.ProviderKeyKept(t, f.p, func(name, pub string) string {
		k, _, err := f.p.c.SSHKey.Create(context.Background(), hcloud.SSHKeyCreateOpts{Name: name, PublicKey: pub})
		if err != nil {
			t.Fatal(err)
		}
		return strconv.FormatInt(k.ID, 10)
	}, func() map[string]string {
		keys := map[string]string{}
		for _, k := range f.sim.SSHKeys() {
			keys[strconv.FormatInt(k.ID, 10)] = k.Name
		}
		return keys
	})
}

func TestPasswordOnlyWithoutKey(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	req := f.request(1)
	req.WantPassword = true
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.RootPassword == "" {
		t.Fatal("no root password without an SSH key")
	}
	if len(f.sim.SSHKeys()) != 0 {
		t.Fatal("key object created without a key")
	}
	if ud := f.sim.UserData(f.sim.Servers()[0].ID); !strings.Contains(ud, "ssh_pwauth: true") {
		t.Errorf("user data %s", ud)
	}

	// Crash after creation: the password is lost, so resuming resets it.
	again, err := f.p.Provision(ctx, req)
	if err != nil || again.RootPassword == "" || again.RootPassword == inst.RootPassword || again.ExternalID != inst.ExternalID {
		t.Fatalf("resume: %+v %v", again, err)
	}
	cloudkittest.RefusedAccess(t, f.p, func() int { return len(f.sim.Servers()) })
}

func TestServerTypeChoice(t *testing.T) {
	f := newFixture(t, func(c *config.HetznerConfig) {
		c.ServerTypes = map[string]string{"off-mapped": "cpx22", "off-bad": "cx999", "off-us": "cx23"}
		c.Locations = map[string]string{"Frankfurt": "nbg1"}
	})
	cloudkittest.Choices(t, f.p, f.request, 10, "server_type", "location", []cloudkittest.Choice{
		{Name: "smallest fit", Mod: func(r *provisioners.Request) { r.CPUCores, r.MemoryMB, r.StorageGB = 3, 4096, 40 }, WantType: "cx33", WantLoc: "fsn1"},
		{Name: "tiny in US picks cpx12", Mod: func(r *provisioners.Request) {
			r.CPUCores, r.MemoryMB, r.StorageGB, r.DatacenterCity = 1, 1024, 10, "Ashburn, VA"
		}, WantType: "cpx12", WantLoc: "ash"},
		{Name: "mapped offering", Mod: func(r *provisioners.Request) { r.OfferingID = "off-mapped" }, WantType: "cpx22", WantLoc: "fsn1"},
		{Name: "config server_type wins", Mod: func(r *provisioners.Request) {
			r.OfferingID = "off-mapped"
			r.Config = map[string]any{"server_type": "ccx13"}
		}, WantType: "ccx13", WantLoc: "fsn1"},
		{Name: "configured city table", Mod: func(r *provisioners.Request) { r.DatacenterCity = "frankfurt" }, WantType: "cx23", WantLoc: "nbg1"},
		{Name: "arm by config", Mod: func(r *provisioners.Request) { r.Config = map[string]any{"architecture": "arm"} }, WantType: "cax11", WantLoc: "fsn1"},
		{Name: "unknown city uses default", Mod: func(r *provisioners.Request) { r.DatacenterCity = "Atlantis" }, WantType: "cx23", WantLoc: "fsn1"},
		{Name: "unknown mapped type", Mod: func(r *provisioners.Request) { r.OfferingID = "off-bad" }, WantErr: `server type "cx999"`},
		{Name: "type not offered in location", Mod: func(r *provisioners.Request) { r.OfferingID, r.DatacenterCity = "off-us", "Hillsboro" }, WantErr: "not offered in location hil"},
		{Name: "too big", Mod: func(r *provisioners.Request) { r.CPUCores = 96 }, WantErr: "no Hetzner server type"},
	})
	f.assertEmpty(t)
}

func TestFailuresLeaveNothingBehind(t *testing.T) {
	cloudkittest.Failures(t, []cloudkittest.Failure[*hcloudsim.Sim, hcloudsim.Options]{
		{Name: "create action error", Inject: func(s *hcloudsim.Sim) { s.FailNextAction("create_server", "action_failed", "host crashed") },
			WantErr: []string{"Hetzner create_server failed", "host crashed", "action_failed"}, Retryable: true},
		{Name: "start action error", Inject: func(s *hcloudsim.Sim) { s.FailNextAction("start_server", "action_failed", "cannot boot") },
			WantErr: []string{"Hetzner start_server failed", "cannot boot"}, Retryable: true},
		{Name: "rate limited", Inject: func(s *hcloudsim.Sim) { s.RateLimitNext(1000) },
			WantErr: []string{"rate limit exceeded"}, Retryable: true},
		{Name: "server type unavailable (list)", Inject: func(s *hcloudsim.Sim) {
			for _, st := range []string{"cx23", "cpx22", "ccx13", "cx33", "cpx32", "ccx23", "cx43", "cx53"} {
				s.SetAvailable(st, "fsn1", false)
			}
		}, WantErr: []string{"available in location fsn1", "cx23", "capacity"}, Retryable: true},
		{Name: "server type unavailable (placement)", Inject: func(s *hcloudsim.Sim) { s.FailPlacement("cx23", "fsn1", true) },
			WantErr: []string{"cannot place the server", "resource_unavailable", "type cx23, location fsn1"}, Retryable: true},
	}, func(t *testing.T, _ func(*hcloudsim.Options)) (provisioners.Provisioner, *hcloudsim.Sim, func(*testing.T)) {
		f := newFixture(t, nil)
		return f.p, f.sim, f.assertEmpty
	})
}

func TestActionTimeout(t *testing.T) {
	sim := hcloudsim.New(hcloudsim.Options{ActionDuration: time.Hour})
	url := sim.Start(t)
	p, err := New(config.HetznerConfig{Endpoint: url, ActionTimeoutSecond: 1}, sim.Token(), TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Provision(context.Background(), provisioners.Request{ContractID: cid(1), RequesterSSHPubkey: sshKey(t)})
	if err == nil || !strings.Contains(err.Error(), "timed out (action_timeout_seconds = 1)") || !provisioners.RetryPossible(err) {
		t.Fatalf("err %v", err)
	}
	// The delete action runs for an hour too: the server is being deleted.
	for _, s := range sim.Servers() {
		if s.Status != "deleting" {
			t.Fatalf("server left in status %s", s.Status)
		}
	}
}

func TestResumeAfterCrash(t *testing.T) {
	f := newFixture(t, nil)
	// A server of ours left powered off by an earlier attempt.
	labels := contractLabels(cid(5))
	id := f.sim.AddServer(ServerName(cid(5)), labels)
	f.sim.PowerOff(id)
	_, inst := cloudkittest.Provisioned(t, f.p, f.request(5))
	if inst.ExternalID != strconv.FormatInt(id, 10) || len(f.sim.Servers()) != 1 || f.sim.Servers()[0].Status != "running" {
		t.Fatalf("resume: %+v %+v", inst, f.sim.Servers())
	}
}

func TestTerminateRefusesForeignServers(t *testing.T) {
	f := newFixture(t, nil)
	foreign := strconv.FormatInt(f.sim.AddServer("providers-db", map[string]string{"role": "db"}), 10)
	cloudkittest.Foreign(t, f.p, foreign, func() int { return len(f.sim.Servers()) }, func() int { return len(f.sim.SSHKeys()) },
		func() { f.sim.AddServer(ServerName(cid(9)), nil) }, "not labelled")
}

func TestHealthStates(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	id := f.sim.AddServer(ServerName(cid(7)), contractLabels(cid(7)))
	ext := strconv.FormatInt(id, 10)
	cloudkittest.Uptime(t, f.p, ext, func(now time.Time) { f.p.now = func() time.Time { return now } }, 0)
	f.sim.PowerOff(id)
	h, err := f.p.HealthCheck(ctx, ext)
	if err != nil || h.Status != provisioners.Unhealthy || h.Reason != "server is off" {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestNewRejectsBadTokens(t *testing.T) {
	f := newFixture(t, nil)
	cloudkittest.BadTokens(t, func(tok string) (provisioners.Provisioner, error) {
		return New(config.HetznerConfig{Endpoint: f.url, ActionTimeoutSecond: 5}, tok, TestOptions())
	}, "rejected the API token")
}

func TestPickServerType(t *testing.T) {
	loc := func(n string, avail bool) hcloud.ServerTypeLocation {
		return hcloud.ServerTypeLocation{Location: &hcloud.Location{Name: n}, Available: avail}
	}
	types := []*hcloud.ServerType{
		{Name: "big", Cores: 8, Memory: 16, Disk: 160, Architecture: "x86", Locations: []hcloud.ServerTypeLocation{loc("a", true)}},
		{Name: "small", Cores: 2, Memory: 4, Disk: 40, Architecture: "x86", Locations: []hcloud.ServerTypeLocation{loc("a", true), loc("b", false)}},
		{Name: "small-arm", Cores: 2, Memory: 4, Disk: 40, Architecture: "arm", Locations: []hcloud.ServerTypeLocation{loc("a", true)}},
		{Name: "mid", Cores: 4, Memory: 8, Disk: 80, Architecture: "x86", Locations: []hcloud.ServerTypeLocation{loc("a", true), loc("b", true)}},
		{Name: "old", Cores: 2, Memory: 4, Disk: 40, Architecture: "x86", Locations: []hcloud.ServerTypeLocation{loc("a", true)},
			DeprecatableResource: hcloud.DeprecatableResource{Deprecation: &hcloud.DeprecationInfo{}}},
	}
	for _, c := range []struct {
		n    need
		loc  string
		want string
		err  string
	}{
		{need{cores: 1, arch: "x86"}, "a", "small", ""},
		{need{cores: 1, memMB: 4097, arch: "x86"}, "a", "mid", ""},
		{need{cores: 1, arch: "arm"}, "a", "small-arm", ""},
		{need{cores: 1, arch: "x86"}, "b", "mid", ""},
		{need{cores: 1, diskGB: 100, arch: "x86"}, "a", "big", ""},
		{need{cores: 16, arch: "x86"}, "a", "", "no Hetzner server type"},
		{need{cores: 1, arch: "x86"}, "c", "", "no Hetzner server type"},
	} {
		st, err := pickServerType(types, c.n, c.loc)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v in %s: err %v", c.n, c.loc, err)
			}
			continue
		}
		if err != nil || st.Name != c.want {
			t.Errorf("%v in %s: got %v %v, want %s", c.n, c.loc, st, err, c.want)
		}
	}
	// Only unavailable types fit: a capacity problem, retryable.
	types[3].Locations[1].Available = false
	if _, err := pickServerType(types, need{cores: 1, arch: "x86"}, "b"); err == nil || !provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "small, mid") {
		t.Errorf("unavailable: %v", err)
	}
}

func TestIPv6Host(t *testing.T) {
	for in, want := range map[string]string{
		"2001:db8:1::/64":       "2001:db8:1::1",
		"2a01:4f8:c17:b8f::/64": "2a01:4f8:c17:b8f::1",
		"10.0.0.0/8":            "",
	} {
		_, n, err := net.ParseCIDR(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := ipv6Host(n); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
	if ipv6Host(nil) != "" {
		t.Error("nil network")
	}
}

// Labels come back from the API and can be edited by anyone with the token.
func FuzzContractIDFromLabels(f *testing.F) {
	f.Add("true", cid(1)[:32], cid(1)[32:])
	f.Add("true", "ABC", "def")
	f.Add("false", cid(2)[:32], cid(2)[32:])
	f.Fuzz(func(t *testing.T, managed, a, b string) {
		id := ContractIDFromLabels(map[string]string{LabelManaged: managed, LabelContract1: a, LabelContract2: b})
		if id == "" {
			return
		}
		if !cloudkit.IsContractID(id) || id != a+b || managed != "true" {
			t.Fatalf("accepted %q from %q %q %q", id, managed, a, b)
		}
		if ContractIDFromLabels(contractLabels(id)) != id || !strings.HasPrefix(id, ServerName(id)[3:]) {
			t.Fatal("labels do not round-trip")
		}
	})
}

// The datacenter city comes from the offering.
func FuzzChooseLocation(f *testing.F) {
	for _, s := range []string{"Helsinki", "Ashburn, VA", " nürnberg ", "", ",", "Frankfurt"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, city string) {
		loc, why := chooseLocation(provisioners.Request{DatacenterCity: city}, map[string]string{"Frankfurt": "nbg1"}, "fsn1")
		if loc == "" || why == "" {
			t.Fatalf("%q -> %q (%s)", city, loc, why)
		}
	})
}

// A short burst of 429s is absorbed by the client's retries.
func TestTransientRateLimitRecovers(t *testing.T) {
	f := newFixture(t, nil)
	f.sim.RateLimitNext(2)
	cloudkittest.ProvisionOne(t, f.p, f.request(1), func() int { return len(f.sim.Servers()) })
}

func TestFactoryReadsTokenFile(t *testing.T) {
	cloudkittest.TokenFile(t, Type, "tok123", Factory, func(pc *config.ProvisionerConfig, file string) {
		pc.Hetzner = &config.HetznerConfig{APITokenFile: file}
	})
}

// The IPv6 network comes from the API.
func FuzzIPv6Host(f *testing.F) {
	for _, s := range []string{"2001:db8::/64", "2a01:4f8::/32", "::/0", "10.0.0.0/8", "::ffff:1.2.3.4/128", "2001:db8::4/128"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, n, err := net.ParseCIDR(s)
		if err != nil {
			return
		}
		h := ipv6Host(n)
		if h == "" {
			return
		}
		ip := net.ParseIP(h)
		if ip == nil || ip.To4() != nil || !n.Contains(ip) {
			t.Fatalf("%s -> %q", s, h)
		}
	})
}
