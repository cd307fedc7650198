package pveapi

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	proxmox "github.com/luthermonson/go-proxmox"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqB5wY1tmlVkGCOcO0E0qsx6YY4rYbl8wEgr9bSmw5B user@host"

// client builds a go-proxmox client pinned to the simulator's certificate.
func client(t *testing.T, s *TestSim, tokenID, secret string) *proxmox.Client {
	t.Helper()
	want := strings.ToLower(strings.ReplaceAll(s.Fingerprint, ":", ""))
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified by the pin below
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			sum := sha256.Sum256(raw[0])
			if hex.EncodeToString(sum[:]) != want {
				return errors.New("certificate fingerprint mismatch")
			}
			return nil
		},
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return proxmox.NewClient(s.APIURL(), proxmox.WithAPIToken(tokenID, secret), proxmox.WithHTTPClient(&http.Client{Transport: tr, Timeout: 10 * time.Second}))
}

func wait(t *testing.T, ctx context.Context, task *proxmox.Task) *proxmox.Task {
	t.Helper()
	if task == nil {
		t.Fatal("nil task")
	}
	if err := task.Wait(ctx, 2*time.Millisecond, 5*time.Second); err != nil {
		t.Fatalf("wait %s: %v", task.UPID, err)
	}
	return task
}

func TestLifecycleThroughGoProxmox(t *testing.T) {
	s := StartTest(t, TestOptions{})
	c := client(t, s, s.TokenID, s.Secret)
	ctx := context.Background()

	v, err := c.Version(ctx)
	if err != nil || v.Release != "9.1" {
		t.Fatalf("version: %+v %v", v, err)
	}
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 1 || nodes[0].SSLFingerprint != s.Fingerprint || nodes[0].Status != "online" {
		t.Fatalf("nodes: %+v %v", nodes, err)
	}
	// Node status needs Sys.Audit, which the token lacks: go-proxmox
	// tolerates the 403.
	node, err := c.Node(ctx, "pve1")
	if err != nil {
		t.Fatal(err)
	}
	cluster, err := c.Cluster(ctx)
	if err != nil {
		t.Fatal(err)
	}
	newid, err := cluster.NextID(ctx)
	if err != nil || newid != 100 {
		t.Fatalf("nextid: %d %v", newid, err)
	}
	tpl, err := node.VirtualMachine(ctx, 9000)
	if err != nil {
		t.Fatal(err)
	}
	if !bool(tpl.Template) || tpl.VirtualMachineConfig.Agent != "enabled=1" {
		t.Fatalf("template: %+v", tpl)
	}
	_, task, err := tpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: newid, Name: "dc-test"})
	if err != nil {
		t.Fatal(err)
	}
	if task.Node != "pve1" || task.Type != "qmclone" || task.User != s.TokenID {
		t.Errorf("task from UPID: %+v", task)
	}
	wait(t, ctx, task)
	if !task.IsSuccessful || task.ExitStatus != "OK" || task.EndTime.IsZero() {
		t.Fatalf("clone task: %+v", task)
	}
	vm, err := node.VirtualMachine(ctx, newid)
	if err != nil {
		t.Fatal(err)
	}
	if vm.Template || vm.Name != "dc-test" || vm.Status != "stopped" {
		t.Fatalf("clone: %+v", vm)
	}
	task, err = vm.Config(ctx,
		proxmox.VirtualMachineOption{Name: "cores", Value: 2},
		proxmox.VirtualMachineOption{Name: "memory", Value: 2048},
		proxmox.VirtualMachineOption{Name: "ciuser", Value: "root"},
		proxmox.VirtualMachineOption{Name: "sshkeys", Value: proxmox.EncodeSSHKeys(testKey)},
		proxmox.VirtualMachineOption{Name: "ipconfig0", Value: "ip=dhcp,ip6=auto"},
		proxmox.VirtualMachineOption{Name: "tags", Value: "dc-agent"},
	)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	if task.ExitStatus != "OK" {
		t.Fatalf("config: %s", task.ExitStatus)
	}
	task, err = vm.ResizeDisk(ctx, "scsi0", "+2G")
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	task, err = vm.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	if err := vm.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if !vm.IsRunning() || *vm.VirtualMachineConfig.Cores != 2 || vm.VirtualMachineConfig.Tags != "dc-agent" ||
		!strings.Contains(vm.VirtualMachineConfig.SCSIs["scsi0"], "size=5632M") {
		t.Fatalf("after start: %+v %+v", vm, vm.VirtualMachineConfig)
	}
	// The agent answers "not running" until the guest booted, as a 500
	// reason phrase that go-proxmox string-matches.
	var ifs []*proxmox.AgentNetworkIface
	for i := 0; ; i++ {
		ifs, err = vm.AgentGetNetworkIFaces(ctx)
		if err == nil {
			break
		}
		if err.Error() != "500 QEMU guest agent is not running" || i > 500 {
			t.Fatalf("agent: %v", err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if len(ifs) != 1 || ifs[0].IPAddresses[0].IPAddress != "10.99.0.100" {
		t.Fatalf("interfaces: %+v", ifs[0])
	}
	// Destroying a running VM is refused.
	if _, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true}); err == nil ||
		err.Error() != fmt.Sprintf("500 VM %d is running - destroy failed", newid) {
		t.Fatalf("delete running: %v", err)
	}
	task, err = vm.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	task, err = vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true, DestroyUnreferencedDisks: true})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	if _, err := node.VirtualMachine(ctx, newid); err == nil || err.Error() != fmt.Sprintf("500 Configuration file 'nodes/pve1/qemu-server/%d.conf' does not exist", newid) {
		t.Fatalf("deleted VM: %v", err)
	}
	if s.Server.Requests() == 0 || !strings.Contains(s.Server.CallsReport(), "POST /nodes/{node}/qemu/{vmid}/clone") {
		t.Error("calls not counted")
	}
}

// The simulator must refuse what a real node refuses, so a provisioner
// cannot pass by luck.
func TestRejectsWhatProxmoxRejects(t *testing.T) {
	s := StartTest(t, TestOptions{})
	c := client(t, s, s.TokenID, s.Secret)
	ctx := context.Background()
	node, _ := c.Node(ctx, "pve1")
	tpl, err := node.VirtualMachine(ctx, 9000)
	if err != nil {
		t.Fatal(err)
	}
	// storage on a linked clone (template default is linked).
	_, _, err = tpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 101, Name: "x", Storage: "local-lvm"})
	if err == nil || err.Error() != "500 parameter 'storage' not allowed for linked clones" {
		t.Errorf("storage on linked clone: %v", err)
	}
	// unknown clone parameter
	err = c.Post(ctx, "/nodes/pve1/qemu/9000/clone", map[string]any{"newid": 101, "cores": 2}, nil)
	if err == nil || !strings.Contains(err.Error(), "400 Parameter verification failed.") || !strings.Contains(err.Error(), `"cores":"property is not defined in schema`) {
		t.Errorf("unknown clone parameter: %v", err)
	}
	_, task, err := tpl.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 101, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	wait(t, ctx, task)
	vm, err := node.VirtualMachine(ctx, 101)
	if err != nil {
		t.Fatal(err)
	}
	// raw sshkeys and '+'-encoded ones
	for _, v := range []string{testKey, strings.ReplaceAll(proxmox.EncodeSSHKeys(testKey), "%20", "+")} {
		_, err = vm.Config(ctx, proxmox.VirtualMachineOption{Name: "sshkeys", Value: v})
		if err == nil || !strings.Contains(err.Error(), "invalid format - invalid urlencoded string") {
			t.Errorf("sshkeys %q: %v", v, err)
		}
	}
	// unknown config key
	_, err = vm.Config(ctx, proxmox.VirtualMachineOption{Name: "flavour", Value: "large"})
	if err == nil || !strings.Contains(err.Error(), `"flavour":"property is not defined in schema`) {
		t.Errorf("unknown config key: %v", err)
	}
	// unknown delete parameter
	err = c.Delete(ctx, "/nodes/pve1/qemu/101?force=1", nil)
	if err == nil || !strings.Contains(err.Error(), `"force"`) {
		t.Errorf("unknown delete parameter: %v", err)
	}
	// running VM delete
	task, _ = vm.Start(ctx)
	wait(t, ctx, task)
	if _, err := vm.Delete(ctx, &proxmox.VirtualMachineDeleteOptions{Purge: true}); err == nil || !strings.Contains(err.Error(), "is running - destroy failed") {
		t.Errorf("delete running: %v", err)
	}
	// A wrong secret is not authorized; a missing node is a 500.
	bad := client(t, s, s.TokenID, "00000000-0000-0000-0000-000000000000")
	if _, err := bad.Version(ctx); !proxmox.IsNotAuthorized(err) {
		t.Errorf("wrong secret: %v", err)
	}
	if err := c.Get(ctx, "/nodes/nope/qemu", nil); err == nil || !strings.Contains(err.Error(), "hostname lookup 'nope' failed") {
		t.Errorf("unknown node: %v", err)
	}
	if err := c.Get(ctx, "/nodes/pve1/frobnicate", nil); err == nil || !strings.HasPrefix(err.Error(), "501 Method 'GET /api2/json/nodes/pve1/frobnicate' not implemented") {
		t.Errorf("unknown route: %v", err)
	}
	// The token lacks Sys.Audit: cluster status is forbidden.
	if err := c.Get(ctx, "/cluster/status", nil); !proxmox.IsNotAuthorized(err) {
		t.Errorf("cluster status without Sys.Audit: %v", err)
	}
}

func TestFaultsOverHTTP(t *testing.T) {
	s := StartTest(t, TestOptions{})
	c := client(t, s, s.TokenID, s.Secret)
	ctx := context.Background()
	s.Update(t, func(st *pve.State) error {
		st.Faults.HTTPErrors = []pve.HTTPError{{Method: "GET", PathContains: "/cluster/nextid", Status: 500, Reason: "proxy loop detected", Count: 1}}
		st.Faults.Outages = []pve.Outage{{Node: "pve1", OnTask: "qmclone", Duration: pve.Duration(200 * time.Millisecond)}}
		return nil
	})
	cl := &proxmox.Cluster{}
	cl = cl.New(c)
	if _, err := cl.NextID(ctx); err == nil || err.Error() != "500 proxy loop detected" {
		t.Errorf("injected 500: %v", err)
	}
	if id, err := cl.NextID(ctx); err != nil || id != 100 {
		t.Errorf("after the fault: %d %v", id, err)
	}
	vm := &proxmox.VirtualMachine{}
	vm.New(c, "pve1", 9000)
	_, task, err := vm.Clone(ctx, &proxmox.VirtualMachineCloneOptions{NewID: 100, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	// The node is unreachable now: the connection drops.
	if err := task.Ping(ctx); err == nil {
		t.Error("poll during the outage should fail")
	}
	time.Sleep(250 * time.Millisecond)
	wait(t, ctx, task)
	if task.ExitStatus != "OK" {
		t.Errorf("clone across the outage: %s", task.ExitStatus)
	}
}
