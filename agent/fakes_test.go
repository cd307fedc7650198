package agent

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// fakeAPI speaks the agent endpoints of PROTOCOL.md over real HTTP and
// checks every request's signature. It is the small, scriptable server of
// the agent's unit tests (fault injection per request); the end-to-end
// tests use the reference server.
type fakeAPI struct {
	t        *testing.T
	srv      *httptest.Server
	provider ed25519.PrivateKey
	agentPub string

	mu          sync.Mutex
	longPoll    bool
	batchHealth bool
	reconcile   bool
	contracts   map[string]*fakeContract
	order       []string
	heartbeats  []dcapi.Heartbeat
	health      []dcapi.HealthCheck
	batchPosts  int
	batches     [][]string // contract ids of each batch POST
	terminated  []string
	requests    map[string]int // "METHOD route" → count
	fault       func(route string, body []byte) (int, string)
	wake        chan struct{}
	nextHB      int    // nextHeartbeatSeconds answered (0: 60)
	upgradeTo   string // upgradeToVersion answered
	faultAs200  bool   // faults answer HTTP 200 success:false, as the live API does
	pool        string // poolId and poolName answered
}

type fakeContract struct {
	c        dcapi.PendingContract
	status   string
	details  string
	history  []string
	lockedBy string
	external string
}

func newFakeAPI(t *testing.T, agentKey ed25519.PrivateKey) *fakeAPI {
	_, prov, _ := ed25519.GenerateKey(nil)
	f := &fakeAPI{t: t, provider: prov, agentPub: identity.PublicHex(agentKey), longPoll: true, batchHealth: true, reconcile: true,
		contracts: map[string]*fakeContract{}, requests: map[string]int{}, wake: make(chan struct{})}
	mux := http.NewServeMux()
	p := "/api/v1/providers/{pk}"
	mux.HandleFunc("GET "+p+"/contracts/pending-provision", f.h("pending", f.pending))
	mux.HandleFunc("POST "+p+"/contracts/{cid}/lock", f.h("lock", f.lock))
	mux.HandleFunc("DELETE "+p+"/contracts/{cid}/lock", f.h("unlock", f.unlock))
	mux.HandleFunc("PUT /api/v1/provider/rental-requests/{cid}/provisioning", f.h("provisioning", f.provisioning))
	mux.HandleFunc("POST "+p+"/heartbeat", f.h("heartbeat", f.heartbeat))
	mux.HandleFunc("POST /api/v1/contracts/{cid}/health", f.h("health", f.healthOne))
	mux.HandleFunc("POST "+p+"/health", f.h("healthBatch", f.healthBatch))
	mux.HandleFunc("GET "+p+"/contracts/active", f.h("active", f.active))
	mux.HandleFunc("POST "+p+"/reconcile", f.h("reconcile", f.reconcileH))
	mux.HandleFunc("PUT "+p+"/contracts/{cid}/terminated", f.h("terminated", f.terminatedH))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAPI) providerHex() string { return identity.PublicHex(f.provider) }

type handler func(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string)

func (f *fakeAPI) h(route string, fn handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests[route]++
		fault := f.fault
		f.mu.Unlock()
		if r.Header.Get(dcapi.HeaderAgentPubkey) != f.agentPub ||
			!identity.Verify(mustPub(r.Header.Get(dcapi.HeaderAgentPubkey)), identity.RequestMessage(r.Header.Get(dcapi.HeaderTimestamp), r.Header.Get(dcapi.HeaderNonce), r.Method, r.URL.EscapedPath(), body), mustSig(r.Header.Get(dcapi.HeaderSignature))) {
			writeEnv(w, nil, http.StatusUnauthorized, "invalid signature")
			return
		}
		if pk := r.PathValue("pk"); pk != "" && pk != f.providerHex() {
			writeEnv(w, nil, http.StatusUnauthorized, "no active delegation for this provider")
			return
		}
		if fault != nil {
			if code, msg := fault(route, body); code != 0 {
				f.mu.Lock()
				as200 := f.faultAs200
				f.mu.Unlock()
				if as200 {
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(map[string]any{"success": false, "error": msg})
					return
				}
				writeEnv(w, nil, code, msg)
				return
			}
		}
		data, code, msg := fn(w, r, body)
		writeEnv(w, data, code, msg)
	}
}

func mustPub(s string) ed25519.PublicKey {
	p, err := identity.ParsePublicKeyHex(s)
	if err != nil {
		return make(ed25519.PublicKey, ed25519.PublicKeySize)
	}
	return p
}

func mustSig(s string) []byte {
	b, err := identity.ParseSignatureHex(s)
	if err != nil {
		return make([]byte, ed25519.SignatureSize)
	}
	return b
}

func writeEnv(w http.ResponseWriter, data any, code int, msg string) {
	if code == 0 {
		code = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	env := map[string]any{"success": code < 300}
	if code < 300 {
		env["data"] = data
	} else {
		env["error"] = msg
	}
	_ = json.NewEncoder(w).Encode(env)
}

// addContract creates an accepted, paid contract.
func (f *fakeAPI) addContract(c dcapi.PendingContract) {
	f.mu.Lock()
	f.contracts[c.ContractID] = &fakeContract{c: c, status: dcapi.StatusAccepted}
	f.order = append(f.order, c.ContractID)
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fakeAPI) contract(cid string) fakeContract {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := *f.contracts[cid]
	c.history = append([]string(nil), c.history...)
	return c
}

func (f *fakeAPI) setStatus(cid, st string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.contracts[cid].status = st
}

func (f *fakeAPI) count(route string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests[route]
}

func (f *fakeAPI) setFault(fn func(route string, body []byte) (int, string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault = fn
}

func (f *fakeAPI) pendingList() []dcapi.PendingContract {
	var out []dcapi.PendingContract
	for _, cid := range f.order {
		if c := f.contracts[cid]; c.status == dcapi.StatusAccepted {
			out = append(out, c.c)
		}
	}
	return out
}

func (f *fakeAPI) pending(w http.ResponseWriter, r *http.Request, _ []byte) (any, int, string) {
	wait, _ := strconv.Atoi(r.URL.Query().Get("waitSeconds"))
	f.mu.Lock()
	lp := f.longPoll
	list := f.pendingList()
	wake := f.wake
	f.mu.Unlock()
	if !lp || wait <= 0 || len(list) > 0 {
		if lp && wait > 0 {
			w.Header().Set(dcapi.HeaderLongPoll, strconv.Itoa(wait))
		}
		return nonNil(list), 0, ""
	}
	w.Header().Set(dcapi.HeaderLongPoll, strconv.Itoa(wait))
	select {
	case <-wake:
	case <-time.After(time.Duration(wait) * time.Second):
	case <-r.Context().Done():
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return nonNil(f.pendingList()), 0, ""
}

func nonNil(l []dcapi.PendingContract) []dcapi.PendingContract {
	if l == nil {
		return []dcapi.PendingContract{}
	}
	return l
}

func (f *fakeAPI) lock(w http.ResponseWriter, r *http.Request, _ []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.contracts[r.PathValue("cid")]
	if c == nil {
		return nil, http.StatusNotFound, "contract not found"
	}
	agent := r.Header.Get(dcapi.HeaderAgentPubkey)
	if c.lockedBy != "" && c.lockedBy != agent {
		return dcapi.LockResult{Acquired: false}, 0, ""
	}
	c.lockedBy = agent
	return dcapi.LockResult{Acquired: true, ExpiresAtNs: time.Now().Add(5 * time.Minute).UnixNano()}, 0, ""
}

func (f *fakeAPI) unlock(w http.ResponseWriter, r *http.Request, _ []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.contracts[r.PathValue("cid")]; c != nil {
		c.lockedBy = ""
	}
	return true, 0, ""
}

func (f *fakeAPI) provisioning(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string) {
	var u dcapi.ProvisioningUpdate
	if err := json.Unmarshal(body, &u); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.contracts[r.PathValue("cid")]
	if c == nil {
		return nil, http.StatusNotFound, "contract not found"
	}
	ok := false
	switch u.Status {
	case dcapi.StatusProvisioning:
		ok = c.status == dcapi.StatusAccepted || c.status == dcapi.StatusProvisioning
	case dcapi.StatusProvisioned, dcapi.StatusProvisioningFailed:
		ok = c.status == dcapi.StatusProvisioning
	}
	if !ok {
		return nil, http.StatusConflict, fmt.Sprintf("cannot move contract from %s to %s", c.status, u.Status)
	}
	var d dcapi.InstanceDetails
	if u.Status == dcapi.StatusProvisioned {
		_ = json.Unmarshal([]byte(u.InstanceDetails), &d)
		// Like dc-api's default profile: a password must be sealed.
		if d.RootPassword != "" && !strings.HasPrefix(d.RootPassword, "{") {
			return nil, http.StatusUnprocessableEntity, "instanceDetails.root_password must be a sealed credential, never a plaintext password"
		}
	}
	c.status, c.details = u.Status, u.InstanceDetails
	c.history = append(c.history, u.Status)
	if u.Status == dcapi.StatusProvisioned {
		c.external = d.ExternalID
	}
	return "ok", 0, ""
}

func (f *fakeAPI) heartbeat(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string) {
	var hb dcapi.Heartbeat
	if err := json.Unmarshal(body, &hb); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats = append(f.heartbeats, hb)
	next := f.nextHB
	if next == 0 {
		next = 60
	}
	resp := dcapi.HeartbeatResponse{Acknowledged: true, NextHeartbeatSeconds: next}
	if f.upgradeTo != "" {
		resp.UpgradeToVersion = &f.upgradeTo
	}
	if f.pool != "" {
		resp.PoolID, resp.PoolName = &f.pool, &f.pool
	}
	return resp, 0, ""
}

func (f *fakeAPI) healthOne(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string) {
	var hc dcapi.HealthCheck
	if err := json.Unmarshal(body, &hc); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	hc.ContractID = r.PathValue("cid")
	f.mu.Lock()
	defer f.mu.Unlock()
	f.health = append(f.health, hc)
	return hc, 0, ""
}

func (f *fakeAPI) healthBatch(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.batchHealth {
		return nil, http.StatusNotFound, "not found"
	}
	var b dcapi.HealthBatch
	if err := json.Unmarshal(body, &b); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	f.batchPosts++
	f.health = append(f.health, b.Checks...)
	ids := make([]string, 0, len(b.Checks))
	for _, c := range b.Checks {
		ids = append(ids, c.ContractID)
	}
	f.batches = append(f.batches, ids)
	return dcapi.HealthBatchResult{Accepted: len(b.Checks)}, 0, ""
}

func (f *fakeAPI) active(w http.ResponseWriter, r *http.Request, _ []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []dcapi.ActiveContract{}
	for _, cid := range f.order {
		c := f.contracts[cid]
		switch c.status {
		case dcapi.StatusProvisioned, dcapi.StatusActive, dcapi.StatusCancelled:
			ext := c.external
			out = append(out, dcapi.ActiveContract{PendingContract: c.c, Status: c.status, ExternalInstanceID: &ext})
		}
	}
	return out, 0, ""
}

func (f *fakeAPI) reconcileH(w http.ResponseWriter, r *http.Request, body []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.reconcile {
		return nil, http.StatusNotFound, "not found"
	}
	var req dcapi.ReconcileRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, http.StatusBadRequest, err.Error()
	}
	resp := dcapi.ReconcileResponse{Keep: []dcapi.ReconcileInstance{}, Terminate: []dcapi.ReconcileTerminate{}, Unknown: []dcapi.ReconcileUnknown{}}
	for _, ri := range req.RunningInstances {
		c := f.contracts[ri.ContractID]
		switch {
		case c == nil:
			resp.Unknown = append(resp.Unknown, dcapi.ReconcileUnknown{ExternalID: ri.ExternalID, Message: "no such contract"})
		case c.status == dcapi.StatusCancelled:
			resp.Terminate = append(resp.Terminate, dcapi.ReconcileTerminate{ExternalID: ri.ExternalID, ContractID: ri.ContractID, Reason: "cancelled"})
		default:
			resp.Keep = append(resp.Keep, ri)
		}
	}
	return resp, 0, ""
}

func (f *fakeAPI) terminatedH(w http.ResponseWriter, r *http.Request, _ []byte) (any, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cid := r.PathValue("cid")
	f.terminated = append(f.terminated, cid)
	if c := f.contracts[cid]; c != nil {
		c.history = append(c.history, "terminated")
	}
	return true, 0, ""
}

// memProv is an in-memory backend: instances by contract id, with
// failure injection and concurrency accounting.
type memProv struct {
	mu        sync.Mutex
	feat      provisioners.Features
	instances map[string]provisioners.Instance // by contract id
	calls     map[string]int                   // contract id → Provision calls
	delay     time.Duration
	block     chan struct{} // if set, Provision waits for it
	failWith  error
	running   int
	maxSeen   int
	health    string
	seq       int
	keys      []provisioners.RequesterKey // instance_config keys a contract may set
	lastReq   map[string]provisioners.Request
	inventory *provisioners.Resources // what Resources answers (nil: an error)
}

// Resources implements provisioners.Inventory.
func (m *memProv) Resources(context.Context) (provisioners.Resources, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.inventory == nil {
		return provisioners.Resources{}, errors.New("no inventory")
	}
	return *m.inventory, nil
}

func newMemProv() *memProv {
	return &memProv{feat: provisioners.Features{Terminate: true, List: true, Health: true, GetByID: true},
		instances: map[string]provisioners.Instance{}, calls: map[string]int{}, health: provisioners.Healthy,
		keys:    []provisioners.RequesterKey{{Name: "template", Check: provisioners.OneOf("a", "b", "ubuntu", "debian")}, {Name: "net"}},
		lastReq: map[string]provisioners.Request{}}
}

func (m *memProv) RequesterKeys() []provisioners.RequesterKey { return m.keys }

// request is the last request Provision got for cid.
func (m *memProv) request(cid string) provisioners.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lastReq[cid]
}

func (m *memProv) Type() string                    { return config.TypeScript }
func (m *memProv) Features() provisioners.Features { return m.feat }

func (m *memProv) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	m.mu.Lock()
	m.calls[req.ContractID]++
	m.lastReq[req.ContractID] = req
	m.running++
	m.maxSeen = max(m.maxSeen, m.running)
	delay, block, failWith := m.delay, m.block, m.failWith
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running--
		m.mu.Unlock()
	}()
	req.Step("creating")
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return provisioners.Instance{}, ctx.Err()
		}
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return provisioners.Instance{}, ctx.Err()
		}
	}
	if failWith != nil {
		return provisioners.Instance{}, failWith
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	inst, ok := m.instances[req.ContractID]
	if !ok {
		m.seq++
		inst = provisioners.Instance{ExternalID: fmt.Sprintf("mem-%d", m.seq), ContractID: req.ContractID, Name: provisioners.InstanceName(req.ContractID),
			IPAddress: fmt.Sprintf("10.0.0.%d", m.seq), SSHPort: 22}
		m.instances[req.ContractID] = inst
	}
	if req.WantPassword {
		inst.RootPassword = "secret-" + req.ContractID[:8]
	}
	return inst, nil
}

func (m *memProv) Terminate(ctx context.Context, ext string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for cid, inst := range m.instances {
		if inst.ExternalID == ext {
			delete(m.instances, cid)
		}
	}
	return nil
}

func (m *memProv) HealthCheck(ctx context.Context, ext string) (provisioners.Health, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return provisioners.Health{Status: m.health, UptimeSeconds: 7}, nil
}

func (m *memProv) GetInstance(ctx context.Context, cid string) (*provisioners.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if inst, ok := m.instances[cid]; ok {
		return &inst, nil
	}
	return nil, nil
}

func (m *memProv) List(ctx context.Context) ([]provisioners.Instance, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []provisioners.Instance
	for _, inst := range m.instances {
		out = append(out, inst)
	}
	return out, nil
}

func (m *memProv) addInstance(inst provisioners.Instance) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.instances[inst.ContractID] = inst
}

func (m *memProv) numInstances() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.instances)
}

func (m *memProv) callsFor(cid string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[cid]
}

// harness runs an in-process agent against a fakeAPI and a memProv.
type harness struct {
	t        *testing.T
	api      *fakeAPI
	prov     *memProv
	cfg      *config.Config
	agentKey ed25519.PrivateKey
	stateDir string
	socket   string
	notes    *recNotifier
	a        *Agent
	cancel   context.CancelFunc
	done     chan error
	runErr   error // what Run returned at the last stop
	clock    *recClock
}

// fastTiming makes every loop run in milliseconds.
func fastTiming() Timing {
	return Timing{
		PollInterval: 20 * time.Millisecond, LongPollWait: time.Second, MinRepoll: 10 * time.Millisecond,
		HealthInterval: 50 * time.Millisecond, ReconcileInterval: 50 * time.Millisecond, OrphanGrace: 200 * time.Millisecond,
		HeartbeatDefault: 50 * time.Millisecond, HeartbeatMin: 20 * time.Millisecond, HeartbeatMax: 50 * time.Millisecond,
		// Locks are renewed at a third of their remaining life, at most once a minute.
		BackoffBase: 5 * time.Millisecond, BackoffMax: 40 * time.Millisecond, LockRenew: time.Minute,
		RetryCooldown: 50 * time.Millisecond, RetryCooldownMax: 200 * time.Millisecond, ShutdownGrace: 5 * time.Second, OutboxFlush: 50 * time.Millisecond,
		StatusEvery: 10 * time.Millisecond, HealthCheckTime: 5 * time.Second, ListTime: 5 * time.Second, TerminateTime: 5 * time.Second,
		LivenessSlack: 2 * time.Second, InventoryEvery: time.Minute, InventoryTime: 5 * time.Second, BatchRetry: time.Hour,
	}
}

// fixedTiming is an Options.Timing that ignores the config.
func fixedTiming(t Timing) func(*config.Config) Timing {
	return func(*config.Config) Timing { return t }
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	dir := t.TempDir()
	key, _ := identity.GenerateKey()
	keyPath := filepath.Join(dir, "agent.key")
	if err := identity.SaveAgentKey(keyPath, key, false); err != nil {
		t.Fatal(err)
	}
	api := newFakeAPI(t, key)
	// Unix socket paths are short (108 bytes): keep it out of the long t.TempDir.
	sockDir := testutil.ShortDir(t)
	cfg := &config.Config{
		API:         config.APIConfig{Endpoint: api.srv.URL, ProviderPubkey: api.providerHex(), AgentSecretKey: keyPath},
		Polling:     config.PollingConfig{IntervalSeconds: 1, HealthCheckIntervalSeconds: 10, ReconcileIntervalSeconds: 10},
		Agent:       config.AgentConfig{StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(sockDir, "s.sock"), MaxConcurrentProvisions: 4, ShutdownGraceSeconds: 5},
		Provisioner: config.ProvisionerConfig{Type: config.TypeScript, Script: &config.ScriptConfig{}},
	}
	return &harness{t: t, api: api, prov: newMemProv(), cfg: cfg, agentKey: key, stateDir: cfg.Agent.StateDir, socket: cfg.Agent.StatusSocket,
		notes: &recNotifier{}, clock: &recClock{}}
}

// addPending offers the agent n new contracts and returns their ids.
func (h *harness) addPending(n int) []string {
	cids := make([]string, n)
	for i := range cids {
		cids[i] = randomCID(h.t)
		h.api.addContract(dcapi.PendingContract{ContractID: cids[i]})
	}
	return cids
}

// waitProvisioned waits until the API has each of cids provisioned.
func (h *harness) waitProvisioned(cids []string) {
	h.t.Helper()
	for _, cid := range cids {
		eventually(h.t, "all provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	}
}

// startProvisioned offers the agent a new contract, starts it and waits
// until the contract is provisioned (what says so in a failure).
func (h *harness) startProvisioned(what string) string {
	h.t.Helper()
	cid := h.addPending(1)[0]
	h.start()
	eventually(h.t, what, func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	return cid
}

// startBlocked offers the agent a new contract, starts it and waits until
// the contract's provision has started and hangs (until h.prov.block is
// closed).
func (h *harness) startBlocked() string {
	h.t.Helper()
	h.prov.block = make(chan struct{})
	cid := h.addPending(1)[0]
	h.start()
	eventually(h.t, "provision started", func() bool { return h.prov.callsFor(cid) == 1 })
	return cid
}

func (h *harness) registry() *provisioners.Registry {
	r := provisioners.NewRegistry()
	r.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) {
		return h.prov, nil
	})
	return r
}

func (h *harness) start(mods ...func(*Options)) {
	h.t.Helper()
	opts := Options{Registry: h.registry(), Logger: testLogger(h.t), Version: "test", Notifier: h.notes, Timing: fixedTiming(fastTiming()), Clock: h.clock}
	for _, m := range mods {
		m(&opts)
	}
	a, err := New(h.cfg, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h.a, h.cancel, h.done = a, cancel, make(chan error, 1)
	go func() { h.done <- a.Run(ctx) }()
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	select {
	case h.runErr = <-h.done:
	case <-time.After(20 * time.Second):
		h.t.Fatal("agent did not stop")
	}
	h.cancel = nil
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// eventually polls cond every 5 ms until it holds or 10 s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recNotifier records sd_notify messages.
type recNotifier struct {
	mu       sync.Mutex
	msgs     []string
	watchdog time.Duration
}

func (n *recNotifier) Notify(s string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.msgs = append(n.msgs, s)
	return nil
}

func (n *recNotifier) WatchdogInterval() time.Duration { return n.watchdog }

func (n *recNotifier) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// recClock is the real clock, recording every wait the agent starts;
// scale (0: 1) shortens each wait, not the time it reads.
type recClock struct {
	scale float64
	mu    sync.Mutex
	d     []time.Duration
}

func (c *recClock) Now() time.Time { return time.Now() }

func (c *recClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.d = append(c.d, d)
	c.mu.Unlock()
	if c.scale > 0 {
		d = time.Duration(float64(d) * c.scale)
	}
	return time.After(d)
}

// count returns how many recorded waits satisfy pred, and how many of
// them differ.
func (c *recClock) count(pred func(time.Duration) bool) (n int, distinct int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	seen := map[time.Duration]bool{}
	for _, d := range c.d {
		if pred(d) {
			n++
			seen[d] = true
		}
	}
	return n, len(seen)
}

// randomCID returns a fresh contract id.
func randomCID(t *testing.T) string {
	k, _ := identity.GenerateKey()
	return identity.PublicHex(k) // 64 hex
}
