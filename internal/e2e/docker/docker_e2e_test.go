// Package dockere2e runs the Docker backend through the real agent (the
// loop in process, and the dc-agent binary killed mid-provision) and the
// real reference API server, against a real dockerd.
package dockere2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/docker"
)

var dockerEnv *testutil.DockerEnv

const (
	testImage = "dc-e2e/busybox:1"
	wait      = 60 * time.Second
)

// dcAgent is the dc-agent binary, built by TestMain while the daemon
// starts.
var dcAgent string

func TestMain(m *testing.M) {
	testutil.RunWithBinariesAnd(m, func() func() {
		dockerEnv = testutil.StartDockerEnv()
		dockerEnv.ImportBusybox(testImage)
		return dockerEnv.Stop
	}, testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-agent", Name: "dc-agent", Path: &dcAgent})
}

func dockerSection(d *testutil.Dockerd, portStart int) *config.DockerConfig {
	return &config.DockerConfig{
		Socket: d.Socket, Image: testImage, SSHPortRangeStart: portStart, SSHPortRangeEnd: portStart + 49,
		PublishIP: "127.0.0.1", PublicHost: "198.51.100.20", RestartPolicy: "unless-stopped", PullTimeoutSecond: 30,
	}
}

func dockerClient(t *testing.T, d *testutil.Dockerd) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost(d.Host))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// managed lists the containers the agent made.
func managed(t *testing.T, c *client.Client) []container.Summary {
	t.Helper()
	res, err := c.ContainerList(context.Background(), client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("label", docker.LabelManaged+"=true")})
	if err != nil {
		t.Fatal(err)
	}
	return res.Items
}

func waitLive(t *testing.T, env *e2eutil.Env, cid string) *store.Contract {
	t.Helper()
	return env.API.WaitForContract(cid, wait, func(c *store.Contract) bool {
		return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
	}, "provisioned")
}

// A contract becomes a running container with the offering's limits,
// reports healthy, is stopped (kept) while the contract is paused and
// started when it resumes, and is removed when the contract is cancelled:
// against both dc-api profiles.
func TestContractToContainer(t *testing.T) {
	for i, prof := range e2eutil.Profiles {
		t.Run(prof.Name, func(t *testing.T) { testContractToContainer(t, prof, 45100+100*i) })
	}
}

func testContractToContainer(t *testing.T, prof e2eutil.Profile, port int) {
	d := dockerEnv.Require(t)
	dc := dockerClient(t, d)
	env := e2eutil.NewEnvFor(t, prof, config.TypeDocker)
	cfg := env.Config(config.ProvisionerConfig{Type: config.TypeDocker, Docker: dockerSection(d, port)}, "")
	reg := provisioners.NewRegistry()
	reg.Register(config.TypeDocker, docker.NewFactory(docker.TestOptions()))

	key := apitest.NewSSHPubkey(t)
	cid := env.CreateContract(apitest.ContractSpec{
		CPUCores: apitest.Ptr(2), MemoryAmount: apitest.Ptr("256 MB"), StorageCapacity: apitest.Ptr("5 GB"), RequesterSSHPubkey: key,
	})
	env.StartAgent(cfg, reg)
	waitLive(t, env, cid)
	det, ok := env.API.InstanceDetails(cid)
	if !ok {
		t.Fatal("no instance details")
	}
	res, err := dc.ContainerInspect(context.Background(), det.ExternalID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ct := res.Container
	if !ct.State.Running || ct.Config.Labels[docker.LabelContract] != cid || ct.Name != "/"+docker.ContainerName(cid) {
		t.Fatalf("container %s state %+v labels %v", ct.Name, ct.State, ct.Config.Labels)
	}
	if ct.HostConfig.NanoCPUs != 2e9 || ct.HostConfig.Memory != 256<<20 {
		t.Fatalf("limits: NanoCPUs %d Memory %d", ct.HostConfig.NanoCPUs, ct.HostConfig.Memory)
	}
	if det.IPAddress != "198.51.100.20" || det.SSHPort < port || det.SSHPort > port+49 {
		t.Fatalf("details %+v", det)
	}
	b := ct.HostConfig.PortBindings[network.MustParsePort("22/tcp")]
	if len(b) != 1 || b[0].HostPort != strconv.Itoa(det.SSHPort) {
		t.Fatalf("port bindings %+v vs reported port %d", ct.HostConfig.PortBindings, det.SSHPort)
	}

	e2eutil.Eventually(t, wait, "a healthy health check", func() bool {
		for _, h := range env.API.HealthChecks(cid) {
			if h.Status == dcapi.HealthHealthy {
				return true
			}
		}
		return false
	})

	running := func() bool {
		r, err := dc.ContainerInspect(context.Background(), det.ExternalID, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return r.Container.State.Running
	}
	if _, err := env.API.Store.PauseContract(context.Background(), cid, "stripe_dispute:du_3", env.API.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, wait, "the container stopped", func() bool { return !running() })
	if _, err := env.API.Store.ResumeContract(context.Background(), cid, env.API.Now().UnixNano()); err != nil {
		t.Fatal(err)
	}
	e2eutil.Eventually(t, wait, "the container running again", running)
	if l := managed(t, dc); len(l) != 1 || l[0].ID != det.ExternalID {
		t.Fatalf("containers after pause and resume: %+v", l)
	}

	env.API.CancelContract(cid)
	env.API.WaitForContract(cid, wait, func(c *store.Contract) bool { return c.TerminatedAtNs != nil }, "terminated")
	if _, err := dc.ContainerInspect(context.Background(), det.ExternalID, client.ContainerInspectOptions{}); !cerrdefs.IsNotFound(err) {
		t.Fatalf("container still exists after termination: %v", err)
	}
	if l := managed(t, dc); len(l) != 0 {
		t.Fatalf("containers left: %+v", l)
	}
}

// The dc-agent binary is SIGKILLed right after the container was created,
// before anything was reported. Restarted, it resumes the contract (the
// live API refuses its second "provisioning": it carries on), finds the
// container instead of creating a second one, and reports it.
func TestKilledAgentRefindsContainer(t *testing.T) {
	for i, prof := range e2eutil.Profiles {
		t.Run(prof.Name, func(t *testing.T) { testKilledAgentRefindsContainer(t, prof, 45300+100*i) })
	}
}

func testKilledAgentRefindsContainer(t *testing.T, prof e2eutil.Profile, port int) {
	d := dockerEnv.Require(t)
	dc := dockerClient(t, d)
	bin := dcAgent
	env := e2eutil.NewEnvFor(t, prof, config.TypeDocker)
	cfg := env.Config(config.ProvisionerConfig{Type: config.TypeDocker, Docker: dockerSection(d, port)}, "")
	cfgPath := filepath.Join(env.Dir, "dc-agent.toml")
	if err := config.Save(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	cid := env.CreateContract(apitest.ContractSpec{CPUCores: apitest.Ptr(1), MemoryAmount: apitest.Ptr("128 MB")})

	run := func(extra ...string) *exec.Cmd {
		args := append([]string{"--config", cfgPath, "run", "--time-scale", "0.01"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Stdout = os.Stderr
		cmd.Stderr = &strings.Builder{}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	first := run("--crash-at", "provisioner_returned")
	done := make(chan error, 1)
	go func() { done <- first.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("first agent ended with %v, not SIGKILL; log:\n%s", err, first.Stderr)
		}
	case <-time.After(wait):
		_ = first.Process.Kill()
		t.Fatalf("the first agent did not reach the crash point; log:\n%s", first.Stderr)
	}
	before := managed(t, dc)
	if len(before) != 1 || before[0].Labels[docker.LabelContract] != cid || before[0].State != container.StateRunning {
		t.Fatalf("after the crash: %+v", before)
	}
	if st := env.API.ContractStatus(cid); st != dcapi.StatusProvisioning {
		t.Fatalf("contract is %s after the crash, want provisioning (nothing reported yet)", st)
	}

	second := run()
	t.Cleanup(func() {
		_ = second.Process.Signal(syscall.SIGTERM)
		_ = second.Wait()
	})
	waitLive(t, env, cid)
	det, _ := env.API.InstanceDetails(cid)
	after := managed(t, dc)
	if len(after) != 1 || det.ExternalID != before[0].ID {
		t.Fatalf("reported %s; containers %+v (before the crash: %s)", det.ExternalID, after, before[0].ID)
	}
	_ = second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("second agent: %v; log:\n%s", err, second.Stderr)
	}
	// The restarted agent still knows it: cancelling removes it.
	third := run()
	t.Cleanup(func() {
		_ = third.Process.Signal(syscall.SIGTERM)
		_ = third.Wait()
	})
	env.API.CancelContract(cid)
	e2eutil.Eventually(t, wait, "container removed", func() bool { return len(managed(t, dc)) == 0 })
}
