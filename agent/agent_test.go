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
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

func strp(s string) *string { return &s }

// sshLine returns an authorized_keys line for an Ed25519 key.
func sshLine(t *testing.T, priv ed25519.PrivateKey) string {
	pk, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pk)))
}

func TestProvisionSealsPasswordAndReports(t *testing.T) {
	h := newHarness(t)
	requester, _ := identity.GenerateKey()
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid, OfferingID: "off-1", RequesterSSHPubkey: sshLine(t, requester),
		MemoryAmount: strp("2 GB"), StorageCapacity: strp("1 TB"), ProvisionerConfig: strp(`{"template":"a","x":1}`), InstanceConfig: strp(`{"template":"b"}`)})
	h.start()
	eventually(t, "contract provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	c := h.api.contract(cid)
	if !slices.Equal(c.history, []string{dcapi.StatusProvisioning, dcapi.StatusProvisioned}) {
		t.Fatalf("history = %v", c.history)
	}
	if strings.Contains(c.details, "secret-") {
		t.Fatalf("plaintext password reached the API: %s", c.details)
	}
	var d dcapi.InstanceDetails
	if err := json.Unmarshal([]byte(c.details), &d); err != nil {
		t.Fatal(err)
	}
	pw, err := identity.Open(d.RootPassword, requester)
	if err != nil {
		t.Fatalf("requester cannot open the sealed password: %v", err)
	}
	if string(pw) != "secret-"+cid[:8] {
		t.Fatalf("password = %q", pw)
	}
	if d.ExternalID != "mem-1" || d.IPAddress != "10.0.0.1" || d.SSHPort != 22 {
		t.Fatalf("details = %+v", d)
	}
	if h.prov.callsFor(cid) != 1 {
		t.Fatalf("provisioner called %d times", h.prov.callsFor(cid))
	}
	eventually(t, "lock released", func() bool { return h.api.contract(cid).lockedBy == "" })
	eventually(t, "heartbeat", func() bool { return h.api.count("heartbeat") >= 2 })
	eventually(t, "health reported", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		for _, hc := range h.api.health {
			if hc.ContractID == cid && hc.Status == dcapi.HealthHealthy && strings.Contains(hc.Details, `"uptime_seconds":7`) {
				return true
			}
		}
		return false
	})
	st := h.a.State()
	if st.Counts.Provisioned != 1 || !st.Online || st.Counts.Active != 1 {
		t.Fatalf("state = %+v", st.Counts)
	}
}

func TestRequestSizesAndConfigMerge(t *testing.T) {
	h := newHarness(t)
	var got provisioners.Request
	cid := randomCID(t)
	w := &lease{cid: cid, c: dcapi.PendingContract{ContractID: cid, CPUCores: new(int), MemoryAmount: strp("16 GB"), StorageCapacity: strp("1 TB"),
		ProvisionerConfig: strp(`{"template":"ubuntu","net":{"bridge":"vmbr0","vlan":1}}`), InstanceConfig: strp(`{"template":"debian","net":{"vlan":7}}`),
		RequesterPubkey: identity.PublicHex(h.agentKey)}}
	*w.c.CPUCores = 4
	h.api.longPoll = false // a server without dc-api's extensions, as the live API
	h.start()
	got, cred, err := h.a.buildRequest(w, h.a.env.backends[config.TypeScript], h.a.env)
	if err != nil {
		t.Fatal(err)
	}
	if got.CPUCores != 4 || got.MemoryMB != 16384 || got.StorageGB != 1024 {
		t.Fatalf("sizes = %d cpu, %d MB, %d GB", got.CPUCores, got.MemoryMB, got.StorageGB)
	}
	net := got.Config["net"].(map[string]any)
	if got.Config["template"] != "debian" || net["bridge"] != "vmbr0" || net["vlan"] != 7.0 {
		t.Fatalf("config = %v", got.Config)
	}
	if !got.WantPassword || cred.sealTo == nil || cred.plain {
		t.Fatal("a requester_pubkey must allow a sealed password")
	}
	// No requester_pubkey (the live API never sends one): the password goes
	// in clear for the server to encrypt, here over loopback http.
	w.c.RequesterPubkey, w.c.RequesterSSHPubkey = "", "ssh-rsa AAAAB3NzaC1yc2E"
	got, cred, err = h.a.buildRequest(w, h.a.env.backends[config.TypeScript], h.a.env)
	if err != nil || !got.WantPassword || !cred.plain || cred.sealTo != nil {
		t.Fatalf("without requester_pubkey: want=%v cred=%+v err=%v", got.WantPassword, cred, err)
	}
	// A server that wants sealed passwords, and no Ed25519 key: none at all.
	h.a.sealOnly.Store(true)
	got, cred, err = h.a.buildRequest(w, h.a.env.backends[config.TypeScript], h.a.env)
	if err != nil || got.WantPassword || cred.plain || cred.sealTo != nil {
		t.Fatalf("sealed only, no ed25519 key: want=%v cred=%+v err=%v", got.WantPassword, cred, err)
	}
	for endpoint, ok := range map[string]bool{"https://api.decent-cloud.org": true, "http://127.0.0.1:8080": true, "http://localhost:1": true,
		"http://[::1]:80": true, "http://10.0.0.5:8080": false, "http://api.example": false, "http://127.0.0.1@evil.example": false} {
		if privateTransport(endpoint) != ok {
			t.Errorf("privateTransport(%q) = %v", endpoint, !ok)
		}
	}
	w.c.MemoryAmount = strp("lots")
	if _, _, err := h.a.buildRequest(w, h.a.env.backends[config.TypeScript], h.a.env); err == nil || provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "memory_amount") {
		t.Fatalf("bad size: %v", err)
	}
}

func TestPasswordWithoutKeyIsDropped(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid, RequesterSSHPubkey: "ssh-rsa AAAA"})
	h.prov.feat.GetByID = true
	h.start()
	eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	var d dcapi.InstanceDetails
	_ = json.Unmarshal([]byte(h.api.contract(cid).details), &d)
	if d.RootPassword != "" {
		t.Fatalf("a password was reported without a key to seal it to: %q", d.RootPassword)
	}
}

func TestFailureReportedWithRetryFlag(t *testing.T) {
	for _, tc := range []struct {
		err   error
		retry bool
	}{
		{provisioners.Permanent(errors.New("template debian-13 does not exist")), false},
		{provisioners.Retryable(errors.New("storage full")), true},
	} {
		t.Run(fmt.Sprint(tc.retry), func(t *testing.T) {
			h := newHarness(t)
			h.prov.failWith = tc.err
			cid := randomCID(t)
			// A leftover of the failed attempt must be removed.
			h.prov.addInstance(provisioners.Instance{ExternalID: "half-made", ContractID: cid})
			h.api.addContract(dcapi.PendingContract{ContractID: cid})
			h.start()
			eventually(t, "failure reported", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioningFailed })
			var fd dcapi.FailureDetails
			if err := json.Unmarshal([]byte(h.api.contract(cid).details), &fd); err != nil {
				t.Fatal(err)
			}
			if fd.RetryPossible != tc.retry || !strings.Contains(fd.Error, tc.err.Error()) {
				t.Fatalf("failure details = %+v", fd)
			}
			if h.prov.numInstances() != 0 {
				t.Fatal("the failed attempt's instance was left behind")
			}
		})
	}
}

// A contract's instance_config may only set what the backend declares
// (value-checked) or the provider allows: anything else fails the contract
// for good, naming the key and the setting, before the backend is called.
func TestInstanceConfigKeysEnforced(t *testing.T) {
	for _, tc := range []struct {
		name, instanceConfig string
		allow                []string
		want                 string // "" : provisioned
	}{
		{name: "provider's key", instanceConfig: `{"ipconfig0":"ip=10.0.0.5/24"}`,
			want: `instance_config sets "ipconfig0", which a contract may not set on this provider's script backend (contracts may set: "net", "template"); the provider can allow it with instance_config_allow = ["ipconfig0"]`},
		{name: "nested provider's key", instanceConfig: `{"template":"a","storage":{"pool":"fast"}}`, want: `instance_config sets "storage"`},
		{name: "bad value", instanceConfig: `{"template":"9000"}`, want: `instance_config "template": value "9000" is not accepted; use one of "a", "b", "ubuntu", "debian"`},
		{name: "not an object", instanceConfig: `["ipconfig0"]`, want: "instance_config is not a JSON object"},
		{name: "declared key", instanceConfig: `{"template":"debian","net":{"vlan":7}}`},
		{name: "allowed by the provider", instanceConfig: `{"ipconfig0":"ip=10.0.0.5/24"}`, allow: []string{"ipconfig0"}},
		{name: "allowed value unchecked", instanceConfig: `{"template":"9000"}`, allow: []string{"template"}},
		{name: "all allowed", instanceConfig: `{"ipconfig0":"ip=10.0.0.5/24","template":"9000"}`, allow: []string{"*"}},
		{name: "null", instanceConfig: `null`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.cfg.Provisioner.InstanceConfigAllow = tc.allow
			cid := randomCID(t)
			h.api.addContract(dcapi.PendingContract{ContractID: cid, ProvisionerConfig: strp(`{"template":"ubuntu","ipconfig0":"ip=dhcp","net":{"bridge":"vmbr0"}}`), InstanceConfig: strp(tc.instanceConfig)})
			h.start()
			if tc.want == "" {
				eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
				got, want := h.prov.request(cid).Config, map[string]any{}
				_ = json.Unmarshal([]byte(`{"template":"ubuntu","ipconfig0":"ip=dhcp","net":{"bridge":"vmbr0"}}`), &want)
				if tc.instanceConfig != "null" {
					_ = json.Unmarshal([]byte(tc.instanceConfig), &want)
				}
				if tc.name == "declared key" {
					want["net"] = map[string]any{"bridge": "vmbr0", "vlan": 7.0}
				}
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("config = %v, want %v", got, want)
				}
				return
			}
			eventually(t, "failure reported", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioningFailed })
			var fd dcapi.FailureDetails
			if err := json.Unmarshal([]byte(h.api.contract(cid).details), &fd); err != nil {
				t.Fatal(err)
			}
			if fd.RetryPossible || !strings.Contains(fd.Error, tc.want) {
				t.Fatalf("failure details = %+v, want %q", fd, tc.want)
			}
			if n := h.prov.callsFor(cid); n != 0 {
				t.Fatalf("the provisioner was called %d times for a refused instance_config", n)
			}
		})
	}
}

func TestConcurrencyBounded(t *testing.T) {
	h := newHarness(t)
	h.cfg.Agent.MaxConcurrentProvisions = 4
	h.cfg.Provisioner.MaxConcurrent = 2
	h.prov.block = make(chan struct{})
	cids := h.addPending(8)
	h.start()
	running := func() int {
		h.prov.mu.Lock()
		defer h.prov.mu.Unlock()
		return h.prov.running
	}
	eventually(t, "two provisions running", func() bool { return running() == 2 })
	eventually(t, "the others queued", func() bool { return h.a.State().Counts.Queued == 6 })
	if n := running(); n != 2 {
		t.Fatalf("%d provisions running, want the backend's limit 2", n)
	}
	close(h.prov.block)
	h.waitProvisioned(cids)
	h.prov.mu.Lock()
	maxSeen := h.prov.maxSeen
	h.prov.mu.Unlock()
	if maxSeen != 2 {
		t.Fatalf("max parallel provisions = %d, want 2", maxSeen)
	}
}

// TestGlobalConcurrencyAcrossBackends: two backends of 2 slots each under
// an agent-wide limit of 3 never run more than 3 provisions together.
func TestGlobalConcurrencyAcrossBackends(t *testing.T) {
	h := newHarness(t)
	h.cfg.Agent.MaxConcurrentProvisions = 3
	h.cfg.Provisioner.MaxConcurrent = 2
	h.cfg.AdditionalProvisioners = []config.ProvisionerConfig{{Type: config.TypeDocker, MaxConcurrent: 2, Docker: &config.DockerConfig{}}}
	second := newMemProv()
	block := make(chan struct{})
	h.prov.block, second.block = block, block
	reg := h.registry()
	reg.Register(config.TypeDocker, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) {
		return second, nil
	})
	var cids []string
	for i := 0; i < 8; i++ {
		c := dcapi.PendingContract{ContractID: randomCID(t)}
		if i%2 == 1 {
			c.ProvisionerType = strp(config.TypeDocker)
		}
		cids = append(cids, c.ContractID)
		h.api.addContract(c)
	}
	h.start(func(o *Options) { o.Registry = reg })
	running := func() (a, b int) {
		h.prov.mu.Lock()
		a = h.prov.running
		h.prov.mu.Unlock()
		second.mu.Lock()
		b = second.running
		second.mu.Unlock()
		return a, b
	}
	eventually(t, "three provisions running", func() bool { a, b := running(); return a+b == 3 })
	eventually(t, "the others queued", func() bool { return h.a.State().Counts.Queued == 5 })
	if a, b := running(); a+b != 3 || a > 2 || b > 2 {
		t.Fatalf("running %d + %d provisions; want 3 in all (agent limit), at most 2 per backend", a, b)
	}
	close(block)
	h.waitProvisioned(cids)
	if h.prov.callsFor(cids[0]) != 1 || second.callsFor(cids[1]) != 1 {
		t.Fatal("contracts did not go to the backend their provisioner_type names")
	}
}

func TestHeartbeatNotDelayedByProvision(t *testing.T) {
	h := newHarness(t)
	cid := h.startBlocked()
	n := h.api.count("heartbeat")
	eventually(t, "heartbeats while a provision hangs", func() bool { return h.api.count("heartbeat") >= n+3 })
	close(h.prov.block)
	eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
}

// TestPollingFallbackWithJitter: a server that does not hold long-polls
// (no X-Long-Poll-Wait) is polled every interval ± 10 %, not hammered, and
// its contracts are still picked up.
func TestPollingFallbackWithJitter(t *testing.T) {
	h := newHarness(t)
	h.api.mu.Lock()
	h.api.longPoll = false
	h.api.mu.Unlock()
	h.start()
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	eventually(t, "provisioned without long-poll", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	eventually(t, "a dozen polls", func() bool { return h.api.count("pending") >= 12 })
	// fastTiming's poll interval is 20 ms: waits of 18..22 ms are the
	// contracts loop's (heartbeats wait 50 ms, there are no failures).
	iv := fastTiming().PollInterval
	n, distinct := h.clock.count(func(d time.Duration) bool { return d >= iv*9/10 && d <= iv*11/10 })
	if n < 8 {
		t.Fatalf("%d waits of the poll interval ± 10 %% between %d polls; a server without long-poll must be polled every interval", n, h.api.count("pending"))
	}
	if distinct < 2 {
		t.Fatalf("all %d poll waits are equal: no jitter", n)
	}
}

// TestHeartbeatFollowsServerInterval: after each heartbeat the agent waits
// what the server's nextHeartbeatSeconds says, clamped to 5 s..4 min (the
// production timing; the test's clock runs each wait 1000 times faster).
func TestHeartbeatFollowsServerInterval(t *testing.T) {
	h := newHarness(t)
	h.clock.scale = 0.001
	for _, tc := range []struct {
		server int
		want   time.Duration
	}{
		{30, 30 * time.Second},
		{3600, 240 * time.Second}, // beyond the 5 minute online window: clamped
		{1, 5 * time.Second},
	} {
		h.api.mu.Lock()
		h.api.nextHB = tc.server
		h.api.mu.Unlock()
		if h.a == nil {
			h.start(func(o *Options) { o.Timing = nil })
		}
		eventually(t, fmt.Sprintf("heartbeat waits of %s after nextHeartbeatSeconds=%d", tc.want, tc.server), func() bool {
			n, _ := h.clock.count(func(d time.Duration) bool { return d == tc.want })
			return n >= 2
		})
	}
}

func TestBackoffOnServerErrorsThenRecovery(t *testing.T) {
	h := newHarness(t)
	fails := 6
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "pending" && fails > 0 {
			fails--
			return http.StatusServiceUnavailable, "down for maintenance"
		}
		return 0, ""
	})
	h.startProvisioned("provisioned after the outage")
	if n := h.api.count("pending"); n < 7 {
		t.Fatalf("%d polls: the six failures were not retried", n)
	}
	st := h.a.State()
	for _, l := range st.Loops {
		if l.Name == loopContracts && l.State != status.LoopRunning {
			t.Fatalf("contracts loop %s after recovery", l.State)
		}
	}
}

func TestAuthErrorStopsLoopWithHint(t *testing.T) {
	h := newHarness(t)
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "pending" || route == "heartbeat" {
			return http.StatusUnauthorized, "agent delegation revoked"
		}
		return 0, ""
	})
	h.start()
	eventually(t, "loops stopped", func() bool {
		st := h.a.State()
		stopped := 0
		for _, l := range st.Loops {
			if (l.Name == loopContracts || l.Name == loopHeartbeat) && l.State == status.LoopStopped {
				stopped++
			}
		}
		return stopped == 2
	})
	st := h.a.State()
	if len(st.Problems) == 0 || !strings.Contains(st.Problems[0].Fix, "dc-agent delegation request") {
		t.Fatalf("problems = %+v", st.Problems)
	}
	if !strings.HasPrefix(st.Line, "STOPPED: ") || !strings.Contains(st.Line, "revoked") {
		t.Fatalf("status line = %q", st.Line)
	}
	n := h.api.count("pending")
	time.Sleep(150 * time.Millisecond) // many backoff periods
	if got := h.api.count("pending"); got != n {
		t.Fatalf("the agent kept retrying a revoked delegation: %d → %d requests", n, got)
	}
	// Fixed and reloaded: it resumes.
	h.api.setFault(nil)
	if err := h.a.Reload(h.cfg); err != nil {
		t.Fatal(err)
	}
	eventually(t, "resumed after reload", func() bool { return h.api.count("pending") > n })
}

// TestRunReturnsStoppedLoops: Run returns nil after a clean stop, and the
// errors of the loops that were stopped (waiting for a fixed delegation)
// when it ended.
func TestRunReturnsStoppedLoops(t *testing.T) {
	h := newHarness(t)
	h.start()
	eventually(t, "online", func() bool { return h.a.State().Online })
	h.stop()
	if h.runErr != nil {
		t.Fatalf("clean stop: Run returned %v", h.runErr)
	}
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "pending" || route == "heartbeat" {
			return http.StatusUnauthorized, "agent delegation revoked"
		}
		return 0, ""
	})
	h.start()
	eventually(t, "STOPPED", func() bool { return strings.HasPrefix(h.a.State().Line, "STOPPED") })
	eventually(t, "both loops stopped", func() bool {
		n := 0
		for _, l := range h.a.State().Loops {
			if l.State == status.LoopStopped {
				n++
			}
		}
		return n == 2
	})
	h.stop()
	if !dcapi.IsAuth(h.runErr) || !strings.Contains(h.runErr.Error(), "contracts loop stopped: ") || !strings.Contains(h.runErr.Error(), "heartbeat loop stopped: ") {
		t.Fatalf("Run returned %v; want both stopped loops, as auth errors", h.runErr)
	}
}

// TestHealthBatchCoversEveryContract: with the batch endpoint, each health
// round checks every live contract (100 %, not a sample) and reports them
// in one POST, never one per contract.
func TestHealthBatchCoversEveryContract(t *testing.T) {
	h := newHarness(t)
	cids := h.addPending(6)
	h.start()
	full := func() int {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		n := 0
		for _, b := range h.api.batches {
			all := true
			for _, cid := range cids {
				all = all && slices.Contains(b, cid)
			}
			if all {
				n++
			}
		}
		return n
	}
	eventually(t, "three rounds that each checked all six contracts", func() bool { return full() >= 3 })
	if n := h.api.count("health"); n != 0 {
		t.Fatalf("%d per-contract health POSTs although the batch endpoint works", n)
	}
}

// batchProv is a memProv that also answers health checks in batches
// (provisioners.HealthBatcher), leaving out the instance skip.
type batchProv struct {
	*memProv
	skip             string
	bmu              sync.Mutex
	batches, singles int
}

func (b *batchProv) HealthCheckMany(ctx context.Context, ids []string) (map[string]provisioners.Health, error) {
	b.bmu.Lock()
	b.batches++
	b.bmu.Unlock()
	out := map[string]provisioners.Health{}
	for _, id := range ids {
		if id != b.skip {
			out[id] = provisioners.Health{Status: provisioners.Healthy, UptimeSeconds: 9}
		}
	}
	return out, nil
}

func (b *batchProv) HealthCheck(ctx context.Context, ext string) (provisioners.Health, error) {
	b.bmu.Lock()
	b.singles++
	b.bmu.Unlock()
	return b.memProv.HealthCheck(ctx, ext)
}

func (b *batchProv) counts() (batches, singles int) {
	b.bmu.Lock()
	defer b.bmu.Unlock()
	return b.batches, b.singles
}

// TestHealthAsksABatchingBackendOnce: a backend that can check many
// instances in one call (provisioners.HealthBatcher) is asked once per
// round for all of them; only the instance the batch left out is checked
// on its own.
func TestHealthAsksABatchingBackendOnce(t *testing.T) {
	h := newHarness(t)
	var cids []string
	for i := 0; i < 4; i++ {
		cids = append(cids, randomCID(t))
		h.prov.addInstance(provisioners.Instance{ExternalID: fmt.Sprintf("mem-%d", i), ContractID: cids[i]})
		h.api.addContract(dcapi.PendingContract{ContractID: cids[i]})
		h.api.mu.Lock()
		h.api.contracts[cids[i]].status, h.api.contracts[cids[i]].external = dcapi.StatusProvisioned, fmt.Sprintf("mem-%d", i)
		h.api.mu.Unlock()
	}
	bp := &batchProv{memProv: h.prov, skip: "mem-3"}
	reg := provisioners.NewRegistry()
	reg.Register(config.TypeScript, func(config.ProvisionerConfig, provisioners.Deps) (provisioners.Provisioner, error) { return bp, nil })
	h.start(func(o *Options) { o.Registry = reg })
	eventually(t, "three health rounds", func() bool { b, _ := bp.counts(); return b >= 3 })
	h.stop()
	batches, singles := bp.counts()
	if singles == 0 || singles > batches {
		t.Fatalf("%d single checks over %d batch rounds; want only the one left out, once per round", singles, batches)
	}
}

func TestHealthFallsBackToPerContract(t *testing.T) {
	h := newHarness(t)
	h.api.batchHealth = false
	cids := []string{randomCID(t), randomCID(t)}
	for _, cid := range cids {
		h.api.addContract(dcapi.PendingContract{ContractID: cid})
	}
	h.start()
	eventually(t, "health per contract", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		seen := map[string]bool{}
		for _, hc := range h.api.health {
			seen[hc.ContractID] = true
		}
		return seen[cids[0]] && seen[cids[1]]
	})
	if h.api.count("health") < 2 || h.api.count("healthBatch") < 1 {
		t.Fatalf("batch tried %d, single %d", h.api.count("healthBatch"), h.api.count("health"))
	}
	// It remembers: no batch attempt per round.
	b := h.api.count("healthBatch")
	time.Sleep(200 * time.Millisecond)
	if h.api.count("healthBatch") != b {
		t.Fatal("kept trying the batch endpoint after a 404")
	}
}

func TestReconcileTerminatesCancelledAndOrphans(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	orphanCID := randomCID(t)
	h.prov.addInstance(provisioners.Instance{ExternalID: "orphan-1", ContractID: orphanCID})
	h.start()
	eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	h.api.setStatus(cid, dcapi.StatusCancelled)
	eventually(t, "cancelled instance terminated and reported", func() bool {
		inst, _ := h.prov.GetInstance(context.Background(), cid)
		return inst == nil && slices.Contains(h.api.contract(cid).history, "terminated")
	})
	eventually(t, "orphan removed after the grace period", func() bool {
		inst, _ := h.prov.GetInstance(context.Background(), orphanCID)
		return inst == nil
	})
}

func TestOrphanGraceRespected(t *testing.T) {
	h := newHarness(t)
	orphanCID := randomCID(t)
	h.prov.addInstance(provisioners.Instance{ExternalID: "orphan-1", ContractID: orphanCID})
	timing := fastTiming()
	timing.OrphanGrace = time.Hour
	h.start(func(o *Options) { o.Timing = fixedTiming(timing) })
	eventually(t, "several reconcile rounds", func() bool { return h.api.count("reconcile") >= 4 })
	if inst, _ := h.prov.GetInstance(context.Background(), orphanCID); inst == nil {
		t.Fatal("an unknown instance was removed before its grace period")
	}
}

func TestOutboxSurvivesRestartAndAPIDown(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "provisioning" && strings.Contains(string(body), `provisioned`) && !strings.Contains(string(body), `"provisioning"`) {
			return http.StatusBadGateway, "bad gateway"
		}
		return 0, ""
	})
	h.start()
	eventually(t, "report queued", func() bool { return len(h.a.store.Reports()) > 0 && h.a.State().Counts.Outbox > 0 })
	h.stop()
	if h.api.contract(cid).status != dcapi.StatusProvisioning {
		t.Fatalf("status %s before recovery", h.api.contract(cid).status)
	}
	h.api.setFault(nil)
	h.start()
	eventually(t, "report delivered after restart", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	if n := h.prov.callsFor(cid); n != 1 {
		t.Fatalf("provisioner called %d times", n)
	}
	eventually(t, "outbox empty", func() bool { return len(h.a.store.Reports()) == 0 })
}

func TestJournalResumesInterruptedWork(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	c := dcapi.PendingContract{ContractID: cid}
	h.api.addContract(c)
	h.api.setStatus(cid, dcapi.StatusProvisioning) // the crashed run had started it
	h.prov.addInstance(provisioners.Instance{ExternalID: "made-before-crash", ContractID: cid})
	st, err := OpenStore(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := st.PutJournal(JournalEntry{ContractID: cid, Contract: c, Provisioner: "script", Step: jProvisioning, Attempt: 1, StartedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	h.start()
	eventually(t, "resumed and reported", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	var d dcapi.InstanceDetails
	_ = json.Unmarshal([]byte(h.api.contract(cid).details), &d)
	if d.ExternalID != "made-before-crash" || h.prov.numInstances() != 1 {
		t.Fatalf("resume made a second instance: %+v, %d instances", d, h.prov.numInstances())
	}
	entries, _, _ := h.a.store.Journal()
	if len(entries) != 0 {
		t.Fatalf("journal not cleared: %+v", entries)
	}
}

func TestCancelledWhileDownIsLeftToReconcile(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	c := dcapi.PendingContract{ContractID: cid}
	h.api.addContract(c)
	h.api.setStatus(cid, dcapi.StatusCancelled)
	st, _ := OpenStore(h.stateDir)
	now := time.Now()
	_ = st.PutJournal(JournalEntry{ContractID: cid, Contract: c, Provisioner: "script", Step: jStarted, StartedAt: now, UpdatedAt: now})
	st.Close()
	h.start()
	eventually(t, "journal cleared", func() bool { e, _, _ := h.a.store.Journal(); return len(e) == 0 })
	if h.prov.callsFor(cid) != 0 {
		t.Fatal("provisioned a contract the API refused to start")
	}
}

func TestNotifyReadyStatusWatchdog(t *testing.T) {
	h := newHarness(t)
	h.notes.watchdog = 30 * time.Millisecond
	h.start()
	eventually(t, "READY, STATUS and WATCHDOG", func() bool {
		m := h.notes.all()
		return slices.Contains(m, "READY=1") && slices.Contains(m, "WATCHDOG=1") && slices.ContainsFunc(m, func(s string) bool {
			return strings.HasPrefix(s, "STATUS=online · 0 active · 0 provisioning · last poll")
		})
	})
	// A wedged loop (past its own deadline) stops the watchdog pings.
	h.a.live.expect("wedged", -time.Hour)
	time.Sleep(50 * time.Millisecond)
	n := strings.Count(strings.Join(h.notes.all(), "\n"), "WATCHDOG=1")
	time.Sleep(150 * time.Millisecond)
	if m := strings.Count(strings.Join(h.notes.all(), "\n"), "WATCHDOG=1"); m != n {
		t.Fatalf("watchdog fed while a loop is stuck (%d → %d)", n, m)
	}
	h.a.live.idle("wedged")
	eventually(t, "watchdog resumes", func() bool {
		return strings.Count(strings.Join(h.notes.all(), "\n"), "WATCHDOG=1") > n
	})
	h.stop()
	if m := h.notes.all(); !slices.Contains(m, "STOPPING=1") {
		t.Fatalf("no STOPPING=1 in %v", m)
	}
}

func TestAPIOutageDoesNotStopWatchdog(t *testing.T) {
	h := newHarness(t)
	h.notes.watchdog = 30 * time.Millisecond
	h.api.setFault(func(string, []byte) (int, string) { return http.StatusServiceUnavailable, "down" })
	h.start()
	time.Sleep(100 * time.Millisecond)
	n := strings.Count(strings.Join(h.notes.all(), "\n"), "WATCHDOG=1")
	time.Sleep(200 * time.Millisecond)
	if m := strings.Count(strings.Join(h.notes.all(), "\n"), "WATCHDOG=1"); m <= n {
		t.Fatal("an API outage starved the watchdog")
	}
	if line := h.a.State().Line; !strings.HasPrefix(line, "offline (API unreachable") && !strings.HasPrefix(line, "connecting") {
		t.Fatalf("line during outage = %q", line)
	}
}

func TestGracefulStopFinishesProvision(t *testing.T) {
	h := newHarness(t)
	h.prov.delay = 150 * time.Millisecond
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	h.start()
	eventually(t, "provision started", func() bool { return h.prov.callsFor(cid) == 1 })
	h.stop()
	if st := h.api.contract(cid).status; st != dcapi.StatusProvisioned {
		t.Fatalf("graceful stop left the contract %s", st)
	}
}

func TestHardStopLeavesJournalForNextStart(t *testing.T) {
	h := newHarness(t)
	cid := h.startBlocked()
	h.a.HardStop()
	h.stop()
	st, err := OpenStore(h.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	entries, _, _ := st.Journal()
	st.Close()
	if len(entries) != 1 || entries[0].ContractID != cid || entries[0].Step != jProvisioning {
		t.Fatalf("journal after hard stop = %+v", entries)
	}
	h.prov.block = nil
	h.start()
	eventually(t, "resumed", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
}

func TestSecondAgentOnSameStateDirRefused(t *testing.T) {
	h := newHarness(t)
	h.start()
	_, err := New(h.cfg, Options{Registry: h.registry()})
	if err == nil || !strings.Contains(err.Error(), "another dc-agent") {
		t.Fatalf("second agent: %v", err)
	}
}

func TestStatusSocket(t *testing.T) {
	h := newHarness(t)
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	h.start()
	c := status.NewClient(h.socket)
	if fi, err := os.Stat(h.socket); err != nil || fi.Mode().Perm() != 0o660 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("status socket mode: %v %v", fi.Mode(), err)
	}
	eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	st, err := c.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Provider != h.api.providerHex() || st.AgentPubkey != identity.PublicHex(h.agentKey) || st.Phase != status.PhaseRunning || len(st.Loops) != len(loopOrder) {
		t.Fatalf("state = %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var kinds []string
	err = c.Events(ctx, 0, func(ev status.Event) error {
		kinds = append(kinds, ev.Kind)
		if ev.Kind == status.EventReportSent && ev.ContractID == cid {
			return errors.New("seen")
		}
		return nil
	})
	if err == nil || err.Error() != "seen" {
		t.Fatalf("events: %v (kinds %v)", err, kinds)
	}
	for _, want := range []string{status.EventStarted, status.EventReady, status.EventContractReceived, status.EventProvisioned} {
		if !slices.Contains(kinds, want) {
			t.Errorf("event %s missing from %v", want, kinds)
		}
	}
	// A new contract shows up live on an open stream.
	cid2 := randomCID(t)
	got := make(chan struct{})
	go func() {
		_ = c.Events(ctx, 1<<62, func(ev status.Event) error {
			if ev.ContractID == cid2 && ev.Kind == status.EventProvisioned {
				close(got)
				return errors.New("done")
			}
			return nil
		})
	}()
	time.Sleep(20 * time.Millisecond)
	h.api.addContract(dcapi.PendingContract{ContractID: cid2})
	select {
	case <-got:
	case <-ctx.Done():
		t.Fatal("live event not streamed")
	}
	h.stop()
	if _, err := c.State(context.Background()); !errors.Is(err, status.ErrNotRunning) {
		t.Fatalf("after stop: %v", err)
	}
}

func TestManualBackendNeverReports(t *testing.T) {
	h := newHarness(t)
	h.prov.feat = provisioners.Features{Manual: true}
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	h.start()
	eventually(t, "provider notified", func() bool { return h.a.store.ManualNotified(cid) })
	time.Sleep(100 * time.Millisecond)
	if got := h.api.contract(cid).history; !slices.Equal(got, []string{dcapi.StatusProvisioning}) {
		t.Fatalf("manual contract history = %v (only 'provisioning' expected)", got)
	}
	if n := h.prov.callsFor(cid); n != 1 {
		t.Fatalf("notified %d times", n)
	}
}

// useReferenceServer points the harness's agent at a real dc-api
// (apitest) as provider p's agent with key.
func (h *harness) useReferenceServer(srv *apitest.Server, p *apitest.Provider, key ed25519.PrivateKey) {
	h.t.Helper()
	keyPath := filepath.Join(h.t.TempDir(), "agent.key")
	if err := identity.SaveAgentKey(keyPath, key, false); err != nil {
		h.t.Fatal(err)
	}
	h.cfg.API = config.APIConfig{Endpoint: srv.URL, ProviderPubkey: p.Pubkey, AgentSecretKey: keyPath}
}

// TestLockRenewedWhileProvisioning runs against the reference server with
// a 1 s lock: a provision that takes several lock lifetimes keeps its lock
// (renewed at a third of its remaining life), so another agent of the
// provider never gets the contract meanwhile.
func TestLockRenewedWhileProvisioning(t *testing.T) {
	srv := apitest.Start(t, apitest.WithLockTTL(time.Second))
	p := srv.NewProvider("Locking Hosting")
	h := newHarness(t)
	h.useReferenceServer(srv, p, srv.NewAgent(p))
	h.prov.block = make(chan struct{})
	other := srv.Client(p, srv.NewAgent(p))
	cid := srv.CreateContract(p, apitest.ContractSpec{})
	h.start()
	eventually(t, "provisioning under way", func() bool { return h.prov.callsFor(cid) == 1 })
	ctx := context.Background()
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		res, err := other.LockContract(ctx, cid)
		if err != nil {
			t.Fatal(err)
		}
		if res.Acquired {
			t.Fatal("another agent took the lock of a contract being provisioned: it was not renewed")
		}
		if list, _, err := other.PendingContracts(ctx, 0); err != nil || len(list) != 0 {
			t.Fatalf("the contract being provisioned is offered to another agent: %v %v", list, err)
		}
	}
	close(h.prov.block)
	srv.WaitForStatus(cid, dcapi.StatusProvisioned, 20*time.Second)
}

// TestAuthProblemsFromReferenceServer: the reference server's real 401/403
// answers stop the loops they hit, each named (revoked, expired, missing
// permission, no delegation) with the command that fixes it; a loop whose
// permission is granted keeps running.
func TestAuthProblemsFromReferenceServer(t *testing.T) {
	for _, tc := range []struct {
		name     string
		setup    func(srv *apitest.Server, p *apitest.Provider) ed25519.PrivateKey
		stopped  []string // loops that must stop
		running  string   // a loop that must keep going ("" = none)
		msg, fix string
	}{
		{"revoked", func(srv *apitest.Server, p *apitest.Provider) ed25519.PrivateKey {
			k := srv.NewAgent(p)
			srv.RevokeDelegation(p, identity.PublicHex(k))
			return k
		}, []string{loopContracts, loopHeartbeat}, "", "revoked", "dc-agent delegation request"},
		{"expired", func(srv *apitest.Server, p *apitest.Provider) ed25519.PrivateKey {
			return srv.NewAgent(p, apitest.ExpiresAt(time.Now().Add(-time.Hour)))
		}, []string{loopContracts, loopHeartbeat}, "", "expired", "dc-agent delegation request"},
		{"permission missing", func(srv *apitest.Server, p *apitest.Provider) ed25519.PrivateKey {
			return srv.NewAgent(p, apitest.Permissions(identity.PermFetchContracts, identity.PermProvision, identity.PermHealthCheck))
		}, []string{loopHeartbeat}, loopContracts, "heartbeat", "--permissions"},
		{"no delegation", func(srv *apitest.Server, p *apitest.Provider) ed25519.PrivateKey {
			k, _ := identity.GenerateKey()
			return k
		}, []string{loopContracts, loopHeartbeat}, "", "no delegation", "dc-agent register"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := apitest.Start(t)
			p := srv.NewProvider("Auth Hosting")
			h := newHarness(t)
			h.useReferenceServer(srv, p, tc.setup(srv, p))
			h.start()
			loopState := func(st status.State, name string) string {
				for _, l := range st.Loops {
					if l.Name == name {
						return l.State
					}
				}
				return ""
			}
			eventually(t, "loops stopped", func() bool {
				st := h.a.State()
				for _, name := range tc.stopped {
					if loopState(st, name) != status.LoopStopped {
						return false
					}
				}
				return true
			})
			st := h.a.State()
			for _, name := range tc.stopped {
				var found *status.Problem
				for i := range st.Problems {
					if st.Problems[i].Loop == name {
						found = &st.Problems[i]
					}
				}
				if found == nil || !strings.Contains(strings.ToLower(found.Message), tc.msg) || !strings.Contains(found.Fix, tc.fix) {
					t.Fatalf("%s loop: problem %+v; want the message to name %q and the fix %q", name, found, tc.msg, tc.fix)
				}
			}
			if tc.running != "" {
				if s := loopState(st, tc.running); s == status.LoopStopped {
					t.Fatalf("the %s loop stopped although its permission is granted", tc.running)
				}
				n := srv.CountRequests("GET", "/pending-provision", 200)
				eventually(t, tc.running+" loop still polling", func() bool { return srv.CountRequests("GET", "/pending-provision", 200) > n })
			}
		})
	}
}

// TestManualNotifyFailureIsRetried runs against the reference server: a
// provisioning contract whose lock is released counts as handed off there
// and is never offered again, so a failed notification must keep the lock
// (to expire) instead, and the provider is told on the next offer.
func TestManualNotifyFailureIsRetried(t *testing.T) {
	srv := apitest.Start(t, apitest.WithLockTTL(300*time.Millisecond))
	p := srv.NewProvider("Manual Hosting")
	key := srv.NewAgent(p)
	h := newHarness(t)
	h.useReferenceServer(srv, p, key)
	h.prov.feat = provisioners.Features{Manual: true}
	h.prov.mu.Lock()
	h.prov.failWith = provisioners.Retryable(errors.New("webhook: 503 Service Unavailable"))
	h.prov.mu.Unlock()
	cid := srv.CreateContract(p, apitest.ContractSpec{})
	h.start()
	eventually(t, "a first, failed notification", func() bool { return h.prov.callsFor(cid) >= 1 })
	h.prov.mu.Lock()
	h.prov.failWith = nil
	h.prov.mu.Unlock()
	eventually(t, "the provider notified on a later offer", func() bool { return h.a.store.ManualNotified(cid) })
	if n := h.prov.callsFor(cid); n < 2 {
		t.Fatalf("notified %d times, want a retry after the failure", n)
	}
	if c := srv.Contract(cid); c.Status != dcapi.StatusProvisioning {
		t.Fatalf("manual contract status %q; the agent must leave it in provisioning for the provider", c.Status)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	h := newHarness(t)
	h.cfg.Agent.MetricsListen = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	h.startProvisioned("provisioned")
	eventually(t, "metrics show the provision", func() bool {
		resp, err := http.Get("http://" + h.cfg.Agent.MetricsListen + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		s := string(b)
		return strings.Contains(s, "dcagent_online 1") &&
			strings.Contains(s, `dcagent_events_total{outcome="provisioned"} 1`) &&
			strings.Contains(s, `dcagent_provision_duration_seconds_count{provisioner="script"} 1`) &&
			strings.Contains(s, `dcagent_loop_state{loop="heartbeat",state="running"} 1`)
	})
}

func TestSecretsNeverLogged(t *testing.T) {
	h := newHarness(t)
	var logs lockedBuf
	requester, _ := identity.GenerateKey()
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid, RequesterPubkey: identity.PublicHex(requester)})
	h.start(func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	eventually(t, "provisioned", func() bool { return h.api.contract(cid).status == dcapi.StatusProvisioned })
	h.stop()
	out := logs.String()
	seed := identity.SeedHex(h.agentKey)
	for _, secret := range []string{"secret-" + cid[:8], seed} {
		if strings.Contains(out, secret) {
			t.Fatalf("a secret reached the log")
		}
	}
	st, _ := os.ReadDir(h.stateDir)
	for _, de := range st {
		if de.IsDir() {
			files, _ := os.ReadDir(h.stateDir + "/" + de.Name())
			for _, f := range files {
				b, _ := os.ReadFile(h.stateDir + "/" + de.Name() + "/" + f.Name())
				if strings.Contains(string(b), "secret-"+cid[:8]) {
					t.Fatalf("plaintext password written to %s/%s", de.Name(), f.Name())
				}
			}
		}
	}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// A backend that can terminate but not list (the script backend): the
// cancelled contract is found in the active contract list and terminated.
// A server without that list (the live API) leaves reconcile healthy and
// terminates nothing.
func TestReconcileBackendThatCannotList(t *testing.T) {
	h := newHarness(t)
	h.prov.feat.List = false
	cid := h.startProvisioned("provisioned")
	h.api.setStatus(cid, dcapi.StatusCancelled)
	eventually(t, "cancelled instance terminated and reported", func() bool {
		inst, _ := h.prov.GetInstance(context.Background(), cid)
		return inst == nil && slices.Contains(h.api.contract(cid).history, "terminated")
	})
	h.stop()

	h2 := newHarness(t)
	h2.prov.feat.List = false
	h2.api.setFault(func(route string, body []byte) (int, string) {
		if route == "active" {
			return http.StatusNotFound, "not found"
		}
		return 0, ""
	})
	cid2 := h2.startProvisioned("provisioned")
	h2.api.setStatus(cid2, dcapi.StatusCancelled)
	eventually(t, "a reconcile round that found no active list", func() bool {
		return h2.a.State().LastReconcile != nil && h2.a.activeList.Load() == 2
	})
	before := *h2.a.State().LastReconcile
	eventually(t, "another successful reconcile round", func() bool { return h2.a.State().LastReconcile.After(before) })
	for _, l := range h2.a.State().Loops {
		if l.Name == loopReconcile && l.Failures > 0 {
			t.Fatalf("reconcile loop failing: %+v", l)
		}
	}
	if inst, _ := h2.prov.GetInstance(context.Background(), cid2); inst == nil {
		t.Fatal("terminated without knowing the contract was cancelled")
	}
}
