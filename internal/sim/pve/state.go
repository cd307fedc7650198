package pve

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// State is the whole simulated cluster. It is only valid inside a
// Store.Update callback; keep no references to it afterwards.
type State struct {
	// Version is the pve-manager version ("9.1.1"); its major number
	// selects the privilege names (see Privileges).
	Version string `json:"version"`
	// RepoID is the short git id pveversion prints after the version.
	RepoID string `json:"repoid"`
	// Kernel is the running kernel pveversion reports.
	Kernel string `json:"kernel"`

	Nodes    map[string]*Node    `json:"nodes"`
	Storages map[string]*Storage `json:"storages"`
	// Volumes are the disk images on all storages, by volume id
	// ("local-lvm:vm-101-disk-0").
	Volumes map[string]*Volume `json:"volumes"`
	VMs     map[int]*VM        `json:"vms"`
	Tasks   map[string]*Task   `json:"tasks"`

	Users  map[string]*User  `json:"users"`
	Groups map[string]*Group `json:"groups"`
	// Roles holds the custom roles; built-in roles are computed from the
	// version (BuiltinRoles).
	Roles map[string]*Role `json:"roles"`
	ACL   []ACLEntry       `json:"acl"`
	Pools map[string]*Pool `json:"pools"`
	// GPUs are the display controllers and accelerators of each node's PCI
	// list (hardware.go), by node.
	GPUs map[string][]PCIDevice `json:"gpus,omitempty"`

	Timing Timing `json:"timing"`
	Faults Faults `json:"faults"`

	// Seq feeds process ids, MAC addresses and UUIDs so they differ
	// without randomness.
	Seq uint64 `json:"seq"`

	// PeakClones is the most clone tasks ever running at once per
	// "node/storage" (the target storage), counted when a clone starts:
	// what a clone limit is checked against without sampling.
	PeakClones map[string]int `json:"peak_clones,omitempty"`

	now func() time.Time
}

// Node is one cluster node.
type Node struct {
	Name        string `json:"name"`
	IP          string `json:"ip"`
	NodeID      int    `json:"nodeid"`
	CPUs        int    `json:"cpus"`
	CPUModel    string `json:"cpu_model"`
	MemoryBytes int64  `json:"memory_bytes"`
	// SSLFingerprint is the SHA-256 of the node certificate as PVE prints
	// it ("AA:BB:..."); Store.NodeCertFiles has the certificate itself.
	SSLFingerprint string             `json:"ssl_fingerprint"`
	BootedAt       time.Time          `json:"booted_at"`
	Bridges        map[string]*Bridge `json:"bridges"`
	// OfflineUntil: the node does not answer before this time (a
	// simulated outage).
	OfflineUntil time.Time `json:"offline_until,omitzero"`
	// Down: the node is offline until SetNodeOnline (a lost node:
	// powered off, or cut off from the cluster).
	Down bool `json:"down,omitempty"`
	// OfflineSince is when the node last went offline; its statistics in
	// /cluster/resources go stale then and expire 5 minutes later.
	OfflineSince time.Time `json:"offline_since,omitzero"`
	// Maintenance: the node is in HA maintenance mode (`ha-manager
	// crm-command node-maintenance enable`).
	Maintenance bool `json:"maintenance,omitempty"`
	// PoweredOff: the node lost power (it boots when it comes back).
	PoweredOff bool `json:"powered_off,omitempty"`
	// Uplink is the interface of the default route and UplinkCIDR its
	// address ("": eno1 with 203.0.113.<10·NodeID>/24, see NodeUplink).
	Uplink     string `json:"uplink,omitempty"`
	UplinkCIDR string `json:"uplink_cidr,omitempty"`
	// Forwarding is net.ipv4.ip_forward (sysctl).
	Forwarding bool `json:"forwarding,omitempty"`
	// CaddyPackages are the plugins `caddy add-package` added to the
	// node's Caddy (github.com/caddy-dns/acmedns).
	CaddyPackages []string `json:"caddy_packages,omitempty"`
	// Units are the node's systemd units as systemctl left them (by name,
	// "caddy.service"; a unit not here is disabled and inactive), and
	// DaemonReloads counts `systemctl daemon-reload`.
	Units         map[string]*Unit `json:"units,omitempty"`
	DaemonReloads int              `json:"daemon_reloads,omitempty"`
}

// Unit is a systemd unit's state: enabled, active, and how often it was
// started and restarted.
type Unit struct {
	Enabled  bool `json:"enabled,omitempty"`
	Active   bool `json:"active,omitempty"`
	Starts   int  `json:"starts,omitempty"`
	Restarts int  `json:"restarts,omitempty"`
}

// NodeUplink is the node's default-route interface and its address.
func (n *Node) NodeUplink() (name, cidr string) {
	name, cidr = n.Uplink, n.UplinkCIDR
	if name == "" {
		name = "eno1"
	}
	if cidr == "" {
		cidr = fmt.Sprintf("203.0.113.%d/24", 10*max(n.NodeID, 1)%250)
	}
	return name, cidr
}

// Bridge is a Linux bridge on a node with the network behind it: guests
// asking for DHCP get an address from DHCPStart..DHCPEnd, guests with
// ip6=auto get an EUI-64 address in IPv6Prefix.
type Bridge struct {
	Name string `json:"name"`
	// CIDR is the host address on the bridge, which is the guests' gateway
	// ("10.99.0.1/24").
	CIDR       string `json:"cidr"`
	DHCPStart  string `json:"dhcp_start"`
	DHCPEnd    string `json:"dhcp_end"`
	IPv6Prefix string `json:"ipv6_prefix,omitempty"`
	// Leases maps MAC addresses to their DHCP address. When DHCPStart ==
	// DHCPEnd every guest gets that one address (tests point it at a
	// loopback address where a real sshd listens).
	Leases map[string]string `json:"leases,omitempty"`
}

// Storage is one entry of storage.cfg.
type Storage struct {
	ID string `json:"id"`
	// Type is the plugin: lvmthin, lvm, dir, zfspool, nfs, rbd.
	Type    string   `json:"type"`
	Content []string `json:"content"`
	Shared  bool     `json:"shared,omitempty"`
	// Nodes restricts the storage to these nodes (empty: all).
	Nodes    []string `json:"nodes,omitempty"`
	Disabled bool     `json:"disabled,omitempty"`
	// TotalBytes is the capacity (per node for local storage).
	TotalBytes int64 `json:"total_bytes"`
	// NodeTotalBytes overrides TotalBytes of a local storage on a node.
	NodeTotalBytes map[string]int64 `json:"node_total_bytes,omitempty"`
	VGName         string           `json:"vgname,omitempty"`
	ThinPool       string           `json:"thinpool,omitempty"`
	Path           string           `json:"path,omitempty"`
}

// Volume is one disk image.
type Volume struct {
	VolID   string `json:"volid"`
	Storage string `json:"storage"`
	Node    string `json:"node"`
	// Name is the part after "storage:" ("vm-101-disk-0",
	// "base-9000-disk-0/vm-101-disk-0" for a linked clone).
	Name      string `json:"name"`
	VMID      int    `json:"vmid"`
	SizeBytes int64  `json:"size_bytes"`
	// AllocBytes is what the volume takes from the storage's capacity:
	// the full size, except for linked clones on thin storage, which
	// start at zero and grow with resizes.
	AllocBytes int64  `json:"alloc_bytes"`
	Format     string `json:"format,omitempty"`
	// Origin is the host image file a disk was imported from, with what
	// virt-customize did to it (set by the host CLI simulator).
	Origin *ImageOrigin `json:"origin,omitempty"`
}

// ImageOrigin records where an imported disk came from.
type ImageOrigin struct {
	File string `json:"file"`
	// Customizations are the virt-customize operations applied to the
	// image before the import ("install qemu-guest-agent",
	// "truncate /etc/machine-id").
	Customizations []string `json:"customizations,omitempty"`
}

// VM is a QEMU guest or template.
type VM struct {
	VMID int    `json:"vmid"`
	Node string `json:"node"`
	// Config holds the config keys as the .conf file does: every value a
	// string. The API renders them with their schema type.
	Config map[string]string `json:"config"`
	// Status is "running" or "stopped".
	Status    string    `json:"status"`
	StartedAt time.Time `json:"started_at,omitzero"`
	PID       int       `json:"pid,omitempty"`
	// BootAt is when the guest agent starts answering.
	BootAt time.Time `json:"boot_at,omitzero"`
	// AgentNeverStarts marks a guest whose agent never answers.
	AgentNeverStarts bool `json:"agent_never_starts,omitempty"`
	// Pool is the pool the VM belongs to ("" none).
	Pool string `json:"pool,omitempty"`
	// CreatedAt is when the VM was created: its statistics reach
	// /cluster/resources with its node's next pvestatd round
	// (Timing.Stats).
	CreatedAt time.Time `json:"created_at,omitzero"`
	// LastStatus is the status the VM had when its node went offline:
	// what /cluster/resources keeps showing until the statistics expire.
	LastStatus string `json:"last_status,omitempty"`
	// Guest is the inside of the VM as its guest agent sees it, made at
	// its first boot (guest.go).
	Guest *Guest `json:"guest,omitempty"`
}

// IsTemplate reports whether the VM is a template.
func (vm *VM) IsTemplate() bool { return vm.Config["template"] == "1" }

// Name is the VM's name as PVE shows it ("VM 101" when unset).
func (vm *VM) Name() string {
	if n := vm.Config["name"]; n != "" {
		return n
	}
	return fmt.Sprintf("VM %d", vm.VMID)
}

// Lock returns the config lock ("" if none).
func (vm *VM) Lock() string { return vm.Config["lock"] }

// Task is one worker task.
type Task struct {
	UPID      string `json:"upid"`
	Node      string `json:"node"`
	PID       int    `json:"pid"`
	PStart    int64  `json:"pstart"`
	StartTime int64  `json:"starttime"`
	Type      string `json:"type"`
	ID        string `json:"id"`
	// User is the auth id that started the task ("prov@pve!ci").
	User string `json:"user"`
	// Status is "running" or "stopped".
	Status     string `json:"status"`
	ExitStatus string `json:"exitstatus,omitempty"`
	EndTime    int64  `json:"endtime,omitempty"`
	// DueAt is the earliest time the task finishes.
	DueAt time.Time `json:"due_at"`
	// PollsLeft counts status polls still answered "running".
	PollsLeft int `json:"polls_left,omitempty"`
	// FinishBy: a task nobody polls finishes by then anyway, as real
	// workers do.
	FinishBy time.Time `json:"finish_by"`
	Log      []string  `json:"log,omitempty"`
	// Effect is what the task does when it finishes.
	Effect *Effect `json:"effect,omitempty"`
}

// Effect is the deferred work of a task, applied when it finishes.
type Effect struct {
	VMID int `json:"vmid,omitempty"`
	// Fail makes the task end with this exit status (injected faults).
	Fail string `json:"fail,omitempty"`
	// Flags are options of the operation ("skiplock", "purge", ...).
	Flags []string `json:"flags,omitempty"`

	// qmconfig / qmcreate
	Config map[string]string `json:"config,omitempty"`
	Delete []string          `json:"delete,omitempty"`
	// Import maps a drive key to the host file imported into it.
	Import map[string]string `json:"import,omitempty"`

	// resize
	Disk    string `json:"disk,omitempty"`
	NewSize int64  `json:"new_size,omitempty"`

	// qmclone
	Clone *CloneEffect `json:"clone,omitempty"`

	// qmigrate: the node the VM moves to
	Target string `json:"target,omitempty"`
}

// CloneEffect is the work of a qmclone task.
type CloneEffect struct {
	Source      int    `json:"source"`
	Full        bool   `json:"full"`
	Storage     string `json:"storage,omitempty"`
	Format      string `json:"format,omitempty"`
	Name        string `json:"name,omitempty"`
	Description string `json:"description,omitempty"`
	Pool        string `json:"pool,omitempty"`
	Target      string `json:"target,omitempty"`
	// TargetStorage is where the new disk goes (contention accounting).
	TargetStorage string `json:"target_storage,omitempty"`
}

// User is a PVE user ("prov@pve").
type User struct {
	ID        string            `json:"id"`
	Enable    bool              `json:"enable"`
	Expire    int64             `json:"expire,omitempty"`
	Comment   string            `json:"comment,omitempty"`
	Email     string            `json:"email,omitempty"`
	FirstName string            `json:"firstname,omitempty"`
	LastName  string            `json:"lastname,omitempty"`
	Groups    []string          `json:"groups,omitempty"`
	Tokens    map[string]*Token `json:"tokens,omitempty"`
}

// Token is an API token of a user. Value is the secret (PVE keeps it in
// /etc/pve/priv/token.cfg; here the state file is 0600).
type Token struct {
	Value   string `json:"value"`
	Privsep bool   `json:"privsep"`
	Expire  int64  `json:"expire,omitempty"`
	Comment string `json:"comment,omitempty"`
}

// Group is a user group.
type Group struct {
	ID      string `json:"id"`
	Comment string `json:"comment,omitempty"`
}

// Role is a named set of privileges.
type Role struct {
	ID    string   `json:"id"`
	Privs []string `json:"privs"`
}

// ACLEntry grants Role on Path to a user, group or token.
type ACLEntry struct {
	Path string `json:"path"`
	// Type is "user", "group" or "token".
	Type      string `json:"type"`
	UGID      string `json:"ugid"`
	Role      string `json:"role"`
	Propagate bool   `json:"propagate"`
}

// Pool is a resource pool.
type Pool struct {
	ID       string   `json:"id"`
	Comment  string   `json:"comment,omitempty"`
	VMs      []int    `json:"vms,omitempty"`
	Storages []string `json:"storages,omitempty"`
}

// Timing sets how long simulated work takes.
type Timing struct {
	Clone    Duration `json:"clone"`
	Config   Duration `json:"config"`
	Resize   Duration `json:"resize"`
	Start    Duration `json:"start"`
	Stop     Duration `json:"stop"`
	Shutdown Duration `json:"shutdown"`
	Destroy  Duration `json:"destroy"`
	Create   Duration `json:"create"`
	Template Duration `json:"template"`
	// Boot is the time from start until the guest agent answers.
	Boot Duration `json:"boot"`
	// CloneContention models clones sharing a storage's bandwidth: a clone
	// that starts while k others run on the same storage takes
	// Clone*(1+CloneContention*k).
	CloneContention float64 `json:"clone_contention,omitempty"`
	// TaskPolls is how many status polls answer "running" before a task
	// may finish (in addition to its duration).
	TaskPolls int `json:"task_polls"`
	// Request is added to every API request.
	Request Duration `json:"request"`
	// Stats is pvestatd's update period: a new VM shows in
	// /cluster/resources without statistics (no name, status "unknown")
	// until that long after its creation (real PVE: 10s).
	Stats Duration `json:"stats,omitempty"`
}

// FastTiming is a timing for tests: every task takes a millisecond or two
// and is polled once before it finishes.
func FastTiming() Timing {
	ms := Duration(time.Millisecond)
	return Timing{Clone: 2 * ms, Config: ms, Resize: ms, Start: ms, Stop: ms, Shutdown: ms,
		Destroy: ms, Create: ms, Template: ms, Boot: 5 * ms, TaskPolls: 1}
}

// DemoTiming feels like a small real host: clones take seconds, guests
// boot in a few seconds.
func DemoTiming() Timing {
	s := Duration(time.Second)
	return Timing{Clone: 2 * s, Config: s / 5, Resize: s / 2, Start: s / 2, Stop: s / 2, Shutdown: s,
		Destroy: s / 2, Create: s / 2, Template: s / 2, Boot: 4 * s, TaskPolls: 0, Request: Duration(5 * time.Millisecond),
		Stats: 10 * s}
}

// Faults are injected failures. Counted faults are consumed as they fire.
type Faults struct {
	// TaskFailures make the next tasks of a type fail.
	TaskFailures []TaskFailure `json:"task_failures,omitempty"`
	// AgentNeverStarts: guests started from now on never get a guest agent.
	AgentNeverStarts bool `json:"agent_never_starts,omitempty"`
	// HTTPErrors answer matching API requests with an error instead.
	HTTPErrors []HTTPError `json:"http_errors,omitempty"`
	// Outages take a node offline when a task of a type starts on it.
	Outages []Outage `json:"outages,omitempty"`
	// HeldTasks: tasks of these types ("qmclone") keep running, however
	// often they are polled, until their type is taken off the list (a
	// slow storage, to catch an agent mid-task).
	HeldTasks []string `json:"held_tasks,omitempty"`
}

// TaskFailure makes the next Count tasks of Type end with ExitStatus.
type TaskFailure struct {
	Type       string `json:"type"`
	ExitStatus string `json:"exitstatus"`
	Count      int    `json:"count"`
}

// HTTPError answers the next Count API requests whose method matches
// (empty: any) and whose path contains PathContains with Status and Reason
// (the HTTP reason phrase, as PVE sends its messages).
type HTTPError struct {
	Method       string `json:"method,omitempty"`
	PathContains string `json:"path_contains"`
	Status       int    `json:"status"`
	Reason       string `json:"reason"`
	Count        int    `json:"count"`
}

// Outage takes Node offline when the next task of type OnTask starts on
// it or, for a clone, moves the new VM to it (`target`).
//
// With Duration > 0 the node's API is unreachable that long and the node
// keeps running: its tasks finish (a network blip or a pveproxy restart).
// With Duration 0 the node is lost until SetNodeOnline: with PowerLoss
// its running tasks die where they are (a clone's VM stays behind as PVE
// leaves it: locked "clone", without disks) and its guests stop; the
// guests with onboot=1 start again when it comes back. Without
// PowerLoss the node is cut off but keeps running its tasks.
type Outage struct {
	Node      string   `json:"node"`
	OnTask    string   `json:"on_task"`
	Duration  Duration `json:"duration,omitempty"`
	PowerLoss bool     `json:"power_loss,omitempty"`
}

// LockTimeout is the exit status of a task that could not get a VM's
// config lock.
func LockTimeout(vmid int) string {
	return fmt.Sprintf("can't lock file '/var/lock/qemu-server/lock-%d.conf' - got timeout", vmid)
}

// Duration is a time.Duration written as text ("1.5s") in the state file.
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as text.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts text ("150ms") or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("duration %q: %w", s, err)
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be text like \"150ms\": %s", b)
	}
	*d = Duration(n)
	return nil
}

// Now is the state's clock.
func (st *State) Now() time.Time {
	if st.now != nil {
		return st.now()
	}
	return time.Now()
}

// Major is the PVE major version (8 or 9).
func (st *State) Major() int {
	maj, _, _ := strings.Cut(st.Version, ".")
	n, err := strconv.Atoi(maj)
	if err != nil {
		return 0
	}
	return n
}

// Release is "major.minor" of the version.
func (st *State) Release() string {
	parts := strings.SplitN(st.Version, ".", 3)
	if len(parts) < 2 {
		return st.Version
	}
	return parts[0] + "." + parts[1]
}

// PVEVersionLine is what `pveversion` prints.
func (st *State) PVEVersionLine() string {
	return fmt.Sprintf("pve-manager/%s/%s (running kernel: %s)", st.Version, st.RepoID, st.Kernel)
}

// NodeNames lists the nodes, sorted.
func (st *State) NodeNames() []string {
	out := make([]string, 0, len(st.Nodes))
	for n := range st.Nodes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// VMIDs lists every VMID, sorted.
func (st *State) VMIDs() []int {
	out := make([]int, 0, len(st.VMs))
	for id := range st.VMs {
		out = append(out, id)
	}
	sort.Ints(out)
	return out
}

// NodeOnline reports whether node exists and answers now.
func (st *State) NodeOnline(node string) bool {
	n := st.Nodes[node]
	return n != nil && !n.Down && !st.Now().Before(n.OfflineUntil)
}

func (st *State) nextSeq() uint64 {
	st.Seq++
	return st.Seq
}
