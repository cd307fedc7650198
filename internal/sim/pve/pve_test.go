package pve

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/sim/simkit"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqB5wY1tmlVkGCOcO0E0qsx6YY4rYbl8wEgr9bSmw5B user@host"

func newStore(t *testing.T, opts InitOptions) *Store {
	t.Helper()
	if opts.Timing == nil {
		ft := FastTiming()
		opts.Timing = &ft
	}
	s, err := Create(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func withClock(s *Store) *simkit.Clock {
	c := simkit.NewClock(time.Now())
	s.SetClock(c.Now)
	return c
}

func update(t *testing.T, s *Store, fn func(st *State) error) {
	t.Helper()
	if err := s.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// runTask starts a task with op (in one store update, as the agent's
// token) and polls it until it is done.
func runTask(t *testing.T, s *Store, c *simkit.Clock, op func(st *State) (upid string, err error)) *Task {
	t.Helper()
	var upid string
	update(t, s, func(st *State) error {
		var err error
		upid, err = op(st)
		return err
	})
	return pollUntilDone(t, s, c, AgentTokenID, upid)
}

// pollUntilDone polls a task like a client would, advancing the clock.
func pollUntilDone(t *testing.T, s *Store, c *simkit.Clock, actor, upid string) *Task {
	t.Helper()
	node := strings.Split(upid, ":")[1]
	for i := 0; i < 50; i++ {
		var task Task
		update(t, s, func(st *State) error {
			tk, err := st.TaskStatus(actor, node, upid)
			if err != nil {
				return err
			}
			task = *tk
			return nil
		})
		if task.Status == "stopped" {
			return &task
		}
		c.Add(50 * time.Millisecond)
	}
	t.Fatalf("task %s never finished", upid)
	return nil
}

func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func TestCreateDefaults(t *testing.T) {
	s := newStore(t, InitOptions{Template: 9000, AgentToken: true})
	update(t, s, func(st *State) error {
		if st.Major() != 9 || st.Release() != "9.1" {
			t.Errorf("version %s", st.Version)
		}
		n := st.Nodes["pve1"]
		if n == nil || n.Bridges["vmbr0"] == nil || len(n.SSLFingerprint) != 95 {
			t.Fatalf("node: %+v", n)
		}
		tpl := st.VMs[9000]
		if tpl == nil || !tpl.IsTemplate() || !AgentEnabled(tpl.Config["agent"]) {
			t.Fatalf("template: %+v", tpl)
		}
		if _, ok := st.TokenSecret(AgentTokenID); !ok {
			t.Error("agent token missing")
		}
		if !strings.HasPrefix(st.PVEVersionLine(), "pve-manager/9.1.1/") {
			t.Error(st.PVEVersionLine())
		}
		return nil
	})
	if _, err := Create(s.Dir(), InitOptions{}); err == nil {
		t.Error("Create over an existing state must fail")
	}
	if _, err := Open(t.TempDir()); err == nil {
		t.Error("Open of an empty dir must fail")
	}
}

// Separate Store values on one directory behave like separate processes
// (separate flocks): concurrent updates must not be lost.
func TestConcurrentStoresDoNotLoseUpdates(t *testing.T) {
	s := newStore(t, InitOptions{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		other, err := Open(s.Dir())
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 10; j++ {
				if err := other.Update(func(st *State) error {
					return st.AddGroup(Root, fmt.Sprintf("g%d-%d", i, j), "")
				}); err != nil {
					t.Error(err)
				}
			}
		}(i)
	}
	wg.Wait()
	update(t, s, func(st *State) error {
		if len(st.Groups) != 80 {
			t.Errorf("groups = %d, want 80", len(st.Groups))
		}
		return nil
	})
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	s := newStore(t, InitOptions{})
	err := s.Update(func(st *State) error {
		if err := st.AddGroup(Root, "x", ""); err != nil {
			return err
		}
		return errors.New("boom")
	})
	if err == nil {
		t.Fatal("want error")
	}
	update(t, s, func(st *State) error {
		if st.Groups["x"] != nil {
			t.Error("group of a failed update was saved")
		}
		return nil
	})
}

func TestLeastPrivilegeTokenPerVersion(t *testing.T) {
	for _, v := range []string{"8.4.1", "9.1.1"} {
		t.Run(v, func(t *testing.T) {
			s := newStore(t, InitOptions{Version: v, Template: 9000, AgentToken: true})
			update(t, s, func(st *State) error {
				tok := AgentTokenID
				for _, p := range AgentPrivileges(st.Major()) {
					path := "/vms/123"
					if strings.HasPrefix(p, "Datastore") {
						path = "/storage/local-lvm"
					}
					if p == "SDN.Use" {
						path = "/sdn/zones/localnetwork/vmbr0"
					}
					if !st.Has(tok, path, p) {
						t.Errorf("token lacks %s on %s", p, path)
					}
				}
				if st.Has(tok, "/storage/local", "Datastore.AllocateSpace") {
					t.Error("token must not reach storage 'local'")
				}
				// Node load, nothing more: Sys.Audit on the nodes only.
				if !st.Has(tok, "/nodes/pve1", "Sys.Audit") || st.Has(tok, "/", "Sys.Audit") || st.Has(tok, "/nodes/pve1", "Sys.Modify") {
					t.Error("token must have Sys.Audit on /nodes and nowhere else")
				}
				// The other version's agent privilege does not exist here.
				other := "VM.Monitor"
				if st.Major() == 8 {
					other = "VM.GuestAgent.Audit"
				}
				err := st.AddRole(Root, "Bad", []string{"VM.Audit", other})
				if err == nil || !strings.Contains(err.Error(), "invalid privilege '"+other+"'") {
					t.Errorf("AddRole with %s: %v", other, err)
				}
				return nil
			})
		})
	}
}

func TestPermissionSemantics(t *testing.T) {
	s := newStore(t, InitOptions{})
	update(t, s, func(st *State) error {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(st.AddGroup(Root, "ops", ""))
		must(st.AddUser(Root, "u@pve", UserOptions{Groups: []string{"ops"}}))
		_, err := st.AddToken(Root, "u@pve", "sep", TokenOptions{Privsep: true})
		must(err)
		_, err = st.AddToken(Root, "u@pve", "full", TokenOptions{Privsep: false})
		must(err)
		// Group grants VM admin on /vms, the user's own entry on /vms/200 is
		// only auditor: deeper and user entries win.
		must(st.ModifyACL(Root, ACLChange{Path: "/vms", Roles: []string{"PVEVMAdmin"}, Groups: []string{"ops"}, Propagate: true}))
		must(st.ModifyACL(Root, ACLChange{Path: "/vms/200", Roles: []string{"PVEAuditor"}, Users: []string{"u@pve"}, Propagate: true}))
		if !st.Has("u@pve", "/vms/100", "VM.Allocate") {
			t.Error("group role should propagate to /vms/100")
		}
		if st.Has("u@pve", "/vms/200", "VM.Allocate") || !st.Has("u@pve", "/vms/200", "VM.Audit") {
			t.Error("user entry on /vms/200 should replace the group's")
		}
		// Non-propagating entries apply only to their own path.
		must(st.ModifyACL(Root, ACLChange{Path: "/storage", Roles: []string{"PVEDatastoreUser"}, Users: []string{"u@pve"}}))
		if !st.Has("u@pve", "/storage", "Datastore.Audit") || st.Has("u@pve", "/storage/local-lvm", "Datastore.Audit") {
			t.Error("propagate=0 semantics wrong")
		}
		// A full token has the user's privileges; a privsep token only what
		// both have.
		if !st.Has("u@pve!full", "/vms/100", "VM.Allocate") {
			t.Error("privsep=0 token should equal its user")
		}
		if st.Has("u@pve!sep", "/vms/100", "VM.Audit") {
			t.Error("privsep token without ACLs must have nothing")
		}
		must(st.ModifyACL(Root, ACLChange{Path: "/", Roles: []string{"Administrator"}, Tokens: []string{"u@pve!sep"}, Propagate: true}))
		if !st.Has("u@pve!sep", "/vms/100", "VM.Allocate") || st.Has("u@pve!sep", "/vms/200", "VM.Allocate") {
			t.Error("privsep token must get the intersection with its user")
		}
		// NoAccess wins.
		must(st.ModifyACL(Root, ACLChange{Path: "/vms/300", Roles: []string{"NoAccess"}, Users: []string{"u@pve"}}))
		if st.Has("u@pve", "/vms/300", "VM.Audit") {
			t.Error("NoAccess must remove everything")
		}
		// Pool members inherit the pool's privileges.
		must(st.AddUser(Root, "p@pve", UserOptions{}))
		must(st.AddPool(Root, "tenants", ""))
		st.VMs[500] = &VM{VMID: 500, Node: "pve1", Status: "stopped", Config: map[string]string{}}
		must(st.AddToPool(Root, "tenants", []int{500}, nil))
		must(st.ModifyACL(Root, ACLChange{Path: "/pool/tenants", Roles: []string{"PVEVMUser"}, Users: []string{"p@pve"}, Propagate: true}))
		if !st.Has("p@pve", "/vms/500", "VM.PowerMgmt") || st.Has("p@pve", "/vms/501", "VM.PowerMgmt") {
			t.Error("pool inheritance wrong")
		}
		// Disabled users lose everything; authentication checks the secret.
		secret, _ := st.TokenSecret("u@pve!full")
		if id, err := st.Authenticate("u@pve!full=" + secret); err != nil || id != "u@pve!full" {
			t.Errorf("authenticate: %q %v", id, err)
		}
		if _, err := st.Authenticate("u@pve!full=wrong"); statusOf(err) != 401 {
			t.Errorf("wrong secret: %v", err)
		}
		off := false
		must(st.ModifyUser(Root, "u@pve", &off, nil, nil))
		if _, err := st.Authenticate("u@pve!full=" + secret); statusOf(err) != 401 {
			t.Error("disabled user's token must not authenticate")
		}
		return nil
	})
}

// cloneSetup returns a store with template 9000 and the agent token.
func cloneSetup(t *testing.T) (*Store, *simkit.Clock) {
	s := newStore(t, InitOptions{Template: 9000, AgentToken: true})
	return s, withClock(s)
}

func TestCloneLifecycle(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	var upid string
	var newid int
	update(t, s, func(st *State) error {
		newid = st.NextID()
		var err error
		upid, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: newid, Name: "dc-test"})
		if err != nil {
			return err
		}
		vm := st.VMs[newid]
		if vm == nil || vm.Lock() != "clone" || vm.Name() != "dc-test" {
			t.Errorf("clone in progress: %+v", vm)
		}
		// The VMID is taken while the clone runs.
		if st.NextID() == newid {
			t.Error("nextid must skip a VMID being cloned")
		}
		_, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: newid})
		if err == nil || err.Error() != fmt.Sprintf("unable to create VM %d: config file already exists", newid) {
			t.Errorf("second clone to the same id: %v", err)
		}
		// Config changes must wait for the lock.
		_, err = st.SetConfig(tok, "pve1", newid, map[string]string{"cores": "4"}, false)
		if err == nil || !strings.Contains(err.Error(), "is locked (clone)") {
			t.Errorf("sync config on locked VM: %v", err)
		}
		return nil
	})
	if !strings.HasPrefix(upid, "UPID:pve1:") || !strings.HasSuffix(upid, ":qmclone:9000:"+tok+":") || len(strings.Split(upid, ":")) != 9 {
		t.Fatalf("UPID %q", upid)
	}
	task := pollUntilDone(t, s, c, tok, upid)
	if task.ExitStatus != "OK" {
		t.Fatalf("clone: %s", task.ExitStatus)
	}
	update(t, s, func(st *State) error {
		vm := st.VMs[newid]
		if vm.Lock() != "" || vm.IsTemplate() {
			t.Errorf("cloned VM: %+v", vm.Config)
		}
		// Linked clone by default from a template, new MAC, new UUID.
		if !strings.HasPrefix(vm.Config["scsi0"], fmt.Sprintf("local-lvm:base-9000-disk-0/vm-%d-disk-0,", newid)) {
			t.Errorf("scsi0 = %q", vm.Config["scsi0"])
		}
		if vm.Config["net0"] == st.VMs[9000].Config["net0"] || vm.Config["smbios1"] == st.VMs[9000].Config["smbios1"] {
			t.Error("clone must get a new MAC and UUID")
		}
		if _, ok := st.VMStatusData(vm)["template"]; ok {
			t.Error("status of a plain VM must not carry `template`")
		}
		if st.VMStatusData(st.VMs[9000])["template"] != 1 {
			t.Error("template must be marked")
		}
		return nil
	})
}

func TestCloneRules(t *testing.T) {
	s, _ := cloneSetup(t)
	tok := AgentTokenID
	yes, no := true, false
	update(t, s, func(st *State) error {
		_, err := st.Clone(tok, "pve1", 9000, CloneParams{NewID: 150, Storage: "local-lvm"})
		if err == nil || err.Error() != "parameter 'storage' not allowed for linked clones" || statusOf(err) != 500 {
			t.Errorf("linked + storage: %v", err)
		}
		_, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 150, Full: &no, Format: "qcow2"})
		if err == nil || err.Error() != "parameter 'format' not allowed for linked clones" {
			t.Errorf("linked + format: %v", err)
		}
		// The token may not allocate on storage 'local'.
		_, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 150, Full: &yes, Storage: "local"})
		if statusOf(err) != 403 {
			t.Errorf("full clone to a storage without rights: %v", err)
		}
		_, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 99})
		if statusOf(err) != 400 {
			t.Errorf("newid 99: %v", err)
		}
		_, err = st.Clone(tok, "pve1", 9999, CloneParams{NewID: 150})
		if err == nil || err.Error() != "Configuration file 'nodes/pve1/qemu-server/9999.conf' does not exist" {
			t.Errorf("missing source: %v", err)
		}
		_, err = st.Clone(tok, "pve9", 9000, CloneParams{NewID: 150})
		if err == nil || !strings.HasPrefix(err.Error(), "hostname lookup 'pve9' failed") {
			t.Errorf("unknown node: %v", err)
		}
		_, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 150, Name: "not_dns"})
		if statusOf(err) != 400 {
			t.Errorf("bad name: %v", err)
		}
		// A plain lvm storage cannot do linked clones.
		st.Storages["thick"] = &Storage{ID: "thick", Type: "lvm", VGName: "vg", Content: []string{"images"}, TotalBytes: 100 << 30}
		st.addVolume("pve1", "thick", "base-9100-disk-0", 9100, 1<<30)
		st.VMs[9100] = &VM{VMID: 9100, Node: "pve1", Status: "stopped", Config: map[string]string{"template": "1", "scsi0": "thick:base-9100-disk-0,size=1G"}}
		_, err = st.Clone(Root, "pve1", 9100, CloneParams{NewID: 150})
		if err == nil || err.Error() != "Linked clone feature is not supported for drive 'scsi0'" {
			t.Errorf("linked clone on lvm: %v", err)
		}
		if st.VMs[150] != nil {
			t.Error("a refused clone must not leave a VM")
		}
		return nil
	})
}

func TestFullCloneStorageFullFailsCleanly(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	yes := true
	var upid string
	update(t, s, func(st *State) error {
		if err := st.SetStorageCapacity("local-lvm", st.StorageUsed("local-lvm", "pve1")+(1<<30)); err != nil {
			return err
		}
		var err error
		upid, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 120, Full: &yes, Storage: "local-lvm"})
		return err
	})
	task := pollUntilDone(t, s, c, tok, upid)
	if !strings.HasPrefix(task.ExitStatus, "clone failed: lvcreate 'pve/vm-120-disk-0' error:") || !strings.Contains(task.ExitStatus, "insufficient free space") {
		t.Fatalf("exit status %q", task.ExitStatus)
	}
	update(t, s, func(st *State) error {
		if st.VMs[120] != nil {
			t.Error("failed clone left its VM")
		}
		for id, v := range st.Volumes {
			if v.VMID == 120 {
				t.Errorf("failed clone left volume %s", id)
			}
		}
		return nil
	})
}

func TestInjectedTaskFailureAndOutage(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	var upid string
	update(t, s, func(st *State) error {
		st.Faults.TaskFailures = []TaskFailure{{Type: "qmclone", ExitStatus: LockTimeout(9000), Count: 1}}
		st.Faults.Outages = []Outage{{Node: "pve1", OnTask: "qmclone", Duration: Duration(time.Second)}}
		var err error
		upid, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 130})
		if st.NodeOnline("pve1") {
			t.Error("node should be offline during the outage")
		}
		return err
	})
	c.Add(2 * time.Second)
	task := pollUntilDone(t, s, c, tok, upid)
	if task.ExitStatus != "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout" {
		t.Fatalf("exit %q", task.ExitStatus)
	}
	update(t, s, func(st *State) error {
		if st.VMs[130] != nil || len(st.Faults.TaskFailures) != 0 || len(st.Faults.Outages) != 0 {
			t.Error("fault not consumed or VM left")
		}
		if !st.NodeOnline("pve1") {
			t.Error("node should be back")
		}
		return nil
	})
}

func TestConfigValidation(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	runTask(t, s, c, func(st *State) (string, error) {
		return st.Clone(tok, "pve1", 9000, CloneParams{NewID: 101, Name: "vm1"})
	})
	update(t, s, func(st *State) error {
		cases := []struct {
			params map[string]string
			status int
			key    string
			msg    string
		}{
			{map[string]string{"sshkeys": testKey}, 400, "sshkeys", "invalid format - invalid urlencoded string: "},
			{map[string]string{"sshkeys": url.QueryEscape(testKey)}, 400, "sshkeys", "invalid urlencoded string"},
			{map[string]string{"sshkeys": url.PathEscape("not a key")}, 500, "", "SSH public key validation error"},
			{map[string]string{"bogus": "1"}, 400, "bogus", notInSchema},
			{map[string]string{"cores": "two"}, 400, "cores", "type check ('integer') failed - got 'two'"},
			{map[string]string{"cores": "0"}, 400, "cores", "value must have a minimum value of 1"},
			{map[string]string{"onboot": "maybe"}, 400, "onboot", "type check ('boolean') failed"},
			{map[string]string{"ipconfig0": "ip=300.1.1.1/24"}, 400, "ipconfig0", "ipv4"},
			{map[string]string{"tags": "bad tag!"}, 400, "tags", "invalid"},
			{map[string]string{"args": "-foo"}, 403, "", "only root can set 'args' config"},
			{map[string]string{"skiplock": "1", "cores": "2"}, 400, "skiplock", "Only root may use this option."},
			{map[string]string{"net1": "virtio,bridge=vmbr9"}, 403, "", "/sdn/zones/localnetwork/vmbr9"},
			{map[string]string{"delete": "nonsense"}, 400, "delete", "invalid configuration ID"},
		}
		for _, tc := range cases {
			_, err := st.SetConfig(tok, "pve1", 101, tc.params, true)
			e := AsError(err)
			if err == nil || e.Status != tc.status {
				t.Errorf("%v: got %v (status %d), want %d", tc.params, err, e.Status, tc.status)
				continue
			}
			got := e.Msg
			if tc.key != "" {
				got = e.Params[tc.key]
			}
			if !strings.Contains(got, tc.msg) {
				t.Errorf("%v: message %q does not contain %q", tc.params, got, tc.msg)
			}
		}
		return nil
	})
	// A valid update through a task.
	runTask(t, s, c, func(st *State) (string, error) {
		return st.SetConfig(tok, "pve1", 101, map[string]string{
			"cores": "4", "memory": "4096", "sshkeys": strings.ReplaceAll(url.QueryEscape(testKey), "+", "%20"),
			"ciuser": "root", "cipassword": "s3cret", "ipconfig0": "ip=dhcp,ip6=auto", "tags": "dc-agent", "onboot": "true",
		}, true)
	})
	update(t, s, func(st *State) error {
		cd := ConfigData(st.VMs[101])
		if cd["cores"] != int64(4) || cd["memory"] != "4096" || cd["onboot"] != int64(1) || cd["cipassword"] != "**********" || cd["agent"] != "enabled=1" {
			t.Errorf("config data: %v", cd)
		}
		if !strings.Contains(cd["sshkeys"].(string), "%20") {
			t.Error("sshkeys must be stored URL-encoded")
		}
		return nil
	})
}

func TestStartAgentResizeDestroy(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	run := func(op func(st *State) (string, error)) *Task { t.Helper(); return runTask(t, s, c, op) }
	if tk := run(func(st *State) (string, error) {
		return st.Clone(tok, "pve1", 9000, CloneParams{NewID: 101, Name: "vm1"})
	}); tk.ExitStatus != "OK" {
		t.Fatal(tk.ExitStatus)
	}
	if tk := run(func(st *State) (string, error) { return st.Resize(tok, "pve1", 101, "scsi0", "10G") }); tk.ExitStatus != "OK" {
		t.Fatal(tk.ExitStatus)
	}
	update(t, s, func(st *State) error {
		if !strings.Contains(st.VMs[101].Config["scsi0"], "size=10G") {
			t.Errorf("scsi0 after resize: %s", st.VMs[101].Config["scsi0"])
		}
		if _, err := st.Resize(tok, "pve1", 101, "scsi0", "5G"); err == nil || err.Error() != "shrinking disks is not supported" {
			t.Errorf("shrink: %v", err)
		}
		if _, err := st.Agent(tok, "pve1", 101, "network-get-interfaces"); err == nil || err.Error() != "VM 101 is not running" {
			t.Errorf("agent of stopped VM: %v", err)
		}
		return nil
	})
	if tk := run(func(st *State) (string, error) { return st.Start(tok, "pve1", 101) }); tk.ExitStatus != "OK" {
		t.Fatal(tk.ExitStatus)
	}
	update(t, s, func(st *State) error {
		st.VMs[101].BootAt = st.Now().Add(time.Minute)
		if _, err := st.Agent(tok, "pve1", 101, "network-get-interfaces"); err == nil || err.Error() != "QEMU guest agent is not running" {
			t.Errorf("agent while booting: %v", err)
		}
		if _, err := st.Destroy(tok, "pve1", 101, true, true, false); err == nil || err.Error() != "VM 101 is running - destroy failed" {
			t.Errorf("destroy running: %v", err)
		}
		return nil
	})
	c.Add(2 * time.Minute)
	update(t, s, func(st *State) error {
		res, err := st.Agent(tok, "pve1", 101, "network-get-interfaces")
		if err != nil {
			return err
		}
		ifs := res.(map[string]any)["result"].([]map[string]any)
		if len(ifs) != 2 || ifs[1]["name"] != "eth0" {
			t.Fatalf("interfaces: %v", ifs)
		}
		addrs := ifs[1]["ip-addresses"].([]map[string]any)
		if addrs[0]["ip-address"] != "10.99.0.100" || addrs[len(addrs)-1]["ip-address"].(string)[:4] != "fe80" {
			t.Errorf("addresses: %v", addrs)
		}
		return nil
	})
	if tk := run(func(st *State) (string, error) { return st.Stop(tok, "pve1", 101) }); tk.ExitStatus != "OK" {
		t.Fatal(tk.ExitStatus)
	}
	if tk := run(func(st *State) (string, error) { return st.Destroy(tok, "pve1", 101, true, true, false) }); tk.ExitStatus != "OK" {
		t.Fatal(tk.ExitStatus)
	}
	update(t, s, func(st *State) error {
		if st.VMs[101] != nil {
			t.Error("VM survived destroy")
		}
		for id, v := range st.Volumes {
			if v.VMID == 101 {
				t.Errorf("volume %s survived destroy", id)
			}
		}
		if len(st.Nodes["pve1"].Bridges["vmbr0"].Leases) != 0 {
			t.Error("DHCP lease survived destroy")
		}
		// The template's base volume is still there.
		if st.Volumes["local-lvm:base-9000-disk-0"] == nil {
			t.Error("base volume deleted")
		}
		return nil
	})
}

// The CLI path: create a VM from an image like setup does, convert it to a
// template, clone it.
func TestCreateImportTemplateAndClone(t *testing.T) {
	s := newStore(t, InitOptions{})
	img := t.TempDir() + "/noble.qcow2"
	// A qcow2 header declaring a 3.5 GiB virtual size.
	hdr := make([]byte, 64)
	copy(hdr, "QFI\xfb")
	hdr[3+0] = 0xfb
	size := uint64(3584 << 20)
	for i := 0; i < 8; i++ {
		hdr[24+i] = byte(size >> (56 - 8*i))
	}
	if err := writeFile(img, hdr); err != nil {
		t.Fatal(err)
	}
	exit, err := s.RunTask(func(st *State) (string, error) {
		return st.CreateVM(Root, "pve1", 9001, map[string]string{
			"name": "tpl", "memory": "2048", "cores": "2", "net0": "virtio,bridge=vmbr0", "scsihw": "virtio-scsi-pci",
			"agent": "enabled=1", "scsi0": "local-lvm:0,import-from=" + img, "ide2": "local-lvm:cloudinit", "boot": "order=scsi0",
		})
	})
	if err != nil || exit != "OK" {
		t.Fatalf("create: %q %v", exit, err)
	}
	if exit, err := s.RunTask(func(st *State) (string, error) { return st.ConvertToTemplate(Root, "pve1", 9001) }); err != nil || exit != "OK" {
		t.Fatalf("template: %q %v", exit, err)
	}
	update(t, s, func(st *State) error {
		vm := st.VMs[9001]
		if vm.Config["scsi0"] != "local-lvm:base-9001-disk-0,size=3584M" {
			t.Errorf("scsi0 = %q", vm.Config["scsi0"])
		}
		if !strings.HasPrefix(vm.Config["ide2"], "local-lvm:vm-9001-cloudinit,media=cdrom") {
			t.Errorf("ide2 = %q", vm.Config["ide2"])
		}
		if !strings.HasPrefix(vm.Config["net0"], "virtio=BC:24:11:") {
			t.Errorf("net0 = %q", vm.Config["net0"])
		}
		return nil
	})
	exit, err = s.RunTask(func(st *State) (string, error) {
		return st.Clone(Root, "pve1", 9001, CloneParams{NewID: 100, Name: "c1"})
	})
	if err != nil || exit != "OK" {
		t.Fatalf("clone: %q %v", exit, err)
	}
}

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }

func TestCloneContentionSlowsConcurrentClones(t *testing.T) {
	s, _ := cloneSetup(t)
	update(t, s, func(st *State) error {
		st.Timing.Clone = Duration(time.Second)
		st.Timing.CloneContention = 0.5
		var due []time.Time
		for _, id := range []int{101, 102, 103} {
			upid, err := st.Clone(AgentTokenID, "pve1", 9000, CloneParams{NewID: id, Name: fmt.Sprintf("c%d", id)})
			if err != nil {
				return err
			}
			due = append(due, st.Tasks[upid].DueAt)
		}
		// 1s, 1.5s, 2s after their starts (the clock stands still).
		for i, want := range []time.Duration{time.Second, 1500 * time.Millisecond, 2 * time.Second} {
			if got := due[i].Sub(st.Now()); got != want {
				t.Errorf("clone %d takes %s, want %s", i, got, want)
			}
		}
		return nil
	})
}

// Templates imported from an image behave as the image does: no guest
// agent unless virt-customize installed it, one shared DHCP address when
// the machine-id was not emptied.
func TestImageOriginDecidesGuestBehaviour(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	update(t, s, func(st *State) error {
		st.Volumes["local-lvm:base-9000-disk-0"].Origin = &ImageOrigin{File: "/root/noble.img"} // not customized
		return nil
	})
	run := func(op func(st *State) (string, error)) {
		t.Helper()
		if tk := runTask(t, s, c, op); tk.ExitStatus != "OK" {
			t.Fatal(tk.ExitStatus)
		}
	}
	for _, id := range []int{101, 102} {
		run(func(st *State) (string, error) {
			return st.Clone(tok, "pve1", 9000, CloneParams{NewID: id, Name: fmt.Sprintf("v%d", id)})
		})
		run(func(st *State) (string, error) { return st.Start(tok, "pve1", id) })
	}
	c.Add(time.Minute)
	update(t, s, func(st *State) error {
		if _, err := st.Agent(tok, "pve1", 101, "network-get-interfaces"); err == nil || err.Error() != "QEMU guest agent is not running" {
			t.Errorf("agent of an image without qemu-guest-agent: %v", err)
		}
		// Now as if virt-customize had installed the agent, not the machine-id.
		for _, v := range st.Volumes {
			if v.Origin != nil {
				v.Origin.Customizations = []string{"install qemu-guest-agent"}
			}
		}
		for _, id := range []int{101, 102} {
			st.VMs[id].AgentNeverStarts = false
		}
		ips := map[string]bool{}
		for _, id := range []int{101, 102} {
			res, err := st.Agent(tok, "pve1", id, "network-get-interfaces")
			if err != nil {
				return err
			}
			eth0 := res.(map[string]any)["result"].([]map[string]any)[1]
			ips[eth0["ip-addresses"].([]map[string]any)[0]["ip-address"].(string)] = true
		}
		if len(ips) != 1 {
			t.Errorf("clones with the same machine-id got %d addresses, want one shared", len(ips))
		}
		return nil
	})
}

// TestHeldTaskRunsUntilReleased: a clone held by Faults.HeldTasks answers
// "running" however long and often it is polled, its VM locked "clone";
// taken off the list, it finishes at the next poll.
func TestHeldTaskRunsUntilReleased(t *testing.T) {
	s, c := cloneSetup(t)
	tok := AgentTokenID
	var upid string
	update(t, s, func(st *State) error {
		st.Faults.HeldTasks = []string{"qmclone"}
		var err error
		upid, err = st.Clone(tok, "pve1", 9000, CloneParams{NewID: 140, Name: "dc-held"})
		return err
	})
	c.Add(time.Hour)
	for i := 0; i < 5; i++ {
		update(t, s, func(st *State) error {
			tk, err := st.TaskStatus(tok, "pve1", upid)
			if err == nil && (tk.Status != "running" || st.VMs[140].Lock() != "clone") {
				t.Errorf("held clone: %s, lock %q", tk.Status, st.VMs[140].Lock())
			}
			return err
		})
	}
	update(t, s, func(st *State) error { st.Faults.HeldTasks = nil; return nil })
	if task := pollUntilDone(t, s, c, tok, upid); task.ExitStatus != "OK" {
		t.Fatalf("released clone: %s", task.ExitStatus)
	}
}
