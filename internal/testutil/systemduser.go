package testutil

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// UserManager is a real `systemd --user` running in a private mount
// namespace (DESIGN.md: systemd is not PID 1 here). Its world lives under
// Root: units in Root/etc/systemd/user (XDG_CONFIG_HOME=Root/etc), runtime
// files in Root/run (XDG_RUNTIME_DIR), state in Root/var/lib
// (XDG_STATE_HOME). Commands run with Env talk to it with `systemctl --user`.
type UserManager struct {
	Root string
	// Env is the environment for systemctl --user and for anything that
	// should see this manager (the process environment plus the XDG
	// variables).
	Env []string
	// Vars are just the variables Env adds to the process environment.
	Vars []string
	// Log is the manager's own output (its log, since there is no journal).
	Log string
	cmd *exec.Cmd
}

// StartUserManager starts systemd --user under root (a fresh temp dir when
// root is ""), waits until it answers, and stops it in t.Cleanup.
func StartUserManager(t testing.TB, root string) *UserManager {
	t.Helper()
	systemd := RequireBinary(t, "systemd")
	if p := "/lib/systemd/systemd"; fileExists(p) {
		systemd = p
	}
	unshare := RequireBinary(t, "unshare")
	RequireBinary(t, "systemctl")
	if os.Geteuid() != 0 {
		Unavailable(t, "systemd --user in a private mount namespace needs root (unshare --mount)")
	}
	if root == "" {
		root = t.TempDir()
	}
	m := &UserManager{Root: root, Log: filepath.Join(root, "systemd-user.log")}
	for _, d := range []string{"etc/systemd/user", "run", "var/lib"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(filepath.Join(root, "run"), 0o700); err != nil {
		t.Fatal(err)
	}
	m.Vars = []string{
		"XDG_CONFIG_HOME=" + filepath.Join(root, "etc"),
		"XDG_RUNTIME_DIR=" + filepath.Join(root, "run"),
		"XDG_STATE_HOME=" + filepath.Join(root, "var/lib"),
		"SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
	}
	m.Env = append(os.Environ(), m.Vars...)
	// A tmpfs on /run/systemd with /run/systemd/system in it makes systemd
	// believe it was booted with systemd, only inside the namespace.
	script := `mount -t tmpfs tmpfs /run/systemd && mkdir -p /run/systemd/system && exec "$0" --user`
	log, err := os.Create(m.Log)
	if err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script, systemd)
	m.cmd.Env = m.Env
	m.cmd.Stdout, m.cmd.Stderr = log, log
	// Its own process group: the cleanup reaches every unit process.
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := m.cmd.Start(); err != nil {
		log.Close()
		t.Fatalf("start systemd --user: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = m.cmd.Wait(); log.Close(); close(done) }()
	t.Cleanup(func() {
		// SIGTERM: the manager stops its units, then exits.
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-m.cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(m.Log)
			t.Logf("systemd --user log:\n%s", lastLines(string(b), 60))
		}
	})
	// Ready when its private socket accepts and it answers.
	sock := filepath.Join(root, "run", "systemd", "private")
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-done:
			b, _ := os.ReadFile(m.Log)
			t.Fatalf("systemd --user exited:\n%s", b)
		default:
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			// (is-system-running says "offline" here: PID 1 is not systemd.)
			if _, err := m.Systemctl("show", "-p", "Version"); err == nil {
				return m
			}
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(m.Log)
			t.Fatalf("systemd --user did not come up within 15s:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Systemctl runs `systemctl --user args...` against this manager and
// returns its trimmed stdout; a non-zero exit is an error carrying the
// output.
func (m *UserManager) Systemctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "systemctl", append([]string{"--user"}, args...)...)
	cmd.Env = m.Env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		return out, fmt.Errorf("systemctl --user %s: %w: %s %s", strings.Join(args, " "), err, out, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// Show returns unit properties (`systemctl --user show -p ...`).
func (m *UserManager) Show(t testing.TB, unit string, props ...string) map[string]string {
	t.Helper()
	args := []string{"show"}
	for _, p := range props {
		args = append(args, "-p", p)
	}
	out, err := m.Systemctl(append(args, "--", unit)...)
	if err != nil {
		t.Fatal(err)
	}
	res := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			res[k] = v
		}
	}
	return res
}

// WaitFor polls the unit's properties until cond holds, failing the test
// after timeout with the last properties seen.
func (m *UserManager) WaitFor(t testing.TB, unit string, timeout time.Duration, what string, cond func(map[string]string) bool) map[string]string {
	t.Helper()
	props := []string{"ActiveState", "SubState", "MainPID", "NRestarts", "Result", "StatusText", "ExecMainStatus", "ExecMainCode"}
	deadline := time.Now().Add(timeout)
	for {
		p := m.Show(t, unit, props...)
		if cond(p) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %s; last state %v", what, timeout, p)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
