package testutil

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// SSHDOptions shape a throwaway sshd.
type SSHDOptions struct {
	// Env is set in every session with sshd's SetEnv (PATH, state dirs).
	// PATH is prepended to the system PATH, so the tools in it win.
	Env map[string]string
	// Port to listen on (0: a free one). Reusing a port with a new host
	// key is how tests simulate a reinstalled or impersonated host.
	Port int
	// NetNS runs the server inside a network namespace (a VM of a test
	// network), listening on ListenHost (default 127.0.0.1) and Port
	// (default 22 there).
	NetNS      *NetNS
	ListenHost string
	// HomeKeys keeps authorized_keys where cloud-init writes it for a VM's
	// user, in the sessions' $HOME/.ssh (AuthorizedKeys), so a session can
	// change who may log in.
	HomeKeys bool
}

// SSHD is a real OpenSSH server on 127.0.0.1 with its own host key,
// config, authorized_keys, pid file and log in a temp dir. It accepts one
// client key (ClientKeyFile), for the user running the test.
type SSHD struct {
	t    testing.TB
	bin  string
	opts SSHDOptions

	Dir           string
	Host          string // 127.0.0.1 unless SSHDOptions.ListenHost
	Port          int
	User          string
	ClientKeyFile string // OpenSSH private key accepted by the server (0600)
	// AuthorizedKeys is the file sshd reads the accepted keys from.
	AuthorizedKeys string
	ClientSigner   ssh.Signer
	HostKey        ssh.PublicKey

	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartSSHD starts sshd and stops it at the end of the test. Under
// `make test` a missing sshd fails the test.
func StartSSHD(t testing.TB, opts SSHDOptions) *SSHD {
	t.Helper()
	bin := RequireBinary(t, "sshd")
	if os.Geteuid() == 0 {
		// sshd refuses to start without its privilege separation directory.
		if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
			t.Fatalf("mkdir /run/sshd: %v", err)
		}
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s := &SSHD{t: t, bin: bin, opts: opts, Dir: t.TempDir(), Host: "127.0.0.1", User: u.Username}
	if opts.ListenHost != "" {
		s.Host = opts.ListenHost
	}
	s.Port = opts.Port
	switch {
	case s.Port == 0 && opts.NetNS != nil:
		s.Port = 22
	case s.Port == 0:
		s.Port = FreePort(t)
	}
	// The client key.
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s.ClientKeyFile = filepath.Join(s.Dir, "client_key")
	writeOpenSSHKey(t, s.ClientKeyFile, priv)
	if s.ClientSigner, err = ssh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s.AuthorizedKeys = filepath.Join(s.Dir, "authorized_keys")
	if opts.HomeKeys {
		s.AuthorizedKeys = filepath.Join(s.home(), ".ssh", "authorized_keys")
		if err := os.MkdirAll(filepath.Dir(s.AuthorizedKeys), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	WriteFile(t, s.AuthorizedKeys, string(ssh.MarshalAuthorizedKey(sshPub)), 0o600)
	s.newHostKey()
	s.start()
	t.Cleanup(s.Stop)
	return s
}

// home is the sessions' $HOME unless Env sets one.
func (s *SSHD) home() string {
	if h := s.opts.Env["HOME"]; h != "" {
		return h
	}
	return filepath.Join(s.Dir, "home")
}

// Addr is host:port.
func (s *SSHD) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// HostKeyFingerprint is the host key as ssh-keygen -l prints it (SHA256:...).
func (s *SSHD) HostKeyFingerprint() string { return ssh.FingerprintSHA256(s.HostKey) }

// RotateHostKey restarts the server on the same port with a fresh host key,
// as if the host was reinstalled (or someone else answers on its address).
func (s *SSHD) RotateHostKey() {
	s.t.Helper()
	s.Stop()
	s.newHostKey()
	s.start()
}

func (s *SSHD) newHostKey() {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	writeOpenSSHKey(s.t, filepath.Join(s.Dir, "host_key"), priv)
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		s.t.Fatal(err)
	}
	s.HostKey = signer.PublicKey()
}

func writeOpenSSHKey(t testing.TB, path string, priv ed25519.PrivateKey) {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	WriteFile(t, path, string(pem.EncodeToMemory(block)), 0o600)
}

func (s *SSHD) config() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ListenAddress %s\n", s.Addr())
	fmt.Fprintf(&b, "HostKey %s\n", filepath.Join(s.Dir, "host_key"))
	fmt.Fprintf(&b, "PidFile %s\n", filepath.Join(s.Dir, "sshd.pid"))
	fmt.Fprintf(&b, "AuthorizedKeysFile %s\n", s.AuthorizedKeys)
	b.WriteString("UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n")
	b.WriteString("PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")
	b.WriteString("PrintMotd no\nPrintLastLog no\nLogLevel VERBOSE\nMaxSessions 64\nMaxStartups 64\n")
	env := map[string]string{
		// A clean home: the machine's own shell profile (pyenv, cargo, ...)
		// would otherwise run in every session and cost seconds per command.
		"HOME": s.home(),
	}
	for k, v := range s.opts.Env {
		env[k] = v
	}
	if _, err := os.Stat(env["HOME"]); os.IsNotExist(err) {
		_ = os.MkdirAll(env["HOME"], 0o700)
	}
	{
		keys := make([]string, 0, len(env))
		for k := range env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteString("SetEnv")
		for _, k := range keys {
			v := env[k]
			if k == "PATH" {
				v += ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
			}
			// sshd_config splits on whitespace and honours double quotes.
			fmt.Fprintf(&b, " \"%s=%s\"", k, v)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func (s *SSHD) start() {
	s.t.Helper()
	cfg := WriteFile(s.t, filepath.Join(s.Dir, "sshd_config"), s.config(), 0o600)
	logf := filepath.Join(s.Dir, "sshd.log")
	cmd := exec.Command(s.bin, "-D", "-e", "-f", cfg)
	if s.opts.NetNS != nil {
		cmd = s.opts.NetNS.Command(s.bin, "-D", "-e", "-f", cfg)
	}
	lf, err := os.OpenFile(logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	defer lf.Close()
	cmd.Stdout, cmd.Stderr = lf, lf
	// Its own process group, so Stop also ends the per-connection children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("start sshd: %v", err)
	}
	s.mu.Lock()
	s.cmd = cmd
	s.mu.Unlock()
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := s.dial(200 * time.Millisecond)
		if err == nil {
			// sshd is up once it greets with its version.
			buf := make([]byte, 4)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, _ := c.Read(buf)
			c.Close()
			if n == 4 && string(buf) == "SSH-" {
				return
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(logf)
			s.t.Fatalf("sshd exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logf)
			s.t.Fatalf("sshd did not come up on %s:\n%s", s.Addr(), log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop kills the server (idempotent). Sessions it spawned end with it.
func (s *SSHD) Stop() {
	s.mu.Lock()
	cmd := s.cmd
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	// Wait until the port is free again so a restart on it cannot race.
	for i := 0; i < 500; i++ {
		c, err := s.dial(50 * time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *SSHD) dial(timeout time.Duration) (net.Conn, error) {
	if s.opts.NetNS != nil {
		return s.opts.NetNS.Dial("tcp", s.Addr(), timeout)
	}
	return net.DialTimeout("tcp", s.Addr(), timeout)
}

// Log returns the server's log so far (for failure messages).
func (s *SSHD) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "sshd.log"))
	return string(b)
}

// Run runs a command over ssh with the system client (for test setup and
// assertions, not the code under test) and returns its combined output.
func (s *SSHD) Run(t testing.TB, command string) string {
	t.Helper()
	out, err := exec.Command("ssh", "-p", strconv.Itoa(s.Port), "-i", s.ClientKeyFile,
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "BatchMode=yes", s.User+"@"+s.Host, command).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh %q: %v\n%s\nsshd log:\n%s", command, err, out, s.Log())
	}
	return string(out)
}
