package pve

import (
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

func clusterStore(t *testing.T, opts InitOptions) (*Store, *simkit.Clock) {
	t.Helper()
	opts.Nodes, opts.Template, opts.AgentToken = 3, 9000, true
	s := newStore(t, opts)
	return s, withClock(s)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func byID(rs []map[string]any) map[string]map[string]any {
	out := map[string]map[string]any{}
	for _, r := range rs {
		out[r["id"].(string)] = r
	}
	return out
}

// The entries have the keys of a real cluster's answer (go-proxmox
// v0.8.2 tests/mocks/pve9x/cluster.go, recorded from PVE 9), for the
// token as for root.
func TestClusterResourcesShape(t *testing.T) {
	s, _ := clusterStore(t, InitOptions{SharedStorage: true, NodeTemplates: true})
	update(t, s, func(st *State) error {
		if _, err := st.Clone(Root, "pve2", 9001, CloneParams{NewID: 100, Name: "web"}); err != nil {
			return err
		}
		st.advanceAll()
		rs := byID(st.ClusterResourcesData(AgentTokenID, ""))
		want := map[string][]string{
			// The fixture's node entry, which also has "cgroup-mode".
			"node/pve2":              {"cgroup-mode", "cpu", "disk", "id", "level", "maxcpu", "maxdisk", "maxmem", "mem", "node", "status", "type", "uptime"},
			"storage/pve2/local-lvm": {"content", "disk", "id", "maxdisk", "node", "plugintype", "shared", "status", "storage", "type"},
			"qemu/100": {"cpu", "disk", "diskread", "diskwrite", "id", "maxcpu", "maxdisk", "maxmem", "mem", "name", "netin", "netout",
				"node", "status", "template", "type", "uptime", "vmid"},
		}
		for id, k := range want {
			if got := keys(rs[id]); !slices.Equal(got, k) {
				t.Errorf("%s: keys %v, want %v", id, got, k)
			}
		}
		if rs["qemu/9001"]["template"] != 1 || rs["qemu/100"]["template"] != 0 || rs["qemu/100"]["node"] != "pve2" {
			t.Errorf("templates: %v %v", rs["qemu/9001"], rs["qemu/100"])
		}
		if rs["storage/pve3/ceph-vm"]["shared"] != 1 || rs["storage/pve3/local-lvm"]["shared"] != 0 {
			t.Errorf("shared flags: %v %v", rs["storage/pve3/ceph-vm"], rs["storage/pve3/local-lvm"])
		}
		// Only Datastore.Audit shows a storage: the token has none on local.
		if rs["storage/pve1/local"] != nil || byID(st.ClusterResourcesData(Root, "storage"))["storage/pve1/local"] == nil {
			t.Error("storage 'local' must show for root only")
		}
		return nil
	})
}

// Without Sys.Audit on a node, /nodes and /cluster/resources list it
// without its size and load (API2Tools::extract_node_stats).
func TestNodeStatisticsNeedSysAudit(t *testing.T) {
	s, _ := clusterStore(t, InitOptions{})
	update(t, s, func(st *State) error {
		st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool { return e.Path == "/nodes" })
		for _, d := range append(st.NodesData(AgentTokenID), st.ClusterResourcesData(AgentTokenID, "node")...) {
			if d["status"] != "online" || d["maxmem"] != nil || d["mem"] != nil || d["maxcpu"] != nil {
				t.Errorf("without Sys.Audit: %v", d)
			}
		}
		if d := st.NodesData(Root)[0]; d["maxmem"] == nil || d["ssl_fingerprint"] == "" {
			t.Errorf("root: %v", d)
		}
		return nil
	})
}

// An offline node: status offline at once, its last figures for five
// minutes, then none; its guests keep their last status meanwhile.
func TestOfflineNodeStatisticsGoStaleThenExpire(t *testing.T) {
	s, c := clusterStore(t, InitOptions{NodeTemplates: true})
	update(t, s, func(st *State) error {
		st.VMs[150] = &VM{VMID: 150, Node: "pve3", Status: "running", Config: map[string]string{"name": "db", "memory": "4096"}}
		if err := st.SetNodeOffline("pve3", true); err != nil {
			return err
		}
		rs := byID(st.ClusterResourcesData(Root, ""))
		if n := rs["node/pve3"]; n["status"] != "offline" || n["maxmem"] == nil || n["mem"] != nil || n["uptime"] != nil {
			t.Errorf("stale node: %v", n)
		}
		if v := rs["qemu/150"]; v["status"] != "running" || v["name"] != "db" {
			t.Errorf("stale guest: %v", v)
		}
		if st.VMs[150].Status != "stopped" {
			t.Error("power loss must stop the guest")
		}
		return nil
	})
	c.Add(statsExpiry + time.Second)
	update(t, s, func(st *State) error {
		rs := byID(st.ClusterResourcesData(Root, ""))
		if n := rs["node/pve3"]; n["status"] != "offline" || n["maxmem"] != nil {
			t.Errorf("expired node: %v", n)
		}
		if got := keys(rs["qemu/150"]); !slices.Equal(got, []string{"id", "node", "status", "type", "vmid"}) || rs["qemu/150"]["status"] != "unknown" {
			t.Errorf("expired guest: %v", rs["qemu/150"])
		}
		if d := rs["storage/pve3/local-lvm"]; d["status"] != "unknown" || d["maxdisk"] != nil {
			t.Errorf("expired storage: %v", d)
		}
		return nil
	})
}

// A new guest has no statistics until pvestatd's next round.
func TestNewGuestStatisticsLag(t *testing.T) {
	tm := FastTiming()
	tm.Stats = Duration(10 * time.Second)
	s, c := clusterStore(t, InitOptions{Timing: &tm})
	update(t, s, func(st *State) error {
		_, err := st.Clone(Root, "pve1", 9000, CloneParams{NewID: 100, Name: "web"})
		if v := byID(st.ClusterResourcesData(Root, "vm"))["qemu/100"]; v["name"] != nil || v["status"] != "unknown" || v["lock"] != "clone" {
			t.Errorf("new guest: %v", v)
		}
		return err
	})
	c.Add(11 * time.Second)
	update(t, s, func(st *State) error {
		if v := byID(st.ClusterResourcesData(Root, "vm"))["qemu/100"]; v["name"] != "web" {
			t.Errorf("after a round: %v", v)
		}
		return nil
	})
}

// Quorum, cluster status, maintenance, and what a node lost mid-task
// leaves: a power loss kills the clone (its VM stays locked), a node cut
// off finishes it without quorum (same); back after a power loss, the
// node starts its onboot guests.
func TestNodeLossAndReturn(t *testing.T) {
	for _, powerLoss := range []bool{true, false} {
		s, c := clusterStore(t, InitOptions{NodeTemplates: true})
		var upid string
		update(t, s, func(st *State) error {
			st.VMs[150] = &VM{VMID: 150, Node: "pve2", Status: "running", Config: map[string]string{"name": "db", "onboot": "1"}}
			st.VMs[151] = &VM{VMID: 151, Node: "pve2", Status: "running", Config: map[string]string{"name": "tmp"}}
			st.Faults.Outages = []Outage{{Node: "pve2", OnTask: "qmclone", PowerLoss: powerLoss}}
			var err error
			upid, err = st.Clone(AgentTokenID, "pve2", 9001, CloneParams{NewID: 100, Name: "web"})
			return err
		})
		c.Add(time.Second)
		update(t, s, func(st *State) error {
			st.advanceAll()
			status, err := st.ClusterStatusData(Root, "pve1")
			if err != nil {
				return err
			}
			if status[0]["quorate"] != 1 || status[2]["name"] != "pve2" || status[2]["online"] != 0 || status[1]["local"] != 1 {
				t.Errorf("cluster status: %v", status)
			}
			task := st.Tasks[upid]
			if powerLoss && (task.Status != "stopped" || task.ExitStatus != "unexpected status") {
				t.Errorf("power loss: task %s %s", task.Status, task.ExitStatus)
			}
			if !powerLoss && task.ExitStatus != "clone failed: cluster not ready - no quorum?" {
				t.Errorf("cut off: task %s %s", task.Status, task.ExitStatus)
			}
			if vm := st.VMs[100]; vm == nil || vm.Lock() != "clone" {
				t.Errorf("the clone's VM must stay locked: %+v", vm)
			}
			return st.SetNodeOnline("pve2")
		})
		update(t, s, func(st *State) error {
			running := st.VMs[150].Status == "running" && st.VMs[151].Status == "running"
			if powerLoss && (st.VMs[150].Status != "running" || st.VMs[151].Status != "stopped") {
				t.Errorf("after the reboot: onboot guest %s, other %s", st.VMs[150].Status, st.VMs[151].Status)
			}
			if !powerLoss && !running {
				t.Error("a node cut off keeps its guests running")
			}
			return nil
		})
	}
}

func TestQuorumAndMaintenance(t *testing.T) {
	s, _ := clusterStore(t, InitOptions{})
	update(t, s, func(st *State) error {
		if err := st.SetNodeMaintenance("pve3", true); err != nil {
			return err
		}
		if err := st.SetNodeOffline("pve2", false); err != nil {
			return err
		}
		rs := byID(st.ClusterResourcesData(AgentTokenID, "node"))
		if rs["node/pve1"]["hastate"] != "online" || rs["node/pve2"]["hastate"] != "unknown" || rs["node/pve3"]["hastate"] != "maintenance" {
			t.Errorf("HA states: %v", rs)
		}
		if !st.Quorate() {
			t.Error("2 of 3 nodes are quorate")
		}
		if err := st.SetNodeOffline("pve3", false); err != nil {
			return err
		}
		if st.Quorate() {
			t.Error("1 of 3 nodes is not quorate")
		}
		if err := st.SetNodeOffline("pve9", false); err == nil || !strings.Contains(err.Error(), "hostname lookup 'pve9' failed") {
			t.Errorf("unknown node: %v", err)
		}
		return nil
	})
}

// Placement across nodes: each node's local storage has its own size;
// clones to a shared storage contend cluster-wide.
func TestNodeStorageAndSharedContention(t *testing.T) {
	s, _ := clusterStore(t, InitOptions{SharedStorage: true, TemplateStorage: SharedStorageID})
	update(t, s, func(st *State) error {
		if err := st.SetNodeStorageCapacity("local-lvm", "pve2", 50<<30); err != nil {
			return err
		}
		if st.StorageTotal("local-lvm", "pve2") != 50<<30 || st.StorageTotal("local-lvm", "pve3") != 400<<30 {
			t.Error("per-node capacity")
		}
		if err := st.SetNodeStorageCapacity(SharedStorageID, "pve2", 1); err == nil {
			t.Error("a shared storage has one size")
		}
		for i, target := range []string{"pve2", "pve3"} {
			if _, err := st.Clone(AgentTokenID, "pve1", 9000, CloneParams{NewID: 100 + i, Name: "c", Target: target}); err != nil {
				return err
			}
		}
		if st.PeakClones[SharedStorageID] != 2 {
			t.Errorf("peak clones %v", st.PeakClones)
		}
		// A node's local storage cannot be the target of a clone elsewhere.
		_, err := st.Clone(AgentTokenID, "pve1", 9000, CloneParams{NewID: 110, Name: "c", Target: "pve2", Storage: "local-lvm", Full: ptr(true)})
		if err == nil || err.Error() != "can't clone to non-shared storage 'local-lvm'" {
			t.Errorf("full clone to local storage elsewhere: %v", err)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }

// advanceAll finishes every running task (test helper).
func (st *State) advanceAll() {
	for _, t := range st.Tasks {
		if t.Status == "running" {
			st.finishTask(t)
		}
	}
}
