package setup

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/melbahja/goph"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/decent-stuff/dc-agent/internal/termtext"
)

// SSHOptions say how to reach and trust a host.
type SSHOptions struct {
	Host string
	Port int    // default 22
	User string // default root
	// IdentityFile is an OpenSSH private key; Passphrase unlocks it.
	IdentityFile string
	Passphrase   string
	// Password authenticates by password (read from a file or a prompt,
	// never from argv).
	Password string
	// UseAgent also offers the keys of $SSH_AUTH_SOCK.
	UseAgent bool
	// HostKeyFingerprint ("SHA256:...") accepts an unpinned host key
	// without asking, if it matches.
	HostKeyFingerprint string
	// Pins is where host keys are pinned.
	Pins HostKeyStore
	// ConfirmHostKey asks the provider about an unpinned key; nil means
	// no one can be asked (scripts): then HostKeyFingerprint is required.
	ConfirmHostKey func(addr, fingerprint, keyType string) (bool, error)
	// ConnectTimeout bounds the TCP connect and SSH handshake (default 20s).
	ConnectTimeout time.Duration
	// CommandTimeout is the default per-command timeout (default 2m).
	CommandTimeout time.Duration
}

// Host is an SSH connection to a Proxmox node. Commands run one at a time
// per call, each in its own session; a Host may be used by one plan at a time.
type Host struct {
	client      *goph.Client
	Addr        string
	User        string
	Fingerprint string // SHA256 of the host key
	// NewlyPinned is true when this connection pinned the host key.
	NewlyPinned    bool
	commandTimeout time.Duration
}

// Connect opens the SSH connection, enforcing the host key policy.
func Connect(ctx context.Context, o SSHOptions) (*Host, error) {
	if o.Host == "" {
		return nil, errors.New("no host given")
	}
	if strings.ContainsAny(o.Host, " \t\r\n'\"`$;&|<>\\") {
		return nil, Fixf("pass a host name or IP address", "host %q is not a host name or address", o.Host)
	}
	if o.Port == 0 {
		o.Port = 22
	}
	if o.User == "" {
		o.User = "root"
	}
	if o.ConnectTimeout == 0 {
		o.ConnectTimeout = 20 * time.Second
	}
	if o.CommandTimeout == 0 {
		o.CommandTimeout = 2 * time.Minute
	}
	addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	pol := &hostKeyPolicy{store: o.Pins, confirm: o.ConfirmHostKey}
	if o.HostKeyFingerprint != "" {
		fp, err := NormalizeSSHFingerprint(o.HostKeyFingerprint)
		if err != nil {
			return nil, WithFix(err, "pass --host-key-fingerprint SHA256:... as ssh-keygen -lf prints it")
		}
		pol.expected = fp
	}
	var err error
	if pol.pinned, err = o.Pins.Lookup(addr); err != nil {
		return nil, err
	}
	auth, closeAuth, err := authMethods(o)
	if err != nil {
		return nil, err
	}
	defer closeAuth()

	cfg := &ssh.ClientConfig{
		User:              o.User,
		Auth:              auth,
		HostKeyCallback:   pol.check,
		HostKeyAlgorithms: pol.algorithms(),
		Timeout:           o.ConnectTimeout,
	}
	dctx, cancel := context.WithTimeout(ctx, o.ConnectTimeout)
	defer cancel()
	conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, Fixf("check the host name and port, and that sshd runs there (systemctl status ssh)", "connect to %s: %w", addr, err)
	}
	// The handshake ignores ctx; a deadline bounds it instead.
	_ = conn.SetDeadline(time.Now().Add(o.ConnectTimeout))
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if err != nil {
		conn.Close()
		if FixOf(err) != "" { // the host key policy's own verdict
			return nil, err
		}
		if strings.Contains(err.Error(), "unable to authenticate") {
			return nil, Fixf(fmt.Sprintf("check the user (%s) and the key or password; the host must accept it (~%s/.ssh/authorized_keys)", o.User, o.User),
				"SSH login to %s as %s failed: %w", addr, o.User, err)
		}
		return nil, Fixf("check that "+addr+" is an SSH server", "SSH handshake with %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	h := &Host{
		client:         &goph.Client{Client: ssh.NewClient(c, chans, reqs), Config: &goph.Config{User: o.User, Addr: o.Host, Port: uint(o.Port)}},
		Addr:           addr,
		User:           o.User,
		Fingerprint:    ssh.FingerprintSHA256(pol.accepted),
		commandTimeout: o.CommandTimeout,
	}
	if pol.newlyPins {
		if err := o.Pins.Pin(addr, pol.accepted); err != nil {
			h.Close()
			return nil, err
		}
		h.NewlyPinned = true
	}
	return h, nil
}

// authMethods builds the client's authentication from the options (goph's
// helpers), in the order OpenSSH tries them.
func authMethods(o SSHOptions) (goph.Auth, func(), error) {
	var auth goph.Auth
	closer := func() {}
	if o.IdentityFile != "" {
		a, err := goph.Key(o.IdentityFile, o.Passphrase)
		if err != nil {
			var pme *ssh.PassphraseMissingError
			if errors.As(err, &pme) {
				return nil, closer, Fixf("give the passphrase when asked, or load the key into ssh-agent", "SSH key %s is encrypted", o.IdentityFile)
			}
			return nil, closer, Fixf("pass an OpenSSH private key with --identity-file", "SSH key %s: %w", o.IdentityFile, err)
		}
		auth = append(auth, a...)
	}
	if o.UseAgent {
		if sock := os.Getenv("SSH_AUTH_SOCK"); sock != "" {
			if conn, err := net.Dial("unix", sock); err == nil {
				auth = append(auth, ssh.PublicKeysCallback(agent.NewClient(conn).Signers))
				closer = func() { conn.Close() }
			}
		}
	}
	if o.Password != "" {
		auth = append(auth, goph.KeyboardInteractive(o.Password)...)
	}
	if len(auth) == 0 {
		return nil, closer, Fixf("pass --identity-file KEY or --password-file FILE", "no SSH credentials: no key, password or ssh-agent")
	}
	return auth, closer, nil
}

// DefaultIdentityFiles are the user's usual SSH keys that exist.
func DefaultIdentityFiles() []string {
	home, err := os.UserHomeDir()
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
		p := filepath.Join(home, ".ssh", n)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// Close ends the connection.
func (h *Host) Close() error {
	if h == nil || h.client == nil {
		return nil
	}
	return h.client.Close()
}

// Cmd is one remote command: an argv, quoted by Join before it reaches the
// remote shell.
type Cmd struct {
	Args []string
	// Timeout overrides the host's default command timeout.
	Timeout time.Duration
	// Secret hides the output from events (token secrets): it is returned,
	// never streamed, shown or kept in a failure's context.
	Secret bool
	// Quiet streams no stdout lines (large JSON read back as data); stderr
	// is still shown.
	Quiet bool
	// OK lists exit codes other than 0 that are not errors.
	OK []int
	// Stdin is the command's input (file contents, secrets: never argv).
	Stdin []byte
}

// CmdResult is what a command produced.
type CmdResult struct {
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// ExitError is a remote command that exited non-zero.
type ExitError struct {
	Command string
	Code    int
	Stderr  string // last lines
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("`%s` exited with status %d", e.Command, e.Code)
	if e.Stderr != "" {
		msg += ": " + e.Stderr
	}
	return msg
}

// NotFound reports whether the shell could not find the program (127).
func (e *ExitError) NotFound() bool { return e.Code == 127 }

// maxOutput bounds what one command may return.
const maxOutput = 16 << 20

// Run runs c on the host, streaming its output lines to r (unless Secret),
// and returns its output. A non-zero exit (not in c.OK) is an *ExitError; a
// timeout or cancelled ctx ends the remote command.
func (h *Host) Run(ctx context.Context, r *Reporter, c Cmd) (CmdResult, error) {
	line, err := Join(c.Args...)
	if err != nil {
		return CmdResult{}, err
	}
	if r != nil {
		r.Command(line)
	}
	timeout := c.Timeout
	if timeout == 0 {
		timeout = h.commandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	sess, err := h.client.NewSession()
	if err != nil {
		return CmdResult{}, Fixf("re-run; if it persists, check the host's sshd (MaxSessions) and network", "open SSH session on %s: %w", h.Addr, err)
	}
	defer sess.Close()
	if c.Stdin != nil {
		sess.Stdin = bytes.NewReader(c.Stdin)
	}
	stdout, err := sess.StdoutPipe()
	if err != nil {
		return CmdResult{}, err
	}
	stderr, err := sess.StderrPipe()
	if err != nil {
		return CmdResult{}, err
	}
	// The first stdout line is the remote PID, so a cancel can end the
	// command: sshd ignores signal requests for root sessions. exec makes
	// that PID the command's; timeout(1) runs the command in its own
	// process group and ends the whole group (virt-customize's qemu too),
	// also when the connection is gone and no one is left to cancel.
	remote := fmt.Sprintf("echo %s$$; exec timeout -k 5 %d %s", pidMarker, int((timeout+5*time.Second)/time.Second), line)
	if err := sess.Start(remote); err != nil {
		return CmdResult{}, fmt.Errorf("start `%s`: %w", line, err)
	}
	var outBuf, errBuf limitedBuffer
	var wg sync.WaitGroup
	wg.Add(2)
	pidc := make(chan int, 1)
	pump := func(rd io.Reader, buf *limitedBuffer, stream string, show bool) {
		defer wg.Done()
		br := bufio.NewReaderSize(rd, 64<<10)
		first := stream == "stdout"
		for {
			l, err := br.ReadString('\n')
			if first && l != "" {
				first = false
				if p, ok := strings.CutPrefix(strings.TrimSpace(l), pidMarker); ok {
					if n, err := strconv.Atoi(p); err == nil {
						pidc <- n
					}
					l = ""
				}
			}
			if l != "" {
				buf.WriteString(l)
				if show && r != nil {
					r.Output(stream, termtext.Clean(strings.TrimRight(l, "\r\n")))
				}
			}
			if err != nil {
				return
			}
		}
	}
	go pump(stdout, &outBuf, "stdout", !c.Secret && !c.Quiet)
	go pump(stderr, &errBuf, "stderr", !c.Secret)
	done := make(chan error, 1)
	go func() {
		wg.Wait() // all output read before Wait, as the ssh package requires
		done <- sess.Wait()
	}()
	var werr error
	select {
	case werr = <-done:
	case <-ctx.Done():
		select {
		case pid := <-pidc:
			h.killRemote(pid)
		default:
		}
		sess.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			// Give up waiting; the remote timeout(1) ends the command.
		}
		res := CmdResult{Stdout: outBuf.Bytes(), Stderr: errBuf.Bytes(), ExitCode: -1}
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return res, Fixf("check the host (load, network, disk); re-running resumes where it stopped",
				"`%s` timed out after %s", line, timeout)
		}
		return res, fmt.Errorf("`%s`: %w", line, ctx.Err())
	}
	res := CmdResult{Stdout: outBuf.Bytes(), Stderr: errBuf.Bytes()}
	if outBuf.over || errBuf.over {
		return res, fmt.Errorf("`%s` printed more than %d MiB", line, maxOutput>>20)
	}
	if werr != nil {
		var ee *ssh.ExitError
		if !errors.As(werr, &ee) {
			return res, Fixf("check the connection to the host and re-run", "`%s`: %w", line, werr)
		}
		res.ExitCode = ee.ExitStatus()
		for _, ok := range c.OK {
			if ok == res.ExitCode {
				return res, nil
			}
		}
		stderrTail := ""
		if !c.Secret {
			stderrTail = lastLines(string(res.Stderr), 3)
		}
		return res, &ExitError{Command: line, Code: res.ExitCode, Stderr: stderrTail}
	}
	return res, nil
}

// pidMarker prefixes the remote PID line.
const pidMarker = "dc-agent-remote-pid "

// killRemote ends a remote command's process group (TERM; timeout(1)
// passes it on and KILLs after 5 s) from a new session.
func (h *Host) killRemote(pid int) {
	if pid <= 1 {
		return
	}
	sess, err := h.client.NewSession()
	if err != nil {
		return
	}
	defer sess.Close()
	done := make(chan struct{})
	go func() { _ = sess.Run("kill -TERM -- -" + strconv.Itoa(pid) + " 2>/dev/null"); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

// Output runs c and returns its trimmed stdout.
func (h *Host) Output(ctx context.Context, r *Reporter, args ...string) (string, error) {
	res, err := h.Run(ctx, r, Cmd{Args: args, Quiet: true})
	return strings.TrimSpace(string(res.Stdout)), err
}

type limitedBuffer struct {
	mu   sync.Mutex
	b    bytes.Buffer
	over bool
}

func (l *limitedBuffer) WriteString(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len()+len(s) > maxOutput {
		l.over = true
		return
	}
	l.b.WriteString(s)
}

func (l *limitedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]byte(nil), l.b.Bytes()...)
}

// lastLines returns up to n last non-empty lines joined by " / ".
func lastLines(s string, n int) string {
	var ls []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			ls = append(ls, termtext.Clean(l))
		}
	}
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, " / ")
}
