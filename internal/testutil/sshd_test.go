package testutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSSHDSessionSeesEnvAndTools(t *testing.T) {
	bin := t.TempDir()
	WriteFile(t, filepath.Join(bin, "qm"), "#!/bin/sh\necho \"sim-qm $STATE $*\"\n", 0o755)
	s := StartSSHD(t, SSHDOptions{Env: map[string]string{"PATH": bin, "STATE": "/x y"}})
	out := s.Run(t, "qm list; command -v qm")
	if !strings.Contains(out, "sim-qm /x y list") || !strings.Contains(out, filepath.Join(bin, "qm")) {
		t.Fatalf("unexpected session output:\n%s", out)
	}
	old := s.HostKeyFingerprint()
	s.RotateHostKey()
	if s.HostKeyFingerprint() == old {
		t.Fatal("host key did not change")
	}
	if out := s.Run(t, "echo ok"); strings.TrimSpace(out) != "ok" {
		t.Fatalf("after rotate: %q", out)
	}
	s.Stop()
	if _, err := os.Stat(filepath.Join(s.Dir, "sshd_config")); err != nil {
		t.Fatal(err)
	}
}
