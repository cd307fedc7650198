package proxmoxe2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

// cutProxy stands between one agent and the API; cut drops every request
// (the connection is closed unanswered), as a network partition would.
type cutProxy struct {
	rp  *httputil.ReverseProxy
	cut atomic.Bool
}

func (p *cutProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if p.cut.Load() {
		if c, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = c.Close()
			return
		}
		http.Error(w, "cut off", http.StatusServiceUnavailable)
		return
	}
	p.rp.ServeHTTP(w, r)
}

func newCutProxy(t *testing.T, target string) (*cutProxy, string) {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{rp: httputil.NewSingleHostReverseProxy(u)}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

// Three agents of one provider (each its own key, one pool) on a 3-node
// cluster, 30 contracts. Agent K is SIGKILLed while its clone is under way;
// agent C loses the API while its clone is under way, for longer than a
// lock lives, and stops that provision before its lock runs out; agent S
// (and C and K once back) finish every contract: 30 provisioned, 30 VMs in
// the simulator's own list, one per contract, none left over. The
// simulator holds clones (Faults.HeldTasks) so that each fault strikes
// mid-clone; every step waits on observable state.
func TestThreeAgentsOneProviderEndToEnd(t *testing.T) {
	// Long enough for renewals to keep up on a loaded CI machine (the
	// agents renew every 2 s: LockRenew x --time-scale).
	const lockTTL = 30 * time.Second
	sim := pveapi.StartTest(t, pveapi.TestOptions{Timing: instantTiming(), Nodes: 3, SharedStorage: true, TemplateStorage: pve.SharedStorageID})
	e := newE2EOn(t, sim, `nodes = "auto"`, apitest.WithLockTTL(lockTTL))
	pool := e.api.NewPool(e.prov, "cluster", "europe", "proxmox")
	keyK, keyC, keyS := e.api.NewPoolAgent(pool), e.api.NewPoolAgent(pool), e.api.NewPoolAgent(pool)
	cfgK, _ := e.agentConfig(keyK, e.api.URL)
	proxy, proxied := newCutProxy(t, e.api.URL)
	cfgC, sockC := e.agentConfig(keyC, proxied)
	cfgS, _ := e.agentConfig(keyS, e.api.URL)
	var cids []string
	newContract := func() string {
		cid := e.api.CreateContract(e.prov, apitest.ContractSpec{AgentPoolID: &pool.PoolID, MemoryAmount: apitest.Ptr("2 GB")})
		cids = append(cids, cid)
		return cid
	}
	hold := func(on bool) {
		e.sim.Update(t, func(st *pve.State) error {
			st.Faults.HeldTasks = nil
			if on {
				st.Faults.HeldTasks = []string{"qmclone"}
			}
			return nil
		})
	}
	// cloning reports whether cid's VM exists, locked by its clone, while
	// the agent with key holds the contract's lock.
	cloning := func(cid string, key ed25519.PrivateKey) bool {
		c := e.api.Contract(cid)
		if c.LockAgent == nil || *c.LockAgent != identity.PublicHex(key) {
			return false
		}
		for _, vm := range e.vms() {
			if vm.Name() == "dc-"+cid && vm.Lock() == "clone" {
				return true
			}
		}
		return false
	}

	// K is killed mid-clone.
	hold(true)
	k := e.runConfig(cfgK)
	c1 := newContract()
	e.waitFor("K cloning the first contract", func() bool { return cloning(c1, keyK) })
	if err := k.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-k.done

	// C loses the API mid-clone and stops before its lock runs out.
	c := e.runConfig(cfgC)
	c2 := newContract()
	e.waitFor("C cloning the second contract", func() bool { return cloning(c2, keyC) })
	proxy.cut.Store(true)
	client := status.NewClient(sockC)
	e.waitFor("C to stop its work", func() bool {
		st, err := client.State(context.Background())
		return err == nil && len(st.Work) == 0
	})
	if !strings.Contains(c.out.String(), "stopped working on the contract") {
		t.Fatalf("C's work ended without it saying it stopped")
	}
	hold(false)

	// S takes over once the locks have run out; C gets the API back, K
	// starts again; the other 28 contracts come in.
	s := e.runConfig(cfgS)
	proxy.cut.Store(false)
	k = e.runConfig(cfgK)
	for len(cids) < 30 {
		newContract()
	}
	agents := map[string]string{identity.PublicHex(keyK): "K", identity.PublicHex(keyC): "C", identity.PublicHex(keyS): "S"}
	by := map[string]int{}
	for _, cid := range cids {
		got := e.api.WaitForContract(cid, 5*time.Minute, func(c *store.Contract) bool {
			return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
		}, "provisioned")
		by[agents[*got.ProvisioningAgent]]++
	}
	t.Logf("provisioned by agent: %v", by)
	// The simulator's own list: one running VM per contract, the one
	// reported, and nothing else (no duplicate, no orphan, no leftover disk).
	vms := e.vms()
	byName := map[string]int{}
	for id, vm := range vms {
		byName[vm.Name()]++
		if vm.Status != "running" || vm.Lock() != "" {
			t.Errorf("VM %d (%s) on %s: %s, lock %q", id, vm.Name(), vm.Node, vm.Status, vm.Lock())
		}
	}
	for _, cid := range cids {
		d, _ := e.api.InstanceDetails(cid)
		node, id, _ := strings.Cut(d.ExternalID, "/")
		var vmid int
		fmt.Sscan(id, &vmid)
		vm := vms[vmid]
		if byName["dc-"+cid] != 1 || vm == nil || vm.Node != node || vm.Name() != "dc-"+cid {
			t.Errorf("contract %s: %d VMs named for it; reported %s", cid, byName["dc-"+cid], d.ExternalID)
		}
	}
	if len(vms) != 30 {
		t.Errorf("%d VMs for 30 contracts: %v", len(vms), byName)
	}
	e.sim.Update(t, func(st *pve.State) error {
		for id, v := range st.Volumes {
			if v.VMID != 9000 && vms[v.VMID] == nil {
				t.Errorf("volume %s of VM %d left", id, v.VMID)
			}
		}
		return nil
	})
	for _, a := range []*agentProc{k, c, s} {
		a.stop(t)
	}
}
