package proxmox

import (
	"context"
	"fmt"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Pause implements provisioners.Pauser: the contract is paused (a payment
// dispute), so the VM is stopped and kept. A clean ACPI shutdown first
// (POST …/status/shutdown), a hard stop if the guest does not go down
// within the task timeout; a VM that is stopped already is success. Only
// dc-<contract id> VMs are touched.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	vm, vmid, err := p.agentVM(ctx, externalID, "stop")
	if err != nil {
		return err
	}
	if vm.Status == "stopped" {
		return nil
	}
	task, err := vm.Shutdown(ctx)
	if err == nil {
		err = p.waitTask(ctx, task, fmt.Sprintf("shut down VM %d", vmid), p.opts.TaskTimeout)
	}
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	p.log.Info("the guest did not shut down; stopping the VM", "vmid", vmid, "err", err)
	task, err = vm.Stop(ctx)
	if err != nil {
		return apiError(fmt.Sprintf("stop VM %d", vmid), err)
	}
	return p.waitTask(ctx, task, fmt.Sprintf("stop VM %d", vmid), p.opts.TaskTimeout)
}

// Resume implements provisioners.Pauser: the VM of a resumed contract is
// started again; a running one is success. Only dc-<contract id> VMs
// are touched.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	vm, vmid, err := p.agentVM(ctx, externalID, "start")
	if err != nil {
		return err
	}
	if vm.Status == "running" {
		return nil
	}
	task, err := vm.Start(ctx)
	if err != nil {
		return apiError(fmt.Sprintf("start VM %d", vmid), err)
	}
	return p.waitTask(ctx, task, fmt.Sprintf("start VM %d", vmid), p.opts.TaskTimeout)
}

// agentVM reads the current status of the VM externalID names, refusing
// one that is not a dc-<contract id> VM (what: the action refused).
func (p *Provisioner) agentVM(ctx context.Context, externalID, what string) (*proxmox.VirtualMachine, int, error) {
	node, vmid, err := p.parseExternalID(externalID)
	if err != nil {
		return nil, 0, err
	}
	vm := p.vm(node, vmid)
	if err := p.c.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", node, vmid), vm); err != nil {
		return nil, 0, apiError(fmt.Sprintf("read VM %d", vmid), err)
	}
	if provisioners.ContractIDFromName(vm.Name) == "" {
		return nil, 0, fmt.Errorf("VM %d on %s is named %q, which is not a dc-agent VM; refusing to %s it", vmid, node, vm.Name, what)
	}
	return vm, vmid, nil
}

var _ provisioners.Pauser = (*Provisioner)(nil)
