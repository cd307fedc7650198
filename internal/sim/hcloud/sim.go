// Package hcloudsim is a stateful simulator of the Hetzner Cloud API (the
// part dc-agent uses: servers, server actions, SSH keys, server types,
// locations, images, actions), for tests, benchmarks and demos.
//
// It marshals hcloud-go's own schema types and reproduces the behaviour the
// client library depends on (BACKENDS.md §2): every response has a JSON
// content type (hcloud-go parses errors and pagination only then), server
// creation takes SSH key IDs only, actions go running -> success (or error)
// over time and are polled through GET /actions?id=..., IPv6 is a /64 in
// CIDR form, a missing resource is 404 {"error":{"code":"not_found"}},
// DELETE /servers/{id} returns an action, lists carry meta.pagination.
//
// Faults can be injected: a failing action (by command), 429 rate limiting,
// a server type that cannot be placed in a location (FailPlacement: 412
// resource_unavailable "error during placement" although the server type
// list still reports it available).
package hcloudsim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hetznercloud/hcloud-go/v2/hcloud/schema"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

// Options configure a simulator.
type Options struct {
	// Token is the API token clients must send as "Authorization: Bearer".
	// Default "sim-token".
	Token string
	// ActionDuration is how long each action runs before it finishes
	// (default 20ms; real ones take seconds).
	ActionDuration time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Sim is the simulator state plus its HTTP handler.
type Sim struct {
	opts Options

	simkit.Faults

	mu          sync.Mutex
	nextServer  int64
	nextKey     int64
	nextAction  int64
	ipCounter   int
	servers     map[int64]*schema.Server
	keys        map[int64]*schema.SSHKey
	actions     map[int64]*simAction
	serverTypes []schema.ServerType
	locations   []schema.Location
	images      []schema.Image
	userData    map[int64]string
	// rootPasswords is each server's root password as the guest has it
	// (set at creation without SSH keys, or by a reset_password action
	// that succeeded), and resets counts the successful resets.
	rootPasswords map[int64]string
	resets        map[int64]int

	actionFaults  map[string][]schema.ActionError
	rateRemaining int
}

type simAction struct {
	a        schema.Action
	dur      time.Duration
	startAt  time.Time // zero while waiting for after
	after    int64     // action that must finish first
	fail     *schema.ActionError
	onStart  func()
	onFinish func(ok bool)
}

// New returns a simulator with the default catalogues.
func New(opts Options) *Sim {
	simkit.Defaults(&opts.Token, &opts.Now, &opts.ActionDuration, nil, nil)
	return &Sim{
		opts:          opts,
		nextServer:    4200000,
		nextKey:       7700,
		nextAction:    990000,
		servers:       map[int64]*schema.Server{},
		keys:          map[int64]*schema.SSHKey{},
		actions:       map[int64]*simAction{},
		serverTypes:   DefaultServerTypes(),
		locations:     DefaultLocations(),
		images:        DefaultImages(),
		userData:      map[int64]string{},
		rootPasswords: map[int64]string{},
		resets:        map[int64]int{},
		actionFaults:  map[string][]schema.ActionError{},
		rateRemaining: 3600,
	}
}

// Start serves the simulator on a loopback httptest server, closed at the
// end of the test. The returned URL is what hcloud.WithEndpoint takes.
func (s *Sim) Start(t interface{ Cleanup(func()) }) string {
	url := simkit.Serve(t, s)
	return url + "/v1"
}

// Token is the bearer token the simulator accepts.
func (s *Sim) Token() string { return s.opts.Token }

// FailNextAction makes the next action with this command ("create_server",
// "start_server", "delete_server", ...) finish with status error.
func (s *Sim) FailNextAction(command, code, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.actionFaults[command] = append(s.actionFaults[command], schema.ActionError{Code: code, Message: message})
}

// RootPassword is the root password server id has now, as far as the
// simulator knows (creation without keys, successful resets), and how many
// reset_password actions succeeded on it.
func (s *Sim) RootPassword(id int64) (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rootPasswords[id], s.resets[id]
}

// SetAvailable changes whether a server type is available in a location, in
// the server type list and for server creation (412 resource_unavailable).
func (s *Sim) SetAvailable(serverType, location string, available bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.serverTypes {
		if s.serverTypes[i].Name != serverType {
			continue
		}
		for j := range s.serverTypes[i].Locations {
			if s.serverTypes[i].Locations[j].Name == location {
				s.serverTypes[i].Locations[j].Available = available
			}
		}
	}
}

// Servers returns a snapshot of all servers, sorted by ID.
func (s *Sim) Servers() []schema.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.advance()
	out := make([]schema.Server, 0, len(s.servers))
	for _, sv := range s.sortedServers() {
		out = append(out, cloneServer(sv))
	}
	return out
}

// SSHKeys returns a snapshot of all SSH keys, sorted by ID.
func (s *Sim) SSHKeys() []schema.SSHKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sortedKeys()
}

// UserData returns the user_data a server was created with.
func (s *Sim) UserData(serverID int64) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userData[serverID]
}

// PowerOff turns a server off out of band (as a user would in the console).
func (s *Sim) PowerOff(serverID int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv := s.servers[serverID]; sv != nil {
		sv.Status = "off"
	}
}

// AddServer inserts a server that the agent did not create (e.g. one the
// provider runs by hand) with the given labels; it is running.
func (s *Sim) AddServer(name string, labels map[string]string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv := s.newServer(name, s.serverTypes[0], s.locations[0], s.images[0], labels)
	sv.Status = "running"
	return sv.ID
}

func (s *Sim) now() time.Time { return s.opts.Now().UTC() }

// advance finishes every action whose time has come, in ID order so that an
// action waiting for another one starts in the same pass.
func (s *Sim) advance() {
	now := s.now()
	ids := make([]int64, 0, len(s.actions))
	for id, a := range s.actions {
		if a.a.Status == "running" {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		a := s.actions[id]
		if a.startAt.IsZero() {
			prev := s.actions[a.after]
			switch {
			case prev == nil:
				a.startAt = now
			case prev.a.Status == "running":
				continue
			case prev.a.Status == "error":
				a.fail = &schema.ActionError{Code: "action_failed", Message: "preceding action " + prev.a.Command + " failed"}
				s.finish(a, *prev.a.Finished)
				continue
			default:
				a.startAt = *prev.a.Finished
			}
			a.a.Started = a.startAt
			if a.onStart != nil {
				a.onStart()
			}
		}
		if end := a.startAt.Add(a.dur); !now.Before(end) {
			s.finish(a, end)
		}
	}
}

func (s *Sim) finish(a *simAction, at time.Time) {
	at = at.UTC()
	a.a.Finished = &at
	a.a.Progress = 100
	ok := a.fail == nil
	if ok {
		a.a.Status = "success"
	} else {
		a.a.Status = "error"
		e := *a.fail
		a.a.Error = &e
	}
	if a.onFinish != nil {
		a.onFinish(ok)
	}
}

// newAction registers a running action on a server. after, if non-zero, is
// an action that must finish before this one starts.
func (s *Sim) newAction(command string, serverID int64, after int64, onFinish func(ok bool)) *simAction {
	s.nextAction++
	now := s.now()
	a := &simAction{
		a: schema.Action{
			ID: s.nextAction, Status: "running", Command: command, Started: now,
			Resources: []schema.ActionResourceReference{{ID: serverID, Type: "server"}},
		},
		dur: s.opts.ActionDuration, after: after, onFinish: onFinish,
	}
	if after == 0 {
		a.startAt = now
	}
	if q := s.actionFaults[command]; len(q) > 0 {
		e := q[0]
		s.actionFaults[command] = q[1:]
		a.fail = &e
	}
	s.actions[a.a.ID] = a
	return a
}

func (s *Sim) newServer(name string, st schema.ServerType, loc schema.Location, img schema.Image, labels map[string]string) *schema.Server {
	s.nextServer++
	s.ipCounter++
	n := s.ipCounter
	if labels == nil {
		labels = map[string]string{}
	}
	imgCopy := img
	sv := &schema.Server{
		ID: s.nextServer, Name: name, Status: "initializing", Created: s.now().Truncate(time.Second),
		PublicNet: schema.ServerPublicNet{
			IPv4:        schema.ServerPublicNetIPv4{ID: 80000 + int64(n), IP: fmt.Sprintf("100.%d.%d.%d", 64+(n>>16)&63, (n>>8)&255, n&255), DNSPtr: "static.example.invalid"},
			IPv6:        schema.ServerPublicNetIPv6{ID: 90000 + int64(n), IP: fmt.Sprintf("2001:db8:%x::/64", n), DNSPtr: []schema.ServerPublicNetIPv6DNSPtr{}},
			FloatingIPs: []int64{},
			Firewalls:   []schema.ServerFirewall{},
		},
		PrivateNet:      []schema.ServerPrivateNet{},
		ServerType:      st,
		IncludedTraffic: 21990232555520,
		Location:        loc,
		Image:           &imgCopy,
		Labels:          labels,
		Volumes:         []int64{},
		PrimaryDiskSize: st.Disk,
		LoadBalancers:   []int64{},
	}
	s.servers[sv.ID] = sv
	return sv
}

func cloneServer(sv *schema.Server) schema.Server {
	c := *sv
	c.Labels = make(map[string]string, len(sv.Labels))
	for k, v := range sv.Labels {
		c.Labels[k] = v
	}
	return c
}

func randomPassword() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// ServeHTTP implements the API.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Record(r)

	s.rateRemaining--
	if s.rateRemaining < 1 {
		s.rateRemaining = 3600
	}
	h := w.Header()
	h.Set("RateLimit-Limit", "3600")
	h.Set("X-Correlation-Id", randomPassword()[:16])
	if r.Header.Get("Authorization") != "Bearer "+s.opts.Token {
		writeError(w, http.StatusUnauthorized, "unauthorized", "unable to authenticate", nil)
		return
	}
	if s.TakeRateLimited() {
		h.Set("RateLimit-Remaining", "0")
		// The window resets at the start of the current second, so
		// clients honouring RateLimit-Reset do not stall tests.
		h.Set("RateLimit-Reset", fmt.Sprint(s.now().Unix()))
		writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "limit of 3600 requests per hour reached", nil)
		return
	}
	h.Set("RateLimit-Remaining", fmt.Sprint(s.rateRemaining))
	h.Set("RateLimit-Reset", fmt.Sprint(s.now().Add(time.Hour).Unix()))
	s.advance()

	path, ok := strings.CutPrefix(r.URL.Path, "/v1")
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "not found", nil)
		return
	}
	s.route(w, r, strings.Split(strings.Trim(path, "/"), "/"))
}
