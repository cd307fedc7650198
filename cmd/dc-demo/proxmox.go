package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
)

// proxmoxBackend runs the agent's real Proxmox provisioner (go-proxmox over
// HTTPS, pinned certificate, least-privilege token) against the simulated
// Proxmox VE node of internal/sim: clones take seconds and guests boot
// before their agent reports an IP, as on a small real host.
//
// DEMO_PVE_TIMING=fast makes every task take milliseconds (tests).
type proxmoxBackend struct {
	sim *pveapi.Sim
}

func (b *proxmoxBackend) Start(ctx context.Context, dir string) (config.ProvisionerConfig, error) {
	timing := pve.DemoTiming()
	pollMs := 250
	switch v := os.Getenv("DEMO_PVE_TIMING"); v {
	case "", "demo":
	case "fast":
		timing = pve.FastTiming()
		pollMs = 50
	default:
		return config.ProvisionerConfig{}, fmt.Errorf("DEMO_PVE_TIMING=%q: use demo or fast", v)
	}
	store, err := pve.Create(filepath.Join(dir, "pve"), pve.InitOptions{Template: 9000, AgentToken: true, Timing: &timing})
	if err != nil {
		return config.ProvisionerConfig{}, err
	}
	var secret string
	if err := store.Update(func(st *pve.State) error {
		secret, _ = st.TokenSecret(pve.AgentTokenID)
		// Room for the demo's largest offering (1 TB disks).
		return st.SetStorageCapacity("local-lvm", 4<<40)
	}); err != nil {
		return config.ProvisionerConfig{}, err
	}
	secretFile := filepath.Join(dir, "pve-token-secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		return config.ProvisionerConfig{}, err
	}
	if b.sim, err = pveapi.Start(store, "pve1", "127.0.0.1:0", nil); err != nil {
		return config.ProvisionerConfig{}, err
	}
	return config.ProvisionerConfig{Type: config.TypeProxmox, Proxmox: &config.ProxmoxConfig{
		APIURL: b.sim.URL, APITokenID: pve.AgentTokenID, APITokenSecretFile: secretFile, Node: "pve1",
		TemplateVMID: 9000, Storage: "local-lvm", Bridge: "vmbr0", TLSFingerprint: b.sim.Fingerprint,
		LinkedClone: true, MaxParallelClones: 2, IPWaitAttempts: 60, IPWaitIntervalSec: 1, TaskPollIntervalMs: pollMs,
	}}, nil
}

func (b *proxmoxBackend) Describe() string {
	return "proxmox provisioner (go-proxmox) → simulated Proxmox VE 9 node pve1 at " + b.sim.URL
}

// Instances lists the VMs on the simulated node with their DHCP address.
func (b *proxmoxBackend) Instances() []string {
	var out []string
	_ = b.sim.Store.View(func(st *pve.State) error {
		for _, id := range st.VMIDs() {
			vm := st.VMs[id]
			if vm.IsTemplate() {
				continue
			}
			ip := "-"
			if _, mac, opts, err := pve.ParseNet(vm.Config["net0"]); err == nil {
				if br := st.Nodes[vm.Node].Bridges[opts["bridge"]]; br != nil && br.Leases[strings.ToUpper(mac)] != "" {
					ip = br.Leases[strings.ToUpper(mac)]
				}
			}
			name := vm.Name()
			if len(name) > 15 {
				name = name[:15] + "…"
			}
			out = append(out, fmt.Sprintf("%s/%d  %s  %-8s %s  %s", vm.Node, id, ip, vm.Status, name, vm.Config["scsi0"]))
		}
		return nil
	})
	return out
}

func (b *proxmoxBackend) Stop() {
	if b.sim != nil {
		_ = b.sim.Close()
	}
}
