// Package hetznere2e runs the Hetzner backend through the real agent loop
// and the real reference API server, against the Hetzner Cloud simulator.
package hetznere2e

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	hcloudsim "github.com/decent-stuff/dc-agent/internal/sim/hcloud"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/hetzner"
)

const wait = 20 * time.Second

type fixture struct {
	env *e2eutil.Env
	sim *hcloudsim.Sim
	cfg *config.Config
}

func setup(t *testing.T, apiOpts ...apitest.Option) *fixture {
	t.Helper()
	sim := hcloudsim.New(hcloudsim.Options{ActionDuration: 5 * time.Millisecond})
	url := sim.Start(t)
	env := e2eutil.NewEnv(t, apiOpts...)
	tokenFile := env.Dir + "/hcloud.token"
	if err := identity.WriteFileAtomic(tokenFile, []byte(sim.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := env.Config(config.ProvisionerConfig{Type: config.TypeHetzner, Hetzner: &config.HetznerConfig{
		APITokenFile: tokenFile, Endpoint: url, DefaultLocation: "fsn1", DefaultImage: "ubuntu-24.04", ActionTimeoutSecond: 10,
		ServerTypes: map[string]string{"offering-big": "cx43"},
	}}, "")
	return &fixture{env: env, sim: sim, cfg: cfg}
}

// registry is the production registry's Hetzner entry with millisecond
// polling (the factory reads the token file as in production).
func registry() *provisioners.Registry {
	r := provisioners.NewRegistry()
	r.Register(config.TypeHetzner, hetzner.NewFactory(hetzner.TestOptions()))
	return r
}

// waitLive waits until the contract is provisioned (or already active:
// the API moves it on with the first health report).
func waitLive(t *testing.T, f *fixture, cid string) {
	t.Helper()
	f.env.API.WaitForContract(cid, wait, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
}

func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	if s := f.sim.Servers(); len(s) != 0 {
		t.Errorf("servers left behind: %+v", s)
	}
	if k := f.sim.SSHKeys(); len(k) != 0 {
		t.Errorf("SSH keys left behind: %+v", k)
	}
}

func TestProvisionHealthTerminate(t *testing.T) {
	f := setup(t)
	requester, _ := identity.GenerateKey()
	cid := f.env.API.CreateContract(f.env.Provider, apitest.ContractSpec{
		CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB"), StorageCapacity: apitest.Ptr("40 GB"),
		DatacenterCity: apitest.Ptr("Helsinki"), RequesterPubkey: apitest.Ptr(identity.PublicHex(requester)),
		PostProvisionScript: apitest.Ptr("apt-get install -y htop"),
	})
	// A second contract for an offering mapped to a server type.
	cid2 := f.env.API.CreateContract(f.env.Provider, apitest.ContractSpec{OfferingID: "offering-big"})
	f.env.StartAgent(f.cfg, registry())

	waitLive(t, f, cid)
	d, ok := f.env.API.InstanceDetails(cid)
	if !ok {
		t.Fatal("no instance details")
	}
	servers := f.sim.Servers()
	var sv = servers[0]
	for _, s := range servers {
		if strconv.FormatInt(s.ID, 10) == d.ExternalID {
			sv = s
		}
	}
	if d.ExternalID != strconv.FormatInt(sv.ID, 10) || d.IPAddress != sv.PublicNet.IPv4.IP || !strings.HasSuffix(d.IPv6Address, "::1") || d.SSHPort != 22 {
		t.Fatalf("details %+v for server %+v", d, sv)
	}
	if d.RootPassword != "" {
		t.Fatal("a password was reported for a contract with an SSH key")
	}
	if sv.Location.Name != "hel1" || sv.ServerType.Name != "cx23" || hetzner.ContractIDFromLabels(sv.Labels) != cid {
		t.Fatalf("server %s/%s labels %v", sv.Location.Name, sv.ServerType.Name, sv.Labels)
	}
	var extra map[string]any
	if err := json.Unmarshal(d.AdditionalDetails, &extra); err != nil || extra["server_type"] != "cx23" || extra["location"] != "hel1" {
		t.Fatalf("additional details %s (%v)", d.AdditionalDetails, err)
	}
	if !strings.Contains(f.sim.UserData(sv.ID), "write_files") {
		t.Error("post-provision script not in user_data")
	}

	waitLive(t, f, cid2)
	d2, _ := f.env.API.InstanceDetails(cid2)
	var extra2 map[string]any
	_ = json.Unmarshal(d2.AdditionalDetails, &extra2)
	if extra2["server_type"] != "cx43" {
		t.Fatalf("mapped offering got %v", extra2["server_type"])
	}

	// Health from the server status.
	e2eutil.Eventually(t, wait, "a healthy health check", func() bool {
		for _, h := range f.env.API.HealthChecks(cid) {
			if h.Status == dcapi.HealthHealthy {
				return true
			}
		}
		return false
	})
	id2, _ := strconv.ParseInt(d2.ExternalID, 10, 64)
	f.sim.PowerOff(id2)
	e2eutil.Eventually(t, wait, "an unhealthy health check for the powered-off server", func() bool {
		for _, h := range f.env.API.HealthChecks(cid2) {
			if h.Status == dcapi.HealthUnhealthy && strings.Contains(h.Details, "server is off") {
				return true
			}
		}
		return false
	})

	// Cancelled contracts: reconcile terminates their servers (and the
	// uploaded key with the last one).
	f.env.API.CancelContract(cid)
	f.env.API.CancelContract(cid2)
	e2eutil.Eventually(t, wait, "servers deleted", func() bool { return len(f.sim.Servers()) == 0 })
	for _, id := range []string{cid, cid2} {
		f.env.API.WaitForContract(id, wait, func(c *store.Contract) bool { return c.TerminatedAtNs != nil }, "terminated")
	}
	f.assertEmpty(t)
}

// Reconcile removes a server the API knows nothing about (a crash between
// creation and report, or a contract deleted by hand) after the grace
// period, and never touches servers the agent did not create.
func TestReconcileOrphans(t *testing.T) {
	f := setup(t)
	orphanCID := strings.Repeat("ab", 32)
	l := map[string]string{hetzner.LabelManaged: "true", hetzner.LabelContract1: orphanCID[:32], hetzner.LabelContract2: orphanCID[32:]}
	orphan := f.sim.AddServer(hetzner.ServerName(orphanCID), l)
	foreign := f.sim.AddServer("providers-db", map[string]string{"role": "db"})
	cid := f.env.API.CreateContract(f.env.Provider, apitest.ContractSpec{})
	f.env.StartAgent(f.cfg, registry())
	waitLive(t, f, cid)
	e2eutil.Eventually(t, wait, "orphan removed", func() bool {
		for _, s := range f.sim.Servers() {
			if s.ID == orphan {
				return false
			}
		}
		return true
	})
	ids := map[int64]bool{}
	for _, s := range f.sim.Servers() {
		ids[s.ID] = true
	}
	d, _ := f.env.API.InstanceDetails(cid)
	live, _ := strconv.ParseInt(d.ExternalID, 10, 64)
	if !ids[foreign] || !ids[live] || len(ids) != 2 {
		t.Fatalf("servers after reconcile: %v (foreign %d, live %d)", ids, foreign, live)
	}
}

// Failures end as provisioning_failed with a reason the requester can
// read, and leave no server and no key behind.
func TestFailuresReportReasons(t *testing.T) {
	cases := []struct {
		name   string
		inject func(*hcloudsim.Sim)
		spec   apitest.ContractSpec
		want   []string
	}{
		{"create action error", func(s *hcloudsim.Sim) { s.FailNextAction("create_server", "action_failed", "hypervisor lost") },
			apitest.ContractSpec{}, []string{"create_server failed", "hypervisor lost"}},
		{"rate limit", func(s *hcloudsim.Sim) { s.RateLimitNext(1 << 20) },
			apitest.ContractSpec{}, []string{"rate limit exceeded"}},
		{"server type unavailable in location", func(s *hcloudsim.Sim) { s.SetAvailable("cx43", "fsn1", false) },
			apitest.ContractSpec{OfferingID: "offering-big"}, []string{"cx43", "unavailable in location fsn1"}},
		{"placement fails at create", func(s *hcloudsim.Sim) { s.FailPlacement("cx23", "fsn1", true) },
			apitest.ContractSpec{CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB")}, []string{"resource_unavailable", "cx23"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A long API cool-down keeps the failed contract failed.
			f := setup(t, apitest.WithRetryCooldown(time.Hour))
			c.inject(f.sim)
			cid := f.env.API.CreateContract(f.env.Provider, c.spec)
			r := f.env.StartAgent(f.cfg, registry())
			ct := f.env.API.WaitForStatus(cid, dcapi.StatusProvisioningFailed, wait)
			reason := ""
			if ct.LastError != nil {
				reason = *ct.LastError
			}
			t.Logf("reason: %s", reason)
			for _, w := range c.want {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not mention %q", reason, w)
				}
			}
			r.Stop()
			f.sim.RateLimitNext(0)
			f.assertEmpty(t)
		})
	}
}
