// Package dosim is a stateful simulator of the DigitalOcean API v2 (the part
// dc-agent uses: droplets, droplet actions, actions, SSH keys, tags, sizes,
// regions, images, account), for tests, benchmarks and demos.
//
// It marshals godo's own types and reproduces the documented behaviour
// (https://docs.digitalocean.com/reference/api/api-reference/) the client
// and the provisioner depend on:
//
//   - POST /v2/droplets answers 202 with the droplet in status "new", empty
//     networks and links.actions naming the "create" action; the action goes
//     in-progress -> completed (or errored) and the droplet becomes
//     "active". Addresses are assigned eventually: networks stay empty
//     until IPDelay after creation, which by default is after the droplet
//     is already active.
//   - Droplet actions (power_on, power_off, shutdown, reboot) are async
//     actions; a droplet with an action in progress refuses another with 422
//     "Droplet already has a pending event.".
//   - DELETE /v2/droplets/{id} answers 204; the droplet stays listed
//     (locked) until DeleteDuration has passed.
//   - Droplet names need not be unique; tags are created implicitly by
//     droplet creation, DELETE /v2/tags/{name} removes one.
//   - SSH keys are found by id or MD5 fingerprint; a duplicate key is 422.
//   - Every response carries ratelimit-limit/-remaining/-reset for the
//     hourly limit (5000); more than 250 requests in a minute (the burst
//     limit) get 429 with Retry-After. Errors are {"id": ..., "message": ...}.
//   - Lists are paginated (page, per_page up to 200) with links.pages and
//     meta.total.
//
// Faults can be injected: a failing action (by type), 429s, a size that is
// not available in a region (in the size list, or only at creation:
// FailPlacement, answered 422 "Size is not available in this region."), an
// address that never comes (IPDelay), a hook at creation (OnCreate).
package dosim

import (
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/digitalocean/godo"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

// Options configure a simulator.
type Options struct {
	// Token clients must send as "Authorization: Bearer". Default "sim-token".
	Token string
	// CreateDuration is how long the create action runs (default 20ms).
	CreateDuration time.Duration
	// IPDelay is how long after creation a droplet's addresses appear
	// (default 1.5 x CreateDuration: after the droplet is active).
	IPDelay time.Duration
	// PowerDuration is how long power_on/power_off/shutdown/reboot run
	// (default CreateDuration / 2).
	PowerDuration time.Duration
	// DeleteDuration is how long a deleted droplet stays listed (default
	// CreateDuration / 4).
	DeleteDuration time.Duration
	// HourlyLimit and BurstLimit are the rate limits (requests per hour
	// and per minute; defaults 5000 and 250; -1 turns one off).
	HourlyLimit, BurstLimit int
	// RetryAfter is the Retry-After of injected 429s (default 1s; negative:
	// 0, retry at once).
	RetryAfter time.Duration
	// OnCreate, if set, is called when a droplet has been created, before
	// the response is sent (a test SIGKILLs the agent there).
	OnCreate func(godo.Droplet)
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// DocumentedTimings are the simulator timings of a real droplet: the create
// action finishing in about 55 s (DigitalOcean's advertised droplet
// creation time), addresses present when it completes, power actions of
// about 10 s and a deletion of about 5 s. Figures are typical, not
// guarantees of the API.
func DocumentedTimings() Options {
	return Options{CreateDuration: 55 * time.Second, IPDelay: 55 * time.Second, PowerDuration: 10 * time.Second, DeleteDuration: 5 * time.Second}
}

// Sim is the simulator state plus its HTTP handler.
type Sim struct {
	opts Options
	url  string

	simkit.Faults

	mu          sync.Mutex
	nextDroplet int
	nextKey     int
	nextAction  int
	ipCounter   int
	droplets    map[int]*droplet
	keys        map[int]*godo.Key
	tags        map[string]bool
	actions     map[int]*action
	sizes       []godo.Size
	regions     []godo.Region
	images      []godo.Image

	actionFaults   map[string][]string
	hourly, minute []time.Time
}

type droplet struct {
	d        godo.Droplet
	userData string
	keyIDs   []int
	created  time.Time
	ipAt     time.Time
	deleteAt time.Time // non-zero: being deleted
	v4, v6   string
}

type action struct {
	a      godo.Action
	start  time.Time
	dur    time.Duration
	fail   bool
	onDone func(ok bool)
}

// New returns a simulator with the default catalogues.
func New(opts Options) *Sim {
	simkit.Defaults(&opts.Token, &opts.Now, &opts.CreateDuration, &opts.PowerDuration, &opts.DeleteDuration)
	if opts.IPDelay == 0 {
		opts.IPDelay = opts.CreateDuration * 3 / 2
	}
	if opts.HourlyLimit == 0 {
		opts.HourlyLimit = 5000
	}
	if opts.BurstLimit == 0 {
		opts.BurstLimit = 250
	}
	if opts.RetryAfter == 0 {
		opts.RetryAfter = time.Second
	}
	if opts.RetryAfter < 0 {
		opts.RetryAfter = 0
	}
	return &Sim{
		opts:         opts,
		nextDroplet:  510000000,
		nextKey:      4100000,
		nextAction:   2300000000,
		droplets:     map[int]*droplet{},
		keys:         map[int]*godo.Key{},
		tags:         map[string]bool{},
		actions:      map[int]*action{},
		sizes:        DefaultSizes(),
		regions:      DefaultRegions(),
		images:       DefaultImages(),
		actionFaults: map[string][]string{},
	}
}

// Start serves the simulator on a loopback httptest server, closed at the
// end of the test. The returned URL is what godo.SetBaseURL takes.
func (s *Sim) Start(t interface{ Cleanup(func()) }) string {
	url := simkit.Serve(t, s)
	s.mu.Lock()
	s.url = url
	s.mu.Unlock()
	return url
}

// Token is the bearer token the simulator accepts.
func (s *Sim) Token() string { return s.opts.Token }

// FailNextAction makes the next action of this type ("create", "power_on",
// "power_off", "shutdown") end "errored".
func (s *Sim) FailNextAction(typ string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actionFaults[typ] = append(s.actionFaults[typ], typ)
}

// SetSizeAvailable adds or removes a region from a size's regions (the
// size list and creation both follow it).
func (s *Sim) SetSizeAvailable(size, region string, available bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.sizes {
		if s.sizes[i].Slug != size {
			continue
		}
		var rs []string
		for _, r := range s.sizes[i].Regions {
			if r != region {
				rs = append(rs, r)
			}
		}
		if available {
			rs = append(rs, region)
			sort.Strings(rs)
		}
		s.sizes[i].Regions = rs
	}
}

// Droplets returns a snapshot of all droplets (deleting ones included),
// sorted by id.
func (s *Sim) Droplets() []godo.Droplet {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	out := make([]godo.Droplet, 0, len(s.droplets))
	for _, d := range s.sortedDroplets() {
		out = append(out, s.view(d))
	}
	return out
}

// Keys returns a snapshot of all SSH keys, sorted by id.
func (s *Sim) Keys() []godo.Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	return simkit.Sorted(s.keys, func(a, b *godo.Key) bool { return a.ID < b.ID })
}

// Tags returns the names of all tags, sorted.
func (s *Sim) Tags() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedTags()
}

// UserData returns the user_data a droplet was created with.
func (s *Sim) UserData(id int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.droplets[id]; d != nil {
		return d.userData
	}
	return ""
}

// DropletKeys returns the SSH key ids a droplet was created with.
func (s *Sim) DropletKeys(id int) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.droplets[id]; d != nil {
		return append([]int(nil), d.keyIDs...)
	}
	return nil
}

// PowerOff turns a droplet off out of band (as a user would in the console).
func (s *Sim) PowerOff(id int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.droplets[id]; d != nil {
		d.d.Status = "off"
	}
}

// AddDroplet inserts an active droplet the agent did not create (one the
// provider runs by hand, or one left by an earlier agent) with the given
// name and tags; it has its addresses.
func (s *Sim) AddDroplet(name string, tags []string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	d := s.newDroplet(name, s.sizes[1], s.regions[0], s.images[0], tags, true, now.Add(-time.Hour))
	d.d.Status = "active"
	return d.d.ID
}

func (s *Sim) now() time.Time { return s.opts.Now().UTC() }

// advance finishes every action whose time has come and removes droplets
// whose deletion is over.
func (s *Sim) advance() {
	now := s.now()
	ids := make([]int, 0, len(s.actions))
	for id, a := range s.actions {
		if a.a.Status == godo.ActionInProgress {
			ids = append(ids, id)
		}
	}
	sort.Ints(ids)
	for _, id := range ids {
		a := s.actions[id]
		if end := a.start.Add(a.dur); !now.Before(end) {
			a.a.CompletedAt = &godo.Timestamp{Time: end}
			if a.fail {
				a.a.Status = "errored"
			} else {
				a.a.Status = godo.ActionCompleted
			}
			if a.onDone != nil {
				a.onDone(!a.fail)
			}
		}
	}
	for id, d := range s.droplets {
		if !d.deleteAt.IsZero() && !now.Before(d.deleteAt) {
			delete(s.droplets, id)
		}
	}
}

// newAction registers an in-progress action on a droplet.
func (s *Sim) newAction(typ string, d *droplet, dur time.Duration, onDone func(ok bool)) *action {
	s.nextAction++
	now := s.now()
	a := &action{
		a: godo.Action{ID: s.nextAction, Status: godo.ActionInProgress, Type: typ, StartedAt: &godo.Timestamp{Time: now},
			ResourceID: d.d.ID, ResourceType: "droplet", Region: d.d.Region, RegionSlug: d.d.Region.Slug},
		start: now, dur: dur, onDone: onDone,
	}
	if q := s.actionFaults[typ]; len(q) > 0 {
		s.actionFaults[typ] = q[1:]
		a.fail = true
	}
	s.actions[a.a.ID] = a
	return a
}

// busy reports whether a droplet has an action in progress.
func (s *Sim) busy(id int) bool {
	for _, a := range s.actions {
		if a.a.ResourceID == id && a.a.Status == godo.ActionInProgress {
			return true
		}
	}
	return false
}

func (s *Sim) newDroplet(name string, size godo.Size, region godo.Region, img godo.Image, tags []string, ipv6 bool, created time.Time) *droplet {
	s.nextDroplet++
	s.ipCounter++
	n := s.ipCounter
	sz, rg, im := size, region, img
	d := &droplet{
		d: godo.Droplet{
			ID: s.nextDroplet, Name: name, Memory: size.Memory, Vcpus: size.Vcpus, Disk: size.Disk,
			Region: &rg, Image: &im, Size: &sz, SizeSlug: size.Slug, Status: "new", Locked: false,
			Created: created.Truncate(time.Second).Format(time.RFC3339), Features: []string{},
			Tags: append([]string{}, tags...), VolumeIDs: []string{}, BackupIDs: []int{}, SnapshotIDs: []int{},
			VPCUUID: "5a4981aa-9653-4bd1-bef5-d6bff52042e4",
		},
		created: created,
		ipAt:    created.Add(s.opts.IPDelay),
		v4:      fmt.Sprintf("203.0.%d.%d", (n>>8)&255, n&255),
	}
	if ipv6 {
		d.v6 = fmt.Sprintf("2604:a880:400:d1:0:%x:%x:1", (n>>16)&0xffff, n&0xffff)
		d.d.Features = append(d.d.Features, "ipv6")
	}
	for _, t := range tags {
		s.tags[t] = true
	}
	s.droplets[d.d.ID] = d
	return d
}

// view is the droplet as the API shows it now.
func (s *Sim) view(d *droplet) godo.Droplet {
	v := d.d
	v.Tags = append([]string{}, d.d.Tags...)
	v.Features = append([]string{}, d.d.Features...)
	v.Networks = &godo.Networks{V4: []godo.NetworkV4{}, V6: []godo.NetworkV6{}}
	if !s.now().Before(d.ipAt) {
		v.Networks.V4 = []godo.NetworkV4{
			{IPAddress: "10.116.0." + fmt.Sprint(2+d.d.ID%250), Netmask: "255.255.240.0", Gateway: "10.116.0.1", Type: "private"},
			{IPAddress: d.v4, Netmask: "255.255.240.0", Gateway: d.v4[:strings.LastIndexByte(d.v4, '.')] + ".1", Type: "public"},
		}
		if d.v6 != "" {
			v.Networks.V6 = []godo.NetworkV6{{IPAddress: d.v6, Netmask: 64, Gateway: "2604:a880:400:d1::1", Type: "public"}}
		}
	}
	if !d.deleteAt.IsZero() || s.busy(d.d.ID) {
		v.Locked = true
	}
	return v
}

func (s *Sim) sortedDroplets() []*droplet {
	out := make([]*droplet, 0, len(s.droplets))
	for _, d := range s.droplets {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].d.ID < out[j].d.ID })
	return out
}

// rateLimit applies the hourly and burst limits to a request at now: it
// returns the headers to send and, if the request is refused, Retry-After.
func (s *Sim) rateLimit(h http.Header, now time.Time) (refused bool, retryAfter time.Duration) {
	hourAgo, minAgo := now.Add(-time.Hour), now.Add(-time.Minute)
	for len(s.hourly) > 0 && !s.hourly[0].After(hourAgo) {
		s.hourly = s.hourly[1:]
	}
	for len(s.minute) > 0 && !s.minute[0].After(minAgo) {
		s.minute = s.minute[1:]
	}
	limit := s.opts.HourlyLimit
	reset := now.Add(time.Hour)
	if len(s.hourly) > 0 {
		reset = s.hourly[0].Add(time.Hour)
	}
	switch {
	case s.TakeRateLimited():
		refused, retryAfter = true, s.opts.RetryAfter
	case limit > 0 && len(s.hourly) >= limit:
		refused, retryAfter = true, reset.Sub(now)
	case s.opts.BurstLimit > 0 && len(s.minute) >= s.opts.BurstLimit:
		refused, retryAfter = true, s.minute[0].Add(time.Minute).Sub(now)
	default:
		s.hourly = append(s.hourly, now)
		s.minute = append(s.minute, now)
	}
	if limit > 0 {
		h.Set("Ratelimit-Limit", fmt.Sprint(limit))
		h.Set("Ratelimit-Remaining", fmt.Sprint(max(0, limit-len(s.hourly))))
		h.Set("Ratelimit-Reset", fmt.Sprint(reset.Unix()))
	}
	return refused, retryAfter
}
