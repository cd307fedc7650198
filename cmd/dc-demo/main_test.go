package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/demobackend"
)

func TestMain(m *testing.M) {
	demobackend.MaybeRun() // the demo's script backend runs this binary
	os.Exit(m.Run())
}

// TestDemoExit is `DEMO_CONTRACTS=2 DEMO_EXIT=1 make demo`: the real API
// server, the real agent, two contracts provisioned and healthy.
func TestDemoExit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "demo")
	t.Setenv("DEMO_DIR", dir)
	t.Setenv("DEMO_BACKEND", "script")
	t.Setenv("DEMO_CONTRACTS", "2")
	t.Setenv("DEMO_EXIT", "1")
	t.Setenv("DEMO_PORT", "0")
	t.Setenv("DEMO_TIMEOUT", "60s")
	var out bytes.Buffer
	if code := run(&out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	s := out.String()
	if !strings.Contains(s, "demo: 2/2 contracts provisioned\n") || strings.Count(s, " healthy ") != 2 || !strings.Contains(s, "pw-") {
		t.Fatalf("output:\n%s", s)
	}
	// A second run reuses (recreates) its own directory...
	out.Reset()
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
	dir := filepath.Join(t.TempDir(), "demo")
	t.Setenv("DEMO_DIR", dir)
	t.Setenv("DEMO_CONTRACTS", "3")
	t.Setenv("DEMO_EXIT", "1")
	t.Setenv("DEMO_PORT", "0")
	t.Setenv("DEMO_TIMEOUT", "60s")
	t.Setenv("DEMO_PVE_TIMING", "fast")
	var out bytes.Buffer
	if code := run(&out); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	s := out.String()
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
