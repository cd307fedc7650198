package proxmox

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// startCluster is a 3-node cluster: template 9000 on pve1 and its copies
// 9001 on pve2 and 9002 on pve3 on local-lvm, or (shared) template 9000
// on the shared storage ceph-vm.
func startCluster(t *testing.T, shared bool) *pveapi.TestSim {
	t.Helper()
	o := pveapi.TestOptions{Nodes: 3, SharedStorage: true, NodeTemplates: !shared}
	if shared {
		o.TemplateStorage = pve.SharedStorageID
	}
	return pveapi.StartTest(t, o)
}

// newClusterProv places on every node (nodes = "auto"), with the copies.
func newClusterProv(t *testing.T, s *pveapi.TestSim, mod func(*config.ProxmoxConfig, *Options)) *Provisioner {
	t.Helper()
	return newProv(t, s, func(c *config.ProxmoxConfig, o *Options) {
		c.Node = ""
		c.Nodes = config.ProxmoxNodes{config.NodesAuto}
		c.NodeTemplates = map[string]map[string]int{"9000": {"pve2": 9001, "pve3": 9002}}
		if mod != nil {
			mod(c, o)
		}
	})
}

func setMemory(t *testing.T, s *pveapi.TestSim, gib map[string]int64) {
	t.Helper()
	s.Update(t, func(st *pve.State) error {
		for n, g := range gib {
			st.Nodes[n].MemoryBytes = g << 30
		}
		return nil
	})
}

func nodeOf(inst provisioners.Instance) string {
	n, _, _ := strings.Cut(inst.ExternalID, "/")
	return n
}

func memRequest(t *testing.T, n int, gib int) provisioners.Request {
	r := request(t, n)
	r.MemoryMB = int64(gib) << 10
	return r
}

// Each contract goes to the node with the most free memory (the host's
// own 2 GiB counted), one after the other: pve2 until pve3 has more.
func TestClusterPlacementFollowsFreeMemory(t *testing.T) {
	s := startCluster(t, false)
	setMemory(t, s, map[string]int64{"pve1": 16, "pve2": 64, "pve3": 40})
	p := newClusterProv(t, s, nil)
	var got []string
	for i := 0; i < 7; i++ {
		inst, err := p.Provision(context.Background(), memRequest(t, i, 5))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, nodeOf(inst))
	}
	// Free: pve1 14, pve2 62, pve3 38 GiB; 5 GiB each.
	want := []string{"pve2", "pve2", "pve2", "pve2", "pve2", "pve3", "pve2"}
	if !slices.Equal(got, want) {
		t.Fatalf("placed on %v, want %v", got, want)
	}
	// The copy on each node was cloned there, no clone crossed nodes.
	for id, vm := range simVMs(t, s) {
		if !strings.Contains(vm.Config["scsi0"], "local-lvm:base-900") {
			t.Errorf("VM %d on %s: scsi0 %s", id, vm.Node, vm.Config["scsi0"])
		}
	}
}

// A burst does not overfill a node: what is being placed counts.
func TestClusterBurstReservesRoom(t *testing.T) {
	s := startCluster(t, false)
	// Free for guests: 14, 22 and 14 GiB: room for 1 + 2 + 1 VMs of 8 GiB.
	setMemory(t, s, map[string]int64{"pve1": 16, "pve2": 24, "pve3": 16})
	p := newClusterProv(t, s, nil)
	var mu sync.Mutex
	placed := map[string]int{}
	var failed []string
	var wg sync.WaitGroup
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			inst, err := p.Provision(context.Background(), memRequest(t, i, 8))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed = append(failed, err.Error())
				return
			}
			placed[nodeOf(inst)]++
		}(i)
	}
	wg.Wait()
	if placed["pve1"] != 1 || placed["pve2"] != 2 || placed["pve3"] != 1 || len(failed) != 2 {
		t.Fatalf("placed %v, failed %q", placed, failed)
	}
	for _, f := range failed {
		if !strings.Contains(f, "no node of the cluster can take this contract now") || !strings.Contains(f, "free memory, 8.0 GiB needed") {
			t.Errorf("failure: %s", f)
		}
	}
	var perr *provisioners.Error
	_, err := p.Provision(context.Background(), memRequest(t, 9, 8))
	if !asProvErr(err, &perr) || !perr.RetryPossible {
		t.Errorf("a full cluster must be retryable: %v", err)
	}
}

func asProvErr(err error, target **provisioners.Error) bool {
	e, ok := err.(*provisioners.Error)
	if ok {
		*target = e
	}
	return ok
}

// Offline, maintenance, full storage, too little CPU and no template are
// each skipped with the reason.
func TestClusterSkipsUnusableNodes(t *testing.T) {
	s := startCluster(t, false)
	p := newClusterProv(t, s, func(c *config.ProxmoxConfig, _ *Options) {
		c.NodeTemplates = map[string]map[string]int{"9000": {"pve2": 9001}} // none named on pve3
	})
	s.Update(t, func(st *pve.State) error {
		if err := st.SetNodeOffline("pve3", false); err != nil {
			return err
		}
		if err := st.SetNodeMaintenance("pve2", true); err != nil {
			return err
		}
		return st.SetNodeStorageCapacity("local-lvm", "pve1", st.StorageUsed("local-lvm", "pve1")+(10<<30))
	})
	_, err := p.Provision(context.Background(), request(t, 1))
	for _, want := range []string{"pve1: storage local-lvm has 10.0 GiB free, 20.0 GiB needed plus 10% headroom", "pve2: in maintenance", "pve3: offline"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOnline("pve3") })
	_, err = p.Provision(context.Background(), request(t, 2))
	if err == nil || !strings.Contains(err.Error(), "pve3: template 9000 is on local storage local-lvm of pve1 and node_templates names no copy here") {
		t.Errorf("no template: %v", err)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeStorageCapacity("local-lvm", "pve1", 400<<30) })
	req := request(t, 3)
	req.CPUCores = 65
	if _, err = p.Provision(context.Background(), req); err == nil || !strings.Contains(err.Error(), "pve1: 64 free vCPUs (cpu_overcommit 4), 65 needed") {
		t.Errorf("CPU: %v", err)
	}
	inst, err := p.Provision(context.Background(), request(t, 4))
	if err != nil || nodeOf(inst) != "pve1" {
		t.Fatalf("with room on pve1: %+v %v", inst, err)
	}
	// Maintenance ends: the next contract goes to the emptier pve2.
	s.Update(t, func(st *pve.State) error { return st.SetNodeMaintenance("pve2", false) })
	if inst, err = p.Provision(context.Background(), request(t, 5)); err != nil || nodeOf(inst) != "pve2" {
		t.Fatalf("after maintenance: %+v %v", inst, err)
	}
}

// A template on shared storage is cloned to the chosen node (target),
// linked, from its own node.
func TestClusterSharedTemplateClonesWithTarget(t *testing.T) {
	s := startCluster(t, true)
	setMemory(t, s, map[string]int64{"pve3": 128})
	p := newClusterProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.NodeTemplates = nil; c.Storage = pve.SharedStorageID })
	inst, err := p.Provision(context.Background(), request(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != "pve3/100" || inst.IPAddress == "" {
		t.Fatalf("instance %+v", inst)
	}
	vm := simVMs(t, s)[100]
	if vm.Node != "pve3" || !strings.HasPrefix(vm.Config["scsi0"], pve.SharedStorageID+":base-9000-disk-0/vm-100-disk-0") {
		t.Fatalf("VM on %s: %s", vm.Node, vm.Config["scsi0"])
	}
	calls := s.Server.Calls()
	if calls["POST /nodes/{node}/qemu/{vmid}/clone"] != 1 {
		t.Errorf("calls: %v", calls)
	}
	// The heartbeat sums the three nodes, lists them and the shared storage once.
	res, err := p.Resources(context.Background())
	if err != nil || res.CPUThreads != 48 || res.MemoryMB != (64+64+128)<<10 || !slices.Equal(res.Nodes, []string{"pve1", "pve2", "pve3"}) {
		t.Fatalf("resources %+v %v", res, err)
	}
	var pools []string
	for _, sp := range res.StoragePools {
		pools = append(pools, sp.Name)
	}
	if !slices.Equal(pools, []string{"ceph-vm", "pve1/local-lvm", "pve2/local-lvm", "pve3/local-lvm"}) || len(res.Templates) != 1 {
		t.Errorf("storages %v, templates %v", pools, res.Templates)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOffline("pve2", true) })
	if res, err = p.Resources(context.Background()); err != nil || res.CPUThreads != 32 || !slices.Equal(res.Nodes, []string{"pve1", "pve2 (offline)", "pve3"}) {
		t.Fatalf("resources with pve2 offline %+v %v", res, err)
	}
}

// The clone to pve2 is made on pve1 (shared storage); pve2 is lost as
// it starts. The contract lands on pve3, whose VM records the one left
// on pve2; once pve2 is back, List removes that one and the record.
func TestClusterNodeLostMidCloneToIt(t *testing.T) {
	s := startCluster(t, true)
	setMemory(t, s, map[string]int64{"pve2": 128, "pve3": 96})
	p := newClusterProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.NodeTemplates = nil })
	s.Update(t, func(st *pve.State) error {
		st.Faults.Outages = []pve.Outage{{Node: "pve2", OnTask: "qmclone", PowerLoss: true}}
		return nil
	})
	req := request(t, 1)
	var steps []string
	req.Progress = func(s string) { steps = append(steps, s) }
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if nodeOf(inst) != "pve3" || !slices.Contains(steps, "node pve2 went offline; trying another node") {
		t.Fatalf("instance %+v, steps %q", inst, steps)
	}
	vms := simVMs(t, s)
	if len(vms) != 2 || vms[100].Node != "pve2" || vms[101].Node != "pve3" || vms[101].Config["tags"] != "dc-agent;dc-replaces-100" {
		t.Fatalf("VMs: %+v %+v", vms[100], vms[101])
	}
	// While pve2 is away: the instance is found, the leftover is not listed.
	assertFound(t, p, req.ContractID, "pve3/101")
	s.Update(t, func(st *pve.State) error { return st.SetNodeOnline("pve2") })
	assertFound(t, p, req.ContractID, "pve3/101")
	vms = simVMs(t, s)
	if len(vms) != 1 || vms[101] == nil || vms[101].Config["tags"] != "dc-agent" {
		t.Fatalf("after pve2 returned: %v", vms)
	}
	s.Update(t, func(st *pve.State) error {
		for id, v := range st.Volumes {
			if v.VMID != 9000 && v.VMID != 101 {
				t.Errorf("leftover volume %s", id)
			}
		}
		return nil
	})
}

// assertFound checks that List and GetInstance report exactly this VM of
// the contract.
func assertFound(t *testing.T, p *Provisioner, cid, ext string) {
	t.Helper()
	list, err := p.List(context.Background())
	if err != nil || len(list) != 1 || list[0].ExternalID != ext || list[0].ContractID != cid {
		t.Fatalf("list: %+v %v", list, err)
	}
	got, err := p.GetInstance(context.Background(), cid)
	if err != nil || got == nil || got.ExternalID != ext {
		t.Fatalf("get instance: %+v %v", got, err)
	}
}

// pve2 loses power as its VM starts: it boots again later and starts the
// VM (onboot); List stops and removes it.
func TestClusterNodeLostMidStart(t *testing.T) {
	s := startCluster(t, false)
	setMemory(t, s, map[string]int64{"pve2": 128})
	p := newClusterProv(t, s, nil)
	s.Update(t, func(st *pve.State) error {
		st.Faults.Outages = []pve.Outage{{Node: "pve2", OnTask: "qmstart", PowerLoss: true}}
		return nil
	})
	req := request(t, 1)
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if nodeOf(inst) == "pve2" {
		t.Fatalf("instance %+v", inst)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOnline("pve2") })
	if vm := simVMs(t, s)[100]; vm == nil || vm.Node != "pve2" || vm.Status != "running" {
		t.Fatalf("the VM on pve2 must have booted with its node: %+v", vm)
	}
	assertFound(t, p, req.ContractID, inst.ExternalID)
	if vms := simVMs(t, s); len(vms) != 1 {
		t.Fatalf("VMs left: %v", vms)
	}
}

// A clone running on pve2 itself (its local copy of the template) dies
// with pve2. PVE leaves the VM locked "clone", which only root can
// remove: the contract lands elsewhere and the provider is told how.
func TestClusterNodeLostMidLocalClone(t *testing.T) {
	s := startCluster(t, false)
	setMemory(t, s, map[string]int64{"pve2": 128})
	logs := &testutil.SyncBuffer{}
	p := newClusterProv(t, s, func(_ *config.ProxmoxConfig, o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	s.Update(t, func(st *pve.State) error {
		st.Faults.Outages = []pve.Outage{{Node: "pve2", OnTask: "qmclone", PowerLoss: true}}
		return nil
	})
	req := request(t, 1)
	inst, err := p.Provision(context.Background(), req)
	if err != nil || nodeOf(inst) == "pve2" {
		t.Fatalf("instance %+v %v", inst, err)
	}
	s.Update(t, func(st *pve.State) error { return st.SetNodeOnline("pve2") })
	assertFound(t, p, req.ContractID, inst.ExternalID)
	if vm := simVMs(t, s)[100]; vm == nil || vm.Lock() != "clone" {
		t.Fatalf("leftover: %+v", vm)
	}
	if !strings.Contains(logs.String(), "Remove it as root on pve2: qm unlock 100 && qm destroy 100 --purge") {
		t.Errorf("no instructions logged:\n%s", logs.String())
	}
}

// New VMs have no statistics in /cluster/resources for a while (pvestatd
// runs every 10 s): lookups still find them, through the node's own list.
func TestClusterFindsVMsWithoutStatistics(t *testing.T) {
	tm := pve.FastTiming()
	tm.Stats = pve.Duration(time.Hour)
	s := pveapi.StartTest(t, pveapi.TestOptions{Nodes: 3, NodeTemplates: true, Timing: &tm})
	p := newClusterProv(t, s, nil)
	// Without statistics a new VM counts through its reservation only
	// while it is being made: the test places one at a time.
	req := request(t, 1)
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	calls := s.Server.Calls()["GET /nodes/{node}/qemu"]
	assertFound(t, p, req.ContractID, inst.ExternalID)
	if got := s.Server.Calls()["GET /nodes/{node}/qemu"]; got != calls+2 {
		t.Errorf("node VM lists: %d, want %d (one per lookup, of the one node with a new VM)", got, calls+2)
	}
	// A second provision of the same contract finds and reuses it.
	again, err := p.Provision(context.Background(), req)
	if err != nil || again.ExternalID != inst.ExternalID {
		t.Fatalf("again: %+v %v", again, err)
	}
}

// Without Sys.Audit on the nodes their load is hidden: placement says
// which grant is missing.
func TestClusterNeedsNodeAudit(t *testing.T) {
	s := startCluster(t, false)
	p := newClusterProv(t, s, nil)
	s.Update(t, func(st *pve.State) error {
		st.ACL = slices.DeleteFunc(st.ACL, func(e pve.ACLEntry) bool { return e.Path == "/nodes" })
		return nil
	})
	_, err := p.Provision(context.Background(), request(t, 1))
	if err == nil || !strings.Contains(err.Error(), "pve1: its size and load are hidden from the API token; grant it Sys.Audit on the nodes: pveum acl modify /nodes --roles PVEAuditor --users dcagent@pve --tokens 'dcagent@pve!sim'") {
		t.Fatalf("error: %v", err)
	}
}

// A PUT that pveproxy cannot forward (595, empty body) is an error, not
// the success go-proxmox would read into it.
func TestUnforwardedRequestIsAnError(t *testing.T) {
	s := startCluster(t, false)
	p := newClusterProv(t, s, nil)
	s.Update(t, func(st *pve.State) error { return st.SetNodeOffline("pve2", false) })
	err := p.vm("pve2", 9001).ConfigSync(context.Background())
	if err == nil || unreachableNode(err) != "pve2" || !strings.Contains(err.Error(), "could not reach node pve2 (595 No route to host)") {
		t.Fatalf("error: %v", err)
	}
	var names []string
	for _, e := range p.placementNodes(mustView(t, p)) {
		names = append(names, e)
	}
	sort.Strings(names)
	if !slices.Equal(names, []string{"pve1", "pve2", "pve3"}) {
		t.Errorf("auto nodes: %v", names)
	}
}

func mustView(t *testing.T, p *Provisioner) *clusterView {
	t.Helper()
	v, err := p.view(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestAbandonedProvisionLeavesTheVM: the agent abandons a provision (its
// lock is gone: provisioners.ErrAbandoned) while the clone still runs, or
// while the provision, its clone timed out, waits to remove the VM:
// Provision returns and removes nothing; the VM is left for the agent
// that holds the lock now.
func TestAbandonedProvisionLeavesTheVM(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cloneTimeout time.Duration
		// abandonWhen holds once the provision is where it is abandoned.
		abandonWhen func(s *pveapi.TestSim, cloning bool) bool
	}{
		{"mid-clone", 5 * time.Second, func(_ *pveapi.TestSim, cloning bool) bool { return cloning }},
		{"mid-cleanup", 50 * time.Millisecond, func(s *pveapi.TestSim, cloning bool) bool {
			return cloning && s.Server.Calls()["GET /nodes/{node}/qemu/{vmid}/status/current"] > 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startCluster(t, true)
			p := newClusterProv(t, s, func(_ *config.ProxmoxConfig, o *Options) { o.CloneTimeout = tc.cloneTimeout })
			s.Update(t, func(st *pve.State) error { st.Faults.HeldTasks = []string{"qmclone"}; return nil })
			ctx, cancel := context.WithCancelCause(context.Background())
			req := memRequest(t, 1, 2)
			done := make(chan error, 1)
			go func() {
				_, err := p.Provision(ctx, req)
				done <- err
			}()
			named := func(locked bool) (n int) {
				s.Update(t, func(st *pve.State) error {
					for _, vm := range st.VMs {
						if vm.Name() == provisioners.InstanceName(req.ContractID) && (!locked || vm.Lock() == "clone") {
							n++
						}
					}
					return nil
				})
				return n
			}
			for !tc.abandonWhen(s, named(true) == 1) {
				time.Sleep(5 * time.Millisecond)
			}
			cancel(fmt.Errorf("%w: test", provisioners.ErrAbandoned))
			// The clone may finish now: a cleanup would then remove the VM.
			s.Update(t, func(st *pve.State) error { st.Faults.HeldTasks = nil; return nil })
			if err := <-done; err == nil {
				t.Fatal("an abandoned provision succeeded")
			}
			if n := named(false); n != 1 {
				t.Fatalf("the abandoned provision left %d VMs, want its one; calls:\n%s", n, s.Server.CallsReport())
			}
		})
	}
}

// TestHealthCheckManyReadsTheClusterOnce: one read of /cluster/resources
// answers for running and stopped VMs, and agrees with HealthCheck; VMs it
// cannot vouch for (on a node that is down, a wrong node in the id, gone)
// are left out for HealthCheck to judge.
func TestHealthCheckManyReadsTheClusterOnce(t *testing.T) {
	s := startCluster(t, true)
	p := newClusterProv(t, s, nil)
	s.Update(t, func(st *pve.State) error {
		for i, node := range []string{"pve1", "pve2", "pve3", "pve1"} {
			vmid := 500 + i
			st.VMs[vmid] = &pve.VM{VMID: vmid, Node: node, Status: "running", PID: 7000 + i, StartedAt: time.Now().Add(-time.Hour),
				Config: map[string]string{"name": provisioners.InstanceName(contractID(i)), "memory": "1024", "tags": Tag}}
		}
		st.VMs[503].Status, st.VMs[503].PID = "stopped", 0
		return st.SetNodeOffline("pve3", false)
	})
	ids := []string{"pve1/500", "pve2/501", "pve3/502", "pve1/503", "pve2/500", "pve1/599"}
	before := s.Server.Requests()
	got, err := p.HealthCheckMany(context.Background(), ids)
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Server.Requests() - before; n != 1 {
		t.Errorf("%d requests for %d VMs, want 1", n, len(ids))
	}
	if h := got["pve1/500"]; h.Status != provisioners.Healthy || h.UptimeSeconds < 3600 {
		t.Errorf("running VM: %+v", h)
	}
	if h := got["pve2/501"]; h.Status != provisioners.Healthy {
		t.Errorf("running VM on pve2: %+v", h)
	}
	if h := got["pve1/503"]; h.Status != provisioners.Unhealthy || !strings.Contains(h.Reason, "stopped") {
		t.Errorf("stopped VM: %+v", h)
	}
	for _, id := range []string{"pve3/502", "pve2/500", "pve1/599"} {
		if h, ok := got[id]; ok {
			t.Errorf("%s: vouched for %+v; HealthCheck should judge it", id, h)
		}
	}
	for _, id := range []string{"pve1/500", "pve1/503"} {
		one, err := p.HealthCheck(context.Background(), id)
		if err != nil || one.Status != got[id].Status {
			t.Errorf("%s: HealthCheck %+v %v, batch %+v", id, one, err, got[id])
		}
	}
}

// A single node with the least-privilege agent token is answered by the
// batch too (its node entry shows online).
func TestHealthCheckManySingleNode(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, nil)
	s.Update(t, func(st *pve.State) error {
		st.VMs[500] = &pve.VM{VMID: 500, Node: "pve1", Status: "running", PID: 7000, StartedAt: time.Now(),
			Config: map[string]string{"name": provisioners.InstanceName(contractID(0)), "memory": "1024", "tags": Tag}}
		return nil
	})
	got, err := p.HealthCheckMany(context.Background(), []string{"pve1/500"})
	if err != nil || got["pve1/500"].Status != provisioners.Healthy {
		t.Fatalf("%+v %v", got, err)
	}
}
