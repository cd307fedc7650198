package proxmoxe2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

// The agent binary on a simulated 3-node cluster (pve-sim --nodes 3):
// placement by free memory, a full node skipped, a node lost mid-clone.

// newClusterE2E: template 9000 on pve1 with copies 9001 (pve2) and 9002
// (pve3) on local storage, or (shared) on ceph-vm only; every node used.
func newClusterE2E(t *testing.T, shared bool) *e2e {
	t.Helper()
	o := pveapi.TestOptions{Timing: instantTiming(), Nodes: 3, SharedStorage: true, NodeTemplates: !shared}
	where := `nodes = "auto"
node_templates = { "9000" = { pve2 = 9001, pve3 = 9002 } }`
	if shared {
		o.TemplateStorage = pve.SharedStorageID
		where = `nodes = "auto"`
	}
	return newE2EOn(t, pveapi.StartTest(t, o), where)
}

// nodeOfContract is the node the API was told the contract's VM is on.
func (e *e2e) nodeOfContract(cid string) string {
	e.t.Helper()
	d, ok := e.api.InstanceDetails(cid)
	if !ok {
		e.t.Fatalf("contract %s has no instance details", cid)
	}
	n, _, _ := strings.Cut(d.ExternalID, "/")
	return n
}

// waitFor polls cond until it holds (a deadline only against hangs).
func (e *e2e) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; VMs: %v", what, e.vms())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestClusterPlacementEndToEnd(t *testing.T) {
	e := newClusterE2E(t, false)
	e.sim.Update(t, func(st *pve.State) error {
		st.Nodes["pve1"].MemoryBytes = 64 << 30
		st.Nodes["pve2"].MemoryBytes = 47 << 30
		// pve3 is the biggest node, but a 60 GiB guest runs there.
		st.Nodes["pve3"].MemoryBytes = 96 << 30
		st.VMs[200] = &pve.VM{VMID: 200, Node: "pve3", Status: "running", PID: 4242, StartedAt: time.Now(),
			Config: map[string]string{"name": "big-database", "memory": "92160", "cores": "8"}}
		return nil
	})
	a := e.run()
	// Free memory (the host keeps 2 GiB): pve1 62, pve2 45, pve3 2 GiB.
	// Each contract takes 8 GiB and goes where most stays free.
	var got []string
	for i := 0; i < 5; i++ {
		cid := e.api.CreateContract(e.prov, apitest.ContractSpec{MemoryAmount: apitest.Ptr("8 GB"), CPUCores: apitest.Ptr(2)})
		e.api.WaitForStatus(cid, dcapi.StatusProvisioned, time.Minute)
		got = append(got, e.nodeOfContract(cid))
	}
	want := []string{"pve1", "pve1", "pve1", "pve2", "pve1"}
	if !slices.Equal(got, want) {
		t.Fatalf("placed on %v, want %v", got, want)
	}
	for id, vm := range e.vms() {
		if id != 200 && (vm.Node == "pve3" || vm.Config["memory"] != "8192" || vm.Status != "running") {
			t.Errorf("VM %d on %s: memory %s, %s", id, vm.Node, vm.Config["memory"], vm.Status)
		}
	}
	// The heartbeat reports the three nodes' sums (the live API's
	// ResourceInventory has no list of nodes).
	e.waitFor("an inventory of three nodes", func() bool {
		r := e.api.AgentStatus(e.prov).Resources
		return r != nil && r.CPUThreads == 48 && r.CPUCores == 48 && r.MemoryTotalMB == (64+47+96)<<10
	})
	a.stop(t)
}

// pve2 (the emptiest node) loses power as the clone to it starts: the
// contract is provisioned on another node, and once pve2 is back the VM
// made for it there is removed; nothing of the contract stays on pve2.
func TestClusterNodeLostMidCloneEndToEnd(t *testing.T) {
	e := newClusterE2E(t, true)
	e.sim.Update(t, func(st *pve.State) error {
		st.Nodes["pve2"].MemoryBytes = 128 << 30
		st.Faults.Outages = []pve.Outage{{Node: "pve2", OnTask: "qmclone", PowerLoss: true}}
		return nil
	})
	a := e.run()
	cid := e.api.CreateContract(e.prov, apitest.ContractSpec{MemoryAmount: apitest.Ptr("4 GB")})
	e.api.WaitForStatus(cid, dcapi.StatusProvisioned, time.Minute)
	node := e.nodeOfContract(cid)
	if node == "pve2" {
		t.Fatalf("provisioned on the lost node")
	}
	onPve2 := func() []int {
		var ids []int
		for id, vm := range e.vms() {
			if vm.Node == "pve2" {
				ids = append(ids, id)
			}
		}
		return ids
	}
	if left := onPve2(); len(left) != 1 {
		t.Fatalf("the clone to pve2 left %v", left)
	}
	e.sim.Update(t, func(st *pve.State) error { return st.SetNodeOnline("pve2") })
	e.waitFor("pve2 to be empty", func() bool { return len(onPve2()) == 0 })
	vms := e.vms()
	d, _ := e.api.InstanceDetails(cid)
	if len(vms) != 1 {
		t.Fatalf("VMs: %v", vms)
	}
	for id, vm := range vms {
		if d.ExternalID != fmt.Sprintf("%s/%d", vm.Node, id) || vm.Name() != "dc-"+cid || vm.Status != "running" {
			t.Errorf("VM %d on %s (%s, %s), reported %s", id, vm.Node, vm.Name(), vm.Status, d.ExternalID)
		}
	}
	e.sim.Update(t, func(st *pve.State) error {
		for id, v := range st.Volumes {
			if v.VMID != 9000 && d.ExternalID != fmt.Sprintf("%s/%d", v.Node, v.VMID) {
				t.Errorf("volume %s of VM %d left", id, v.VMID)
			}
		}
		return nil
	})
	e.waitFor("the replaces tag to go", func() bool {
		for _, vm := range e.vms() {
			return vm.Config["tags"] == "dc-agent"
		}
		return false
	})
	a.stop(t)
}
