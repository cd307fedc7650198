package pve

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

var nodeNameRe = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$`)

func verifyNodeName(n string) error {
	if !nodeNameRe.MatchString(n) {
		return fmt.Errorf("node name %q is not a valid hostname", n)
	}
	return nil
}

// CheckNode fails like PVE does for a node that is not in the cluster.
func (st *State) CheckNode(node string) error {
	if st.Nodes[node] == nil {
		return Fail("hostname lookup '%s' failed - failed to get address info for: %s: Name or service not known", node, node)
	}
	return nil
}

// vmOn returns a VM that lives on node.
func (st *State) vmOn(node string, vmid int) (*VM, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	vm := st.VMs[vmid]
	if vm == nil || vm.Node != node {
		return nil, configMissing(node, vmid)
	}
	return vm, nil
}

// VMOn is vmOn for the CLI simulator (no permission check).
func (st *State) VMOn(node string, vmid int) (*VM, error) { return st.vmOn(node, vmid) }

func vmPath(vmid int) string { return fmt.Sprintf("/vms/%d", vmid) }

func checkVMID(name string, v int) error {
	if v < 100 {
		return paramErr(name, "value must have a minimum value of 100")
	}
	if v > 999999999 {
		return paramErr(name, "value must have a maximum value of 999999999")
	}
	return nil
}

// NextID returns the lowest free VMID from 100 (GET /cluster/nextid).
func (st *State) NextID() int {
	for id := 100; ; id++ {
		if st.VMs[id] == nil {
			return id
		}
	}
}

// CheckID fails if vmid is taken (GET /cluster/nextid?vmid=N).
func (st *State) CheckID(vmid int) error {
	if err := checkVMID("vmid", vmid); err != nil {
		return err
	}
	if st.VMs[vmid] != nil {
		return paramErr("vmid", "VM %d already exists", vmid)
	}
	return nil
}

// ListVMs returns the VMs on node that actor may audit, by VMID.
func (st *State) ListVMs(actor, node string) ([]*VM, error) {
	if err := st.CheckNode(node); err != nil {
		return nil, err
	}
	var out []*VM
	for _, id := range st.VMIDs() {
		vm := st.VMs[id]
		if vm.Node == node && st.Has(actor, vmPath(id), "VM.Audit") {
			out = append(out, vm)
		}
	}
	return out, nil
}

// GetVM returns a VM for reading (status/current, config): VM.Audit.
func (st *State) GetVM(actor, node string, vmid int) (*VM, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return nil, err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Audit"); err != nil {
		return nil, err
	}
	return vm, nil
}

// CloneParams are the parameters of POST .../qemu/{vmid}/clone.
type CloneParams struct {
	NewID       int
	Name        string
	Description string
	Pool        string
	Storage     string
	Format      string
	Target      string
	SnapName    string
	// Full: nil means PVE's default (full for VMs, linked for templates).
	Full *bool
}

// Clone starts a qmclone task copying vmid to p.NewID. The new VM exists
// at once, locked "clone", and gets its disks when the task finishes.
func (st *State) Clone(actor, node string, vmid int, p CloneParams) (string, error) {
	if err := checkVMID("newid", p.NewID); err != nil {
		return "", err
	}
	if p.Name != "" {
		if err := verifyDNSName(p.Name); err != nil {
			return "", paramErr("name", "invalid format - %v", err)
		}
	}
	if p.Format != "" && !slices.Contains([]string{"raw", "qcow2", "vmdk"}, p.Format) {
		return "", paramErr("format", "value '%s' does not have a value in the enumeration 'raw, qcow2, vmdk'", p.Format)
	}
	src, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Clone"); err != nil {
		return "", err
	}
	if !st.Has(actor, vmPath(p.NewID), "VM.Allocate") && (p.Pool == "" || !st.Has(actor, "/pool/"+p.Pool, "VM.Allocate")) {
		return "", PermError(vmPath(p.NewID), "VM.Allocate")
	}
	if p.Target == node || p.Target == "localhost" {
		p.Target = ""
	}
	if p.Pool != "" && st.Pools[p.Pool] == nil {
		return "", Fail("pool '%s' does not exist", p.Pool)
	}
	if p.Target != "" {
		if err := st.CheckNode(p.Target); err != nil {
			return "", Fail("no such cluster node '%s'", p.Target)
		}
	}
	if p.Storage != "" {
		if err := st.checkStorageEnabled(p.Storage, node); err != nil {
			return "", err
		}
		if p.Target != "" {
			if err := st.checkStorageEnabled(p.Storage, p.Target); err != nil {
				return "", err
			}
			if !st.Storages[p.Storage].Shared {
				return "", Fail("can't clone to non-shared storage '%s'", p.Storage)
			}
		}
	}
	if l := src.Lock(); l != "" {
		return "", Fail("VM %d is locked (%s)", vmid, l)
	}
	if p.SnapName != "" {
		return "", Fail("snapshot '%s' does not exist", p.SnapName)
	}
	full := !src.IsTemplate()
	if p.Full != nil {
		full = *p.Full
	}
	if p.Storage != "" && !full {
		return "", Fail("parameter 'storage' not allowed for linked clones")
	}
	if p.Format != "" && !full {
		return "", Fail("parameter 'format' not allowed for linked clones")
	}
	shared := true
	targetStorage := ""
	for _, key := range sortedKeys(src.Config) {
		if !IsDriveKey(key) {
			if strings.HasPrefix(key, "net") {
				if _, _, o, err := ParseNet(src.Config[key]); err == nil {
					if err := st.checkBridge(actor, o); err != nil {
						return "", err
					}
				}
			}
			continue
		}
		d, err := ParseDrive(src.Config[key])
		if err != nil {
			return "", Fail("unable to parse drive options for '%s'", key)
		}
		if d.File == "none" {
			continue
		}
		sid, name, _ := strings.Cut(d.File, ":")
		s := st.Storages[sid]
		if d.IsCDROM() && !d.IsCloudinit() {
			if d.File == "cdrom" {
				if err := st.Check(actor, "/", "Sys.Console"); err != nil {
					return "", err
				}
			} else if s != nil && !s.Shared {
				shared = false
			}
			continue
		}
		if s == nil {
			return "", Fail("storage '%s' does not exist", sid)
		}
		if !s.Shared {
			shared = false
		}
		if !full && !d.IsCloudinit() && (!storageCanLink(s.Type) || !strings.Contains(name, "base-")) {
			return "", Fail("Linked clone feature is not supported for drive '%s'", key)
		}
		target := sid
		if p.Storage != "" {
			target = p.Storage
		}
		if err := st.Check(actor, "/storage/"+target, "Datastore.AllocateSpace"); err != nil {
			return "", err
		}
		if !d.IsCloudinit() && targetStorage == "" {
			targetStorage = target
		}
	}
	if p.Target != "" && !shared {
		return "", Fail("can't clone VM to node '%s' (VM uses local storage)", p.Target)
	}
	if st.VMs[p.NewID] != nil {
		return "", Fail("unable to create VM %d: config file already exists", p.NewID)
	}
	name := p.Name
	if name == "" {
		name = "Copy-of-VM-" + src.Name()
	}
	st.VMs[p.NewID] = &VM{VMID: p.NewID, Node: node, Status: "stopped", Config: map[string]string{"lock": "clone", "name": name}, CreatedAt: st.Now()}
	// Clones running on the same storage slow each other down (a shared
	// storage is one for the whole cluster).
	sharedTarget := st.Storages[targetStorage] != nil && st.Storages[targetStorage].Shared
	busy := 0
	for _, t := range st.Tasks {
		if t.Status == "running" && t.Type == "qmclone" && (t.Node == node || sharedTarget) && t.Effect != nil && t.Effect.Clone != nil &&
			t.Effect.Clone.TargetStorage == targetStorage {
			busy++
		}
	}
	if st.PeakClones == nil {
		st.PeakClones = map[string]int{}
	}
	key := node + "/" + targetStorage
	if sharedTarget {
		key = targetStorage
	}
	st.PeakClones[key] = max(st.PeakClones[key], busy+1)
	dur := Duration(float64(st.Timing.Clone) * (1 + st.Timing.CloneContention*float64(busy)))
	t := st.startTask(node, "qmclone", strconv.Itoa(vmid), actor, dur, &Effect{VMID: p.NewID, Clone: &CloneEffect{
		Source: vmid, Full: full, Storage: p.Storage, Format: p.Format, Name: name, Description: p.Description, Pool: p.Pool,
		Target: p.Target, TargetStorage: targetStorage,
	}})
	mode := "linked"
	if full {
		mode = "full"
	}
	t.Log = append(t.Log, fmt.Sprintf("create %s clone of VM %d to VM %d", mode, vmid, p.NewID))
	return t.UPID, nil
}

func (st *State) checkStorageEnabled(sid, node string) error {
	s := st.Storages[sid]
	if s == nil {
		return Fail("storage '%s' does not exist", sid)
	}
	if s.Disabled {
		return Fail("storage '%s' is disabled", sid)
	}
	if !st.StorageOnNode(sid, node) {
		return Fail("storage '%s' is not available on node '%s'", sid, node)
	}
	return nil
}

// checkBridge: using a bridge needs SDN.Use on its local zone path (and
// the VLAN's).
func (st *State) checkBridge(actor string, netOpts map[string]string) error {
	br := netOpts["bridge"]
	if br == "" {
		return nil
	}
	path := "/sdn/zones/localnetwork/" + br
	if tag := netOpts["tag"]; tag != "" {
		if st.Has(actor, path+"/"+tag, "SDN.Use") {
			return nil
		}
		return PermError(path+"/"+tag, "SDN.Use")
	}
	return st.Check(actor, path, "SDN.Use")
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// metaParams are config-update parameters that are not config keys.
var metaParams = map[string]bool{"delete": true, "digest": true, "revert": true, "skiplock": true, "background_delay": true, "force": true}

// validateConfigParams checks every parameter against the schema and the
// actor's privileges and returns the normalized changes and deletions.
func (st *State) validateConfigParams(actor string, vmid int, params map[string]string, creating bool) (map[string]string, []string, error) {
	perr := map[string]string{}
	changes := map[string]string{}
	for k, v := range params {
		if metaParams[k] {
			continue
		}
		spec, ok := lookupKey(k)
		if !ok {
			perr[k] = notInSchema
			continue
		}
		nv, msg := normalizeParam(spec, v)
		if msg != "" {
			perr[k] = msg
			continue
		}
		changes[k] = nv
	}
	var deletes []string
	if d, ok := params["delete"]; ok && !creating {
		for _, k := range strings.FieldsFunc(d, func(r rune) bool { return r == ',' || r == ';' || r == ' ' }) {
			if _, ok := lookupKey(k); !ok {
				perr["delete"] = fmt.Sprintf("invalid format - invalid configuration ID '%s'", k)
				continue
			}
			if _, both := changes[k]; both {
				perr["delete"] = fmt.Sprintf("you can't use '-%s' and '-delete %s' at the same time", k, k)
			}
			deletes = append(deletes, k)
		}
	}
	if params["skiplock"] != "" && actor != Root {
		perr["skiplock"] = "Only root may use this option."
	}
	if len(perr) > 0 {
		return nil, nil, ParamError(perr)
	}
	for _, k := range append(sortedKeys(changes), deletes...) {
		spec, _ := lookupKey(k)
		if spec.rootOnly && actor != Root {
			return nil, nil, &Error{Status: 403, Msg: fmt.Sprintf("only root can set '%s' config", k)}
		}
		if len(spec.privs) > 0 {
			privs := spec.privs
			if IsDriveKey(k) {
				if d, err := ParseDrive(changes[k]); err == nil && d.IsCDROM() && !d.IsCloudinit() {
					privs = []string{"VM.Config.CDROM"}
				}
			}
			if err := st.CheckAny(actor, vmPath(vmid), privs...); err != nil {
				return nil, nil, err
			}
		}
	}
	for _, k := range sortedKeys(changes) {
		v := changes[k]
		switch {
		case strings.HasPrefix(k, "net") && !strings.HasPrefix(k, "netx"):
			if _, _, o, err := ParseNet(v); err == nil {
				if err := st.checkBridge(actor, o); err != nil {
					return nil, nil, err
				}
			}
		case IsDriveKey(k):
			d, _ := ParseDrive(v)
			sid, rest, ok := strings.Cut(d.File, ":")
			if ok && (newDiskRe.MatchString(d.File) || rest == "cloudinit") {
				if err := st.Check(actor, "/storage/"+sid, "Datastore.AllocateSpace"); err != nil {
					return nil, nil, err
				}
				if s := st.Storages[sid]; s == nil {
					return nil, nil, Fail("storage '%s' does not exist", sid)
				} else if !slices.Contains(s.Content, "images") {
					return nil, nil, paramErr("storage", "storage '%s' does not support vm images", sid)
				}
			}
			if src := d.Opts["import-from"]; src != "" && (!newDiskRe.MatchString(d.File) || !strings.HasSuffix(d.File, ":0")) {
				return nil, nil, paramErr(k, "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>")
			}
		case k == "sshkeys":
			if err := ValidateSSHKeys(v); err != nil {
				return nil, nil, err
			}
		}
	}
	return changes, deletes, nil
}

// SetConfig updates a VM's config: POST (async=true, a qmconfig task whose
// worker applies the change) or PUT (applied at once).
func (st *State) SetConfig(actor, node string, vmid int, params map[string]string, async bool) (string, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	changes, deletes, err := st.validateConfigParams(actor, vmid, params, false)
	if err != nil {
		return "", err
	}
	if dg := params["digest"]; dg != "" && dg != configDigest(vm.Config) {
		return "", Fail("detected modified configuration - file changed by other user? Try again.")
	}
	skiplock := params["skiplock"] == "1"
	if !async {
		if l := vm.Lock(); l != "" && !skiplock {
			return "", Fail("VM %d is locked (%s)", vmid, l)
		}
		return "", st.applyConfig(vm, changes, deletes)
	}
	eff := &Effect{VMID: vmid, Config: changes, Delete: deletes}
	if skiplock {
		eff.Flags = []string{"skiplock"}
	}
	t := st.startTask(node, "qmconfig", strconv.Itoa(vmid), actor, st.Timing.Config, eff)
	return t.UPID, nil
}

// CreateVM creates a VM from config parameters (POST /nodes/{node}/qemu,
// `qm create`). It is locked "create" until its qmcreate task finishes.
func (st *State) CreateVM(actor, node string, vmid int, params map[string]string) (string, error) {
	if err := checkVMID("vmid", vmid); err != nil {
		return "", err
	}
	if err := st.CheckNode(node); err != nil {
		return "", err
	}
	pool := params["pool"]
	delete(params, "pool")
	if !st.Has(actor, vmPath(vmid), "VM.Allocate") && (pool == "" || !st.Has(actor, "/pool/"+pool, "VM.Allocate")) {
		return "", PermError(vmPath(vmid), "VM.Allocate")
	}
	if pool != "" && st.Pools[pool] == nil {
		return "", Fail("pool '%s' does not exist", pool)
	}
	changes, _, err := st.validateConfigParams(actor, vmid, params, true)
	if err != nil {
		return "", err
	}
	if old := st.VMs[vmid]; old != nil {
		return "", Fail("unable to create VM %d - VM %d already exists on node '%s'", vmid, vmid, old.Node)
	}
	st.VMs[vmid] = &VM{VMID: vmid, Node: node, Status: "stopped", Pool: pool, Config: map[string]string{"lock": "create"}, CreatedAt: st.Now()}
	t := st.startTask(node, "qmcreate", strconv.Itoa(vmid), actor, st.Timing.Create, &Effect{VMID: vmid, Config: changes})
	return t.UPID, nil
}

// Resize grows a disk: size is absolute ("20G") or relative ("+10G").
func (st *State) Resize(actor, node string, vmid int, disk, size string) (string, error) {
	if !IsDriveKey(disk) {
		return "", paramErr("disk", "value '%s' does not have a value in the enumeration", disk)
	}
	rel := strings.HasPrefix(size, "+")
	amount, err := ParseSize(strings.TrimPrefix(size, "+"))
	if err != nil {
		return "", paramErr("size", "value does not match the regex pattern")
	}
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Config.Disk"); err != nil {
		return "", err
	}
	v, ok := vm.Config[disk]
	if !ok {
		return "", Fail("disk '%s' does not exist", disk)
	}
	d, err := ParseDrive(v)
	if err != nil {
		return "", Fail("unable to parse drive options for '%s'", disk)
	}
	if d.IsCDROM() {
		return "", Fail("you can't resize a cdrom")
	}
	vol := st.Volumes[d.File]
	if vol == nil {
		return "", Fail("no such volume '%s'", d.File)
	}
	if err := st.Check(actor, "/storage/"+vol.Storage, "Datastore.AllocateSpace"); err != nil {
		return "", err
	}
	newSize := amount
	if rel {
		newSize = vol.SizeBytes + amount
	}
	if newSize < vol.SizeBytes {
		return "", Fail("shrinking disks is not supported")
	}
	t := st.startTask(node, "resize", strconv.Itoa(vmid), actor, st.Timing.Resize, &Effect{VMID: vmid, Disk: disk, NewSize: newSize})
	return t.UPID, nil
}

// Start starts a VM (qmstart). The guest agent answers Timing.Boot later.
func (st *State) Start(actor, node string, vmid int) (string, error) {
	return st.power(actor, node, vmid, "qmstart", st.Timing.Start)
}

// Stop stops a VM hard (qmstop).
func (st *State) Stop(actor, node string, vmid int) (string, error) {
	return st.power(actor, node, vmid, "qmstop", st.Timing.Stop)
}

// Shutdown shuts a running VM down (qmshutdown).
func (st *State) Shutdown(actor, node string, vmid int) (string, error) {
	return st.power(actor, node, vmid, "qmshutdown", st.Timing.Shutdown)
}

func (st *State) power(actor, node string, vmid int, typ string, dur Duration) (string, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.PowerMgmt"); err != nil {
		return "", err
	}
	if typ == "qmshutdown" && vm.Status != "running" {
		return "", Fail("VM %d not running", vmid)
	}
	t := st.startTask(node, typ, strconv.Itoa(vmid), actor, dur, &Effect{VMID: vmid})
	return t.UPID, nil
}

// Destroy removes a VM and its disks (qmdestroy). A running VM is
// refused, as real PVE does.
func (st *State) Destroy(actor, node string, vmid int, purge, destroyUnreferenced, skiplock bool) (string, error) {
	if skiplock && actor != Root {
		return "", paramErr("skiplock", "Only root may use this option.")
	}
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Allocate"); err != nil {
		return "", err
	}
	if vm.Config["protection"] == "1" {
		return "", Fail("can't remove VM %d - protection mode enabled", vmid)
	}
	if vm.Status == "running" {
		return "", Fail("VM %d is running - destroy failed", vmid)
	}
	eff := &Effect{VMID: vmid}
	flags := []string{}
	if purge {
		flags = append(flags, "purge")
	}
	if destroyUnreferenced {
		flags = append(flags, "unreferenced")
	}
	if skiplock {
		flags = append(flags, "skiplock")
	}
	eff.Flags = flags
	t := st.startTask(node, "qmdestroy", strconv.Itoa(vmid), actor, st.Timing.Destroy, eff)
	return t.UPID, nil
}

// ConvertToTemplate turns a stopped VM into a template (`qm template`).
func (st *State) ConvertToTemplate(actor, node string, vmid int) (string, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return "", err
	}
	if err := st.Check(actor, vmPath(vmid), "VM.Allocate"); err != nil {
		return "", err
	}
	if vm.IsTemplate() {
		return "", Fail("you can't convert a template to a template")
	}
	if vm.Status == "running" {
		return "", Fail("you can't convert a VM to template if VM is running")
	}
	if l := vm.Lock(); l != "" {
		return "", Fail("VM %d is locked (%s)", vmid, l)
	}
	t := st.startTask(node, "qmtemplate", strconv.Itoa(vmid), actor, st.Timing.Template, &Effect{VMID: vmid})
	return t.UPID, nil
}

// agentCommands are the read-only guest agent commands simulated.
var agentCommands = []string{"network-get-interfaces", "get-osinfo", "get-host-name", "info", "ping", "get-time", "get-timezone"}

// Agent runs a read-only guest agent command.
func (st *State) Agent(actor, node string, vmid int, cmd string) (any, error) {
	vm, err := st.vmOn(node, vmid)
	if err != nil {
		return nil, err
	}
	if !slices.Contains(agentCommands, cmd) {
		return nil, &Error{Status: 501, Msg: fmt.Sprintf("Method 'GET /nodes/%s/qemu/%d/agent/%s' not implemented", node, vmid, cmd)}
	}
	// PVE 9 takes VM.GuestAgent.Unrestricted for every agent command too.
	privs := []string{AgentAuditPriv(st.Major())}
	if st.Major() >= 9 {
		privs = append(privs, "VM.GuestAgent.Unrestricted")
	}
	if err := st.CheckAny(actor, vmPath(vmid), privs...); err != nil {
		return nil, err
	}
	if err := st.agentUp(vm); err != nil {
		return nil, err
	}
	switch cmd {
	case "network-get-interfaces":
		ifs, err := st.GuestInterfaces(vm)
		if err != nil {
			return nil, Fail("%v", err)
		}
		return map[string]any{"result": ifs}, nil
	case "get-osinfo":
		return map[string]any{"result": map[string]any{
			"id": "ubuntu", "name": "Ubuntu", "pretty-name": "Ubuntu 24.04.1 LTS", "version": "24.04.1 LTS (Noble Numbat)",
			"version-id": "24.04", "kernel-release": "6.8.0-49-generic", "kernel-version": "#49-Ubuntu SMP", "machine": "x86_64",
		}}, nil
	case "get-host-name":
		return map[string]any{"result": map[string]any{"host-name": vm.Name()}}, nil
	case "get-time":
		return map[string]any{"result": st.Now().UnixNano()}, nil
	case "get-timezone":
		return map[string]any{"result": map[string]any{"zone": "UTC", "offset": 0}}, nil
	default:
		return map[string]any{"result": map[string]any{}}, nil
	}
}

// applyEffect does a finishing task's work; an error becomes its exit status.
func (st *State) applyEffect(t *Task) error {
	e := t.Effect
	if e.Clone != nil {
		return st.finishClone(t, e)
	}
	if t.Type == "qmigrate" && e.Fail == "" {
		return st.finishMigrate(t, e)
	}
	if e.Fail != "" {
		if t.Type == "qmcreate" {
			delete(st.VMs, e.VMID)
		}
		return errors.New(e.Fail)
	}
	vm := st.VMs[e.VMID]
	if vm == nil {
		return fmt.Errorf("Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", t.Node, e.VMID)
	}
	locked := func(skip bool) error {
		if l := vm.Lock(); l != "" && !skip {
			return fmt.Errorf("VM %d is locked (%s)", vm.VMID, l)
		}
		return nil
	}
	switch t.Type {
	case "qmcreate":
		delete(vm.Config, "lock")
		if err := st.applyConfig(vm, e.Config, nil); err != nil {
			st.removeVM(vm)
			return fmt.Errorf("unable to create VM %d - %v", vm.VMID, err)
		}
		if vm.Pool != "" {
			st.addToPool(vm.Pool, vm.VMID)
		}
		if _, ok := vm.Config["smbios1"]; !ok {
			vm.Config["smbios1"] = "uuid=" + st.newUUID()
		}
		if _, ok := vm.Config["vmgenid"]; !ok {
			vm.Config["vmgenid"] = st.newUUID()
		}
		return nil
	case "qmconfig":
		if err := locked(slices.Contains(e.Flags, "skiplock")); err != nil {
			return err
		}
		return st.applyConfig(vm, e.Config, e.Delete)
	case "resize":
		if err := locked(false); err != nil {
			return err
		}
		d, err := ParseDrive(vm.Config[e.Disk])
		if err != nil {
			return err
		}
		vol := st.Volumes[d.File]
		if vol == nil {
			return fmt.Errorf("no such volume '%s'", d.File)
		}
		grow := e.NewSize - vol.SizeBytes
		if grow > 0 && grow > st.StorageAvail(vol.Storage, vol.Node) {
			return st.errNoSpace(vol.Storage, vol.Node, vol.Name, grow, "lvresize")
		}
		vol.SizeBytes = e.NewSize
		vol.AllocBytes += max(0, grow)
		d.Set("size", formatSize(e.NewSize))
		vm.Config[e.Disk] = d.String()
		t.Log = append(t.Log, fmt.Sprintf("Resizing image: Size of logical volume %s changed to %s.", vol.Name, formatSize(e.NewSize)))
		return nil
	case "qmstart":
		if err := locked(false); err != nil {
			return err
		}
		if vm.IsTemplate() {
			return errors.New("you can't start a vm if it's a template")
		}
		if vm.Status == "running" {
			return fmt.Errorf("VM %d already running", vm.VMID)
		}
		for _, k := range sortedKeys(vm.Config) {
			if strings.HasPrefix(k, "net") {
				if _, _, o, err := ParseNet(vm.Config[k]); err == nil && st.Nodes[vm.Node].Bridges[o["bridge"]] == nil {
					return fmt.Errorf("bridge '%s' does not exist", o["bridge"])
				}
			}
		}
		now := st.Now()
		vm.Status = "running"
		vm.StartedAt = now
		vm.PID = 200000 + int(st.nextSeq()%700000)
		vm.BootAt = now.Add(st.Timing.Boot.D())
		vm.AgentNeverStarts = st.Faults.AgentNeverStarts
		// An image imported without qemu-guest-agent never gets one.
		if o := st.bootOrigin(vm); o != nil && !o.has("install", "qemu-guest-agent") {
			vm.AgentNeverStarts = true
		}
		_, _ = st.GuestInterfaces(vm) // the guest takes its DHCP lease while booting
		if vm.Guest == nil {
			vm.Guest = bootGuest(vm) // cloud-init's first boot
		}
		return nil
	case "qmstop", "qmshutdown":
		if err := locked(false); err != nil {
			return err
		}
		vm.Status = "stopped"
		vm.PID = 0
		vm.StartedAt = time.Time{}
		vm.BootAt = time.Time{}
		return nil
	case "qmdestroy":
		if err := locked(slices.Contains(e.Flags, "skiplock")); err != nil {
			return err
		}
		if vm.Status == "running" {
			return fmt.Errorf("VM %d is running - destroy failed", vm.VMID)
		}
		for _, k := range sortedKeys(vm.Config) {
			if !IsDriveKey(k) && !strings.HasPrefix(k, "unused") {
				continue
			}
			d, err := ParseDrive(vm.Config[k])
			if err != nil || (d.IsCDROM() && !d.IsCloudinit()) {
				continue
			}
			if err := st.freeVolume(d.File); err != nil {
				return err
			}
		}
		if slices.Contains(e.Flags, "unreferenced") {
			for id, v := range st.Volumes {
				if v.VMID == vm.VMID {
					if err := st.freeVolume(id); err != nil {
						return err
					}
				}
			}
		}
		st.removeVM(vm)
		return nil
	case "qmtemplate":
		if err := locked(false); err != nil {
			return err
		}
		for _, k := range sortedKeys(vm.Config) {
			if !IsDriveKey(k) {
				continue
			}
			d, err := ParseDrive(vm.Config[k])
			if err != nil || d.IsCDROM() {
				continue
			}
			vol := st.Volumes[d.File]
			if vol == nil || !strings.Contains(vol.Name, "vm-") {
				continue
			}
			if s := st.Storages[vol.Storage]; s != nil && (s.Type == "lvmthin" || s.Type == "zfspool" || storageFileBased(s.Type) || s.Type == "rbd") {
				delete(st.Volumes, vol.VolID)
				vol.Name = strings.Replace(vol.Name, "vm-", "base-", 1)
				vol.VolID = vol.Storage + ":" + vol.Name
				st.Volumes[vol.VolID] = vol
				d.File = vol.VolID
				vm.Config[k] = d.String()
			}
		}
		vm.Config["template"] = "1"
		return nil
	}
	return nil
}

func (st *State) removeVM(vm *VM) {
	st.releaseLeases(vm)
	for _, p := range st.Pools {
		p.VMs = slices.DeleteFunc(p.VMs, func(id int) bool { return id == vm.VMID })
	}
	path := vmPath(vm.VMID)
	st.ACL = slices.DeleteFunc(st.ACL, func(e ACLEntry) bool { return e.Path == path })
	delete(st.VMs, vm.VMID)
}

func (st *State) addToPool(pool string, vmid int) {
	p := st.Pools[pool]
	if p == nil || slices.Contains(p.VMs, vmid) {
		return
	}
	p.VMs = append(p.VMs, vmid)
	sort.Ints(p.VMs)
	if vm := st.VMs[vmid]; vm != nil {
		vm.Pool = pool
	}
}

// finishClone copies the source's config and disks into the new VM.
func (st *State) finishClone(t *Task, e *Effect) error {
	c := e.Clone
	vm := st.VMs[e.VMID]
	if vm == nil {
		return fmt.Errorf("clone failed: VM %d vanished", e.VMID)
	}
	if e.Fail != "" {
		st.removeVM(vm)
		return errors.New(e.Fail)
	}
	src := st.VMs[c.Source]
	if src == nil {
		st.removeVM(vm)
		return fmt.Errorf("clone failed: Configuration file 'nodes/%s/qemu-server/%d.conf' does not exist", t.Node, c.Source)
	}
	node := vm.Node
	if c.Target != "" {
		node = c.Target
	}
	conf := map[string]string{}
	var made []string
	fail := func(err error) error {
		for _, id := range made {
			_ = st.freeVolume(id)
		}
		st.removeVM(vm)
		return fmt.Errorf("clone failed: %v", err)
	}
	for _, k := range sortedKeys(src.Config) {
		v := src.Config[k]
		switch {
		case k == "template" || k == "lock" || strings.HasPrefix(k, "unused") || k == "snapshots" || k == "parent":
			continue
		case strings.HasPrefix(k, "net") && k != "nameserver":
			model, _, _, err := ParseNet(v)
			if err != nil {
				conf[k] = v
				continue
			}
			rest := strings.TrimPrefix(v, strings.SplitN(v, ",", 2)[0])
			conf[k] = model + "=" + st.newMAC() + rest
		case IsDriveKey(k):
			d, err := ParseDrive(v)
			if err != nil {
				return fail(err)
			}
			if d.File == "none" || (d.IsCDROM() && !d.IsCloudinit()) {
				conf[k] = v
				continue
			}
			vol := st.Volumes[d.File]
			if vol == nil {
				return fail(fmt.Errorf("volume '%s' does not exist", d.File))
			}
			sid := vol.Storage
			if c.Storage != "" && c.Full {
				sid = c.Storage
			}
			var nv *Volume
			switch {
			case d.IsCloudinit():
				nv, err = st.allocVolume(node, sid, fmt.Sprintf("vm-%d-cloudinit", e.VMID), e.VMID, vol.SizeBytes, vol.SizeBytes)
			case c.Full:
				nv, err = st.allocVolume(node, sid, st.nextDiskName(sid, e.VMID, "vm"), e.VMID, vol.SizeBytes, vol.SizeBytes)
				t.Log = append(t.Log, fmt.Sprintf("create full clone of drive %s (%s)", k, d.File))
			default:
				alloc := vol.SizeBytes
				if s := st.Storages[sid]; s != nil && storageThin(s.Type) {
					alloc = 0
				}
				base := vol.Name
				nv, err = st.allocVolume(node, sid, base+"/"+st.nextDiskName(sid, e.VMID, "vm"), e.VMID, vol.SizeBytes, alloc)
				t.Log = append(t.Log, fmt.Sprintf("create linked clone of drive %s (%s)", k, d.File))
			}
			if err != nil {
				return fail(err)
			}
			made = append(made, nv.VolID)
			if !d.IsCloudinit() {
				nv.Origin = vol.Origin // the clone's disk holds the same image
			}
			d.File = nv.VolID
			if !d.IsCloudinit() {
				d.Set("size", formatSize(nv.SizeBytes))
			}
			conf[k] = d.String()
		case k == "smbios1":
			conf[k] = "uuid=" + st.newUUID()
		case k == "vmgenid":
			conf[k] = st.newUUID()
		default:
			conf[k] = v
		}
	}
	if _, ok := conf["smbios1"]; !ok {
		conf["smbios1"] = "uuid=" + st.newUUID()
	}
	conf["name"] = c.Name
	if c.Description != "" {
		conf["description"] = c.Description
	}
	vm.Config = conf
	vm.Node = node
	if c.Pool != "" {
		st.addToPool(c.Pool, vm.VMID)
	}
	return nil
}

// applyConfig writes config changes: new disks are allocated ("local-lvm:8",
// "local-lvm:cloudinit", "local-lvm:0,import-from=/path"), replaced or
// deleted disks become unusedN (cloud-init drives are freed), new NICs get
// MACs, cipassword is stored hashed.
func (st *State) applyConfig(vm *VM, changes map[string]string, deletes []string) error {
	for _, k := range deletes {
		old, ok := vm.Config[k]
		if !ok {
			continue
		}
		delete(vm.Config, k)
		if err := st.retireDrive(vm, k, old); err != nil {
			return err
		}
	}
	for _, k := range sortedKeys(changes) {
		v := changes[k]
		switch {
		case IsDriveKey(k):
			d, err := ParseDrive(v)
			if err != nil {
				return err
			}
			sid, rest, _ := strings.Cut(d.File, ":")
			switch {
			case rest == "cloudinit":
				vol, err := st.allocVolume(vm.Node, sid, fmt.Sprintf("vm-%d-cloudinit", vm.VMID), vm.VMID, 4<<20, 4<<20)
				if err != nil {
					return err
				}
				d.File = vol.VolID
				d.Set("media", "cdrom")
			case newDiskRe.MatchString(d.File):
				size := int64(0)
				if src := d.Opts["import-from"]; src != "" {
					size, err = ImageVirtualSize(src)
					if err != nil {
						return err
					}
					delete(d.Opts, "import-from")
				} else {
					gb, _ := strconv.ParseFloat(rest, 64)
					size = int64(gb * (1 << 30))
				}
				vol, err := st.allocVolume(vm.Node, sid, st.nextDiskName(sid, vm.VMID, "vm"), vm.VMID, size, size)
				if err != nil {
					return err
				}
				d.File = vol.VolID
				d.Set("size", formatSize(size))
			case d.File == "none" || d.File == "cdrom" || d.IsCDROM():
			default:
				vol := st.Volumes[d.File]
				if vol == nil {
					return fmt.Errorf("volume '%s' does not exist", d.File)
				}
				for uk, uv := range vm.Config {
					if strings.HasPrefix(uk, "unused") && uv == d.File {
						delete(vm.Config, uk)
					}
				}
				d.Set("size", formatSize(vol.SizeBytes))
			}
			if old, ok := vm.Config[k]; ok {
				if od, err := ParseDrive(old); err == nil && od.File != d.File {
					if err := st.retireDrive(vm, k, old); err != nil {
						return err
					}
				}
			}
			vm.Config[k] = d.String()
		case strings.HasPrefix(k, "net"):
			model, mac, _, err := ParseNet(v)
			if err == nil && mac == "" {
				rest := strings.TrimPrefix(v, strings.SplitN(v, ",", 2)[0])
				v = model + "=" + st.newMAC() + rest
			}
			vm.Config[k] = v
		case k == "cipassword":
			sum := sha256.Sum256([]byte(v))
			vm.Config[k] = "$5$sim$" + hex.EncodeToString(sum[:])
		default:
			vm.Config[k] = v
		}
	}
	return nil
}

// retireDrive moves a removed disk to unusedN (freeing cloud-init drives
// and unused disks).
func (st *State) retireDrive(vm *VM, key, value string) error {
	if strings.HasPrefix(key, "unused") {
		return st.freeVolume(value)
	}
	if !IsDriveKey(key) {
		return nil
	}
	d, err := ParseDrive(value)
	if err != nil || st.Volumes[d.File] == nil {
		return nil
	}
	if d.IsCloudinit() {
		return st.freeVolume(d.File)
	}
	if d.IsCDROM() {
		return nil
	}
	vm.Config[st.nextUnused(vm)] = d.File
	return nil
}

// configDigest is the SHA-1 PVE returns as `digest`.
func configDigest(conf map[string]string) string {
	h := sha1.New()
	for _, k := range sortedKeys(conf) {
		fmt.Fprintf(h, "%s: %s\n", k, conf[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ConfigText is the VM's .conf file.
func ConfigText(vm *VM) string {
	var b strings.Builder
	if d := vm.Config["description"]; d != "" {
		for _, l := range strings.Split(d, "\n") {
			b.WriteString("#" + l + "\n")
		}
	}
	for _, k := range sortedKeys(vm.Config) {
		if k == "description" {
			continue
		}
		fmt.Fprintf(&b, "%s: %s\n", k, vm.Config[k])
	}
	return b.String()
}

// ConfigData is GET .../config: every key with its schema type, cipassword
// masked, plus the digest.
func ConfigData(vm *VM) map[string]any {
	out := map[string]any{"digest": configDigest(vm.Config)}
	for k, v := range vm.Config {
		if k == "cipassword" {
			out[k] = "**********"
			continue
		}
		out[k] = renderValue(k, v)
	}
	return out
}

// vmCPUs is cores*sockets (or vcpus).
func vmCPUs(vm *VM) int {
	if v, err := strconv.Atoi(vm.Config["vcpus"]); err == nil && v > 0 {
		return v
	}
	cores, err := strconv.Atoi(vm.Config["cores"])
	if err != nil || cores < 1 {
		cores = 1
	}
	sockets, err := strconv.Atoi(vm.Config["sockets"])
	if err != nil || sockets < 1 {
		sockets = 1
	}
	return cores * sockets
}

// VMMemoryMB is the configured memory in MiB (default 512).
func VMMemoryMB(vm *VM) int64 {
	m, err := strconv.ParseInt(strings.TrimPrefix(vm.Config["memory"], "current="), 10, 64)
	if err != nil || m <= 0 {
		return 512
	}
	return m
}

// bootDiskSize is the size of the first disk drive.
func (st *State) bootDiskSize(vm *VM) int64 {
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		if d, err := ParseDrive(vm.Config[k]); err == nil && !d.IsCDROM() {
			if v := st.Volumes[d.File]; v != nil {
				return v.SizeBytes
			}
		}
	}
	return 0
}

// VMStatusData is GET .../status/current. The `template` key appears only
// on templates (go-proxmox treats any value as "template").
func (st *State) VMStatusData(vm *VM) map[string]any {
	d := st.vmCommon(vm)
	d["ha"] = map[string]any{"managed": 0}
	if v, ok := vm.Config["agent"]; ok {
		if AgentEnabled(v) {
			d["agent"] = 1
		} else {
			d["agent"] = 0
		}
	}
	d["qmpstatus"] = vm.Status
	if vm.Status == "running" {
		d["running-machine"] = "pc-i440fx-9.2+pve1"
		d["running-qemu"] = "9.2.0"
	}
	return d
}

// VMListData is a VM's entry in GET /nodes/{node}/qemu.
func (st *State) VMListData(vm *VM) map[string]any { return st.vmCommon(vm) }

func (st *State) vmCommon(vm *VM) map[string]any {
	maxmem := VMMemoryMB(vm) << 20
	d := map[string]any{
		"vmid": vm.VMID, "name": vm.Name(), "status": vm.Status, "cpus": vmCPUs(vm), "maxmem": maxmem,
		"maxdisk": st.bootDiskSize(vm), "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
		"cpu": 0, "mem": 0, "uptime": 0,
	}
	if vm.Status == "running" {
		d["pid"] = vm.PID
		d["uptime"] = int64(st.Now().Sub(vm.StartedAt).Seconds())
		d["mem"] = maxmem * 2 / 5
		d["cpu"] = 0.012
		d["netin"], d["netout"] = 123456, 65432
	}
	if t := vm.Config["tags"]; t != "" {
		d["tags"] = t
	}
	if l := vm.Lock(); l != "" {
		d["lock"] = l
	}
	if vm.IsTemplate() {
		d["template"] = 1
	}
	return d
}

// bootOrigin is the image the VM's boot disk came from (nil: unknown, as
// for the simulator's own template, which has everything installed).
func (st *State) bootOrigin(vm *VM) *ImageOrigin {
	for _, k := range []string{"scsi0", "virtio0", "sata0", "ide0"} {
		if d, err := ParseDrive(vm.Config[k]); err == nil && !d.IsCDROM() {
			if v := st.Volumes[d.File]; v != nil {
				return v.Origin
			}
			return nil
		}
	}
	return nil
}

// has reports whether a customization mentions all of words.
func (o *ImageOrigin) has(words ...string) bool {
	for _, c := range o.Customizations {
		all := true
		for _, w := range words {
			if !strings.Contains(c, w) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}
