package proxmox

import (
	"context"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// provisionedVM is a simulated node with the VM of contract 1 on it, and
// the provisioner that made it.
func provisionedVM(t *testing.T) (*pveapi.TestSim, *Provisioner, provisioners.Instance) {
	t.Helper()
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, nil)
	inst, err := p.Provision(context.Background(), request(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	return s, p, inst
}

// Pause shuts a contract's VM down and keeps it (disks and config);
// Resume starts it again; both are idempotent; a VM that is not a
// dc-agent VM is refused.
func TestPauseResume(t *testing.T) {
	s, p, inst := provisionedVM(t)
	ctx := context.Background()
	for range 2 {
		if err := p.Pause(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		vm := simVMs(t, s)[100]
		if vm == nil || vm.Status != "stopped" || !strings.Contains(vm.Config["scsi0"], "vm-100-disk-0") {
			t.Fatalf("after pause: %+v", vm)
		}
	}
	// The shutdown was a clean one (qmshutdown), not a hard stop.
	var kinds []string
	s.Update(t, func(st *pve.State) error {
		for _, task := range st.Tasks {
			kinds = append(kinds, task.Type)
		}
		return nil
	})
	if !strings.Contains(strings.Join(kinds, " "), "qmshutdown") || strings.Contains(strings.Join(kinds, " "), "qmstop") {
		t.Errorf("tasks %v: want a qmshutdown and no qmstop", kinds)
	}
	for range 2 {
		if err := p.Resume(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		if vm := simVMs(t, s)[100]; vm.Status != "running" {
			t.Fatalf("after resume: %s", vm.Status)
		}
	}
	if h, err := p.HealthCheck(ctx, inst.ExternalID); err != nil || h.Status != "healthy" {
		t.Fatalf("health after resume: %+v %v", h, err)
	}
	// The template (not a dc-<contract> VM) is never stopped.
	if err := p.Pause(ctx, "pve1/9000"); err == nil || !strings.Contains(err.Error(), "not a dc-agent VM") {
		t.Fatalf("pausing the template: %v", err)
	}
}

// A guest that does not shut down is stopped hard.
func TestPauseStopsAGuestThatHangs(t *testing.T) {
	s, p, inst := provisionedVM(t)
	ctx := context.Background()
	s.Update(t, func(st *pve.State) error {
		st.Faults.TaskFailures = append(st.Faults.TaskFailures, pve.TaskFailure{Type: "qmshutdown", ExitStatus: "VM quit/powerdown failed - got timeout", Count: 1})
		return nil
	})
	if err := p.Pause(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	if vm := simVMs(t, s)[100]; vm.Status != "stopped" {
		t.Fatalf("status %s", vm.Status)
	}
}

// The node's status (Sys.Audit on the node, which the agent's role has)
// gives the CPU's model, cores and clock; the GPUs need Sys.Audit on /
// (PVEAuditor there): without it, none.
func TestInventoryDetailsAndGPUs(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, nil)
	ctx := context.Background()
	s.Update(t, func(st *pve.State) error {
		return st.AddGPU("pve1", pve.PCIDevice{ID: "0000:41:00.0", Class: "0x030000", Vendor: "0x10de", VendorName: "NVIDIA Corporation",
			Device: "0x2684", DeviceName: "AD102 [GeForce RTX 4090]", IOMMUGroup: 30})
	})
	res, err := p.Resources(ctx)
	if err != nil || res.CPUThreads != 16 || len(res.GPUs) != 0 {
		t.Fatalf("least privilege: %+v %v", res, err)
	}
	s.Update(t, func(st *pve.State) error {
		// A privilege-separated token has what both it and its user have.
		user, _, _ := strings.Cut(s.TokenID, "!")
		st.ACL = append(st.ACL, pve.ACLEntry{Path: "/", Type: "token", UGID: s.TokenID, Role: "PVEAuditor", Propagate: true},
			pve.ACLEntry{Path: "/", Type: "user", UGID: user, Role: "PVEAuditor", Propagate: true})
		return nil
	})
	res, err = p.Resources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.CPUModel == "" || res.CPUCores != 16 || res.CPUThreads != 16 || res.CPUMhz != 2999 || res.MemoryMB <= 0 {
		t.Errorf("node status: %+v", res)
	}
	if len(res.GPUs) != 1 || res.GPUs[0].PCIID != "0000:41:00.0" || res.GPUs[0].Vendor != "NVIDIA Corporation" || !strings.Contains(res.GPUs[0].Name, "4090") {
		t.Errorf("GPUs: %+v", res.GPUs)
	}
}
