package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// proxmoxTestConfig writes a config for the simulated node.
func proxmoxTestConfig(t *testing.T, s *pveapi.TestSim, extra string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := `[api]
endpoint = "https://api.decent-cloud.org"
provider_pubkey = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"
agent_secret_key = "agent.key"

` + s.ProvisionerTOML(t, filepath.Join(dir, "pve-token"), `node = "pve1"
linked_clone = true
ip_wait_attempts = 3
ip_wait_interval_secs = 1
task_poll_interval_ms = 50
`+extra)
	return testutil.WriteFile(t, filepath.Join(dir, "dc-agent.toml"), cfg, 0o600)
}

// instantTiming finishes every task at its first poll.
func instantTiming() *pve.Timing { return &pve.Timing{} }

func TestTestProvisionAgainstSimulatedProxmox(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{Timing: instantTiming()})
	cfg := proxmoxTestConfig(t, s, "")

	r := runAgent(t, runOpts{}, "test-provision", "-c", cfg, "--storage-gb", "10")
	if r.code != 0 {
		t.Fatalf("text run: %s", r)
	}
	for _, want := range []string{"test-provision with the proxmox provisioner", "cloning template 9000", "waiting for the guest agent",
		"provisioned pve1/100", "address 10.99.0.100", "health: healthy", "terminated pve1/100", "test-provision passed"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, r.stdout)
		}
	}

	key := testutil.WriteFile(t, filepath.Join(t.TempDir(), "id.pub"),
		"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHqB5wY1tmlVkGCOcO0E0qsx6YY4rYbl8wEgr9bSmw5B me@laptop\n", 0o644)
	r = runAgent(t, runOpts{}, "test-provision", "-c", cfg, "--json", "--keep", "--ssh-pubkey", "file:"+key)
	if r.code != 0 {
		t.Fatalf("json run: %s", r)
	}
	var rep testReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("json: %v\n%s", err, r.stdout)
	}
	if !rep.OK || !rep.Kept || rep.Terminated || rep.Instance == nil || rep.Instance.IPAddress == "" || len(rep.Steps) < 4 || rep.Health == nil {
		t.Fatalf("report: %+v", rep)
	}
	var kept *pve.VM
	s.Update(t, func(st *pve.State) error {
		for _, vm := range st.VMs {
			if !vm.IsTemplate() {
				kept = vm
			}
		}
		return nil
	})
	if kept == nil || !strings.Contains(kept.Config["sshkeys"], "me%40laptop") {
		t.Fatalf("kept VM: %+v", kept)
	}

	r = runAgent(t, runOpts{}, "test-provision", "-c", cfg, "--ssh-pubkey", "not a key")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--ssh-pubkey is not an OpenSSH public key") {
		t.Errorf("bad key: %s", r)
	}
}

func TestTestProvisionReportsFailureAndCleansUp(t *testing.T) {
	s := pveapi.StartTest(t, pveapi.TestOptions{Timing: instantTiming()})
	s.Update(t, func(st *pve.State) error { st.Faults.AgentNeverStarts = true; return nil })
	cfg := proxmoxTestConfig(t, s, "")
	r := runAgent(t, runOpts{}, "test-provision", "-c", cfg, "--json")
	if r.code != exitFailure {
		t.Fatalf("want exit 1: %s", r)
	}
	var rep testReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.OK || !strings.Contains(rep.Error, "got no IP address") || len(rep.Steps) == 0 || rep.Steps[len(rep.Steps)-1].Error == "" {
		t.Fatalf("report: %+v", rep)
	}
	s.Update(t, func(st *pve.State) error {
		for id, vm := range st.VMs {
			if !vm.IsTemplate() {
				t.Errorf("leftover VM %d", id)
			}
		}
		return nil
	})
}
