package proxmox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	goproxmox "github.com/luthermonson/go-proxmox"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

func testPubKey(t testing.TB) string {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))) + " requester@example"
}

// fastOpts poll in milliseconds.
func fastOpts() Options {
	return Options{PollInterval: 2 * time.Millisecond, IPWaitInterval: 3 * time.Millisecond, IPWaitAttempts: 60,
		RetryBackoff: 2 * time.Millisecond, CleanupTimeout: 10 * time.Second, TaskTimeout: 5 * time.Second,
		CloneTimeout: 5 * time.Second, SSHWait: 10 * time.Second, ScriptTimeout: 20 * time.Second}
}

func simConfig(s *pveapi.TestSim) config.ProxmoxConfig {
	return config.ProxmoxConfig{APIURL: s.URL, APITokenID: s.TokenID, Node: "pve1", TemplateVMID: 9000,
		Storage: "local-lvm", Bridge: "vmbr0", TLSFingerprint: s.Fingerprint, LinkedClone: true, MaxParallelClones: 2,
		IPWaitAttempts: 30, IPWaitIntervalSec: 1, CIUser: "root"}
}

func newProv(t testing.TB, s *pveapi.TestSim, mod func(*config.ProxmoxConfig, *Options)) *Provisioner {
	t.Helper()
	cfg := simConfig(s)
	opts := fastOpts()
	if mod != nil {
		mod(&cfg, &opts)
	}
	p, err := New(cfg, s.Secret, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func contractID(n int) string { return fmt.Sprintf("%064x", n+0xabc0) }

func request(t testing.TB, n int) provisioners.Request {
	return provisioners.Request{ContractID: contractID(n), CPUCores: 2, MemoryMB: 2048, StorageGB: 20,
		RequesterSSHPubkey: testPubKey(t), Config: map[string]any{}}
}

// simVMs returns the non-template VMs in the simulator.
func simVMs(t testing.TB, s *pveapi.TestSim) map[int]*pve.VM {
	t.Helper()
	out := map[int]*pve.VM{}
	s.Update(t, func(st *pve.State) error {
		for id, vm := range st.VMs {
			if !vm.IsTemplate() {
				c := *vm
				out[id] = &c
			}
		}
		return nil
	})
	return out
}

// assertClean checks that no VM and no disk of a VM is left.
func assertClean(t testing.TB, s *pveapi.TestSim) {
	t.Helper()
	s.Update(t, func(st *pve.State) error {
		for id, vm := range st.VMs {
			if !vm.IsTemplate() {
				t.Errorf("leftover VM %d (%s, %s)", id, vm.Name(), vm.Status)
			}
		}
		for id, v := range st.Volumes {
			if v.VMID != 9000 {
				t.Errorf("leftover volume %s", id)
			}
		}
		return nil
	})
}

func TestProvisionHealthTerminate(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, nil)
	ctx := context.Background()
	req := request(t, 1)
	var steps []string
	req.Progress = func(s string) { steps = append(steps, s) }
	inst, err := p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != "pve1/100" || inst.IPAddress != "10.99.0.100" || inst.Name != "dc-"+req.ContractID || inst.RootPassword != "" {
		t.Fatalf("instance: %+v", inst)
	}
	if len(steps) < 4 {
		t.Errorf("progress steps: %v", steps)
	}
	vm := simVMs(t, s)[100]
	conf := vm.Config
	want := map[string]string{"cores": "2", "memory": "2048", "ciuser": "root", "tags": Tag, "ipconfig0": "ip=dhcp", "onboot": "1"}
	for k, v := range want {
		if conf[k] != v {
			t.Errorf("config %s = %q, want %q", k, conf[k], v)
		}
	}
	keys, err := url.PathUnescape(conf["sshkeys"])
	if err != nil || keys != req.RequesterSSHPubkey {
		t.Errorf("sshkeys %q decodes to %q (%v)", conf["sshkeys"], keys, err)
	}
	if !strings.HasPrefix(conf["scsi0"], "local-lvm:base-9000-disk-0/vm-100-disk-0,") || !strings.Contains(conf["scsi0"], "size=20G") {
		t.Errorf("scsi0 = %q (want a linked clone resized to 20G)", conf["scsi0"])
	}
	if !strings.Contains(conf["description"], req.ContractID) {
		t.Errorf("description = %q", conf["description"])
	}
	if vm.Status != "running" {
		t.Errorf("status %s", vm.Status)
	}

	h, err := p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Healthy {
		t.Fatalf("health: %+v %v", h, err)
	}
	got, err := p.GetInstance(ctx, req.ContractID)
	if err != nil || got == nil || got.ExternalID != inst.ExternalID || got.IPAddress != inst.IPAddress {
		t.Fatalf("get instance: %+v %v", got, err)
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 1 || list[0].ContractID != req.ContractID {
		t.Fatalf("list: %+v %v", list, err)
	}
	res, err := p.Resources(ctx)
	if err != nil || res.CPUThreads != 16 || len(res.StoragePools) != 1 || res.StoragePools[0].Name != "local-lvm" || res.StoragePools[0].Type != "lvmthin" ||
		len(res.Templates) != 1 || res.Templates[0].VMID != 9000 || res.MemoryFreeMB <= 0 || res.MemoryFreeMB > res.MemoryMB {
		t.Fatalf("resources: %+v %v", res, err)
	}

	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	assertClean(t, s)
	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Errorf("terminating a gone VM must succeed: %v", err)
	}
	h, err = p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Unhealthy || !strings.Contains(h.Reason, "no longer exists") {
		t.Errorf("health of gone VM: %+v %v", h, err)
	}
	if n, _ := p.GetInstance(ctx, req.ContractID); n != nil {
		t.Errorf("instance after terminate: %+v", n)
	}
}

func TestFullCloneAndPassword(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{Version: "8.4.1"})
	p := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.LinkedClone = false })
	req := request(t, 2)
	req.WantPassword = true
	req.StorageGB = 0
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if len(inst.RootPassword) != 24 {
		t.Errorf("password %q", inst.RootPassword)
	}
	conf := simVMs(t, s)[100].Config
	if !strings.HasPrefix(conf["scsi0"], "local-lvm:vm-100-disk-0,") || !strings.Contains(conf["scsi0"], "size=3584M") {
		t.Errorf("full clone scsi0 = %q", conf["scsi0"])
	}
	if !strings.HasPrefix(conf["cipassword"], "$5$") {
		t.Errorf("cipassword not set: %q", conf["cipassword"])
	}
}

// Re-provisioning after a crash finds what the crashed attempt left.
func TestReprovisionAfterCrash(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	ctx := context.Background()
	req := request(t, 3)
	name := provisioners.InstanceName(req.ContractID)
	leave := func(start bool) int {
		// What a crashed agent leaves: a clone named after the contract.
		var id int
		s.Update(t, func(st *pve.State) error {
			id = st.NextID()
			_, err := st.Clone(pve.AgentTokenID, "pve1", 9000, pve.CloneParams{NewID: id, Name: name})
			return err
		})
		if start {
			if _, err := s.Store.RunTask(func(st *pve.State) (string, error) {
				if _, err := st.FinishTask(lastTask(st)); err != nil {
					return "", err
				}
				if _, err := st.SetConfig(pve.Root, "pve1", id, map[string]string{"sshkeys": goproxmox.EncodeSSHKeys(req.RequesterSSHPubkey)}, false); err != nil {
					return "", err
				}
				return st.Start(pve.Root, "pve1", id)
			}); err != nil {
				t.Fatal(err)
			}
		}
		return id
	}

	// A running VM of an SSH-key-only contract is reused: no new clone.
	first := leave(true)
	p := newProv(t, s, nil)
	inst, err := p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != ExternalID("pve1", first) || inst.AdditionalDetails["reused"] != true {
		t.Fatalf("want reuse of VM %d, got %+v", first, inst)
	}
	if n := len(simVMs(t, s)); n != 1 {
		t.Fatalf("%d VMs after reuse, want 1", n)
	}
	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}

	// A clone still running (locked) is waited for, then replaced.
	locked := leave(false)
	inst, err = p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	vms := simVMs(t, s)
	if len(vms) != 1 || vms[locked] != nil && inst.ExternalID == ExternalID("pve1", locked) && vms[locked].Lock() != "" {
		t.Fatalf("after replacing a locked clone: %d VMs, instance %s", len(vms), inst.ExternalID)
	}
	for _, vm := range vms {
		if vm.Name() != name || vm.Lock() != "" || vm.Status != "running" {
			t.Errorf("VM %d: %s lock=%q %s", vm.VMID, vm.Name(), vm.Lock(), vm.Status)
		}
	}

	// Provisioning again (the agent retrying after a crash right after
	// success) does not duplicate.
	again, err := p.Provision(ctx, req)
	if err != nil || again.ExternalID != inst.ExternalID {
		t.Fatalf("second provision: %+v %v", again, err)
	}
	if n := len(simVMs(t, s)); n != 1 {
		t.Fatalf("%d VMs, want 1", n)
	}
}

func lastTask(st *pve.State) string {
	var best *pve.Task
	for _, t := range st.Tasks {
		if best == nil || t.PID > best.PID {
			best = t
		}
	}
	return best.UPID
}

// Every injected failure ends in a clear error and no leftover VM.
func TestFailureInjection(t *testing.T) {
	cases := []struct {
		name      string
		fault     func(st *pve.State) error
		mod       func(*config.ProxmoxConfig, *Options)
		want      string
		retryable bool
	}{
		{
			name: "clone task fails",
			fault: func(st *pve.State) error {
				st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: "clone failed: lvcreate 'pve/vm-100-disk-0' error: device busy", Count: 1}}
				return nil
			},
			want: "Proxmox task failed: clone failed: lvcreate", retryable: true,
		},
		{
			name: "lock timeout persists",
			fault: func(st *pve.State) error {
				st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: pve.LockTimeout(9000), Count: 10}}
				return nil
			},
			mod:  func(_ *config.ProxmoxConfig, o *Options) { o.CloneRetries = 2 },
			want: "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout", retryable: true,
		},
		{
			name:  "guest agent never starts",
			fault: func(st *pve.State) error { st.Faults.AgentNeverStarts = true; return nil },
			mod:   func(_ *config.ProxmoxConfig, o *Options) { o.IPWaitAttempts = 5 },
			want:  "got no IP address within", retryable: true,
		},
		{
			name: "storage full",
			fault: func(st *pve.State) error {
				return st.SetStorageCapacity("local-lvm", st.StorageUsed("local-lvm", "pve1")+(1<<30))
			},
			want: "insufficient free space", retryable: true,
		},
		{
			name: "500 on configure",
			fault: func(st *pve.State) error {
				st.Faults.HTTPErrors = []pve.HTTPError{{Method: "PUT", PathContains: "/config", Status: 500, Reason: "unable to write config: disk quota exceeded", Count: 1}}
				return nil
			},
			want: "configure VM 100: 500 unable to write config", retryable: true,
		},
		{
			name: "500 on clone request",
			fault: func(st *pve.State) error {
				st.Faults.HTTPErrors = []pve.HTTPError{{Method: "POST", PathContains: "/clone", Status: 500, Reason: "cfs-lock 'file-replication_cfg' error: got lock request timeout", Count: 1}}
				return nil
			},
			mod:  func(_ *config.ProxmoxConfig, o *Options) { o.CloneRetries = 1 },
			want: "got lock request timeout", retryable: true,
		},
		{
			name: "node vanishes mid-task",
			fault: func(st *pve.State) error {
				st.Faults.Outages = []pve.Outage{{Node: "pve1", OnTask: "qmstart", Duration: pve.Duration(400 * time.Millisecond)}}
				return nil
			},
			mod:  func(_ *config.ProxmoxConfig, o *Options) { o.TaskTimeout = 100 * time.Millisecond },
			want: "start VM 100: the Proxmox API stopped answering", retryable: true,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := pveapi.StartTest(t, pveapi.TestOptions{})
			s.Update(t, tc.fault)
			p := newProv(t, s, tc.mod)
			_, err := p.Provision(context.Background(), request(t, 4))
			if err == nil {
				t.Fatal("provision succeeded despite the fault")
			}
			t.Logf("reason: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if provisioners.RetryPossible(err) != tc.retryable {
				t.Errorf("retryable = %v, want %v", provisioners.RetryPossible(err), tc.retryable)
			}
			assertClean(t, s)
		})
	}
}

func TestLockTimeoutIsRetried(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	s.Update(t, func(st *pve.State) error {
		st.Faults.TaskFailures = []pve.TaskFailure{{Type: "qmclone", ExitStatus: pve.LockTimeout(9000), Count: 2}}
		return nil
	})
	p := newProv(t, s, nil)
	inst, err := p.Provision(context.Background(), request(t, 5))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(simVMs(t, s)); n != 1 || inst.IPAddress == "" {
		t.Fatalf("%d VMs, instance %+v", n, inst)
	}
}

func TestBadRequestsArePermanent(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.Templates = map[string]int{"ubuntu": 9000} })
	ctx := context.Background()
	for name, mod := range map[string]func(*provisioners.Request){
		"bad key":         func(r *provisioners.Request) { r.RequesterSSHPubkey = "ssh-rsa garbage" },
		"no way in":       func(r *provisioners.Request) { r.RequesterSSHPubkey = "" },
		"unknown tpl":     func(r *provisioners.Request) { r.Config["template"] = "windows" },
		"missing tpl":     func(r *provisioners.Request) { r.Config["template_vmid"] = float64(9999) },
		"script, no key":  func(r *provisioners.Request) { r.PostProvisionScript = "true" },
		"not a template?": func(r *provisioners.Request) { r.Config["template_vmid"] = "abc" },
	} {
		req := request(t, 6)
		mod(&req)
		_, err := p.Provision(ctx, req)
		if err == nil || provisioners.RetryPossible(err) {
			t.Errorf("%s: want a permanent error, got %v", name, err)
		}
	}
	assertClean(t, s)
}

func TestParallelClonesAreLimited(t *testing.T) {
	timing := pve.FastTiming()
	// Long enough that clones started together overlap.
	timing.Clone = pve.Duration(200 * time.Millisecond)
	for _, limit := range []int{1, 2} {
		s := pveapi.StartTest(t, pveapi.TestOptions{Timing: &timing})
		p := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.MaxParallelClones = limit })
		errs := make(chan error, 6)
		for i := 0; i < 6; i++ {
			go func(i int) {
				_, err := p.Provision(context.Background(), request(t, 10+i))
				errs <- err
			}(i)
		}
		for i := 0; i < 6; i++ {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
		// The simulator counts clones running at once on the storage
		// when each starts.
		var peak int
		s.Update(t, func(st *pve.State) error { peak = st.PeakClones["pve1/local-lvm"]; return nil })
		if peak < 1 || peak > limit {
			t.Errorf("limit %d: at most %d clones ran at once", limit, peak)
		}
		t.Logf("limit %d: peak %d concurrent clones", limit, peak)
		vms := simVMs(t, s)
		names := map[string]bool{}
		for _, vm := range vms {
			names[vm.Name()] = true
		}
		if len(vms) != 6 || len(names) != 6 {
			t.Errorf("limit %d: %d VMs with %d names, want 6", limit, len(vms), len(names))
		}
	}
}

func TestTLSPinAndSecretFile(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	ctx := context.Background()
	wrong := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) {
		c.TLSFingerprint = strings.Repeat("AB:", 31) + "AB"
	})
	if _, err := wrong.List(ctx); err == nil || !strings.Contains(err.Error(), "does not match tls_fingerprint") {
		t.Errorf("wrong pin: %v", err)
	}
	var logged strings.Builder
	insecure := newProv(t, s, func(c *config.ProxmoxConfig, o *Options) {
		c.TLSFingerprint = ""
		c.InsecureSkipVerify = true
		o.Logger = slog.New(slog.NewTextHandler(&logged, nil))
	})
	if _, err := insecure.List(ctx); err != nil {
		t.Errorf("insecure opt-in: %v", err)
	}
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "verification is DISABLED") {
		t.Errorf("the insecure opt-in was not logged as a warning: %q", logged.String())
	}
	// Neither a pin nor the opt-in: the system roots, which a node's
	// self-signed certificate does not pass.
	unpinned := newProv(t, s, func(c *config.ProxmoxConfig, _ *Options) { c.TLSFingerprint = "" })
	if _, err := unpinned.List(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("self-signed certificate without a pin: %v", err)
	}

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "token")
	testutil.WriteFile(t, secretFile, s.Secret+"\n", 0o644)
	cfg := simConfig(s)
	cfg.APITokenSecretFile = secretFile
	pc := config.ProvisionerConfig{Type: Type, Proxmox: &cfg}
	_, err := NewFactory(fastOpts())(pc, provisioners.Deps{})
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("0644 secret file: %v", err)
	}
	if err := os.Chmod(secretFile, 0o600); err != nil {
		t.Fatal(err)
	}
	prov, err := NewFactory(fastOpts())(pc, provisioners.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov.List(ctx); err != nil {
		t.Error(err)
	}
}

func TestMissingPrivilegeIsExplained(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	s.Update(t, func(st *pve.State) error {
		privs := []string{}
		for _, p := range pve.AgentPrivileges(st.Major()) {
			if p != "SDN.Use" {
				privs = append(privs, p)
			}
		}
		return st.ModifyRole(pve.Root, "DCAgent", privs, false)
	})
	p := newProv(t, s, nil)
	_, err := p.Provision(context.Background(), request(t, 7))
	if err == nil || !strings.Contains(err.Error(), "lacks a privilege") {
		t.Fatalf("error: %v", err)
	}
	assertClean(t, s)
}

func TestTerminateRefusesForeignVMs(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	p := newProv(t, s, nil)
	ctx := context.Background()
	if err := p.Terminate(ctx, "pve1/9000"); err == nil || !strings.Contains(err.Error(), "template") {
		t.Errorf("terminate template: %v", err)
	}
	if _, err := s.Store.RunTask(func(st *pve.State) (string, error) {
		return st.Clone(pve.Root, "pve1", 9000, pve.CloneParams{NewID: 300, Name: "prod-db"})
	}); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctx, "pve1/300"); err == nil || !strings.Contains(err.Error(), "not a dc-agent VM") {
		t.Errorf("terminate foreign VM: %v", err)
	}
	if simVMs(t, s)[300] == nil {
		t.Error("foreign VM deleted")
	}
	if err := p.Terminate(ctx, "garbage"); err == nil {
		t.Error("bad id accepted")
	}
}

// sshGuest is a simulated node whose guests all get 127.0.0.1, where a
// real sshd (the "guest") accepts the provisioner's post-provision key.
func sshGuest(t *testing.T, opts testutil.SSHDOptions, mod func(*config.ProxmoxConfig, *Options)) (*testutil.SSHD, *pveapi.TestSim, *Provisioner) {
	t.Helper()
	sshd := testutil.StartSSHD(t, opts)
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	s.Update(t, func(st *pve.State) error {
		br := st.Nodes["pve1"].Bridges["vmbr0"]
		br.DHCPStart, br.DHCPEnd = "127.0.0.1", "127.0.0.1"
		return nil
	})
	p := newProv(t, s, func(c *config.ProxmoxConfig, o *Options) {
		c.PostProvisionKeyFile = sshd.ClientKeyFile
		c.CIUser = sshd.User
		o.SSHPort = sshd.Port
		if mod != nil {
			mod(c, o)
		}
	})
	return sshd, s, p
}

// post_provision_script runs over real SSH: the simulator hands every
// guest 127.0.0.1, where a real sshd accepts the post-provision key.
func TestPostProvisionScriptOverSSH(t *testing.T) {
	sshd, s, p := sshGuest(t, testutil.SSHDOptions{}, func(c *config.ProxmoxConfig, o *Options) {
		on := true
		c.SSHProbe = &on
	})
	marker := filepath.Join(t.TempDir(), "ran")
	req := request(t, 8)
	req.PostProvisionScript = "set -e\necho \"contract $0\" > '" + marker + "'\necho done\n"
	inst, err := p.Provision(context.Background(), req)
	if err != nil {
		t.Fatalf("%v\nsshd log:\n%s", err, sshd.Log())
	}
	if b, err := os.ReadFile(marker); err != nil || !strings.HasPrefix(string(b), "contract ") {
		t.Fatalf("script did not run: %q %v", b, err)
	}
	if inst.AdditionalDetails["ssh_host_key"] != sshd.HostKeyFingerprint() {
		t.Errorf("host key %v, want %s", inst.AdditionalDetails["ssh_host_key"], sshd.HostKeyFingerprint())
	}
	// The post-provision key was added to the VM's keys.
	keys, _ := url.PathUnescape(simVMs(t, s)[100].Config["sshkeys"])
	if !strings.Contains(keys, "dc-agent-post-provision") {
		t.Errorf("sshkeys: %q", keys)
	}
	// Health probes the SSH port and measures latency.
	h, err := p.HealthCheck(context.Background(), inst.ExternalID)
	if err != nil || h.Status != provisioners.Healthy || h.LatencyMs == nil {
		t.Errorf("health with probe: %+v %v", h, err)
	}

	// A failing script fails the provision and removes the VM.
	req2 := request(t, 9)
	req2.PostProvisionScript = "echo about to fail; exit 3"
	_, err = p.Provision(context.Background(), req2)
	if err == nil || !strings.Contains(err.Error(), "exited with status 3") || !strings.Contains(err.Error(), "about to fail") {
		t.Fatalf("failing script: %v", err)
	}
	if vms := simVMs(t, s); len(vms) != 1 {
		t.Errorf("%d VMs after the failed script, want 1", len(vms))
	}
}

// Contract data (the requester's key and its comment, instance_config
// values) never reaches a shell: the key goes URL-encoded through the API,
// the post-provision script runs from stdin, and a value PVE would refuse
// is refused for good, leaving nothing behind.
func TestContractFieldsCannotInject(t *testing.T) {
	sshd, s, p := sshGuest(t, testutil.SSHDOptions{}, nil)
	marker := filepath.Join(t.TempDir(), "pwned")
	evil := "$(touch " + marker + ") `touch " + marker + "`; touch " + marker + " '\"|&>"
	key := strings.SplitN(testPubKey(t), " ", 3)
	req := request(t, 20)
	req.RequesterSSHPubkey = key[0] + " " + key[1] + " " + evil
	req.PostProvisionScript = "echo provisioned\n"
	if _, err := p.Provision(context.Background(), req); err != nil {
		t.Fatalf("%v\nsshd log:\n%s", err, sshd.Log())
	}
	vm := simVMs(t, s)[100]
	keys, err := url.PathUnescape(vm.Config["sshkeys"])
	if err != nil || !strings.Contains(keys, req.RequesterSSHPubkey+"\n") {
		t.Errorf("sshkeys does not hold the key literally: %q %v", keys, err)
	}

	for name, cfg := range map[string]map[string]any{
		"nameserver": {"nameserver": "1.1.1.1; touch " + marker},
		"ipconfig0":  {"ipconfig0": "ip=dhcp,gw=$(touch " + marker + ")"},
		"template":   {"template": "ubuntu; touch " + marker},
	} {
		r := request(t, 21)
		r.Config = cfg
		_, err := p.Provision(context.Background(), r)
		if err == nil || provisioners.RetryPossible(err) {
			t.Errorf("%s: want a permanent refusal, got %v", name, err)
		}
		if name == "template" && err != nil && !strings.Contains(err.Error(), "none are named") {
			t.Errorf("template: %v", err)
		}
		t.Logf("%s: %v", name, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a contract field ran a command")
	}
	if vms := simVMs(t, s); len(vms) != 1 {
		t.Errorf("%d VMs after the refused provisions, want 1", len(vms))
	}
}

// A VMID taken between /cluster/nextid and the clone (another client won
// the race) is retried with a fresh VMID.
func TestVMIDTakenMeanwhileIsRetried(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{})
	s.Update(t, func(st *pve.State) error {
		st.Faults.HTTPErrors = []pve.HTTPError{{Method: "POST", PathContains: "/clone", Status: 500, Reason: "VM 100 already exists on node 'pve1'", Count: 1}}
		return nil
	})
	p := newProv(t, s, nil)
	inst, err := p.Provision(context.Background(), request(t, 30))
	if err != nil {
		t.Fatal(err)
	}
	if n := s.Server.Calls()["GET /cluster/nextid"]; n != 2 {
		t.Errorf("nextid asked %d times, want 2 (once more after the conflict)\n%s", n, s.Server.CallsReport())
	}
	if vms := simVMs(t, s); len(vms) != 1 || inst.IPAddress == "" {
		t.Errorf("%d VMs, instance %+v", len(vms), inst)
	}
}
