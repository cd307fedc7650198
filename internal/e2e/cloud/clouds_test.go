package cloude2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/digitalocean/godo"
	"github.com/vultr/govultr/v3"

	"github.com/decent-stuff/dc-agent/config"
	dosim "github.com/decent-stuff/dc-agent/internal/sim/digitalocean"
	vultrsim "github.com/decent-stuff/dc-agent/internal/sim/vultr"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners/vultr"
)

// instance is what the tests look at of a droplet or Vultr instance.
type instance struct {
	ID, Name, IPv4, IPv6 string
	Tags                 []string
	Running              bool
}

// simOpts shape a simulator for one test.
type simOpts struct {
	// slow: addresses (DigitalOcean) or the install (Vultr) never come in
	// the test's time.
	slow bool
	// onCreate runs when an instance has been created, before the answer.
	onCreate func()
}

// cloud is one simulator, seen the same way for both backends.
type cloud interface {
	URL() string
	Token() string
	Instances() []instance
	// Leftovers names everything the agent makes that still exists:
	// instances, its SSH key objects, its tags.
	Leftovers() []string
	PowerOff(id string)
	// Add puts an instance there that the agent did not create now.
	Add(name string, tags []string) string
	RateLimitNext(n int)
	// FailCreate makes the next creation fail after it was accepted (an
	// errored create action; a failed install).
	FailCreate()
	// SoldOut makes every size/plan unavailable in region.
	SoldOut(region string)
	// RefusePlacement makes creating size/plan in region fail, although
	// the lists offer it.
	RefusePlacement(size, region string)
}

// backend is one cloud provisioner under test.
type backend struct {
	typ string
	// region is the default region; size the size/plan a 2-core, 4 GB
	// contract gets there.
	region, size string
	newSim       func(t *testing.T, o simOpts) cloud
	// section is the provisioner config for a simulator.
	section func(url, tokenFile string, timeoutSeconds int) config.ProvisionerConfig
	// register adds the backend with millisecond HTTP retries.
	register func(r *provisioners.Registry)
	// failCreate is what a failed creation's reason says.
	failCreate []string
}

var backends = []backend{
	{
		typ: config.TypeDigitalOcean, region: "nyc3", size: "s-2vcpu-4gb",
		newSim: func(t *testing.T, o simOpts) cloud {
			so := dosim.Options{CreateDuration: 10 * time.Millisecond, BurstLimit: -1, RetryAfter: -1}
			if o.slow {
				so.IPDelay = time.Hour
			}
			if o.onCreate != nil {
				so.OnCreate = func(godo.Droplet) { o.onCreate() }
			}
			s := dosim.New(so)
			return &doCloud{s: s, url: s.Start(t)}
		},
		section: func(url, tokenFile string, timeout int) config.ProvisionerConfig {
			return config.ProvisionerConfig{Type: config.TypeDigitalOcean, DigitalOcean: &config.DigitalOceanConfig{
				APITokenFile: tokenFile, Endpoint: url, DefaultRegion: "nyc3", DefaultImage: "ubuntu-24-04-x64",
				Sizes: map[string]string{"offering-big": "s-4vcpu-8gb"}, ActionTimeoutSeconds: timeout, PollIntervalMs: 2,
			}}
		},
		register: func(r *provisioners.Registry) {
			r.Register(config.TypeDigitalOcean, digitalocean.NewFactory(digitalocean.TestOptions()))
		},
		failCreate: []string{"create action", "errored"},
	},
	{
		typ: config.TypeVultr, region: "ewr", size: "vc2-2c-4gb",
		newSim: func(t *testing.T, o simOpts) cloud {
			so := vultrsim.Options{CreateDuration: 15 * time.Millisecond, PerSecond: -1}
			if o.slow {
				so.CreateDuration, so.DeleteDuration = time.Hour, 5*time.Millisecond
			}
			if o.onCreate != nil {
				so.OnCreate = func(govultr.Instance) { o.onCreate() }
			}
			s := vultrsim.New(so)
			return &vultrCloud{s: s, url: s.Start(t)}
		},
		section: func(url, tokenFile string, timeout int) config.ProvisionerConfig {
			return config.ProvisionerConfig{Type: config.TypeVultr, Vultr: &config.VultrConfig{
				APITokenFile: tokenFile, Endpoint: url, DefaultRegion: "ewr", DefaultOSID: 2284, PlanType: "vc2",
				Plans: map[string]string{"offering-big": "vc2-4c-8gb"}, ActionTimeoutSeconds: timeout, PollIntervalMs: 2, RequestsPerSecond: 30,
			}}
		},
		register: func(r *provisioners.Registry) {
			r.Register(config.TypeVultr, vultr.NewFactory(vultr.TestOptions()))
		},
		failCreate: []string{"stopped while installing", "Vultr halted it"},
	},
}

type doCloud struct {
	s   *dosim.Sim
	url string
}

func (c *doCloud) URL() string   { return c.url }
func (c *doCloud) Token() string { return c.s.Token() }
func (c *doCloud) Instances() []instance {
	var out []instance
	for _, d := range c.s.Droplets() {
		v4, _ := d.PublicIPv4()
		v6, _ := d.PublicIPv6()
		out = append(out, instance{ID: strconv.Itoa(d.ID), Name: d.Name, IPv4: v4, IPv6: v6, Tags: d.Tags, Running: d.Status == "active"})
	}
	return out
}
func (c *doCloud) Leftovers() []string {
	var out []string
	for _, d := range c.s.Droplets() {
		out = append(out, "droplet "+d.Name)
	}
	for _, k := range c.s.Keys() {
		if strings.HasPrefix(k.Name, "dc-key-") {
			out = append(out, "SSH key "+k.Name)
		}
	}
	for _, tag := range c.s.Tags() {
		if strings.HasPrefix(tag, "dc-contract-") || strings.HasPrefix(tag, "dc-sshkey-") {
			out = append(out, "tag "+tag)
		}
	}
	return out
}
func (c *doCloud) PowerOff(id string) {
	n, _ := strconv.Atoi(id)
	c.s.PowerOff(n)
}
func (c *doCloud) Add(name string, tags []string) string {
	return strconv.Itoa(c.s.AddDroplet(name, tags))
}
func (c *doCloud) RateLimitNext(n int) { c.s.RateLimitNext(n) }
func (c *doCloud) FailCreate()         { c.s.FailNextAction("create") }
func (c *doCloud) SoldOut(region string) {
	for _, sz := range dosim.DefaultSizes() {
		c.s.SetSizeAvailable(sz.Slug, region, false)
	}
}
func (c *doCloud) RefusePlacement(size, region string) { c.s.FailPlacement(size, region, true) }

type vultrCloud struct {
	s   *vultrsim.Sim
	url string
}

func (c *vultrCloud) URL() string   { return c.url }
func (c *vultrCloud) Token() string { return c.s.Token() }
func (c *vultrCloud) Instances() []instance {
	var out []instance
	for _, in := range c.s.Instances() {
		ip := in.MainIP
		if ip == "0.0.0.0" {
			ip = ""
		}
		out = append(out, instance{ID: in.ID, Name: in.Label, IPv4: ip, IPv6: in.V6MainIP, Tags: in.Tags, Running: in.PowerStatus == "running" && in.ServerStatus == "ok"})
	}
	return out
}
func (c *vultrCloud) Leftovers() []string {
	var out []string
	for _, in := range c.s.Instances() {
		out = append(out, "instance "+in.Label)
	}
	for _, k := range c.s.Keys() {
		if strings.HasPrefix(k.Name, "dc-key-") {
			out = append(out, "SSH key "+k.Name)
		}
	}
	return out
}
func (c *vultrCloud) PowerOff(id string)                    { c.s.Halt(id) }
func (c *vultrCloud) Add(name string, tags []string) string { return c.s.AddInstance(name, tags) }
func (c *vultrCloud) RateLimitNext(n int)                   { c.s.RateLimitNext(n) }
func (c *vultrCloud) FailCreate()                           { c.s.FailNextInstall() }
func (c *vultrCloud) SoldOut(region string) {
	for _, p := range vultrsim.DefaultPlans() {
		c.s.SetAvailable(p.ID, region, false)
	}
}
func (c *vultrCloud) RefusePlacement(plan, region string) { c.s.FailPlacement(plan, region, true) }
