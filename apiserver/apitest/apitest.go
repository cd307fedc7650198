// Package apitest starts a real dc-api server for other packages' tests: a
// real HTTP server on 127.0.0.1 over a real database (a temp SQLite file by
// default, or PostgreSQL with WithDB), plus helpers to seed providers,
// delegations and contracts, read back what an agent reported, and inject
// faults (failing, blocking or losing responses, clock skew, taking the
// server down and bringing it back on the same port).
//
// Typical use:
//
//	srv := apitest.Start(t)
//	prov := srv.NewProvider("Acme")
//	agentKey := srv.NewAgent(prov)                  // delegated with every permission
//	cid := srv.CreateContract(prov, apitest.ContractSpec{})
//	// ... run the agent with endpoint srv.URL, provider prov.Pubkey, key agentKey ...
//	c := srv.WaitForStatus(cid, dcapi.StatusProvisioned, 10*time.Second)
//
// Everything is cleaned up with t.Cleanup. Set DC_APITEST_LOG=1 to see the
// server's log on stderr.
package apitest

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Server is a running dc-api for a test.
type Server struct {
	// URL is the API endpoint, e.g. http://127.0.0.1:41234 (what the agent's
	// config calls api.endpoint).
	URL string
	// Addr is the listen address host:port.
	Addr string
	// Store is the server's database, for reads and writes the helpers
	// below do not cover.
	Store *store.Store
	// API is the server itself.
	API *apiserver.Server

	t      testing.TB
	offset atomic.Int64 // clock skew, ns
	frozen atomic.Int64 // a stopped clock's time, ns (0: running)
	// lastIssued is the last issued_at_ns SignDelegation stamped.
	lastIssued atomic.Int64
	faults     faultSet
	reqs       requestLog
	listen     func(network, addr string) (net.Listener, error)

	mu      sync.Mutex
	running bool
	cancel  context.CancelFunc
	done    chan struct{}
}

type config struct {
	dsn       string
	policy    store.Policy
	rate      float64
	burst     int
	unknown   float64
	unkBurst  int
	replay    string
	heartbeat int
	logger    *slog.Logger
	profile   string
	publicURL string
	listen    func(network, addr string) (net.Listener, error)
}

// Option configures Start.
type Option func(*config)

// WithDB uses dsn (e.g. testutil.PostgresDB(t)) instead of a temp SQLite file.
func WithDB(dsn string) Option { return func(c *config) { c.dsn = dsn } }

// WithPolicy sets the contract state machine's tunables (lock TTL, retry
// cool-down, max attempts). Zero fields keep the defaults.
func WithPolicy(p store.Policy) Option { return func(c *config) { c.policy = p } }

// WithRetryCooldown sets how long a retryable failure waits before the
// contract is offered again (default here: 50 ms, so retry tests are fast).
func WithRetryCooldown(d time.Duration) Option { return func(c *config) { c.policy.RetryCooldown = d } }

// WithLockTTL sets the provisioning lock's lifetime (default 5 min).
func WithLockTTL(d time.Duration) Option { return func(c *config) { c.policy.LockTTL = d } }

// WithRateLimit sets the per-key rate limit (requests/s and burst); the
// default here is effectively unlimited.
func WithRateLimit(rate float64, burst int) Option {
	return func(c *config) { c.rate, c.burst = rate, burst }
}

// WithUnknownKeyLimit sets the global limit of requests from unknown keys
// and to the setup endpoint (requests/s and burst); the default here is
// unlimited.
func WithUnknownKeyLimit(rate float64, burst int) Option {
	return func(c *config) { c.unknown, c.unkBurst = rate, burst }
}

// WithReplayCache chooses the replay cache (apiserver.ReplayCacheMemory,
// the default, or apiserver.ReplayCacheDatabase: shared by every server on
// the database).
func WithReplayCache(mode string) Option { return func(c *config) { c.replay = mode } }

// WithNextHeartbeat sets the nextHeartbeatSeconds the server answers.
func WithNextHeartbeat(seconds int) Option { return func(c *config) { c.heartbeat = seconds } }

// WithProfile serves the given API profile (apiserver.ProfileLive: as the
// live Decent Cloud API; default: PROTOCOL.md with dc-api's extensions).
func WithProfile(profile string) Option { return func(c *config) { c.profile = profile } }

// WithPublicURL sets the server's public URL (gateway/register needs one).
func WithPublicURL(u string) Option { return func(c *config) { c.publicURL = u } }

// WithListen opens the server's listener with listen instead of net.Listen
// (e.g. testutil.NetNS.Listen: serve inside a network namespace, where the
// URL's 127.0.0.1 is that namespace's loopback).
func WithListen(listen func(network, addr string) (net.Listener, error)) Option {
	return func(c *config) { c.listen = listen }
}

// WithLogger sends the server's log to l.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// Start opens a fresh database and serves dc-api on a free loopback port
// until the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	cfg := config{
		policy:  store.Policy{LockTTL: 5 * time.Minute, RetryCooldown: 50 * time.Millisecond, MaxAttempts: 3},
		rate:    -1,
		unknown: -1,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.dsn == "" {
		cfg.dsn = "sqlite:" + filepath.Join(t.TempDir(), "dc-api.db")
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
		if os.Getenv("DC_APITEST_LOG") != "" {
			cfg.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	}
	st, err := store.Open(context.Background(), cfg.dsn, store.Options{Policy: cfg.policy})
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	s := &Server{Store: st, t: t}
	api, err := apiserver.New(apiserver.Config{
		Store:                st,
		Logger:               cfg.logger,
		Clock:                s.Now,
		RateLimit:            cfg.rate,
		RateBurst:            cfg.burst,
		UnknownKeyRate:       cfg.unknown,
		UnknownKeyBurst:      cfg.unkBurst,
		ReplayCache:          cfg.replay,
		NextHeartbeatSeconds: cfg.heartbeat,
		WatchInterval:        20 * time.Millisecond,
		Version:              "apitest",
		Profile:              cfg.profile,
		PublicURL:            cfg.publicURL,
	})
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	s.API = api
	if cfg.listen == nil {
		cfg.listen = net.Listen
	}
	s.listen = cfg.listen
	ln, err := cfg.listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("apitest: listen: %v", err)
	}
	s.Addr = ln.Addr().String()
	s.URL = "http://" + s.Addr
	s.serve(ln)
	t.Cleanup(func() {
		s.Stop()
		s.faults.releaseAll()
		st.Close()
	})
	return s
}

func (s *Server) serve(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.mu.Lock()
	s.running, s.cancel, s.done = true, cancel, done
	s.mu.Unlock()
	go func() {
		defer close(done)
		_ = s.API.ServeWith(ctx, ln, 0, s.wrap)
	}()
}

// Stop takes the server down at once: the port refuses connections and
// in-flight requests are cut (a crash or outage, as the agent sees it).
// Bring it back with Restart. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return
	}
	s.running = false
	cancel, done := s.cancel, s.done
	s.mu.Unlock()
	s.faults.releaseAll()
	cancel()
	<-done
}

// Restart serves again on the same address, with the same database.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		return
	}
	var ln net.Listener
	var err error
	for i := 0; i < 100; i++ {
		if ln, err = s.listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("apitest: listen again on %s: %v", s.Addr, err)
	}
	s.serve(ln)
}

// Running reports whether the server is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Now is the server's clock: the real time (or the time FreezeClock
// stopped it at) plus SetClockOffset.
func (s *Server) Now() time.Time {
	now := time.Now()
	if f := s.frozen.Load(); f != 0 {
		now = time.Unix(0, f)
	}
	return now.Add(time.Duration(s.offset.Load()))
}

// FreezeClock stops the server's clock at the real time now (offsets still
// apply), so that a test of a time window does not depend on how fast it
// runs.
func (s *Server) FreezeClock() { s.frozen.Store(time.Now().UnixNano()) }

// SetClockOffset shifts the server's clock by d (e.g. 10*time.Minute makes
// every correctly-timed signed request fail the 5-minute window, as a skewed
// agent clock would; it also ages heartbeats, so "online" can be tested).
func (s *Server) SetClockOffset(d time.Duration) { s.offset.Store(int64(d)) }

func (s *Server) nowNs() int64 { return s.Now().UnixNano() }

// Provider is a registered provider and its main key.
type Provider struct {
	Key    ed25519.PrivateKey
	Pubkey string
	Name   string
}

// NewProvider registers a provider with a fresh main key.
func (s *Server) NewProvider(name string) *Provider {
	s.t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		s.t.Fatal(err)
	}
	return s.AddProvider(k, name)
}

// AddProvider registers a provider with the given main key.
func (s *Server) AddProvider(key ed25519.PrivateKey, name string) *Provider {
	s.t.Helper()
	p := &Provider{Key: key, Pubkey: identity.PublicHex(key), Name: name}
	if _, err := s.Store.AddProvider(context.Background(), p.Pubkey, name, s.nowNs()); err != nil {
		s.t.Fatalf("apitest: add provider: %v", err)
	}
	return p
}

// DelegationOption tunes a delegation.
type DelegationOption func(*identity.Delegation)

// Permissions grants exactly perms (default: all four).
func Permissions(perms ...string) DelegationOption {
	return func(d *identity.Delegation) { d.Permissions = perms }
}

// ExpiresAt sets the delegation's expiry (default: never). A time in the
// past seeds an already expired delegation.
func ExpiresAt(t time.Time) DelegationOption {
	return func(d *identity.Delegation) { ns := t.UnixNano(); d.ExpiresAtNs = &ns }
}

// Label sets the delegation's label.
func Label(l string) DelegationOption { return func(d *identity.Delegation) { d.Label = l } }

// IssuedAt stamps the delegation's issued_at_ns with t (default: the
// server's now, later than any earlier stamp of this Server).
func IssuedAt(t time.Time) DelegationOption {
	return func(d *identity.Delegation) { ns := t.UnixNano(); d.IssuedAtNs = &ns }
}

// Unstamped leaves out issued_at_ns: a code of the older form.
func Unstamped() DelegationOption { return func(d *identity.Delegation) { d.IssuedAtNs = nil } }

// SignDelegation signs a delegation of agentPubkey (hex) with the
// provider's main key without registering it: what `dc-agent delegation
// sign` produces (stamped with the time it was signed), for tests of
// registration.
func (s *Server) SignDelegation(p *Provider, agentPubkey string, opts ...DelegationOption) identity.SignedDelegation {
	s.t.Helper()
	issued := s.issueTime()
	d := identity.Delegation{AgentPubkey: agentPubkey, ProviderPubkey: p.Pubkey, Permissions: identity.AllPermissions, Label: "apitest", IssuedAtNs: &issued}
	for _, o := range opts {
		o(&d)
	}
	d.Permissions = sortedPerms(d.Permissions)
	sd, err := d.Sign(p.Key)
	if err != nil {
		s.t.Fatalf("apitest: sign delegation: %v", err)
	}
	return sd
}

// issueTime is the server's now, but always later than the last one it
// gave: delegations signed one after the other are ordered even on a
// frozen clock.
func (s *Server) issueTime() int64 {
	for {
		last := s.lastIssued.Load()
		ns := max(s.nowNs(), last+1)
		if s.lastIssued.CompareAndSwap(last, ns) {
			return ns
		}
	}
}

// Delegate signs and registers a delegation of agentPubkey (hex), as if the
// provider had POSTed it, and returns it.
func (s *Server) Delegate(p *Provider, agentPubkey string, opts ...DelegationOption) identity.SignedDelegation {
	s.t.Helper()
	sd := s.SignDelegation(p, agentPubkey, opts...)
	now := s.nowNs()
	if sd.ExpiresAtNs != nil && *sd.ExpiresAtNs <= now {
		// Seed an expired delegation as if signed and registered before
		// it expired.
		now = *sd.ExpiresAtNs - int64(time.Second)
		if sd.Issued() > now {
			sd = s.SignDelegation(p, agentPubkey, append(opts, IssuedAt(time.Unix(0, now)))...)
		}
	}
	if _, _, err := s.Store.PutDelegation(context.Background(), sd, false, now); err != nil {
		s.t.Fatalf("apitest: store delegation: %v", err)
	}
	return sd
}

// NewAgent makes a fresh agent key delegated by p (all permissions unless
// opts say otherwise) and returns it.
func (s *Server) NewAgent(p *Provider, opts ...DelegationOption) ed25519.PrivateKey {
	s.t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		s.t.Fatal(err)
	}
	s.Delegate(p, identity.PublicHex(k), opts...)
	return k
}

// NewPool makes an agent pool of p in location (a region: store.Regions).
func (s *Server) NewPool(p *Provider, name, location, provisionerType string) *store.Pool {
	s.t.Helper()
	pool, err := s.Store.CreatePool(context.Background(), p.Pubkey, name, location, provisionerType, s.nowNs())
	if err != nil {
		s.t.Fatalf("apitest: create pool: %v", err)
	}
	return pool
}

// SetupToken makes a one-time setup token for pool, valid for ttl from
// the server's now.
func (s *Server) SetupToken(pool *store.Pool, ttl time.Duration) string {
	s.t.Helper()
	tok, err := s.Store.CreateSetupToken(context.Background(), pool.ProviderPubkey, pool.PoolID, nil, ttl, s.nowNs())
	if err != nil {
		s.t.Fatalf("apitest: create setup token: %v", err)
	}
	return tok.Token
}

// NewPoolAgent makes a fresh agent key registered into pool with a setup
// token (every permission, as POST /agents/setup grants) and returns it.
func (s *Server) NewPoolAgent(pool *store.Pool) ed25519.PrivateKey {
	s.t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.Store.UseSetupToken(context.Background(), s.SetupToken(pool, time.Hour), identity.PublicHex(k), s.nowNs()); err != nil {
		s.t.Fatalf("apitest: register by setup token: %v", err)
	}
	return k
}

// RevokeDelegation revokes p's delegation of agentPubkey (hex).
func (s *Server) RevokeDelegation(p *Provider, agentPubkey string) {
	s.t.Helper()
	if err := s.Store.RevokeDelegation(context.Background(), p.Pubkey, agentPubkey, s.nowNs()); err != nil {
		s.t.Fatalf("apitest: revoke: %v", err)
	}
}

// Client is a signed API client for an agent key acting for p.
func (s *Server) Client(p *Provider, agentKey ed25519.PrivateKey, opts ...dcapi.Option) *dcapi.Client {
	s.t.Helper()
	c, err := dcapi.New(s.URL, p.Pubkey, agentKey, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// ProviderClient is a client signing with p's main key (provider mode).
func (s *Server) ProviderClient(p *Provider, opts ...dcapi.Option) *dcapi.Client {
	return s.Client(p, p.Key, append([]dcapi.Option{dcapi.WithProviderMode()}, opts...)...)
}

// ContractSpec describes a contract to create; every PendingContract field
// is settable. ProviderPubkey is filled in by CreateContract, and
// RequesterSSHPubkey defaults to a fresh ssh-ed25519 key.
type ContractSpec = store.NewContract

// Ptr returns a pointer to v, for the optional ContractSpec fields.
func Ptr[T any](v T) *T { return &v }

// CreateContract creates an accepted, paid contract for p (the marketplace's
// side) and wakes long-polling agents. It returns the contract id.
func (s *Server) CreateContract(p *Provider, spec ContractSpec) string {
	s.t.Helper()
	spec.ProviderPubkey = p.Pubkey
	if spec.RequesterSSHPubkey == "" {
		spec.RequesterSSHPubkey = NewSSHPubkey(s.t)
	}
	c, err := s.Store.CreateContract(context.Background(), spec, s.nowNs())
	if err != nil {
		s.t.Fatalf("apitest: create contract: %v", err)
	}
	s.API.WakeProvider(p.Pubkey)
	return c.ContractID
}

// NewSSHPubkey returns a fresh "ssh-ed25519 AAAA… apitest" line.
func NewSSHPubkey(t testing.TB) string {
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pk, err := ssh.NewPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk))) + " apitest"
}

// Contract returns everything the server knows about a contract.
func (s *Server) Contract(id string) *store.Contract {
	s.t.Helper()
	c, err := s.Store.GetContract(context.Background(), id)
	if err != nil {
		s.t.Fatalf("apitest: %v", err)
	}
	return c
}

// ContractStatus returns a contract's status.
func (s *Server) ContractStatus(id string) string { return s.Contract(id).Status }

// InstanceDetails decodes the instanceDetails a provisioned contract
// carries (zero value and false when it has none or they do not decode).
func (s *Server) InstanceDetails(id string) (dcapi.InstanceDetails, bool) {
	s.t.Helper()
	var d dcapi.InstanceDetails
	c := s.Contract(id)
	if c.InstanceDetails == nil {
		return d, false
	}
	if err := jsonUnmarshal(*c.InstanceDetails, &d); err != nil {
		return d, false
	}
	return d, true
}

// WaitForStatus polls (every 5 ms) until the contract has status, failing
// the test after timeout with the contract's last state.
func (s *Server) WaitForStatus(id, status string, timeout time.Duration) *store.Contract {
	s.t.Helper()
	return s.WaitForContract(id, timeout, func(c *store.Contract) bool { return c.Status == status }, "status "+status)
}

// WaitForContract polls until cond holds for the contract.
func (s *Server) WaitForContract(id string, timeout time.Duration, cond func(*store.Contract) bool, what string) *store.Contract {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := s.Store.GetContract(context.Background(), id)
		if err != nil {
			s.t.Fatalf("apitest: %v", err)
		}
		if cond(c) {
			return c
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("apitest: contract %s: waited %s for %s; it is %s (failures %d, last error %v)", id, timeout, what, c.Status, c.FailureCount, deref(c.LastError))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// HealthChecks returns the health checks stored for a contract, oldest first.
func (s *Server) HealthChecks(id string) []dcapi.HealthRecord {
	s.t.Helper()
	recs, err := s.Store.HealthChecks(context.Background(), id, 100000)
	if err != nil {
		s.t.Fatalf("apitest: %v", err)
	}
	return recs
}

// CancelContract cancels a contract (the requester or marketplace side).
func (s *Server) CancelContract(id string) {
	s.t.Helper()
	if _, err := s.Store.CancelContract(context.Background(), id, s.nowNs()); err != nil {
		s.t.Fatalf("apitest: cancel: %v", err)
	}
}

// AgentStatus is what GET .../agent-status would answer now.
func (s *Server) AgentStatus(p *Provider) dcapi.AgentStatus {
	s.t.Helper()
	st, err := s.Store.AgentStatus(context.Background(), p.Pubkey, s.nowNs())
	if err != nil {
		s.t.Fatalf("apitest: %v", err)
	}
	return st
}

// HealthSummary is what GET .../health-summary?days= would answer now.
func (s *Server) HealthSummary(p *Provider, days int) dcapi.HealthSummary {
	s.t.Helper()
	sum, err := s.Store.HealthSummary(context.Background(), p.Pubkey, days, s.nowNs())
	if err != nil {
		s.t.Fatalf("apitest: %v", err)
	}
	return sum
}

// Delegation returns p's stored delegation of agentPubkey.
func (s *Server) Delegation(p *Provider, agentPubkey string) *store.Delegation {
	s.t.Helper()
	d, err := s.Store.GetDelegation(context.Background(), p.Pubkey, agentPubkey)
	if err != nil {
		s.t.Fatalf("apitest: %v", err)
	}
	return d
}

func deref(p *string) string {
	if p == nil {
		return "none"
	}
	return *p
}
