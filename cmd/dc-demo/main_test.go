package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/demobackend"
)

func TestMain(m *testing.M) {
	demobackend.MaybeRun() // the demo's script backend runs this binary
	os.Exit(m.Run())
}

// TestDemoExit is `DEMO_CONTRACTS=2 DEMO_EXIT=1 make demo`: the real API
// server, the real agent, two contracts provisioned and healthy.
func TestDemoExit(t *testing.T) {
	s := runDemo(t, "DEMO_BACKEND", "script", "DEMO_CONTRACTS", "2")
	if !strings.Contains(s, "demo: 2/2 contracts provisioned\n") || strings.Count(s, " healthy ") != 2 || !strings.Contains(s, "pw-") {
		t.Fatalf("output:\n%s", s)
	}
	// A second run reuses (recreates) its own directory...
	var out bytes.Buffer
	if code := run(&out); code != 0 {
		t.Fatalf("second run: exit %d:\n%s", code, out.String())
	}
	// ...but never deletes a directory it did not make.
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "precious"), []byte("x"), 0o600)
	t.Setenv("DEMO_DIR", foreign)
	out.Reset()
	if code := run(&out); code != 1 || !strings.Contains(out.String(), "was not made by the demo") {
		t.Fatalf("foreign dir: exit %d:\n%s", code, out.String())
	}
	if _, err := os.Stat(filepath.Join(foreign, "precious")); err != nil {
		t.Fatal("the demo deleted a directory it did not make")
	}
}

// runDemo runs the demo to its end (DEMO_EXIT=1) in a new directory with
// the DEMO_* settings of env (name, value, ...) and returns its output; a
// failed run fails the test.
func runDemo(t *testing.T, env ...string) string {
	t.Helper()
	t.Setenv("DEMO_DIR", filepath.Join(t.TempDir(), "demo"))
	t.Setenv("DEMO_EXIT", "1")
	t.Setenv("DEMO_PORT", "0")
	t.Setenv("DEMO_TIMEOUT", "60s")
	for i := 0; i+1 < len(env); i += 2 {
		t.Setenv(env[i], env[i+1])
	}
	var out bytes.Buffer
	if code := run(&out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	return out.String()
}

func TestDemoSettingsErrors(t *testing.T) {
	for k, v := range map[string]string{"DEMO_CONTRACTS": "many", "DEMO_EXIT": "maybe", "DEMO_BACKEND": "vmware", "DEMO_TIMEOUT": "soon", "DEMO_PORT": "99999"} {
		t.Run(k, func(t *testing.T) {
			t.Setenv(k, v)
			var out bytes.Buffer
			if code := run(&out); code != 2 {
				t.Fatalf("%s=%s: exit %d", k, v, code)
			}
		})
	}
}

// TestDemoProxmox is `make demo` with its default backend: the real Proxmox
// provisioner (go-proxmox, pinned TLS, least-privilege token) against the
// simulated node, every VM provisioned, healthy and listed.
func TestDemoProxmox(t *testing.T) {
	s := runDemo(t, "DEMO_CONTRACTS", "3", "DEMO_PVE_TIMING", "fast")
	for _, want := range []string{"proxmox provisioner (go-proxmox)", "demo: 3/3 contracts provisioned\n", "pve1/100", "pve1/101", "pve1/102",
		"backend holds 3 machine(s)", "10.99.0.10", "size=1T"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Count(s, " healthy ") != 3 || strings.Contains(s, "cannot open") {
		t.Errorf("output:\n%s", s)
	}
}

// TestDemoLiveSeed is the registration DEMO_PROFILE=live does: a pool, a
// one-time setup token, `dc-agent register --setup-token file:…` (the real
// binary) registering the agent with it on the live profile, and the
// contracts in the pool.
func TestDemoLiveSeed(t *testing.T) {
	t.Setenv("DEMO_PROFILE", "live")
	t.Setenv("DEMO_PORT", "0")
	bin := filepath.Join(t.TempDir(), "dc-agent")
	if out, err := exec.Command("go", "build", "-o", bin, "../dc-agent").CombinedOutput(); err != nil {
		t.Fatalf("build dc-agent: %v\n%s", err, out)
	}
	t.Setenv("DEMO_AGENT", bin)
	s, err := readSettings()
	if err != nil || s.profile != "live" {
		t.Fatalf("settings %+v, %v", s, err)
	}
	s.dir = filepath.Join(t.TempDir(), "demo")
	d := &demo{s: s, out: io.Discard}
	defer d.close()
	if err := d.prepareDir(); err != nil {
		t.Fatal(err)
	}
	url, err := d.startAPI(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if d.api.Profile() != "live" {
		t.Fatalf("API profile %q", d.api.Profile())
	}
	key, line, err := d.seedPool(t.Context(), url, "script")
	if err != nil {
		t.Fatal(err)
	}
	dl, err := d.st.GetDelegation(t.Context(), identity.PublicHex(d.provider), identity.PublicHex(key))
	if err != nil || dl.PoolID == nil || *dl.PoolID != d.pool.PoolID || !strings.Contains(line, "registered by dc-agent register --setup-token (apt_europe_") ||
		d.setup == nil || d.setup.PoolID != d.pool.PoolID || d.setup.PoolLocation != "europe" {
		t.Fatalf("delegation %+v, %v; %q; setup answer %+v", dl, err, line, d.setup)
	}
	if err := d.createContract(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if c, err := d.st.GetContract(t.Context(), d.order[0]); err != nil || c.AgentPoolID == nil || *c.AgentPoolID != d.pool.PoolID {
		t.Fatalf("contract %+v, %v", c, err)
	}
	t.Setenv("DEMO_PROFILE", "staging")
	if _, err := readSettings(); err == nil {
		t.Fatal("DEMO_PROFILE=staging accepted")
	}
}
