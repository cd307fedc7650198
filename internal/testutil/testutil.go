// Package testutil holds helpers shared by tests: finding the real tools the
// integration tests run (sshd, dockerd, PostgreSQL, systemd, chromium, tmux)
// and free loopback ports.
//
// Under `make test` (and so in CI) DC_REQUIRE_INTEGRATION=1 is set and a
// missing tool fails the test; elsewhere the test is skipped with the
// command that installs it.
package testutil

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Integration reports whether integration tests are required to run.
func Integration() bool { return os.Getenv("DC_REQUIRE_INTEGRATION") == "1" }

// RequireBinary returns the path of an executable, looking in PATH and the
// usual sbin and PostgreSQL directories. Missing: fatal under `make test`,
// skipped otherwise.
func RequireBinary(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	cands := []string{"/usr/sbin/" + name, "/sbin/" + name}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name); len(m) > 0 {
		cands = append(cands, m[len(m)-1])
	}
	for _, c := range cands {
		if st, err := os.Stat(c); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	Unavailable(t, name+" is not installed (run: make test-deps)")
	return ""
}

// Unavailable fails the test under `make test` and skips it otherwise.
func Unavailable(t testing.TB, why string) {
	t.Helper()
	if Integration() {
		t.Fatalf("integration prerequisite missing: %s", why)
	}
	t.Skipf("skipping: %s", why)
}

// FreePort returns a TCP port free on 127.0.0.1 at the time of the call.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// WriteFile writes a file with mode, failing the test on error.
func WriteFile(t testing.TB, path string, data string, mode os.FileMode) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// SyncBuffer is a bytes.Buffer that a process or logger writes while the
// test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ShortDir makes a directory with a short path, removed at the end of the
// test: a Unix socket's path is at most 108 bytes, more than t.TempDir's
// long names leave room for.
func ShortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// Eventually polls cond until it holds, failing the test after timeout. It
// polls every 5 ms at first and backs off to every 50 ms, so that a
// condition that runs a command (systemctl, ssh) does not busy the machine.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for pause := 5 * time.Millisecond; !cond(); pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for: %s", timeout, what)
		}
		time.Sleep(pause)
	}
}
