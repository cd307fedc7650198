package testutil

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Real web servers for the gateway's tests (package gateway and the
// end-to-end test of the agent's gateway): Caddy and busybox httpd inside
// a network namespace.

// Caddy is a running `caddy run` (Debian's caddy).
type Caddy struct {
	// RootCA is the PEM root of Caddy's internal CA (tls internal).
	RootCA string
	// LogPath holds Caddy's output.
	LogPath string
}

// Log returns Caddy's output so far.
func (c *Caddy) Log() string {
	b, _ := os.ReadFile(c.LogPath)
	return string(b)
}

// StartCaddy runs Caddy with caddyfile inside ns (its working and home
// directory dir), its certificates under storageDir (the Caddyfile's
// storage), and waits until probeAddr serves a certificate for probeName
// signed by its internal CA. It is killed at the end of the test.
func StartCaddy(t testing.TB, ns *NetNS, dir, caddyfile, storageDir, probeAddr, probeName string) *Caddy {
	t.Helper()
	RequireBinary(t, "caddy")
	c := &Caddy{RootCA: filepath.Join(storageDir, "pki", "authorities", "local", "root.crt"), LogPath: filepath.Join(dir, "caddy.log")}
	logf, err := os.Create(c.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := ns.Command("caddy", "run", "--config", caddyfile, "--adapter", "caddyfile")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "xdg-data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"))
	cmd.Stdout, cmd.Stderr = logf, logf
	exited := startGroup(t, cmd, "caddy")
	WaitFor(t, "Caddy to serve the certificate of "+probeName, 60*time.Second, exited, func() error {
		pem, err := os.ReadFile(c.RootCA)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		conn, err := ns.Dial("tcp", probeAddr, time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		tc := tls.Client(conn, &tls.Config{ServerName: probeName, RootCAs: pool})
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		return tc.Handshake()
	}, c.Log)
	return c
}

// StartHTTPD runs busybox httpd inside ns on addr (host:port) serving
// www, and waits until it accepts connections.
func StartHTTPD(t testing.TB, ns *NetNS, addr, www string) {
	t.Helper()
	RequireBinary(t, "busybox")
	exited := startGroup(t, ns.Command("busybox", "httpd", "-f", "-p", addr, "-h", www), "httpd")
	WaitFor(t, "the web server on "+addr, 20*time.Second, exited, func() error {
		c, err := ns.Dial("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}, nil)
}

// startGroup starts cmd in its own process group, killed (the whole
// group) at the end of the test; the channel closes when it exits.
func startGroup(t testing.TB, cmd *exec.Cmd, what string) <-chan struct{} {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", what, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	return exited
}

// WaitFor polls cond until it succeeds; limit only bounds a failure
// (nothing is assumed ready after some time). A closed exited (the
// process that should make cond true died) fails at once; log adds
// context to a failure.
func WaitFor(t testing.TB, what string, limit time.Duration, exited <-chan struct{}, cond func() error, log func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		err := cond()
		if err == nil {
			return
		}
		more := func() string {
			if log == nil {
				return ""
			}
			return log()
		}
		select {
		case <-exited:
			t.Fatalf("waiting for %s: the process exited (%v)\n%s", what, err, more())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v\n%s", what, err, more())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
