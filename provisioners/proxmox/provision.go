package proxmox

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// templateInfo is what a provision needs to know about a template; it is
// read once per template and kept.
type templateInfo struct {
	vmid     int
	node     string // the node it is on
	name     string
	disk     string // boot disk key ("scsi0")
	size     int64  // boot disk bytes
	storage  string // boot disk storage
	storages []string
	memMB    int64
	cores    int64
	agent    bool
	template bool
	// noLink: linked clones failed on this template's storage; use full.
	noLink bool
}

// templateFor picks the template: instance_config/offering "template"
// (a name from [provisioner.proxmox.templates]) or "template_vmid", else
// template_vmid of the config.
func (p *Provisioner) templateFor(req provisioners.Request) (int, error) {
	if name := req.ConfigString("template", ""); name != "" {
		if id, ok := p.cfg.Templates[name]; ok {
			return id, nil
		}
		if id, err := strconv.Atoi(name); err == nil && id >= 100 {
			return id, nil
		}
		return 0, provisioners.Permanent(fmt.Errorf("template %q is not configured on this provider (%s); add it to [provisioner.proxmox.templates]", name, p.templateNames()))
	}
	if v, ok := req.Config["template_vmid"]; ok {
		switch x := v.(type) {
		case float64:
			if x >= 100 && x == float64(int(x)) {
				return int(x), nil
			}
		case string:
			if id, err := strconv.Atoi(x); err == nil && id >= 100 {
				return id, nil
			}
		}
		return 0, provisioners.Permanent(fmt.Errorf("template_vmid %v in the offering/instance config is not a VMID", v))
	}
	return p.cfg.TemplateVMID, nil
}

// templateNames lists the named templates, for messages.
func (p *Provisioner) templateNames() string {
	var names []string
	for n := range p.cfg.Templates {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return "none are named"
	}
	return "known: " + strings.Join(names, ", ")
}

// templateInfo reads (once) the config of the template on node.
func (p *Provisioner) templateInfo(ctx context.Context, vmid int, node string) (*templateInfo, error) {
	// One reader at a time, so a burst of provisions reads it once.
	p.tplMu.Lock()
	defer p.tplMu.Unlock()
	p.mu.Lock()
	ti := p.templates[vmid]
	p.mu.Unlock()
	if ti != nil && ti.node == node {
		return ti, nil
	}
	var cfg proxmox.VirtualMachineConfig
	if err := p.c.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/config", node, vmid), &cfg); err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil, provisioners.Permanent(fmt.Errorf("template VM %d does not exist on node %s; build it with `dc-agent setup proxmox` or fix template_vmid", vmid, node))
		}
		return nil, apiError(fmt.Sprintf("read template %d", vmid), err)
	}
	ti = &templateInfo{vmid: vmid, node: node, name: cfg.Name, template: bool(cfg.Template), agent: agentOn(cfg.Agent),
		memMB: int64(cfg.Memory), cores: 1}
	if cfg.Cores != nil {
		ti.cores = int64(*cfg.Cores)
	}
	if cfg.Sockets != nil {
		ti.cores *= int64(max(*cfg.Sockets, 1))
	}
	if cfg.Vcpus > 0 {
		ti.cores = int64(cfg.Vcpus)
	}
	if ti.memMB <= 0 {
		ti.memMB = 512
	}
	for _, m := range []map[string]string{cfg.SCSIs, cfg.VirtIOs, cfg.SATAs, cfg.IDEs} {
		for _, v := range m {
			file, _, _ := strings.Cut(v, ",")
			if sid, _, ok := strings.Cut(file, ":"); ok && !slices.Contains(ti.storages, sid) {
				ti.storages = append(ti.storages, sid)
			}
		}
	}
	sort.Strings(ti.storages)
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		v := driveValue(&cfg, k)
		if v == "" || strings.Contains(v, "media=cdrom") {
			continue
		}
		ti.disk = k
		file, opts, _ := strings.Cut(v, ",")
		ti.storage, _, _ = strings.Cut(file, ":")
		for _, o := range strings.Split(opts, ",") {
			if s, ok := strings.CutPrefix(o, "size="); ok {
				ti.size, _ = parseSize(s)
			}
		}
		break
	}
	if ti.disk == "" {
		return nil, provisioners.Permanent(fmt.Errorf("template %d has no boot disk (scsi0/virtio0/sata0); rebuild it with `dc-agent setup proxmox`", vmid))
	}
	p.mu.Lock()
	p.templates[vmid] = ti
	p.mu.Unlock()
	return ti, nil
}

func (p *Provisioner) forgetTemplate(vmid int) {
	p.mu.Lock()
	delete(p.templates, vmid)
	p.mu.Unlock()
}

func driveValue(cfg *proxmox.VirtualMachineConfig, key string) string {
	for _, m := range []map[string]string{cfg.SCSIs, cfg.VirtIOs, cfg.SATAs, cfg.IDEs} {
		if v, ok := m[key]; ok {
			return v
		}
	}
	return ""
}

func agentOn(v string) bool {
	first, _, _ := strings.Cut(v, ",")
	first = strings.TrimPrefix(first, "enabled=")
	return first == "1" || first == "true" || first == "yes" || first == "on"
}

// parseSize parses PVE's "32G"/"3584M" sizes.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty size")
	}
	mult := int64(1)
	switch s[len(s)-1] {
	case 'K':
		mult = 1 << 10
	case 'M':
		mult = 1 << 20
	case 'G':
		mult = 1 << 30
	case 'T':
		mult = 1 << 40
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, err
	}
	return int64(f * float64(mult)), nil
}

// Provision implements provisioners.Provisioner.
func (p *Provisioner) Provision(ctx context.Context, req provisioners.Request) (provisioners.Instance, error) {
	name := provisioners.InstanceName(req.ContractID)
	if req.ContractID == "" {
		return provisioners.Instance{}, provisioners.Permanent(errors.New("contract id is empty"))
	}
	var keys []string
	if k := strings.TrimSpace(req.RequesterSSHPubkey); k != "" {
		for _, line := range strings.Split(k, "\n") {
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err != nil {
				return provisioners.Instance{}, provisioners.Permanent(fmt.Errorf("requester SSH key is not an OpenSSH public key (%v); the requester must set a valid key like `ssh-ed25519 AAAA...`", err))
			}
			keys = append(keys, line)
		}
	}
	wantPassword := req.WantPassword && (p.cfg.SetRootPassword == nil || *p.cfg.SetRootPassword)
	if len(keys) == 0 && !wantPassword {
		return provisioners.Instance{}, provisioners.Permanent(errors.New("the contract has no SSH key and no password can be sealed for the requester, so nobody could log in"))
	}
	if req.PostProvisionScript != "" && p.postKey == nil {
		return provisioners.Instance{}, provisioners.Permanent(errors.New("the offering has a post_provision_script but [provisioner.proxmox] has no post_provision_key_file to run it with"))
	}
	if req.PostProvisionScript != "" {
		// Only for the script's run: runPostProvision takes it out of the
		// guest again as soon as the script is done.
		keys = append(keys, postKeyLine(p.postKey))
	}
	tplID, err := p.templateFor(req)
	if err != nil {
		return provisioners.Instance{}, err
	}
	if p.clustered() {
		return p.provisionCluster(ctx, req, name, keys, wantPassword, tplID)
	}
	req.Step("checking for an existing VM of this contract")
	existing, err := p.findByName(ctx, name)
	if err != nil {
		return provisioners.Instance{}, provisioners.Retryable(err)
	}
	if inst, ok, err := p.useExisting(ctx, req, existing, name, wantPassword); ok || err != nil {
		return inst, err
	}
	tpl, err := p.templateInfo(ctx, tplID, p.cfg.Node)
	if err != nil {
		return provisioners.Instance{}, err
	}
	if err := checkTemplate(tpl); err != nil {
		return provisioners.Instance{}, err
	}
	pl := &plan{node: p.cfg.Node, tpl: tpl, storage: tpl.storage, fullStorage: p.cfg.Storage}
	inst, vmid, err := p.build(ctx, req, pl, name, keys, wantPassword, nil)
	if err != nil {
		return provisioners.Instance{}, classify(p.cleanupAfter(ctx, pl, vmid, name, err))
	}
	return inst, nil
}

func checkTemplate(tpl *templateInfo) error {
	if !tpl.template {
		return provisioners.Permanent(fmt.Errorf("VM %d (%s) is not a template; convert it with `qm template %d` or fix template_vmid", tpl.vmid, tpl.name, tpl.vmid))
	}
	return nil
}

// useExisting reuses a complete VM of an earlier attempt or removes the
// unfinished ones (those on a node that answers).
func (p *Provisioner) useExisting(ctx context.Context, req provisioners.Request, existing []vmEntry, name string, wantPassword bool) (provisioners.Instance, bool, error) {
	for _, e := range existing {
		if !e.online {
			continue
		}
		if e.replacedBy == 0 {
			if inst, ok := p.reuse(ctx, req, e, wantPassword); ok {
				return inst, true, nil
			}
		}
		req.Step(fmt.Sprintf("removing the unfinished VM %d from an earlier attempt", e.vmid))
		if err := p.destroy(ctx, e.node, e.vmid, exactly(name)); err != nil {
			return provisioners.Instance{}, false, provisioners.Retryable(fmt.Errorf("remove unfinished VM %d of an earlier attempt: %w", e.vmid, err))
		}
	}
	return provisioners.Instance{}, false, nil
}

// provisionCluster places the VM on a node of the cluster; a node lost
// mid-provision is left for another (what it holds is removed once it is
// back: the new VM's replaces tag records it).
func (p *Provisioner) provisionCluster(ctx context.Context, req provisioners.Request, name string, keys []string, wantPassword bool, tplID int) (provisioners.Instance, error) {
	req.Step("checking for an existing VM of this contract")
	v, err := p.view(ctx, "")
	if err != nil {
		return provisioners.Instance{}, provisioners.Retryable(err)
	}
	existing, err := p.findInCluster(ctx, v, name)
	if err != nil {
		return provisioners.Instance{}, provisioners.Retryable(err)
	}
	if inst, ok, err := p.useExisting(ctx, req, existing, name, wantPassword); ok || err != nil {
		return inst, err
	}
	var replaces []int
	for _, e := range existing {
		if !e.online {
			replaces = append(replaces, e.vmid)
		}
	}
	excluded := map[string]string{}
	for {
		pl, err := p.place(ctx, v, tplID, req, excluded)
		if err != nil {
			return provisioners.Instance{}, classify(err)
		}
		if err := checkTemplate(pl.tpl); err != nil {
			p.release(pl, 0, false)
			return provisioners.Instance{}, err
		}
		if pl.target() != "" {
			req.Step(fmt.Sprintf("placed on node %s (template %d on %s)", pl.node, pl.tpl.vmid, pl.tpl.node))
		} else {
			req.Step(fmt.Sprintf("placed on node %s", pl.node))
		}
		inst, vmid, err := p.build(ctx, req, pl, name, keys, wantPassword, replaces)
		p.release(pl, vmid, err == nil)
		if err == nil {
			return inst, nil
		}
		lost := p.lostNode(ctx, err, pl.node, pl.tpl.node)
		if lost == "" {
			return provisioners.Instance{}, classify(p.cleanupAfter(ctx, pl, vmid, name, err))
		}
		// Nothing on the lost node can be removed now; the next VM
		// records it, and List removes it once the node is back.
		p.log.Warn("node went offline mid-provision; trying another node", "node", lost, "vmid", vmid, "err", err)
		req.Step(fmt.Sprintf("node %s went offline; trying another node", lost))
		excluded[lost] = "went offline during this provision"
		if vmid != 0 {
			replaces = append(replaces, vmid)
		}
		if v, err = p.view(ctx, ""); err != nil {
			return provisioners.Instance{}, provisioners.Retryable(err)
		}
	}
}

// build clones the template as pl says and finishes the VM. On failure
// it returns the VMID of a VM that may exist (0 if none can).
func (p *Provisioner) build(ctx context.Context, req provisioners.Request, pl *plan, name string, keys []string, wantPassword bool, replaces []int) (provisioners.Instance, int, error) {
	req.Step(fmt.Sprintf("cloning template %d", pl.tpl.vmid))
	vmid, err := p.clone(ctx, pl, name, req)
	if err != nil {
		return provisioners.Instance{}, vmid, err
	}
	inst, err := p.finish(ctx, req, pl, vmid, name, keys, wantPassword, replaces)
	return inst, vmid, err
}

// cleanupAfter removes what a failed build left: the VM it made, or any
// VM of the name when it may not have learnt the VMID. It returns the
// build's error, saying so when the removal failed too. An abandoned
// provision (the agent lost the contract's lock) removes nothing: the
// agent that holds the lock now adopts or replaces the VM.
func (p *Provisioner) cleanupAfter(ctx context.Context, pl *plan, vmid int, name string, err error) error {
	if provisioners.Abandoned(ctx) {
		p.log.Info("provision abandoned (the contract's lock is gone); leaving the VM to the agent that holds it", "vmid", vmid)
		return err
	}
	if vmid == 0 {
		p.cleanupByName(ctx, name)
		return err
	}
	if cerr := p.cleanup(ctx, pl.node, vmid, name); cerr != nil {
		return fmt.Errorf("%w; removing the half-made VM %d failed too: %v (the next reconcile retries)", err, vmid, cerr)
	}
	return err
}

// classify keeps an explicit Permanent/Retryable mark; PVE refusing a
// parameter (400 Parameter verification failed: a bad value from the
// offering or instance config) is permanent, as the same request would be
// refused again; anything else is retryable.
func classify(err error) error {
	var pe *provisioners.Error
	if errors.As(err, &pe) {
		return &provisioners.Error{Err: err, RetryPossible: pe.RetryPossible}
	}
	if strings.Contains(err.Error(), "400 Parameter verification failed") {
		return provisioners.Permanent(err)
	}
	return provisioners.Retryable(err)
}

// finish configures, resizes, starts a fresh clone and waits for its IP.
func (p *Provisioner) finish(ctx context.Context, req provisioners.Request, pl *plan, vmid int, name string, keys []string, wantPassword bool, replaces []int) (provisioners.Instance, error) {
	node, tpl := pl.node, pl.tpl
	vm := p.vm(node, vmid)
	req.Step("configuring VM " + strconv.Itoa(vmid))
	tags := []string{Tag}
	for _, id := range replaces {
		tags = append(tags, replacesTag(id))
	}
	opts := []proxmox.VirtualMachineOption{
		{Name: "ciuser", Value: p.cfg.CIUser},
		{Name: "ipconfig0", Value: req.ConfigString("ipconfig0", "ip=dhcp")},
		{Name: "tags", Value: strings.Join(tags, ";")},
		{Name: "onboot", Value: 1},
		{Name: "description", Value: fmt.Sprintf("Managed by dc-agent for Decent Cloud contract %s.\ndc-agent finds this VM by its name; do not rename it.", req.ContractID)},
	}
	if len(keys) > 0 {
		opts = append(opts, proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys(keys...)})
	}
	if req.CPUCores > 0 {
		opts = append(opts, proxmox.VirtualMachineOption{Name: "cores", Value: req.CPUCores})
	}
	if req.MemoryMB > 0 {
		opts = append(opts, proxmox.VirtualMachineOption{Name: "memory", Value: req.MemoryMB})
	}
	if ns := req.ConfigString("nameserver", ""); ns != "" {
		opts = append(opts, proxmox.VirtualMachineOption{Name: "nameserver", Value: ns})
	}
	if !tpl.agent {
		p.log.Warn("template has no guest agent enabled; enabling it on the clone (install qemu-guest-agent in the template)", "template", tpl.vmid)
		opts = append(opts, proxmox.VirtualMachineOption{Name: "agent", Value: "enabled=1"})
	}
	var password string
	if wantPassword {
		var err error
		if password, err = provisioners.RandomPassword(24); err != nil {
			return provisioners.Instance{}, err
		}
		opts = append(opts, proxmox.VirtualMachineOption{Name: "cipassword", Value: password})
	}
	// The synchronous PUT applies plain config keys at once: one request,
	// no task to poll.
	if err := vm.ConfigSync(ctx, opts...); err != nil {
		return provisioners.Instance{}, apiError(fmt.Sprintf("configure VM %d", vmid), err)
	}
	if req.StorageGB > 0 && req.StorageGB<<30 > tpl.size {
		req.Step(fmt.Sprintf("resizing %s to %d GiB", tpl.disk, req.StorageGB))
		task, err := vm.ResizeDisk(ctx, tpl.disk, fmt.Sprintf("%dG", req.StorageGB))
		if err != nil {
			return provisioners.Instance{}, apiError(fmt.Sprintf("resize %s of VM %d to %d GiB", tpl.disk, vmid, req.StorageGB), err)
		}
		if err := p.waitTask(ctx, task, fmt.Sprintf("resize %s of VM %d", tpl.disk, vmid), p.opts.TaskTimeout); err != nil {
			return provisioners.Instance{}, err
		}
	}
	req.Step("starting VM " + strconv.Itoa(vmid))
	task, err := vm.Start(ctx)
	if err != nil {
		return provisioners.Instance{}, apiError(fmt.Sprintf("start VM %d", vmid), err)
	}
	if err := p.waitTask(ctx, task, fmt.Sprintf("start VM %d", vmid), p.opts.TaskTimeout); err != nil {
		return provisioners.Instance{}, err
	}
	req.Step("waiting for the guest agent to report an IP address")
	ip4, ip6, err := p.waitIP(ctx, vm, tpl.vmid)
	if err != nil {
		return provisioners.Instance{}, err
	}
	inst := provisioners.Instance{
		ExternalID: ExternalID(node, vmid), ContractID: req.ContractID, Name: name,
		IPAddress: ip4, IPv6Address: ip6, SSHPort: p.opts.SSHPort, RootPassword: password,
		Status: "running", CreatedAt: p.opts.Now(),
		AdditionalDetails: map[string]any{"node": node, "vmid": vmid, "template_vmid": tpl.vmid, "ssh_user": p.cfg.CIUser},
	}
	if req.PostProvisionScript != "" {
		req.Step("running post_provision_script over SSH")
		hostKey, err := p.runPostProvision(ctx, firstNonEmpty(ip4, ip6), req.PostProvisionScript)
		if err != nil {
			return provisioners.Instance{}, err
		}
		inst.AdditionalDetails["ssh_host_key"] = hostKey
	}
	p.rememberIP(inst.ExternalID, firstNonEmpty(ip4, ip6))
	return inst, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func (p *Provisioner) rememberIP(externalID, ip string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ip == "" {
		delete(p.ips, externalID)
		return
	}
	p.ips[externalID] = ip
}

// cloneSlot limits parallel clones per node and storage: PVE takes a
// storage lock per clone, and too many at once end in lock timeouts.
func (p *Provisioner) cloneSlot(key string) chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.cloneSem[key]
	if s == nil {
		s = make(chan struct{}, p.cfg.MaxParallelClones)
		p.cloneSem[key] = s
	}
	return s
}

// clone creates the VM and returns its VMID once the clone task finished.
// A VMID taken between nextid and the clone, and PVE lock timeouts, are
// retried. The VMID is returned with an error when a VM may exist.
func (p *Provisioner) clone(ctx context.Context, pl *plan, name string, req provisioners.Request) (int, error) {
	tpl := pl.tpl
	src := p.vm(tpl.node, tpl.vmid)
	cluster := (&proxmox.Cluster{}).New(p.c)
	backoff := p.opts.RetryBackoff
	for attempt := 1; ; attempt++ {
		linked := p.cfg.LinkedClone && !tpl.noLink && (p.cfg.Storage == "" || p.cfg.Storage == tpl.storage)
		opts := &proxmox.VirtualMachineCloneOptions{Name: name, Pool: p.cfg.Pool,
			Description: "dc-agent contract " + req.ContractID, Target: pl.target()}
		target := tpl.storage
		if linked {
			opts.Full = false
		} else {
			opts.Full = true
			opts.Storage = pl.fullStorage
			if pl.fullStorage != "" {
				target = pl.fullStorage
			}
		}
		// PVE locks a storage per clone: a shared storage across the
		// cluster, a local one on the node the clone runs on.
		key := tpl.node + "/" + target
		if pl.res != nil && pl.res.storageKey == target {
			key = target
		}
		slot := p.cloneSlot(key)
		select {
		case slot <- struct{}{}:
		default:
			req.Step(fmt.Sprintf("waiting for a free clone slot on %s (max_parallel_clones = %d)", target, p.cfg.MaxParallelClones))
			select {
			case slot <- struct{}{}:
				req.Step(fmt.Sprintf("cloning template %d", tpl.vmid))
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		vmid, err := cluster.NextID(ctx)
		if err != nil {
			<-slot
			return 0, apiError("get next free VMID", err)
		}
		opts.NewID = vmid
		p.holdVMID(pl, vmid)
		_, task, err := src.Clone(ctx, opts)
		if err != nil {
			<-slot
			msg := err.Error()
			switch {
			case strings.Contains(msg, "already exists") && attempt <= p.opts.CloneRetries:
				p.log.Info("VMID taken meanwhile, retrying with the next one", "vmid", vmid)
				continue
			case strings.Contains(msg, "Linked clone feature is not supported") && linked:
				p.log.Warn("linked clones are not possible on the template's storage; using full clones", "template", tpl.vmid, "storage", tpl.storage)
				p.mu.Lock()
				tpl.noLink = true
				p.mu.Unlock()
				continue
			case isLockTimeout(msg) && attempt <= p.opts.CloneRetries:
				p.log.Info("Proxmox lock timeout on clone, retrying", "attempt", attempt, "backoff", backoff)
				if err := sleep(ctx, backoff); err != nil {
					return 0, err
				}
				backoff *= 2
				continue
			case strings.Contains(msg, "does not exist"):
				p.forgetTemplate(tpl.vmid)
			}
			if transient(err) {
				// The request may have reached the node: a VM may exist.
				return vmid, apiError(fmt.Sprintf("clone template %d to VM %d", tpl.vmid, vmid), err)
			}
			return 0, apiError(fmt.Sprintf("clone template %d to VM %d", tpl.vmid, vmid), err)
		}
		err = p.waitTask(ctx, task, fmt.Sprintf("clone template %d to VM %d", tpl.vmid, vmid), p.opts.CloneTimeout)
		<-slot
		if err == nil {
			return vmid, nil
		}
		var te *taskError
		if errors.As(err, &te) && isLockTimeout(te.exit) && attempt <= p.opts.CloneRetries {
			p.log.Info("Proxmox lock timeout in clone task, retrying", "attempt", attempt, "backoff", backoff)
			// PVE removes a failed clone itself; make sure, then retry.
			if cerr := p.cleanup(ctx, tpl.node, vmid, name); cerr != nil {
				return vmid, fmt.Errorf("%w; cleanup: %v", err, cerr)
			}
			if err := sleep(ctx, backoff); err != nil {
				return 0, err
			}
			backoff *= 2
			continue
		}
		return vmid, err
	}
}

func isLockTimeout(msg string) bool {
	return strings.Contains(msg, "can't lock file") || strings.Contains(msg, "got timeout")
}

// taskError is a task that ended with an error exit status.
type taskError struct {
	what, upid, exit string
}

func (e *taskError) Error() string { return fmt.Sprintf("%s: Proxmox task failed: %s", e.what, e.exit) }

// waitTask polls a task until it stops. Network errors are tolerated until
// the timeout (the node may be restarting its API); a failed task is an
// error with its exit status. go-proxmox's Task.Wait is not used: it
// sleeps without the context and returns nil for failed tasks.
func (p *Provisioner) waitTask(ctx context.Context, task *proxmox.Task, what string, timeout time.Duration) error {
	if task == nil {
		return fmt.Errorf("%s: Proxmox returned no task id", what)
	}
	deadline := p.opts.Now().Add(timeout)
	// The first poll comes after one interval: no PVE task that matters
	// here finishes faster, so polling at once only costs a request. The
	// interval stays short: a clone holds a clone slot until its end is
	// noticed.
	for {
		if err := sleep(ctx, p.opts.PollInterval); err != nil {
			return err
		}
		err := task.Ping(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil && p.clustered() && unreachableNode(err) != "" && p.nodesLost(ctx, unreachableNode(err)) != "":
			// The cluster says the task's node is gone: wait no longer.
			return &errNodeLost{node: unreachableNode(err), err: fmt.Errorf("%s: %w", what, err)}
		case err != nil && transient(err) && p.opts.Now().Before(deadline):
			p.log.Debug("task poll failed, retrying", "task", task.UPID, "err", err)
		case err != nil && transient(err):
			return fmt.Errorf("%s: the Proxmox API stopped answering while task %s ran (%v); the node may be down or restarting", what, task.UPID, netCause(err))
		case err != nil:
			return apiError(fmt.Sprintf("%s: poll task %s", what, task.UPID), err)
		case task.Status == "stopped":
			if task.ExitStatus == "OK" {
				return nil
			}
			return &taskError{what: what, upid: string(task.UPID), exit: task.ExitStatus}
		}
		if !p.opts.Now().Before(deadline) {
			return fmt.Errorf("%s: task %s did not finish within %s", what, task.UPID, timeout)
		}
	}
}

// waitIP polls the guest agent until it reports a global IPv4 address (or,
// after the last attempt, at least a global IPv6 one). Any 500 counts as
// "not yet": PVE answers 500 while the agent is not running.
func (p *Provisioner) waitIP(ctx context.Context, vm *proxmox.VirtualMachine, tplID int) (string, string, error) {
	var lastErr error
	var ip6 string
	for attempt := 1; attempt <= p.opts.IPWaitAttempts; attempt++ {
		// A guest just started has no agent yet: ask after one interval.
		if err := sleep(ctx, p.opts.IPWaitInterval); err != nil {
			return "", "", err
		}
		ifs, err := vm.AgentGetNetworkIFaces(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return "", "", ctx.Err()
		case err != nil && (strings.Contains(err.Error(), "is not running") && !strings.Contains(err.Error(), "agent")):
			return "", "", fmt.Errorf("VM %d stopped while booting: %v", vm.VMID, err)
		case err != nil && p.clustered() && unreachableNode(err) != "" && p.nodesLost(ctx, unreachableNode(err)) != "":
			return "", "", &errNodeLost{node: unreachableNode(err), err: err}
		case err != nil && strings.Contains(err.Error(), "No QEMU guest agent configured"):
			return "", "", provisioners.Permanent(fmt.Errorf("VM %d has no guest agent configured; enable it in template %d (qm set %d --agent enabled=1)", vm.VMID, tplID, tplID))
		case err != nil:
			lastErr = err
		default:
			v4, v6 := pickAddrs(ifs)
			if v4 != "" {
				return v4, v6, nil
			}
			ip6 = v6
		}
	}
	if ip6 != "" {
		return "", ip6, nil
	}
	wait := time.Duration(p.opts.IPWaitAttempts) * p.opts.IPWaitInterval
	if wait >= time.Second {
		wait = wait.Round(time.Second)
	}
	reason := "the guest agent never answered"
	if lastErr == nil {
		reason = "the guest agent reported no global address"
	} else if !strings.Contains(lastErr.Error(), "guest agent is not running") {
		reason = "last error: " + lastErr.Error()
	}
	return "", "", fmt.Errorf("VM %d got no IP address within %s (%d attempts): %s; check that template %d has qemu-guest-agent installed and enabled and that its network gives addresses (ipconfig0 / DHCP)",
		vm.VMID, wait, p.opts.IPWaitAttempts, reason, tplID)
}

// pickAddrs returns the first global IPv4 and IPv6 addresses.
func pickAddrs(ifs []*proxmox.AgentNetworkIface) (string, string) {
	var v4, v6 string
	for _, iface := range ifs {
		for _, a := range iface.IPAddresses {
			ip, err := netip.ParseAddr(a.IPAddress)
			// go-proxmox already drops the "lo" interface; link-local
			// addresses are no use to the requester.
			if err != nil || ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast() || ip == netip.IPv6Loopback() {
				continue
			}
			if ip.Is4() && v4 == "" {
				v4 = ip.String()
			}
			if ip.Is6() && !ip.Is4In6() && v6 == "" {
				v6 = ip.String()
			}
		}
	}
	return v4, v6
}

// vmEntry is a VM found by name.
type vmEntry struct {
	node   string
	vmid   int
	name   string
	status string
	lock   string
	tags   string
	// online: its node answers.
	online bool
	// replacedBy is the VM of the same contract that took over from this
	// one when its node was lost (0: none).
	replacedBy int
}

// findByName lists the node's VMs with this exact name (not templates).
func (p *Provisioner) findByName(ctx context.Context, name string) ([]vmEntry, error) {
	vms, err := p.node(p.cfg.Node).VirtualMachines(ctx)
	if err != nil {
		return nil, apiError("list VMs on "+p.cfg.Node, err)
	}
	var out []vmEntry
	for _, v := range vms {
		if v.Name == name && !bool(v.Template) {
			out = append(out, vmEntry{node: p.cfg.Node, vmid: int(v.VMID), name: v.Name, status: v.Status, lock: v.Lock, tags: v.Tags, online: true})
		}
	}
	return out, nil
}

// reuse returns the instance of a VM left by an earlier attempt when it is
// complete: running, unlocked, and nothing secret or scripted is missing
// (a password is unknown once set, a script may not have run).
func (p *Provisioner) reuse(ctx context.Context, req provisioners.Request, e vmEntry, wantPassword bool) (provisioners.Instance, bool) {
	if e.status != "running" || e.lock != "" || wantPassword || req.PostProvisionScript != "" {
		return provisioners.Instance{}, false
	}
	req.Step(fmt.Sprintf("found running VM %d from an earlier attempt; waiting for its IP", e.vmid))
	ip4, ip6, err := p.waitIP(ctx, p.vm(e.node, e.vmid), p.cfg.TemplateVMID)
	if err != nil {
		p.log.Info("earlier VM has no IP; replacing it", "vmid", e.vmid, "err", err)
		return provisioners.Instance{}, false
	}
	id := ExternalID(e.node, e.vmid)
	p.rememberIP(id, firstNonEmpty(ip4, ip6))
	return provisioners.Instance{
		ExternalID: id, ContractID: req.ContractID, Name: provisioners.InstanceName(req.ContractID),
		IPAddress: ip4, IPv6Address: ip6, SSHPort: p.opts.SSHPort, Status: "running", CreatedAt: p.opts.Now(),
		AdditionalDetails: map[string]any{"node": e.node, "vmid": e.vmid, "ssh_user": p.cfg.CIUser, "reused": true},
	}, true
}

// cleanup removes a half-made VM after a failure, on its own deadline
// (the provision's context, parent, may be cancelled), retrying while the
// node does not answer. It gives up at once when the provision is
// abandoned (provisioners.Abandoned): the VM is the new lock holder's.
func (p *Provisioner) cleanup(parent context.Context, node string, vmid int, name string) error {
	ctx, cancel := cleanupCtx(parent, p.opts.CleanupTimeout)
	defer cancel()
	backoff := p.opts.PollInterval
	for {
		if p.clustered() {
			// A clone to another node is on the template's node until
			// its task ends.
			if n, err := p.locate(ctx, vmid); err == nil && n != "" {
				node = n
			}
		}
		err := p.destroy(ctx, node, vmid, exactly(name))
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		p.log.Info("cleanup of half-made VM failed, retrying", "vmid", vmid, "err", err)
		if sleep(ctx, backoff) != nil {
			return err
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// cleanupByName removes every VM with this name on a node that answers
// (best effort).
func (p *Provisioner) cleanupByName(parent context.Context, name string) {
	ctx, cancel := cleanupCtx(parent, p.opts.CleanupTimeout)
	defer cancel()
	found, err := p.findAnywhere(ctx, name)
	if err != nil {
		return
	}
	found = slices.DeleteFunc(found, func(e vmEntry) bool { return !e.online })
	for _, e := range found {
		if err := p.cleanup(ctx, e.node, e.vmid, name); err != nil {
			p.log.Warn("could not remove VM", "vmid", e.vmid, "err", err)
		}
	}
}

// cleanupCtx outlives parent's cancellation (a failed or stopped
// provision still removes what it made) for up to d, but ends as soon as
// parent is abandoned.
func cleanupCtx(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), d)
	stop := context.AfterFunc(parent, func() {
		if provisioners.Abandoned(parent) {
			cancel()
		}
	})
	return ctx, func() { stop(); cancel() }
}

// nameCheck guards destroy against deleting a VM that is not ours.
type nameCheck func(vmName string) error

// exactly accepts only the VM named n.
func exactly(n string) nameCheck {
	return func(v string) error {
		if v != n {
			return fmt.Errorf("it is named %q, not %q; refusing to delete it", v, n)
		}
		return nil
	}
}

// anyContractVM accepts any dc-<contract id> VM.
func anyContractVM(v string) error {
	if provisioners.ContractIDFromName(v) == "" {
		return fmt.Errorf("it is named %q, which is not a dc-agent VM; refusing to delete it", v)
	}
	return nil
}

// destroy stops (if needed) and purges a VM once check accepts its name; a
// missing VM is success. A VM locked by a running clone or create is
// waited for first (its name is only final afterwards).
func (p *Provisioner) destroy(ctx context.Context, node string, vmid int, check nameCheck) error {
	var vm *proxmox.VirtualMachine
	deadline := p.opts.Now().Add(p.opts.CloneTimeout)
	for {
		// A fresh value each time: decoding leaves absent keys (a cleared
		// lock) at their old values.
		vm = p.vm(node, vmid)
		if err := p.c.Get(ctx, fmt.Sprintf("/nodes/%s/qemu/%d/status/current", node, vmid), vm); err != nil {
			if strings.Contains(err.Error(), "does not exist") {
				return nil
			}
			return apiError(fmt.Sprintf("read VM %d", vmid), err)
		}
		if vm.Lock != "clone" && vm.Lock != "create" {
			break
		}
		if !p.opts.Now().Before(deadline) {
			return fmt.Errorf("VM %d is still locked (%s)", vmid, vm.Lock)
		}
		if err := sleep(ctx, p.opts.PollInterval); err != nil {
			return err
		}
	}
	if bool(vm.Template) {
		return fmt.Errorf("VM %d on %s is a template; refusing to delete it", vmid, node)
	}
	if err := check(vm.Name); err != nil {
		return fmt.Errorf("VM %d on %s: %w", vmid, node, err)
	}
	if vm.Status == "running" || vm.Status == "paused" {
		task, err := vm.Stop(ctx)
		if err != nil {
			return apiError(fmt.Sprintf("stop VM %d", vmid), err)
		}
		if err := p.waitTask(ctx, task, fmt.Sprintf("stop VM %d", vmid), p.opts.TaskTimeout); err != nil {
			return err
		}
	}
	task, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true, DestroyUnreferencedDisks: true})
	if err != nil {
		if strings.Contains(err.Error(), "does not exist") {
			return nil
		}
		return apiError(fmt.Sprintf("delete VM %d", vmid), err)
	}
	if err := p.waitTask(ctx, task, fmt.Sprintf("delete VM %d", vmid), p.opts.TaskTimeout); err != nil {
		return err
	}
	p.rememberIP(ExternalID(node, vmid), "")
	return nil
}

// netCause strips the URL from a transport error.
func netCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
