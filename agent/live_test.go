package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// A server that refuses the heartbeat's inventory (as the live API refuses
// a ResourceInventory it cannot parse) never takes the provider offline:
// the heartbeat goes again without it, and the refusal is said once.
func TestHeartbeatRefusedPartsResentWithout(t *testing.T) {
	h := newHarness(t)
	h.prov.inventory = &provisioners.Resources{CPUThreads: 8, MemoryMB: 16384, MemoryFreeMB: 8192,
		Templates: []provisioners.Template{{VMID: 9000, Name: "ubuntu"}}}
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "heartbeat" && strings.Contains(string(body), `"resources"`) {
			return http.StatusBadRequest, `parse request payload error: Expected input type "integer(uint32)", found null. (occurred while parsing "ResourceInventory")`
		}
		return 0, ""
	})
	h.start()
	var refused, accepted int
	eventually(t, "heartbeats accepted after the inventory was refused", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		accepted = len(h.api.heartbeats)
		return accepted >= 3
	})
	refused = h.api.count("heartbeat") - accepted
	st := h.a.State()
	if !st.Online || refused < 1 {
		t.Fatalf("online %v, %d refused", st.Online, refused)
	}
	var notices int
	found := false
	for _, p := range st.Problems {
		found = found || strings.Contains(p.Message, "refused the heartbeat's optional parts") && strings.Contains(p.Message, "ResourceInventory")
	}
	evs, ch := h.a.obs.subscribe(0)
	h.a.obs.unsubscribe(ch)
	for _, ev := range evs {
		if strings.Contains(ev.Message, "refused the heartbeat's optional parts") {
			notices++
		}
	}
	if !found || notices != 1 {
		t.Fatalf("problem shown %v, %d notices (want 1): %+v", found, notices, st.Problems)
	}
	// Only the first heartbeat carried the inventory: the others leave it
	// out instead of being refused again.
	if refused != 1 {
		t.Fatalf("%d heartbeats refused, want 1", refused)
	}
}

// The inventory is the live API's ResourceInventory: every required field,
// lists as [] when empty, templates as {vmid,name}.
func TestInventoryWireShape(t *testing.T) {
	b, err := json.Marshal(inventory(provisioners.Resources{CPUThreads: 4, MemoryMB: 2048, MemoryFreeMB: 4096}))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"cpuCores":4,"cpuThreads":4,"memoryTotalMb":2048,"memoryAvailableMb":2048,"storagePools":[],"gpuDevices":[],"templates":[]}`
	if string(b) != want {
		t.Fatalf("inventory\n got %s\nwant %s", b, want)
	}
	b, _ = json.Marshal(inventory(provisioners.Resources{CPUModel: "EPYC", CPUCores: -3, CPUThreads: 16, CPUMhz: 2450, MemoryMB: 1024,
		StoragePools: []provisioners.StoragePool{{Name: "local-lvm", TotalGB: 100, AvailGB: 200}},
		GPUs:         []provisioners.GPU{{PCIID: "0000:01:00.0", Name: "RTX", Vendor: "NVIDIA", MemoryMB: 24576}},
		Templates:    []provisioners.Template{{VMID: 9000, Name: "ubuntu"}, {VMID: -1, Name: "bad"}}}))
	want = `{"cpuModel":"EPYC","cpuCores":16,"cpuThreads":16,"cpuMhz":2450,"memoryTotalMb":1024,"memoryAvailableMb":0,` +
		`"storagePools":[{"name":"local-lvm","totalGb":100,"availableGb":100,"storageType":"unknown"}],` +
		`"gpuDevices":[{"pciId":"0000:01:00.0","name":"RTX","vendor":"NVIDIA","memoryMb":24576}],"templates":[{"vmid":9000,"name":"ubuntu"}]}`
	if string(b) != want {
		t.Fatalf("inventory\n got %s\nwant %s", b, want)
	}
}

// The live API answers permission and pool refusals with HTTP 200
// success:false: the loops stop as for a 401/403, with the setup-token fix.
func TestLivePermissionRefusalStopsWithSetupTokenFix(t *testing.T) {
	h := newHarness(t)
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "pending" {
			return http.StatusForbidden, "Agent must belong to a pool. Re-register using a setup token."
		}
		return 0, ""
	})
	h.api.faultAs200 = true // the live API answers it with HTTP 200
	h.start()
	var st status.State
	eventually(t, "the contracts loop stopped", func() bool {
		st = h.a.State()
		for _, l := range st.Loops {
			if l.Name == loopContracts && l.State == status.LoopStopped {
				return true
			}
		}
		return false
	})
	found := false
	for _, p := range st.Problems {
		found = found || strings.Contains(p.Message, "must belong to a pool") && strings.Contains(p.Fix, "dc-agent register --setup-token")
	}
	if !found || !strings.Contains(st.Line, "STOPPED") {
		t.Fatalf("problems %+v line %q", st.Problems, st.Line)
	}
}

// upgradeToVersion: with auto_update on, the upgrade path starts once per
// version; off, the request shows with the command.
func TestUpgradeRequestedByTheAPI(t *testing.T) {
	for _, auto := range []bool{true, false} {
		t.Run(map[bool]string{true: "auto_update", false: "manual"}[auto], func(t *testing.T) {
			h := newHarness(t)
			h.cfg.Agent.AutoUpdate = auto
			h.api.upgradeTo, h.api.pool = "v9.0.0", "eu-pool"
			var mu sync.Mutex
			var asked []string
			h.start(func(o *Options) {
				o.Version = "v1.2.3"
				o.Upgrade = func(_ context.Context, v string) error {
					mu.Lock()
					defer mu.Unlock()
					asked = append(asked, v)
					return nil
				}
			})
			eventually(t, "several heartbeats", func() bool { return h.api.count("heartbeat") >= 4 })
			st := h.a.State()
			mu.Lock()
			defer mu.Unlock()
			if st.Pool == nil || st.Pool.ID != "eu-pool" || st.Upgrade == nil || st.Upgrade.Version != "v9.0.0" {
				t.Fatalf("pool %+v upgrade %+v", st.Pool, st.Upgrade)
			}
			if auto && (len(asked) != 1 || asked[0] != "v9.0.0" || st.Upgrade.State != status.UpgradeStarted) {
				t.Fatalf("upgrade started %v times (%v), state %s", len(asked), asked, st.Upgrade.State)
			}
			if !auto && (len(asked) != 0 || st.Upgrade.State != status.UpgradeOffered || !strings.Contains(st.Upgrade.Note, "dc-agent upgrade --version v9.0.0")) {
				t.Fatalf("upgrade without auto_update: asked %v, %+v", asked, st.Upgrade)
			}
		})
	}
}

// Against a server without GET …/contracts/active (404, the live API),
// health checks and activeContracts come from the backend's instances
// that reconcile keeps.
func TestHealthFromReconcileWithoutActiveList(t *testing.T) {
	h := newHarness(t)
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "active" || route == "healthBatch" {
			return http.StatusNotFound, "not found"
		}
		return 0, ""
	})
	cid := randomCID(t)
	h.api.addContract(dcapi.PendingContract{ContractID: cid})
	h.start()
	eventually(t, "a health check of the contract", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		for _, hc := range h.api.health {
			if hc.ContractID == cid && hc.Status == dcapi.HealthHealthy {
				return true
			}
		}
		return false
	})
	eventually(t, "activeContracts 1 in a heartbeat", func() bool {
		h.api.mu.Lock()
		defer h.api.mu.Unlock()
		return len(h.api.heartbeats) > 0 && h.api.heartbeats[len(h.api.heartbeats)-1].ActiveContracts == 1
	})
	if n := h.api.count("active"); n != 1 {
		t.Fatalf("the missing active list was asked %d times, want once (then believed)", n)
	}
}

var _ = config.TypeScript

// A contract just provisioned gets its first health check at once, and
// only it: the others wait for the next full round (one request per check
// on the live API, 60 writes a minute).
func TestNewContractCheckedAlone(t *testing.T) {
	h := newHarness(t)
	h.api.setFault(func(route string, body []byte) (int, string) {
		if route == "healthBatch" {
			return http.StatusNotFound, "not found"
		}
		return 0, ""
	})
	tm := fastTiming()
	tm.HealthInterval = time.Hour
	var cids []string
	h.start(func(o *Options) { o.Timing = fixedTiming(tm) })
	for range 4 {
		cid := randomCID(t)
		cids = append(cids, cid)
		h.api.addContract(dcapi.PendingContract{ContractID: cid})
		eventually(t, "its first health check", func() bool {
			h.api.mu.Lock()
			defer h.api.mu.Unlock()
			for _, hc := range h.api.health {
				if hc.ContractID == cid {
					return true
				}
			}
			return false
		})
	}
	h.api.mu.Lock()
	defer h.api.mu.Unlock()
	per := map[string]int{}
	for _, hc := range h.api.health {
		per[hc.ContractID]++
	}
	for _, cid := range cids {
		if per[cid] != 1 {
			t.Fatalf("health checks per contract %v, want 1 each within the hour", per)
		}
	}
}

// blockingHealth holds a health check until released, reporting the
// instance down (it is stopped).
type blockingHealth struct {
	*memProv
	started, release chan struct{}
}

func (b *blockingHealth) HealthCheck(ctx context.Context, ext string) (provisioners.Health, error) {
	close(b.started)
	<-b.release
	return provisioners.Health{Status: provisioners.Unhealthy, Reason: "stopped"}, nil
}

// A health check begun while the instance was stopped for a paused
// contract, and finished after it was started again (the pause record
// gone), is not reported: it saw the pause, not a fault.
func TestCheckAcrossResumeDropped(t *testing.T) {
	h := newHarness(t)
	h.start()
	cid := randomCID(t)
	if err := h.a.store.PutPaused(PausedRecord{ContractID: cid, ExternalID: "mem-1", Provisioner: config.TypeScript, Reason: "dispute", Since: time.Now()}); err != nil {
		t.Fatal(err)
	}
	bp := &blockingHealth{memProv: newMemProv(), started: make(chan struct{}), release: make(chan struct{})}
	reported := make(chan bool)
	go func() {
		_, ok := h.a.checkOne(context.Background(), healthJob{cid: cid, ext: "mem-1", b: &backend{typ: config.TypeScript, p: bp}})
		reported <- ok
	}()
	<-bp.started
	if err := h.a.store.DeletePaused(cid); err != nil { // resumed meanwhile
		t.Fatal(err)
	}
	close(bp.release)
	if <-reported {
		t.Fatal("a check that began while the instance was paused was reported")
	}
}
