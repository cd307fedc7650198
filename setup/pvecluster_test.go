package setup

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
)

// simCluster is a 3-node simulated cluster with template 9000 (as setup
// builds it) on local-lvm of pve1, and a runner of the simulated host
// tools on pve1.
func simCluster(t *testing.T) (*pve.Store, PVERun, *[]string) {
	t.Helper()
	dir := t.TempDir()
	tm := pve.FastTiming()
	store, err := pve.Create(dir, pve.InitOptions{Nodes: 3, Template: 9000, AgentToken: true, Timing: &tm})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Update(func(st *pve.State) error {
		st.VMs[9000].Config["tags"] = "dc-agent;dc-os-ubuntu-24.04;dc-r1;dc-template"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var ran []string
	run := func(_ context.Context, args ...string) ([]byte, error) {
		ran = append(ran, strings.Join(args, " "))
		var out, errb bytes.Buffer
		if code := pvecli.Main(args, pvecli.Env{Stdout: &out, Stderr: &errb, StateDir: dir, Node: "pve1"}); code != 0 {
			return nil, fmt.Errorf("%s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(errb.String()))
		}
		return out.Bytes(), nil
	}
	return store, run, &ran
}

func templatesByNode(t *testing.T, store *pve.Store) map[string][]int {
	t.Helper()
	out := map[string][]int{}
	if err := store.View(func(st *pve.State) error {
		for _, id := range st.VMIDs() {
			vm := st.VMs[id]
			out[vm.Node] = append(out[vm.Node], id)
			if id != 9000 && (!vm.IsTemplate() || vm.Config["tags"] != "dc-agent;dc-os-ubuntu-24.04;dc-r1;dc-template" || vm.Name() != "ubuntu-2404-cloudinit") {
				t.Errorf("VM %d on %s: template %v, tags %q, name %q", id, vm.Node, vm.IsTemplate(), vm.Config["tags"], vm.Name())
			}
			for _, v := range st.Volumes {
				if v.VMID == id && v.Node != vm.Node {
					t.Errorf("volume %s of VM %d is on %s, the VM on %s", v.VolID, id, v.Node, vm.Node)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCopyTemplateToEveryNode(t *testing.T) {
	store, run, ran := simCluster(t)
	ctx := context.Background()
	c, err := ReadCluster(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Online, []string{"pve1", "pve2", "pve3"}) || c.Shared["local-lvm"] || len(c.VMs) != 1 {
		t.Fatalf("cluster: %+v", c)
	}
	copies, err := CopyTemplate(ctx, run, c, 9000, 9100)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(copies, map[string]int{"pve2": 9100, "pve3": 9101}) {
		t.Fatalf("copies %v", copies)
	}
	if got := templatesByNode(t, store); !slices.Equal(got["pve2"], []int{9100}) || !slices.Equal(got["pve3"], []int{9101}) {
		t.Fatalf("templates: %v", got)
	}
	// Again: nothing to do.
	c, _ = ReadCluster(ctx, run)
	*ran = nil
	if again, err := CopyTemplate(ctx, run, c, 9000, 9100); err != nil || !maps.Equal(again, copies) || len(*ran) != 0 {
		t.Fatalf("second run: %v %v, ran %q", again, err, *ran)
	}
}

// A run interrupted mid-copy leaves a VM marked as building; the next run
// removes it and copies again. An offline node is left for later.
func TestCopyTemplateRecovers(t *testing.T) {
	store, run, _ := simCluster(t)
	ctx := context.Background()
	dir := store.Dir()
	if err := pvecli.WriteFaults(dir, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"qm migrate", "pve3"}, Action: "fail",
		Message: "migration aborted: storage migration failed: lvcreate failed", Count: 1}}}); err != nil {
		t.Fatal(err)
	}
	c, _ := ReadCluster(ctx, run)
	if _, err := CopyTemplate(ctx, run, c, 9000, 9100); err == nil || !strings.Contains(err.Error(), "copy template 9000 to node pve3 as 9101") {
		t.Fatalf("interrupted copy: %v", err)
	}
	c, _ = ReadCluster(ctx, run)
	copies, err := CopyTemplate(ctx, run, c, 9000, 9100)
	if err != nil || copies["pve2"] != 9100 || copies["pve3"] == 0 {
		t.Fatalf("recovered: %v %v", copies, err)
	}
	if got := templatesByNode(t, store); len(got["pve1"]) != 1 || len(got["pve3"]) != 1 {
		t.Fatalf("VMs by node after recovery: %v", got)
	}
	// pve3 offline and without a copy: skipped.
	if err := store.Update(func(st *pve.State) error {
		delete(st.VMs, copies["pve3"])
		return st.SetNodeOffline("pve3", false)
	}); err != nil {
		t.Fatal(err)
	}
	c, _ = ReadCluster(ctx, run)
	if got, err := CopyTemplate(ctx, run, c, 9000, 9100); err != nil || !maps.Equal(got, map[string]int{"pve2": 9100}) || !slices.Equal(c.Offline, []string{"pve3"}) {
		t.Fatalf("with pve3 offline: %v %v (%+v)", got, err, c)
	}
	if _, err := CopyTemplate(ctx, run, c, 9100, 9200); err != nil {
		t.Errorf("a copy is a template too: %v", err)
	}
	if _, err := CopyTemplate(ctx, run, c, 4242, 9200); err == nil || !strings.Contains(err.Error(), "VM 4242 is not a template of the cluster") {
		t.Errorf("unknown template: %v", err)
	}
}
