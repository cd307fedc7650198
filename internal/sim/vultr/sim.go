// Package vultrsim is a stateful simulator of the Vultr API v2 (the part
// dc-agent uses: instances and their start/halt, SSH keys, plans, regions
// with plan availability, operating systems, account), for tests,
// benchmarks and demos.
//
// It marshals govultr's own types and reproduces the documented behaviour
// (https://www.vultr.com/api/) the client and the provisioner depend on:
//
//   - POST /v2/instances answers 202 with the instance in status "pending",
//     power_status "running", server_status "none", main_ip "0.0.0.0" and
//     the generated default_password (only this once: GET never shows it).
//     Addresses are assigned eventually (IPDelay); the instance becomes
//     "active"/"installingbooting" and, when the install is done, "ok".
//   - There are no action objects: halt and start answer 204 and the power
//     state follows after PowerDuration; DELETE answers 204 and the instance
//     stays listed (server_status "locked") for DeleteDuration.
//   - user_data must be base64; labels and tags are free text and not
//     unique; lists filter by label and tag and page with cursors
//     (meta.links.next).
//   - Errors are {"error": "...", "status": N} with Content-Type exactly
//     "application/json" (govultr decodes nothing else). More than 30
//     requests in a second get 429 (Vultr's documented limit, per address),
//     with no rate limit headers.
//
// Faults can be injected: an install that fails (the instance halts), a
// failing start or halt (500), 429s, a plan out of stock in a region (in
// the availability list, or only at creation: FailPlacement, answered 400
// "Plan ... is not available in region ..."), a hook at creation.
package vultrsim

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/vultr/govultr/v3"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

// Options configure a simulator.
type Options struct {
	// Token clients must send as "Authorization: Bearer". Default "sim-token".
	Token string
	// CreateDuration is how long the install runs until server_status "ok"
	// (default 20ms); the instance is "active" from 2/3 of it.
	CreateDuration time.Duration
	// IPDelay is how long after creation the addresses appear (default
	// CreateDuration / 2).
	IPDelay time.Duration
	// PowerDuration is how long a halt or start takes (default CreateDuration / 2).
	PowerDuration time.Duration
	// DeleteDuration is how long a deleted instance stays listed (default
	// CreateDuration / 4).
	DeleteDuration time.Duration
	// PerSecond is the rate limit (default 30; -1 turns it off).
	PerSecond int
	// OnCreate, if set, is called when an instance has been created, before
	// the response is sent (a test SIGKILLs the agent there).
	OnCreate func(govultr.Instance)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DocumentedTimings are the simulator timings of a real instance: deployed
// in about 60 s (Vultr's advertised deployment time), addresses after about
// 10 s, halt and start in about 5 s, deletion in about 5 s. Figures are
// typical, not guarantees of the API.
func DocumentedTimings() Options {
	return Options{CreateDuration: 60 * time.Second, IPDelay: 10 * time.Second, PowerDuration: 5 * time.Second, DeleteDuration: 5 * time.Second}
}

// Sim is the simulator state plus its HTTP handler.
type Sim struct {
	opts Options

	simkit.Faults

	mu        sync.Mutex
	instances map[string]*instance
	keys      map[string]*govultr.SSHKey
	plans     []govultr.Plan
	regions   []govultr.Region
	oses      []govultr.OS
	stock     map[string]bool // plan/region out of stock when false
	ipCounter int

	installFaults int
	opFaults      map[string][]string
	lastSecond    []time.Time
}

type instance struct {
	v        govultr.Instance
	userData string // base64, as sent
	keyIDs   []string
	created  time.Time
	ipAt     time.Time
	activeAt time.Time
	okAt     time.Time
	failed   bool      // the install fails at okAt: the instance halts
	powerAt  time.Time // a pending halt or start takes effect
	powerTo  string
	deleteAt time.Time
	v4, v6   string
	v6net    string
}

// New returns a simulator with the default catalogues.
func New(opts Options) *Sim {
	simkit.Defaults(&opts.Token, &opts.Now, &opts.CreateDuration, &opts.PowerDuration, &opts.DeleteDuration)
	if opts.IPDelay == 0 {
		opts.IPDelay = opts.CreateDuration / 2
	}
	if opts.PerSecond == 0 {
		opts.PerSecond = 30
	}
	return &Sim{
		opts: opts, instances: map[string]*instance{}, keys: map[string]*govultr.SSHKey{},
		plans: DefaultPlans(), regions: DefaultRegions(), oses: DefaultOS(), stock: map[string]bool{},
		opFaults: map[string][]string{},
	}
}

// Start serves the simulator on a loopback httptest server, closed at the
// end of the test. The returned URL is what govultr's SetBaseURL takes.
func (s *Sim) Start(t interface{ Cleanup(func()) }) string {
	url := simkit.Serve(t, s)
	return url
}

// Token is the bearer token the simulator accepts.
func (s *Sim) Token() string { return s.opts.Token }

// FailNextInstall makes the next created instance fail its install: it
// halts (power_status "stopped", server_status "none") instead of "ok".
func (s *Sim) FailNextInstall() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.installFaults++
}

// FailNext makes the next "start" or "halt" request fail with 500 message.
func (s *Sim) FailNext(op, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opFaults[op] = append(s.opFaults[op], message)
}

// SetAvailable puts a plan in or out of stock in a region (the
// availability list and creation both follow it).
func (s *Sim) SetAvailable(plan, region string, available bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stock[plan+"/"+region] = available
}

// Instances returns a snapshot of all instances (deleting ones included),
// sorted by creation.
func (s *Sim) Instances() []govultr.Instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	var out []govultr.Instance
	for _, in := range s.sorted() {
		out = append(out, s.view(in))
	}
	return out
}

// Keys returns a snapshot of all SSH keys, sorted by name and id.
func (s *Sim) Keys() []govultr.SSHKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedKeys()
}

// UserData returns the user_data an instance was created with, decoded.
func (s *Sim) UserData(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.instances[id]; in != nil {
		return decodeUserData(in.userData)
	}
	return ""
}

// InstanceKeys returns the SSH key ids an instance was created with.
func (s *Sim) InstanceKeys(id string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.instances[id]; in != nil {
		return append([]string(nil), in.keyIDs...)
	}
	return nil
}

// Halt stops an instance out of band (as a user would in the portal).
func (s *Sim) Halt(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.instances[id]; in != nil {
		in.v.PowerStatus, in.v.ServerStatus = "stopped", "none"
	}
}

// AddInstance inserts a running instance the agent did not create (one the
// provider runs by hand, or an orphan) with the given label and tags.
func (s *Sim) AddInstance(label string, tags []string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	created := s.now().Add(-time.Hour)
	in := s.newInstance(label, s.plans[0], "ewr", s.oses[0], tags, true, created)
	s.advance()
	return in.v.ID
}

func (s *Sim) now() time.Time { return s.opts.Now().UTC() }

func (s *Sim) newInstance(label string, plan govultr.Plan, region string, os govultr.OS, tags []string, ipv6 bool, created time.Time) *instance {
	s.ipCounter++
	n := s.ipCounter
	in := &instance{
		v: govultr.Instance{
			ID: uuid.NewString(), Os: os.Name, RAM: plan.RAM, Disk: plan.Disk, Plan: plan.ID, MainIP: "0.0.0.0",
			VCPUCount: plan.VCPUCount, Region: region, DateCreated: created.Format("2006-01-02T15:04:05-07:00"), Status: "pending",
			AllowedBandwidth: plan.Bandwidth, NetmaskV4: "", GatewayV4: "0.0.0.0", PowerStatus: "running", ServerStatus: "none",
			Label: label, Hostname: label, KVM: "https://my.vultr.com/subs/vps/novnc/api.php?data=sim", OsID: os.ID,
			Tags: append([]string{}, tags...), Features: []string{}, UserScheme: "root",
		},
		created:  created,
		ipAt:     created.Add(s.opts.IPDelay),
		activeAt: created.Add(s.opts.CreateDuration * 2 / 3),
		okAt:     created.Add(s.opts.CreateDuration),
		v4:       fmt.Sprintf("198.51.%d.%d", (n>>8)&255, n&255),
	}
	if ipv6 {
		in.v6net = fmt.Sprintf("2001:19f0:5:%x::", n&0xffff)
		in.v6 = fmt.Sprintf("2001:19f0:5:%x:5400:4ff:fe00:%x", n&0xffff, n&0xffff)
		in.v.Features = append(in.v.Features, "ipv6")
	}
	s.instances[in.v.ID] = in
	return in
}

// advance applies every change whose time has come.
func (s *Sim) advance() {
	now := s.now()
	for id, in := range s.instances {
		if !in.deleteAt.IsZero() && !now.Before(in.deleteAt) {
			delete(s.instances, id)
			continue
		}
		if !in.ipAt.IsZero() && !now.Before(in.ipAt) {
			in.v.MainIP, in.v.NetmaskV4, in.v.GatewayV4 = in.v4, "255.255.254.0", in.v4[:len(in.v4)-len(lastOctet(in.v4))]+"1"
			if in.v6 != "" {
				in.v.V6MainIP, in.v.V6Network, in.v.V6NetworkSize = in.v6, in.v6net, 64
			}
			in.ipAt = time.Time{}
		}
		if !in.activeAt.IsZero() && !now.Before(in.activeAt) {
			in.v.Status, in.v.ServerStatus = "active", "installingbooting"
			in.activeAt = time.Time{}
		}
		if !in.okAt.IsZero() && !now.Before(in.okAt) {
			if in.failed {
				in.v.PowerStatus, in.v.ServerStatus = "stopped", "none"
			} else {
				in.v.ServerStatus = "ok"
			}
			in.okAt = time.Time{}
		}
		if !in.powerAt.IsZero() && !now.Before(in.powerAt) {
			in.v.PowerStatus = in.powerTo
			if in.powerTo == "running" {
				in.v.ServerStatus = "ok"
			} else {
				in.v.ServerStatus = "none"
			}
			in.powerAt = time.Time{}
		}
	}
}

func lastOctet(ip string) string {
	for i := len(ip) - 1; i >= 0; i-- {
		if ip[i] == '.' {
			return ip[i+1:]
		}
	}
	return ip
}

func (s *Sim) view(in *instance) govultr.Instance {
	v := in.v
	v.Tags = append([]string{}, in.v.Tags...)
	v.Features = append([]string{}, in.v.Features...)
	if !in.deleteAt.IsZero() {
		v.ServerStatus = "locked"
	}
	return v
}

func (s *Sim) sorted() []*instance {
	out := make([]*instance, 0, len(s.instances))
	for _, in := range s.instances {
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].created.Equal(out[j].created) {
			return out[i].created.Before(out[j].created)
		}
		return out[i].v.ID < out[j].v.ID
	})
	return out
}

func (s *Sim) inStock(plan, region string) bool {
	ok, set := s.stock[plan+"/"+region]
	return !set || ok
}
