// Package cloude2e runs the DigitalOcean and Vultr backends through the real
// agent loop (in process, and the dc-agent binary SIGKILLed mid-create) and
// the real reference API server, against the simulators.
//
// Every test is a table over backends × dc-api profiles: the default one
// and the live profile (dc-api --profile live, the live Decent Cloud API's
// behaviour of LIVE-API.md: setup-token registration into a pool, no
// long-poll, no contracts/active, per-contract health).
package cloude2e

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

const wait = 30 * time.Second

// profiles are the dc-api profiles every test runs against.
var profiles = e2eutil.Profiles

// agentBin is the dc-agent binary, built by TestMain.
var agentBin struct {
	path string
	err  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dc-e2e-cloud-")
	if err != nil {
		panic(err)
	}
	agentBin.path, agentBin.err = testutil.BuildBinary(dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// each runs f for every backend and profile.
func each(t *testing.T, f func(t *testing.T, b backend, p e2eutil.Profile)) {
	for _, b := range backends {
		for _, p := range profiles {
			t.Run(b.typ+"/"+p.Name, func(t *testing.T) { f(t, b, p) })
		}
	}
}

type fixture struct {
	env *e2eutil.Env
	sim cloud
	cfg *config.Config
	b   backend
}

func setup(t *testing.T, b backend, so simOpts, timeout int, p e2eutil.Profile, apiOpts ...apitest.Option) *fixture {
	t.Helper()
	sim := b.newSim(t, so)
	env := e2eutil.NewEnvFor(t, p, b.typ, apiOpts...)
	tokenFile := filepath.Join(env.Dir, b.typ+".token")
	if err := identity.WriteFileAtomic(tokenFile, []byte(sim.Token()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := env.Config(b.section(sim.URL(), tokenFile, timeout), "")
	return &fixture{env: env, sim: sim, cfg: cfg, b: b}
}

func (f *fixture) registry() *provisioners.Registry {
	r := provisioners.NewRegistry()
	f.b.register(r)
	return r
}

func (f *fixture) waitLive(t *testing.T, cid string) dcapi.InstanceDetails {
	t.Helper()
	f.env.API.WaitForContract(cid, wait, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
	d, ok := f.env.API.InstanceDetails(cid)
	if !ok {
		t.Fatal("no instance details")
	}
	return d
}

func (f *fixture) instance(t *testing.T, id string) instance {
	t.Helper()
	for _, in := range f.sim.Instances() {
		if in.ID == id {
			return in
		}
	}
	t.Fatalf("no instance %s in %+v", id, f.sim.Instances())
	return instance{}
}

func (f *fixture) assertEmpty(t *testing.T) {
	t.Helper()
	if l := f.sim.Leftovers(); len(l) != 0 {
		t.Errorf("left behind: %q", l)
	}
}

func healthSeen(f *fixture, cid, status, detail string) func() bool {
	return func() bool {
		for _, h := range f.env.API.HealthChecks(cid) {
			if h.Status == status && strings.Contains(h.Details, detail) {
				return true
			}
		}
		return false
	}
}

// Contracts become instances with the requester's access, report health,
// and are removed with everything the agent made when cancelled.
func TestProvisionHealthTerminate(t *testing.T) {
	each(t, func(t *testing.T, b backend, p e2eutil.Profile) {
		f := setup(t, b, simOpts{}, 10, p)
		requester, _ := identity.GenerateKey()
		keyed := f.env.CreateContract(apitest.ContractSpec{
			CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB"), StorageCapacity: apitest.Ptr("40 GB"),
			RequesterSSHPubkey: apitest.NewSSHPubkey(t), RequesterPubkey: apitest.Ptr(identity.PublicHex(requester)),
			PostProvisionScript: apitest.Ptr("apt-get install -y htop"),
		})
		// An offering mapped to a size/plan. (Contracts always carry an SSH
		// key on dc-api, as on the live API: the root password path is
		// tested at the provisioner level.)
		big := f.env.CreateContract(apitest.ContractSpec{OfferingID: "offering-big"})
		f.env.StartAgent(f.cfg, f.registry())

		d := f.waitLive(t, keyed)
		in := f.instance(t, d.ExternalID)
		if d.IPAddress != in.IPv4 || d.IPv6Address != in.IPv6 || in.IPv4 == "" || in.IPv6 == "" || d.SSHPort != 22 || !in.Running {
			t.Fatalf("details %+v for %+v", d, in)
		}
		if d.RootPassword != "" {
			t.Fatal("a password was reported for a contract with an SSH key")
		}
		if !slices.Contains(in.Tags, "dc-contract-"+keyed) || !slices.Contains(in.Tags, "dc-agent") || in.Name != "dc-"+keyed[:60] {
			t.Fatalf("instance %+v", in)
		}
		var extra map[string]any
		if err := json.Unmarshal(d.AdditionalDetails, &extra); err != nil || extra["region"] != b.region || (extra["size"] != b.size && extra["plan"] != b.size) {
			t.Fatalf("additional details %s (%v)", d.AdditionalDetails, err)
		}
		d2 := f.waitLive(t, big)
		var extra2 map[string]any
		_ = json.Unmarshal(d2.AdditionalDetails, &extra2)
		if extra2["size"] != "s-4vcpu-8gb" && extra2["plan"] != "vc2-4c-8gb" {
			t.Fatalf("mapped offering got %s", d2.AdditionalDetails)
		}

		e2eutil.Eventually(t, wait, "a healthy health check", healthSeen(f, keyed, dcapi.HealthHealthy, ""))
		f.sim.PowerOff(d2.ExternalID)
		e2eutil.Eventually(t, wait, "an unhealthy health check for the powered-off instance", healthSeen(f, big, dcapi.HealthUnhealthy, "is "))

		f.env.API.CancelContract(keyed)
		f.env.API.CancelContract(big)
		for _, id := range []string{keyed, big} {
			f.env.API.WaitForContract(id, wait, func(c *store.Contract) bool { return c.TerminatedAtNs != nil }, "terminated")
		}
		e2eutil.Eventually(t, wait, "everything removed", func() bool { return len(f.sim.Leftovers()) == 0 })
	})
}

// Reconcile removes an instance of the agent's that the API knows nothing
// about after the grace period, and never touches the provider's own.
func TestReconcileOrphans(t *testing.T) {
	each(t, func(t *testing.T, b backend, p e2eutil.Profile) {
		f := setup(t, b, simOpts{}, 10, p)
		orphanCID := strings.Repeat("ab", 32)
		orphan := f.sim.Add("dc-"+orphanCID[:60], []string{"dc-agent", "dc-contract-" + orphanCID})
		foreign := f.sim.Add("providers-db", []string{"db"})
		cid := f.env.CreateContract(apitest.ContractSpec{RequesterSSHPubkey: apitest.NewSSHPubkey(t)})
		f.env.StartAgent(f.cfg, f.registry())
		d := f.waitLive(t, cid)
		e2eutil.Eventually(t, wait, "orphan removed", func() bool {
			for _, in := range f.sim.Instances() {
				if in.ID == orphan {
					return false
				}
			}
			return true
		})
		var ids []string
		for _, in := range f.sim.Instances() {
			ids = append(ids, in.ID)
		}
		slices.Sort(ids)
		want := []string{foreign, d.ExternalID}
		slices.Sort(want)
		if !slices.Equal(ids, want) {
			t.Fatalf("instances after reconcile: %v, want the foreign %s and the live %s", ids, foreign, d.ExternalID)
		}
	})
}

// A failure at each step of provisioning ends as provisioning_failed with a
// reason the requester can read, and leaves nothing behind.
func TestFailuresLeaveNothingBehind(t *testing.T) {
	each(t, func(t *testing.T, b backend, p e2eutil.Profile) {
		cases := []struct {
			step   string
			so     simOpts
			inject func(cloud)
			want   []string
		}{
			{"lookup (rate limited)", simOpts{}, func(c cloud) { c.RateLimitNext(1 << 20) }, []string{"rate limit exceeded"}},
			{"size choice (sold out)", simOpts{}, func(c cloud) { c.SoldOut(b.region) }, []string{"region " + b.region + " right now"}},
			{"creation (refused)", simOpts{}, func(c cloud) { c.RefusePlacement(b.size, b.region) }, []string{"not available", b.size}},
			{"creation (fails after acceptance)", simOpts{}, func(c cloud) { c.FailCreate() }, b.failCreate},
			{"start (too slow)", simOpts{slow: true}, func(cloud) {}, []string{"timed out (action_timeout_seconds = 1)"}},
		}
		for _, c := range cases {
			t.Run(c.step, func(t *testing.T) {
				// A long API cool-down keeps the failed contract failed.
				f := setup(t, b, c.so, 1, p, apitest.WithRetryCooldown(time.Hour))
				c.inject(f.sim)
				cid := f.env.CreateContract(apitest.ContractSpec{
					CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("4 GB"), RequesterSSHPubkey: apitest.NewSSHPubkey(t),
				})
				r := f.env.StartAgent(f.cfg, f.registry())
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
	})
}

// The dc-agent binary is SIGKILLed while the cloud creates the instance
// (the create request was accepted, its answer never arrives). Restarted,
// it finds the instance by its tags instead of creating a second one, and
// reports it; cancelling then removes everything.
func TestKilledAgentRefindsInstance(t *testing.T) {
	bin, err := agentBin.path, agentBin.err
	if err != nil {
		t.Fatal(err)
	}
	each(t, func(t *testing.T, b backend, p e2eutil.Profile) {
		var mu sync.Mutex
		var victim *exec.Cmd
		killed := make(chan struct{})
		f := setup(t, b, simOpts{onCreate: func() {
			mu.Lock()
			defer mu.Unlock()
			if victim != nil {
				_ = victim.Process.Signal(syscall.SIGKILL)
				victim = nil
				close(killed)
			}
		}}, 20, p)
		cfgPath := filepath.Join(f.env.Dir, "dc-agent.toml")
		if err := config.Save(cfgPath, f.cfg); err != nil {
			t.Fatal(err)
		}
		cid := f.env.CreateContract(apitest.ContractSpec{RequesterSSHPubkey: apitest.NewSSHPubkey(t)})
		run := func() (*exec.Cmd, *strings.Builder) {
			cmd := exec.Command(bin, "--config", cfgPath, "run", "--time-scale", "0.01")
			log := &strings.Builder{}
			cmd.Stdout, cmd.Stderr = log, log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			return cmd, log
		}
		mu.Lock()
		first, log1 := run()
		victim = first
		mu.Unlock()
		done := make(chan error, 1)
		go func() { done <- first.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("first agent ended with %v, not SIGKILL; log:\n%s", err, log1)
			}
		case <-time.After(wait):
			_ = first.Process.Kill()
			t.Fatalf("the first agent never created an instance; log:\n%s", log1)
		}
		<-killed
		before := f.sim.Instances()
		if len(before) != 1 || !slices.Contains(before[0].Tags, "dc-contract-"+cid) {
			t.Fatalf("after the crash: %+v", before)
		}
		if st := f.env.API.ContractStatus(cid); st != dcapi.StatusProvisioning {
			t.Fatalf("contract is %s after the crash, want provisioning (nothing reported yet)", st)
		}

		second, log2 := run()
		t.Cleanup(func() {
			_ = second.Process.Signal(syscall.SIGTERM)
			_ = second.Wait()
		})
		d := f.waitLive(t, cid)
		after := f.sim.Instances()
		if len(after) != 1 || d.ExternalID != before[0].ID || d.IPAddress != after[0].IPv4 {
			t.Fatalf("reported %+v; instances %+v (before the crash: %s); log:\n%s", d, after, before[0].ID, log2)
		}
		f.env.API.CancelContract(cid)
		e2eutil.Eventually(t, wait, "everything removed", func() bool { return len(f.sim.Leftovers()) == 0 })
		_ = second.Process.Signal(syscall.SIGTERM)
		if err := second.Wait(); err != nil {
			t.Fatalf("second agent: %v; log:\n%s", err, log2)
		}
	})
}
