package proxmoxe2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestProxmoxOnBothProfiles runs the real binary with the Proxmox backend
// against each dc-api profile: the heartbeat's inventory (the live API's
// ResourceInventory: templates as {vmid,name}, storage types, GPUs the
// token may see) is accepted every time; the VM is provisioned with a root
// password only the requester opens; it is health-checked; a paused
// contract's VM is shut down and kept, started again when it resumes; a
// cancelled one is removed.
func TestProxmoxOnBothProfiles(t *testing.T) {
	for _, prof := range e2eutil.Profiles {
		t.Run(prof.Name, func(t *testing.T) {
			e := newE2EWith(t, setup{profile: prof})
			// A token that may read the node's status and PCI devices
			// (PVEAuditor), and a GPU to pass through.
			e.sim.Update(t, func(st *pve.State) error {
				user, _, _ := strings.Cut(e.sim.TokenID, "!")
				st.ACL = append(st.ACL, pve.ACLEntry{Path: "/", Type: "token", UGID: e.sim.TokenID, Role: "PVEAuditor", Propagate: true},
					pve.ACLEntry{Path: "/", Type: "user", UGID: user, Role: "PVEAuditor", Propagate: true})
				return st.AddGPU("pve1", pve.PCIDevice{ID: "0000:41:00.0", Class: "0x030000", Vendor: "0x10de", VendorName: "NVIDIA Corporation",
					Device: "0x2684", DeviceName: "AD102 [GeForce RTX 4090]", IOMMUGroup: 30})
			})
			a := e.run()
			requester, _ := identity.GenerateKey()
			cid := e.contract(apitest.ContractSpec{CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("2 GB"), StorageCapacity: apitest.Ptr("20 GB"),
				RequesterPubkey: apitest.Ptr(identity.PublicHex(requester))})
			e.api.WaitForContract(cid, time.Minute, func(c *store.Contract) bool {
				return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
			}, "provisioned")
			d, _ := e.api.InstanceDetails(cid)
			pw, err := identity.Open(d.RootPassword, requester)
			if d.ExternalID != "pve1/100" || err != nil || len(pw) < 16 {
				t.Fatalf("details %+v: the requester cannot open the password: %v", d, err)
			}

			// The inventory the heartbeat carries, stored by the server.
			var res *dcapi.Resources
			waitFor(t, "a heartbeat with the inventory", func() bool {
				res = e.api.AgentStatus(e.prov).Resources
				return res != nil && len(res.GPUDevices) == 1
			})
			if res.CPUThreads != 16 || res.CPUCores != 16 || res.CPUModel == nil || res.MemoryTotalMB == 0 || len(res.Templates) != 1 || res.Templates[0].VMID != 9000 ||
				len(res.StoragePools) != 1 || res.StoragePools[0].StorageType != "lvmthin" || res.GPUDevices[0].PCIID != "0000:41:00.0" {
				t.Fatalf("inventory %+v", res)
			}

			// Health, from the VM itself.
			waitFor(t, "a healthy check", func() bool {
				recs := e.api.HealthChecks(cid)
				return len(recs) > 0 && recs[len(recs)-1].Status == dcapi.HealthHealthy
			})

			// Paused: shut down and kept; resumed: started.
			if _, err := e.api.Store.PauseContract(context.Background(), cid, "stripe_dispute:du_7", e.api.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the VM stopped", func() bool { vm := e.vms()[100]; return vm != nil && vm.Status == "stopped" })
			if _, err := e.api.Store.ResumeContract(context.Background(), cid, e.api.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the VM running again", func() bool { vm := e.vms()[100]; return vm != nil && vm.Status == "running" })
			if len(e.vms()) != 1 {
				t.Fatalf("VMs %v", e.vms())
			}

			// Cancelled: removed, and reported terminated.
			e.api.CancelContract(cid)
			e.waitNoVMs(time.Minute)
			waitFor(t, "terminated reported", func() bool { return e.api.Contract(cid).TerminatedAtNs != nil })
			a.stop(t)
			if all, ok := e.api.CountRequests("POST", "/heartbeat", 0), e.api.CountRequests("POST", "/heartbeat", 200); all == 0 || all != ok {
				t.Fatalf("%d of %d heartbeats refused", all-ok, all)
			}
		})
	}
}

// A transient Proxmox failure (a clone the storage refused once) is
// retried by the agent, not reported: on the live API a reported failure
// refunds the tenant.
func TestProxmoxTransientFailureRetried(t *testing.T) {
	for _, prof := range e2eutil.Profiles {
		t.Run(prof.Name, func(t *testing.T) {
			e := newE2EWith(t, setup{profile: prof})
			e.sim.Update(t, func(st *pve.State) error {
				st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: "clone failed: storage 'local-lvm' is offline", Count: 1}}
				return nil
			})
			a := e.run()
			cid := e.contract(apitest.ContractSpec{})
			c := e.api.WaitForContract(cid, time.Minute, func(c *store.Contract) bool {
				return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
			}, "provisioned")
			if c.FailureCount != 0 || len(e.vms()) != 1 {
				t.Fatalf("%d failures reported, VMs %v", c.FailureCount, e.vms())
			}
			a.stop(t)
		})
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, time.Minute, what, cond)
}
