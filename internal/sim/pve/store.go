package pve

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	stateFileName = "state.json"
	lockFileName  = "state.lock"
)

// Store is a state directory shared by every simulator process.
type Store struct {
	dir string
	now func() time.Time
	// mu serialises the goroutines of one process before they queue on
	// the flock, which orders processes.
	mu sync.Mutex
}

// InitOptions describe a fresh cluster.
type InitOptions struct {
	// Node is the first node's name (default "pve1").
	Node string
	// Version is the pve-manager version (default "9.1.1").
	Version string
	// IP is the node address reported in cluster status (default 127.0.0.1).
	IP string
	// Template, when non-zero, creates a cloud-init template with this
	// VMID on local-lvm (what `dc-agent setup proxmox` would have built).
	Template int
	// AgentToken creates the least-privilege user dcagent@pve, role
	// DCAgent and token dcagent@pve!sim that setup would create.
	AgentToken bool
	// Timing of tasks (default DemoTiming).
	Timing *Timing
	// Nodes is the cluster's size (default 1): nodes pve1..pveN (Node
	// must then be "" or "pve1"), each with local and local-lvm.
	Nodes int
	// SharedStorage adds the RBD storage "ceph-vm" that every node sees
	// (shared: linked clones and clones to another node work from it).
	SharedStorage bool
	// TemplateStorage is where the template's disks go (default
	// local-lvm; "ceph-vm" with SharedStorage).
	TemplateStorage string
	// NodeTemplates copies the template to every other node (VMIDs
	// Template+1, Template+2, ... on pve2, pve3, ..., same name), as
	// setup does when the template is on local storage.
	NodeTemplates bool
}

// SharedStorageID is the shared storage InitOptions.SharedStorage adds.
const SharedStorageID = "ceph-vm"

// AgentTokenID is the token InitOptions.AgentToken creates.
const AgentTokenID = "dcagent@pve!sim"

// Create makes a new state directory (it must not hold a state yet).
func Create(dir string, opts InitOptions) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create simulator state dir: %w", err)
	}
	s := &Store{dir: dir}
	if _, err := os.Stat(s.statePath()); err == nil {
		return nil, fmt.Errorf("simulator state %s already exists; open it instead or remove the directory", s.statePath())
	}
	st, err := newState(opts)
	if err != nil {
		return nil, err
	}
	for _, n := range st.Nodes {
		fp, err := s.makeNodeCert(n)
		if err != nil {
			return nil, err
		}
		n.SSLFingerprint = fp
	}
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return nil, err
	}
	if err := s.withFileLock(func() error { return writeAtomic(s.statePath(), data) }); err != nil {
		return nil, err
	}
	return s, nil
}

// Open opens an existing state directory.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	if _, err := os.Stat(s.statePath()); err != nil {
		return nil, fmt.Errorf("no simulated Proxmox state in %s (create one with `pve-sim --state %s`): %w", dir, dir, err)
	}
	return s, nil
}

// OpenOrCreate opens dir, creating the state with opts when there is none.
func OpenOrCreate(dir string, opts InitOptions) (*Store, error) {
	if _, err := os.Stat(filepath.Join(dir, stateFileName)); err == nil {
		return Open(dir)
	}
	return Create(dir, opts)
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// SetClock replaces the wall clock (tests). Call it before sharing s.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

func (s *Store) statePath() string { return filepath.Join(s.dir, stateFileName) }

// NodeCertFiles returns the PEM certificate and key of a node's API
// (PVE's /etc/pve/nodes/<node>/pve-ssl.pem and pve-ssl.key).
func (s *Store) NodeCertFiles(node string) (certFile, keyFile string) {
	d := filepath.Join(s.dir, "nodes", node)
	return filepath.Join(d, "pve-ssl.pem"), filepath.Join(d, "pve-ssl.key")
}

// Update runs fn on the current state under the exclusive lock and saves
// what it changed. If fn returns an error nothing it did is saved. Tasks
// that are due finish before fn runs.
func (s *Store) Update(fn func(st *State) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.withFileLock(func() error {
		data, err := os.ReadFile(s.statePath())
		if err != nil {
			return fmt.Errorf("read simulator state: %w", err)
		}
		load := func() (*State, error) {
			st := &State{}
			if err := json.Unmarshal(data, st); err != nil {
				return nil, fmt.Errorf("simulator state %s is corrupt: %w", s.statePath(), err)
			}
			st.now = s.now
			st.normalize()
			st.advance()
			return st, nil
		}
		st, err := load()
		if err != nil {
			return err
		}
		ferr := fn(st)
		if ferr != nil {
			// Keep only what time did (tasks that finished), not what fn did.
			if st, err = load(); err != nil {
				return err
			}
		}
		out, err := json.MarshalIndent(st, "", " ")
		if err != nil {
			return err
		}
		if !bytes.Equal(out, data) {
			if err := writeAtomic(s.statePath(), out); err != nil {
				return err
			}
		}
		return ferr
	})
}

// View runs fn on the current state; use it for reads (changes fn makes
// are saved all the same, like Update).
func (s *Store) View(fn func(st *State) error) error { return s.Update(fn) }

// RunTask runs op, which starts a task and returns its UPID, then
// finishes the task at once, as the synchronous CLI tools do. It returns
// the task's exit status ("OK" or the error) and op's error.
func (s *Store) RunTask(op func(st *State) (string, error)) (string, error) {
	var upid string
	if err := s.Update(func(st *State) error {
		var err error
		upid, err = op(st)
		return err
	}); err != nil {
		return "", err
	}
	var exit string
	err := s.Update(func(st *State) error {
		t := st.Tasks[upid]
		if t == nil {
			return fmt.Errorf("task %s vanished", upid)
		}
		if t.Status != "stopped" {
			st.finishTask(t)
		}
		exit = t.ExitStatus
		return nil
	})
	return exit, err
}

func (s *Store) withFileLock(fn func() error) error {
	f, err := os.OpenFile(filepath.Join(s.dir, lockFileName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("open simulator lock: %w", err)
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("lock simulator state: %w", err)
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too
	return fn()
}

func writeAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*")
	if err != nil {
		return fmt.Errorf("write simulator state: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return fmt.Errorf("write simulator state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write simulator state: %w", err)
	}
	return nil
}

// normalize makes every map usable after decoding.
func (st *State) normalize() {
	if st.Nodes == nil {
		st.Nodes = map[string]*Node{}
	}
	if st.Storages == nil {
		st.Storages = map[string]*Storage{}
	}
	if st.Volumes == nil {
		st.Volumes = map[string]*Volume{}
	}
	if st.VMs == nil {
		st.VMs = map[int]*VM{}
	}
	if st.Tasks == nil {
		st.Tasks = map[string]*Task{}
	}
	if st.Users == nil {
		st.Users = map[string]*User{}
	}
	if st.Groups == nil {
		st.Groups = map[string]*Group{}
	}
	if st.Roles == nil {
		st.Roles = map[string]*Role{}
	}
	if st.Pools == nil {
		st.Pools = map[string]*Pool{}
	}
	for _, n := range st.Nodes {
		if n.Bridges == nil {
			n.Bridges = map[string]*Bridge{}
		}
	}
	for _, vm := range st.VMs {
		if vm.Config == nil {
			vm.Config = map[string]string{}
		}
	}
}

var repoIDs = map[string]string{"8": "d2c2b4a3a79a7cea", "9": "42db4a6cf33dac83"}

func newState(opts InitOptions) (*State, error) {
	if opts.Node == "" {
		opts.Node = "pve1"
	}
	if err := verifyNodeName(opts.Node); err != nil {
		return nil, err
	}
	if opts.Version == "" {
		opts.Version = "9.1.1"
	}
	if opts.IP == "" {
		opts.IP = "127.0.0.1"
	}
	st := &State{Version: opts.Version, Kernel: "6.14.8-2-pve"}
	st.normalize()
	switch st.Major() {
	case 8:
		st.Kernel = "6.8.12-4-pve"
	case 9:
	default:
		return nil, fmt.Errorf("pve version %q is not simulated; use 8.x or 9.x", opts.Version)
	}
	st.RepoID = repoIDs[fmt.Sprint(st.Major())]
	if opts.Timing != nil {
		st.Timing = *opts.Timing
	} else {
		st.Timing = DemoTiming()
	}
	now := time.Now()
	if opts.Nodes < 1 {
		opts.Nodes = 1
	}
	if opts.Nodes > 1 && opts.Node != "pve1" {
		return nil, fmt.Errorf("a simulated cluster's nodes are pve1..pve%d; leave the node name at pve1", opts.Nodes)
	}
	if opts.Nodes > 64 {
		return nil, fmt.Errorf("%d nodes: a simulated cluster has at most 64", opts.Nodes)
	}
	// One subnet behind every node's vmbr0; each node's guests get their
	// addresses from its own part of the DHCP range.
	span := 151 / opts.Nodes
	for i := 1; i <= opts.Nodes; i++ {
		name, ip := opts.Node, opts.IP
		if i > 1 {
			name, ip = fmt.Sprintf("pve%d", i), fmt.Sprintf("127.0.0.%d", i)
		}
		first := 100 + (i-1)*span
		last := first + span - 1
		st.Nodes[name] = &Node{
			Name: name, IP: ip, NodeID: i, CPUs: 16, CPUModel: "AMD EPYC 7302P 16-Core Processor",
			MemoryBytes: 64 << 30, BootedAt: now.Add(-72 * time.Hour),
			Bridges: map[string]*Bridge{"vmbr0": {
				Name: "vmbr0", CIDR: "10.99.0.1/24", DHCPStart: fmt.Sprintf("10.99.0.%d", first),
				DHCPEnd: fmt.Sprintf("10.99.0.%d", last), IPv6Prefix: "fd00:99::/64",
			}},
		}
	}
	st.Storages["local"] = &Storage{ID: "local", Type: "dir", Path: "/var/lib/vz",
		Content: []string{"backup", "import", "iso", "snippets", "vztmpl"}, TotalBytes: 100 << 30}
	st.Storages["local-lvm"] = &Storage{ID: "local-lvm", Type: "lvmthin", VGName: "pve", ThinPool: "data",
		Content: []string{"images", "rootdir"}, TotalBytes: 400 << 30}
	if opts.SharedStorage {
		st.Storages[SharedStorageID] = &Storage{ID: SharedStorageID, Type: "rbd", Shared: true,
			Content: []string{"images", "rootdir"}, TotalBytes: 2 << 40}
	}
	st.Users["root@pam"] = &User{ID: "root@pam", Enable: true, Comment: "root"}
	tplStorage := opts.TemplateStorage
	if tplStorage == "" {
		tplStorage = "local-lvm"
	}
	if st.Storages[tplStorage] == nil {
		return nil, fmt.Errorf("template storage %q does not exist (local-lvm, or %s with SharedStorage)", tplStorage, SharedStorageID)
	}
	if opts.Template != 0 {
		if err := st.addDemoTemplate(opts.Node, opts.Template, tplStorage); err != nil {
			return nil, err
		}
		if opts.NodeTemplates {
			for i, name := range st.NodeNames()[1:] {
				if err := st.addDemoTemplate(name, opts.Template+i+1, tplStorage); err != nil {
					return nil, err
				}
			}
		}
	}
	if opts.AgentToken {
		if err := st.addAgentToken(); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// addDemoTemplate builds the cloud-init template setup would have made.
func (st *State) addDemoTemplate(node string, vmid int, storage string) error {
	if st.VMs[vmid] != nil {
		return fmt.Errorf("template VMID %d is taken", vmid)
	}
	disk := st.addVolume(node, storage, fmt.Sprintf("base-%d-disk-0", vmid), vmid, 3584<<20)
	ci := st.addVolume(node, storage, fmt.Sprintf("vm-%d-cloudinit", vmid), vmid, 4<<20)
	st.VMs[vmid] = &VM{VMID: vmid, Node: node, Status: "stopped", Config: map[string]string{
		"name":      "ubuntu-2404-cloudinit",
		"agent":     "enabled=1",
		"boot":      "order=scsi0",
		"cores":     "2",
		"memory":    "2048",
		"net0":      "virtio=" + st.newMAC() + ",bridge=vmbr0,firewall=1",
		"ostype":    "l26",
		"scsihw":    "virtio-scsi-pci",
		"scsi0":     disk.VolID + ",size=" + formatSize(disk.SizeBytes),
		"ide2":      ci.VolID + ",media=cdrom",
		"serial0":   "socket",
		"vga":       "serial0",
		"ipconfig0": "ip=dhcp",
		"smbios1":   "uuid=" + st.newUUID(),
		"vmgenid":   st.newUUID(),
		"template":  "1",
	}}
	return nil
}

// AgentPrivileges is the least-privilege set dc-agent's token needs on
// PVE major version major (BACKENDS.md §4.3).
func AgentPrivileges(major int) []string {
	p := []string{"VM.Audit", "VM.Clone", "VM.Allocate", "VM.Config.CPU", "VM.Config.Memory",
		"VM.Config.Disk", "VM.Config.Network", "VM.Config.Options", "VM.Config.Cloudinit",
		"VM.PowerMgmt", "Datastore.AllocateSpace", "Datastore.Audit", "SDN.Use"}
	if major >= 9 {
		// Unrestricted: password resets and key rotations (AgentTenantPriv).
		return append(p, "VM.GuestAgent.Audit", AgentTenantPriv(major))
	}
	return append(p, "VM.Monitor")
}

func (st *State) addAgentToken() error {
	const user, tok = "dcagent@pve", "sim"
	if err := st.AddUser("root@pam", user, UserOptions{Comment: "dc-agent provisioning"}); err != nil {
		return err
	}
	if err := st.AddRole("root@pam", "DCAgent", AgentPrivileges(st.Major())); err != nil {
		return err
	}
	if _, err := st.AddToken("root@pam", user, tok, TokenOptions{Privsep: true, Comment: "pve-sim"}); err != nil {
		return err
	}
	paths := []string{"/vms", "/storage/local-lvm", "/sdn/zones/localnetwork/vmbr0"}
	if st.Storages[SharedStorageID] != nil {
		paths = append(paths, "/storage/"+SharedStorageID)
	}
	for _, path := range paths {
		if err := st.ModifyACL("root@pam", ACLChange{Path: path, Roles: []string{"DCAgent"},
			Users: []string{user}, Tokens: []string{user + "!" + tok}, Propagate: true}); err != nil {
			return err
		}
	}
	// Node load (/cluster/resources, /nodes statistics): Sys.Audit on
	// /nodes, through the built-in auditor role (NodeAuditRole).
	return st.ModifyACL("root@pam", ACLChange{Path: "/nodes", Roles: []string{NodeAuditRole},
		Users: []string{user}, Tokens: []string{user + "!" + tok}, Propagate: true})
}

// NodeAuditRole is the built-in role granted on /nodes so the agent can
// read node load: on node paths only its Sys.Audit counts.
const NodeAuditRole = "PVEAuditor"

// TokenSecret returns the secret of an API token id ("user@realm!name").
func (st *State) TokenSecret(tokenID string) (string, bool) {
	user, name, ok := strings.Cut(tokenID, "!")
	if !ok {
		return "", false
	}
	u := st.Users[user]
	if u == nil || u.Tokens[name] == nil {
		return "", false
	}
	return u.Tokens[name].Value, true
}

// makeNodeCert writes a self-signed certificate for a node and returns its
// fingerprint in PVE's notation.
func (s *Store) makeNodeCert(n *Node) (string, error) {
	certFile, keyFile := s.NodeCertFiles(n.Name)
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: n.Name, Organization: []string{"PVE Cluster Node"}, OrganizationalUnit: []string{"PVE Cluster Node"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{n.Name, "localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	if ip := net.ParseIP(n.IP); ip != nil && !ip.IsLoopback() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", err
	}
	return Fingerprint(der), nil
}

// Fingerprint formats the SHA-256 of a DER certificate as PVE does
// ("AA:BB:...").
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}
