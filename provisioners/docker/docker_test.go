package docker

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// One real dockerd for the package (DESIGN.md: own roots, no iptables, no
// bridge, vfs). With --bridge=none containers have no network, so port
// publishing is checked in the container's HostConfig (what the daemon
// would wire up), not by connecting to it.
var dockerEnv *testutil.DockerEnv

const (
	testImage    = "dc-test/busybox:1"
	exitingImage = "dc-test/exits:1"
	// testPortStart: the tests' host ports, 31100-31819, lie below the
	// kernel's ephemeral range (32768-60999): an outgoing connection of a
	// test running beside them cannot hold one (a 6-port range once
	// failed with "all 6 SSH ports ... are in use").
	testPortStart = 31100
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		// Fuzzing (coordinator and each worker run TestMain) needs no daemon.
		os.Exit(m.Run())
	}
	dockerEnv = testutil.StartDockerEnv()
	if dockerEnv.D != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		for _, img := range []struct {
			ref string
			cmd []string
		}{{testImage, []string{"/bin/sh", "-c", testutil.BusyboxCmd}}, {exitingImage, []string{"/bin/sh", "-c", "echo boom >&2; exit 3"}}} {
			if err := dockerEnv.D.ImportBusyboxCmd(ctx, img.ref, img.cmd); err != nil {
				dockerEnv.Err = err
			}
		}
		cancel()
	}
	code := m.Run()
	dockerEnv.Stop()
	if netDocker.env != nil {
		netDocker.env.Stop()
	}
	os.Exit(code)
}

func cid(n int) string {
	s := sha256.Sum256([]byte(fmt.Sprint("docker-contract", n)))
	return hex.EncodeToString(s[:])
}

func sshKey(t testing.TB) string {
	t.Helper()
	pub, err := ssh.NewPublicKey(mustEd25519(t))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(pub)))
}

func newProvisioner(t testing.TB, mod func(*config.DockerConfig)) *Provisioner {
	t.Helper()
	d := dockerEnv.Require(t)
	cfg := config.DockerConfig{
		Socket: d.Socket, Image: testImage, SSHPortRangeStart: testPortStart, SSHPortRangeEnd: testPortStart + 99,
		PublishIP: "127.0.0.1", PublicHost: "203.0.113.7", RestartPolicy: "unless-stopped", PullTimeoutSecond: 20,
	}
	if mod != nil {
		mod(&cfg)
	}
	p, err := New(cfg, TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	if err := p.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return p
}

// allContainers lists every container on the test daemon.
func allContainers(t *testing.T, p *Provisioner) []container.Summary {
	t.Helper()
	res, err := p.cli.ContainerList(context.Background(), client.ContainerListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	return res.Items
}

// containersOf lists the containers on the test daemon named for the given
// contracts. Tests that run in parallel share the daemon (and their
// contracts never overlap), so each one counts and removes only its own;
// the tests that need the daemon to themselves (List, foreign containers)
// do not run in parallel, and Go runs them before the parallel ones.
func containersOf(t *testing.T, p *Provisioner, contracts ...string) []container.Summary {
	t.Helper()
	names := map[string]bool{}
	for _, id := range contracts {
		names["/"+ContainerName(id)] = true
	}
	var mine []container.Summary
	for _, c := range allContainers(t, p) {
		for _, n := range c.Names {
			if names[n] {
				mine = append(mine, c)
				break
			}
		}
	}
	return mine
}

// assertNoContainers fails if the daemon holds any container, or, given
// contracts, any container of theirs.
func assertNoContainers(t *testing.T, p *Provisioner, contracts ...string) {
	t.Helper()
	l := allContainers(t, p)
	if len(contracts) > 0 {
		l = containersOf(t, p, contracts...)
	}
	if len(l) != 0 {
		t.Fatalf("containers left behind: %+v", l)
	}
}

// terminateAll removes every container on the daemon (tests that do not
// run in parallel), or, given contracts, theirs.
func terminateAll(t *testing.T, p *Provisioner, contracts ...string) {
	t.Helper()
	l := allContainers(t, p)
	if len(contracts) > 0 {
		l = containersOf(t, p, contracts...)
	}
	for _, c := range l {
		_, _ = p.cli.ContainerRemove(context.Background(), c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	}
}

func TestProvisionLifecycle(t *testing.T) {
	p := newProvisioner(t, nil)
	t.Cleanup(func() { terminateAll(t, p) })
	ctx := context.Background()
	key := sshKey(t)
	var steps []string
	req := provisioners.Request{
		ContractID: cid(1), OfferingID: "c-small", CPUCores: 2, MemoryMB: 256, StorageGB: 10, RequesterSSHPubkey: key,
		PostProvisionScript: "echo provisioned > /root/marker; id -u >> /root/marker",
		Progress:            func(s string) { steps = append(steps, s) },
	}
	inst, err := p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ContractID != cid(1) || inst.Name != ContainerName(cid(1)) || inst.IPAddress != "203.0.113.7" || inst.RootPassword != "" {
		t.Fatalf("instance %+v", inst)
	}
	if inst.SSHPort < testPortStart || inst.SSHPort > testPortStart+99 {
		t.Fatalf("ssh port %d outside the range", inst.SSHPort)
	}
	if len(steps) < 4 {
		t.Errorf("steps %q", steps)
	}

	// What the daemon holds, via inspect.
	res, err := p.cli.ContainerInspect(ctx, inst.ExternalID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ct := res.Container
	if !ct.State.Running || ct.Config.Image != testImage || ct.Config.Hostname != "dc-"+cid(1)[:60] {
		t.Fatalf("state %+v image %s hostname %s", ct.State, ct.Config.Image, ct.Config.Hostname)
	}
	if ct.HostConfig.NanoCPUs != 2e9 || ct.HostConfig.Memory != 256<<20 {
		t.Errorf("limits: NanoCPUs %d Memory %d", ct.HostConfig.NanoCPUs, ct.HostConfig.Memory)
	}
	if ct.HostConfig.RestartPolicy.Name != container.RestartPolicyUnlessStopped {
		t.Errorf("restart policy %q", ct.HostConfig.RestartPolicy.Name)
	}
	b := ct.HostConfig.PortBindings[sshPort]
	if len(b) != 1 || b[0].HostIP.String() != "127.0.0.1" || b[0].HostPort != strconv.Itoa(inst.SSHPort) {
		t.Errorf("port bindings %+v", ct.HostConfig.PortBindings)
	}
	if _, ok := ct.Config.ExposedPorts[sshPort]; !ok {
		t.Errorf("22/tcp not exposed: %v", ct.Config.ExposedPorts)
	}
	l := ct.Config.Labels
	if l[LabelManaged] != "true" || l[LabelContract] != cid(1) || l[LabelSSHPort] != strconv.Itoa(inst.SSHPort) || l[LabelStorageGB] != "10" || l[LabelOffering] != "c-small" {
		t.Errorf("labels %v", l)
	}
	checkKernelLimits(t, ct.ID, 256<<20, 200000)

	// The key and the script's work inside the container.
	out, code, err := p.exec(ctx, ct.ID, []string{"cat", "/root/.ssh/authorized_keys", "/root/marker"}, nil)
	if err != nil || code != 0 || out != key+"\nprovisioned\n0\n" {
		t.Fatalf("inside: %q exit %d %v", out, code, err)
	}
	out, _, _ = p.exec(ctx, ct.ID, []string{"ls", "-ln", "/root/.ssh/authorized_keys"}, nil)
	if !strings.HasPrefix(out, "-rw-------") {
		t.Errorf("authorized_keys mode: %q", out)
	}

	h, err := p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Healthy {
		t.Fatalf("health %+v %v", h, err)
	}
	p.opts.Now = func() time.Time { return time.Now().Add(time.Hour) }
	if h, _ := p.HealthCheck(ctx, inst.ExternalID); h.UptimeSeconds < 3600 || h.UptimeSeconds > 3700 {
		t.Errorf("uptime from StartedAt: %d", h.UptimeSeconds)
	}
	p.opts.Now = time.Now

	got, err := p.GetInstance(ctx, cid(1))
	if err != nil || got == nil || got.ExternalID != inst.ExternalID || got.SSHPort != inst.SSHPort {
		t.Fatalf("get %+v %v", got, err)
	}
	if none, err := p.GetInstance(ctx, cid(2)); none != nil || err != nil {
		t.Fatalf("other contract %+v %v", none, err)
	}
	list, err := p.List(ctx)
	if err != nil || len(list) != 1 || list[0].ExternalID != inst.ExternalID || list[0].ContractID != cid(1) || list[0].SSHPort != inst.SSHPort {
		t.Fatalf("list %+v %v", list, err)
	}
	res2, err := p.Resources(ctx)
	if err != nil || res2.CPUThreads < 1 || res2.MemoryMB < 1 || res2.MemoryFreeMB < 1 || res2.MemoryFreeMB > res2.MemoryMB || len(res2.StoragePools) != 1 || res2.StoragePools[0].TotalGB < 1 || len(res2.Templates) != 0 {
		t.Fatalf("resources %+v %v", res2, err)
	}

	// Idempotent.
	again, err := p.Provision(ctx, req)
	if err != nil || again.ExternalID != inst.ExternalID || len(allContainers(t, p)) != 1 {
		t.Fatalf("again: %+v %v", again, err)
	}

	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	if _, err := p.cli.ContainerInspect(ctx, inst.ExternalID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Fatalf("container still there: %v", err)
	}
	assertNoContainers(t, p)
	if err := p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatalf("terminate twice: %v", err)
	}
	h, err = p.HealthCheck(ctx, inst.ExternalID)
	if err != nil || h.Status != provisioners.Unhealthy || !strings.Contains(h.Reason, "no longer exists") {
		t.Fatalf("health after terminate %+v %v", h, err)
	}
}

// checkKernelLimits reads the cgroup (v1 cgroupfs layout, as dockerd uses
// without systemd) to see the kernel got the limits, not only the config.
func checkKernelLimits(t *testing.T, id string, mem int64, cfsQuota int64) {
	t.Helper()
	memPath := "/sys/fs/cgroup/memory/docker/" + id + "/memory.limit_in_bytes"
	cpuPath := "/sys/fs/cgroup/cpu/docker/" + id + "/cpu.cfs_quota_us"
	if v2, err := os.ReadFile("/sys/fs/cgroup/docker/" + id + "/memory.max"); err == nil {
		if strings.TrimSpace(string(v2)) != strconv.FormatInt(mem, 10) {
			t.Errorf("cgroup v2 memory.max = %s", v2)
		}
		return
	}
	m, err := os.ReadFile(memPath)
	if err != nil {
		t.Logf("no cgroup file to check (%v); limits verified through inspect only", err)
		return
	}
	if strings.TrimSpace(string(m)) != strconv.FormatInt(mem, 10) {
		t.Errorf("%s = %s, want %d", memPath, m, mem)
	}
	if q, err := os.ReadFile(cpuPath); err == nil && strings.TrimSpace(string(q)) != strconv.FormatInt(cfsQuota, 10) {
		t.Errorf("%s = %s, want %d", cpuPath, q, cfsQuota)
	}
}

// A restarted agent (a new provisioner, new client) finds the container by
// the contract and does not create a second one.
func TestRestartedAgentRefindsContainer(t *testing.T) {
	p1 := newProvisioner(t, nil)
	t.Cleanup(func() { terminateAll(t, p1) })
	ctx := context.Background()
	req := provisioners.Request{ContractID: cid(2), CPUCores: 1, MemoryMB: 64, RequesterSSHPubkey: sshKey(t)}
	inst, err := p1.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	p1.Close()

	p2 := newProvisioner(t, nil)
	got, err := p2.GetInstance(ctx, cid(2))
	if err != nil || got == nil || got.ExternalID != inst.ExternalID {
		t.Fatalf("get %+v %v", got, err)
	}
	list, err := p2.List(ctx)
	if err != nil || len(list) != 1 || list[0].ContractID != cid(2) {
		t.Fatalf("list %+v %v", list, err)
	}
	again, err := p2.Provision(ctx, req)
	if err != nil || again.ExternalID != inst.ExternalID || len(allContainers(t, p2)) != 1 {
		t.Fatalf("reprovision %+v %v", again, err)
	}
}

func TestPasswordWithoutKey(t *testing.T) {
	t.Parallel()
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+500, testPortStart+509
	})
	t.Cleanup(func() { terminateAll(t, p, cid(3), cid(4), "xyz") })
	ctx := context.Background()
	inst, err := p.Provision(ctx, provisioners.Request{ContractID: cid(3), WantPassword: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(inst.RootPassword) < 20 {
		t.Fatalf("password %q", inst.RootPassword)
	}
	out, _, err := p.exec(ctx, inst.ExternalID, []string{"cat", "/etc/shadow"}, nil)
	if err != nil || strings.HasPrefix(out, "root:*:") || !strings.HasPrefix(out, "root:$") {
		t.Fatalf("shadow %q %v", out, err)
	}
	// Resuming after a crash sets a new password (the old one was lost).
	again, err := p.Provision(ctx, provisioners.Request{ContractID: cid(3), WantPassword: true})
	if err != nil || again.RootPassword == "" || again.RootPassword == inst.RootPassword || again.ExternalID != inst.ExternalID {
		t.Fatalf("again %+v %v", again, err)
	}

	for _, bad := range []provisioners.Request{
		{ContractID: cid(4)},
		{ContractID: cid(4), RequesterSSHPubkey: "ssh-ed25519 !!!"},
		{ContractID: "xyz", WantPassword: true},
	} {
		_, err := p.Provision(ctx, bad)
		if err == nil || provisioners.RetryPossible(err) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
	if n := len(containersOf(t, p, cid(3), cid(4), "xyz")); n != 1 {
		t.Fatalf("refused contracts created containers: %d", n)
	}
}

func TestPortAllocation(t *testing.T) {
	t.Parallel()
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+200, testPortStart+202
	})
	t.Cleanup(func() { terminateAll(t, p, cid(5), cid(6), cid(7)) })
	ctx := context.Background()

	// Something else listens on the port contract 5 would get first.
	port, release, err := p.reservePort(ctx, cid(5))
	if err != nil {
		t.Fatal(err)
	}
	release()
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	seen := map[int]bool{}
	for i := 5; i <= 6; i++ {
		inst, err := p.Provision(ctx, provisioners.Request{ContractID: cid(i), MemoryMB: 64, RequesterSSHPubkey: sshKey(t)})
		if err != nil {
			t.Fatal(err)
		}
		if inst.SSHPort == port || seen[inst.SSHPort] {
			t.Fatalf("contract %d got port %d (taken: %d, seen %v)", i, inst.SSHPort, port, seen)
		}
		seen[inst.SSHPort] = true
	}
	// The range (3 ports: 2 used, 1 taken by the listener) is full.
	_, err = p.Provision(ctx, provisioners.Request{ContractID: cid(7), MemoryMB: 64, RequesterSSHPubkey: sshKey(t)})
	if err == nil || !provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "all 3 SSH ports") {
		t.Fatalf("full range: %v", err)
	}
	if n := len(containersOf(t, p, cid(5), cid(6), cid(7))); n != 2 {
		t.Fatalf("%d containers", n)
	}
}

func TestFailedProvisionRemovesContainer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("command exits", func(t *testing.T) {
		t.Parallel()
		p := newProvisioner(t, func(c *config.DockerConfig) {
			c.Image, c.SSHPortRangeStart, c.SSHPortRangeEnd = exitingImage, testPortStart+600, testPortStart+609
		})
		// The command exits at once, but "at once" under load can be
		// longer than the tests' 100 ms: watch it for up to a minute (the
		// wait ends as soon as the container stops).
		p.opts.StartWait = time.Minute
		_, err := p.Provision(ctx, provisioners.Request{ContractID: cid(8), MemoryMB: 64, RequesterSSHPubkey: sshKey(t)})
		if err == nil || !strings.Contains(err.Error(), "stopped right after start") || !strings.Contains(err.Error(), "exit code 3") || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("err %v", err)
		}
		assertNoContainers(t, p, cid(8))
	})
	t.Run("post-provision script fails", func(t *testing.T) {
		t.Parallel()
		p := newProvisioner(t, func(c *config.DockerConfig) {
			c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+610, testPortStart+619
		})
		_, err := p.Provision(ctx, provisioners.Request{ContractID: cid(9), MemoryMB: 64, RequesterSSHPubkey: sshKey(t), PostProvisionScript: "echo bad thing >&2; exit 7"})
		if err == nil || !strings.Contains(err.Error(), "exit 7") || !strings.Contains(err.Error(), "bad thing") {
			t.Fatalf("err %v", err)
		}
		assertNoContainers(t, p, cid(9))
	})
	t.Run("image cannot be pulled", func(t *testing.T) {
		t.Parallel()
		p := newProvisioner(t, func(c *config.DockerConfig) { c.Image = "127.0.0.1:1/dc-test/absent:1"; c.PullTimeoutSecond = 10 })
		_, err := p.Provision(ctx, provisioners.Request{ContractID: cid(10), MemoryMB: 64, RequesterSSHPubkey: sshKey(t)})
		if err == nil || !provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "pull image 127.0.0.1:1/dc-test/absent:1") {
			t.Fatalf("err %v", err)
		}
		assertNoContainers(t, p, cid(10))
	})
}

func TestTerminateRefusesForeignContainers(t *testing.T) {
	p := newProvisioner(t, nil)
	t.Cleanup(func() { terminateAll(t, p) })
	ctx := context.Background()
	res, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: "providers-own", Config: &container.Config{Image: testImage}})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(ctx, res.ID); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("err %v", err)
	}
	if list, err := p.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("foreign container listed: %+v %v", list, err)
	}
	// Its name is not ours either: a contract whose name is taken by a
	// foreign container is refused, not adopted.
	if _, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: ContainerName(cid(11)), Config: &container.Config{Image: testImage}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Provision(ctx, provisioners.Request{ContractID: cid(11), RequesterSSHPubkey: sshKey(t)}); err == nil || !strings.Contains(err.Error(), "not labelled") {
		t.Fatalf("err %v", err)
	}
	if len(allContainers(t, p)) != 2 {
		t.Fatal("foreign container removed")
	}
}

func TestUnreachableDaemon(t *testing.T) {
	p, err := New(config.DockerConfig{Socket: t.TempDir() + "/no.sock", Image: "x", PublishIP: "127.0.0.1"}, TestOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	_, err = p.Provision(context.Background(), provisioners.Request{ContractID: cid(1), WantPassword: true})
	if err == nil || !provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "no.sock") {
		t.Fatalf("err %v", err)
	}
}

func TestHealthFromState(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		st     *container.State
		status string
		reason string
		uptime int64
	}{
		{&container.State{Status: "running", Running: true, StartedAt: "2026-01-02T03:00:05.123Z"}, provisioners.Healthy, "", 239},
		{&container.State{Status: "running", Running: true, StartedAt: "garbage"}, provisioners.Healthy, "", 0},
		{&container.State{Status: "exited", ExitCode: 137, OOMKilled: true}, provisioners.Unhealthy, "memory limit", 0},
		{&container.State{Status: "restarting", Running: true, Restarting: true}, provisioners.Unhealthy, "restarting", 0},
		{&container.State{Status: "paused", Running: true, Paused: true}, provisioners.Unhealthy, "paused", 0},
		{&container.State{Status: "running", Running: true, StartedAt: "2026-01-02T03:04:00Z", Health: &container.Health{Status: container.Unhealthy, FailingStreak: 4}}, provisioners.Unhealthy, "HEALTHCHECK", 5},
		{nil, provisioners.Unknown, "no state", 0},
	} {
		h := healthFromState(c.st, now)
		if h.Status != c.status || !strings.Contains(h.Reason, c.reason) || h.UptimeSeconds != c.uptime {
			t.Errorf("%+v -> %+v", c.st, h)
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, c := range []config.DockerConfig{
		{Image: ""},
		{Image: "x", SSHPortRangeStart: 10, SSHPortRangeEnd: 5},
		{Image: "x", PublishIP: "localhost"},
	} {
		if _, err := New(c, Options{}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

// Port labels are read back from the daemon, where anyone with access can
// edit them.
func FuzzPortFromLabel(f *testing.F) {
	for _, s := range []string{"22", "20000", "0", "65536", "-1", " 80 ", "0x50", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := portFromLabel(s)
		if ok != (n >= 1 && n <= 65535) {
			t.Fatalf("%q -> %d %v", s, n, ok)
		}
		if ok && strconv.Itoa(n) != strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), "+")) && strings.TrimLeft(strings.TrimSpace(s), "+0") != strconv.Itoa(n) {
			t.Fatalf("%q parsed as %d", s, n)
		}
	})
}

func mustEd25519(t testing.TB) ed25519.PublicKey {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// Concurrent provisions never pick the same host port (with --bridge=none
// the daemon would not object, so only the agent's own bookkeeping keeps
// them apart).
func TestConcurrentProvisionsGetDistinctPorts(t *testing.T) {
	t.Parallel()
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+300, testPortStart+305
	})
	t.Cleanup(func() { terminateAll(t, p, cid(20), cid(21), cid(22), cid(23), cid(24), cid(25)) })
	key := sshKey(t)
	type res struct {
		port int
		err  error
	}
	out := make(chan res, 6)
	for i := range 6 {
		go func() {
			inst, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid(20 + i), MemoryMB: 64, RequesterSSHPubkey: key})
			out <- res{inst.SSHPort, err}
		}()
	}
	seen := map[int]bool{}
	for range 6 {
		r := <-out
		if r.err != nil {
			t.Fatal(r.err)
		}
		if seen[r.port] {
			t.Fatalf("port %d given twice", r.port)
		}
		seen[r.port] = true
	}
}

// A container left by an interrupted attempt is taken over only when it is
// known to be complete; otherwise it is replaced in the same call.
func TestResumeInterruptedAttempts(t *testing.T) {
	t.Parallel()
	// Ranges of their own for tests that run in parallel.
	p := newProvisioner(t, func(c *config.DockerConfig) {
		c.SSHPortRangeStart, c.SSHPortRangeEnd = testPortStart+400, testPortStart+409
	})
	t.Cleanup(func() { terminateAll(t, p, cid(30)) })
	ctx := context.Background()
	req := provisioners.Request{ContractID: cid(30), MemoryMB: 64, RequesterSSHPubkey: sshKey(t), PostProvisionScript: "echo ok"}

	// Created but never started (killed between create and start).
	res, err := p.cli.ContainerCreate(ctx, client.ContainerCreateOptions{Name: ContainerName(cid(30)), Config: &container.Config{
		Image: testImage, Labels: map[string]string{LabelManaged: "true", LabelContract: cid(30), LabelSSHPort: "1"}}})
	if err != nil {
		t.Fatal(err)
	}
	inst, err := p.Provision(ctx, req)
	if err != nil || inst.ExternalID == res.ID || len(containersOf(t, p, cid(30))) != 1 {
		t.Fatalf("created-only container: %+v %v", inst, err)
	}

	// Complete: taken over as is.
	again, err := p.Provision(ctx, req)
	if err != nil || again.ExternalID != inst.ExternalID {
		t.Fatalf("complete container not resumed: %+v %v", again, err)
	}

	// Running, but the script is not known to have finished.
	if _, code, err := p.exec(ctx, inst.ExternalID, []string{"/bin/sh", "-c", "rm " + doneMarker}, nil); err != nil || code != 0 {
		t.Fatalf("rm marker: %d %v", code, err)
	}
	third, err := p.Provision(ctx, req)
	if err != nil || third.ExternalID == inst.ExternalID || len(containersOf(t, p, cid(30))) != 1 {
		t.Fatalf("incomplete container not replaced: %+v %v", third, err)
	}
}
