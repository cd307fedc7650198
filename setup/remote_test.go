package setup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// collect is a sink that records events.
type collect struct {
	mu sync.Mutex
	ev []Event
}

func (c *collect) sink(e Event) { c.mu.Lock(); c.ev = append(c.ev, e); c.mu.Unlock() }

func (c *collect) lines(kind EventKind) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.ev {
		if e.Kind == kind {
			out = append(out, e.Text)
		}
	}
	return out
}

func sshOpts(s *testutil.SSHD, pins string) SSHOptions {
	return SSHOptions{Host: s.Host, Port: s.Port, User: s.User, IdentityFile: s.ClientKeyFile, Pins: HostKeyStore{Path: pins}}
}

// stepReporter runs fn as a one-step plan so it gets a real Reporter.
func stepReporter(t *testing.T, c *collect, fn func(r *Reporter) error) error {
	t.Helper()
	p := Plan{Steps: []Step{{ID: "t", Title: "test", Run: func(ctx context.Context, r *Reporter) error { return fn(r) }}}}
	_, err := p.Run(context.Background(), c.sink)
	return err
}

func TestHostKeyPinningOverRealSSHD(t *testing.T) {
	s := testutil.StartSSHD(t, testutil.SSHDOptions{})
	pins := filepath.Join(t.TempDir(), "state", KnownHostsFile)
	ctx := context.Background()

	// First contact without a way to confirm: refused, naming the key and the flag.
	_, err := Connect(ctx, sshOpts(s, pins))
	var unk *HostKeyUnknownError
	if !errors.As(err, &unk) || unk.Got != s.HostKeyFingerprint() || !strings.Contains(FixOf(err), "--host-key-fingerprint "+s.HostKeyFingerprint()) {
		t.Fatalf("want unknown-host error naming %s, got %v (fix %q)", s.HostKeyFingerprint(), err, FixOf(err))
	}
	if _, err := os.Stat(pins); !os.IsNotExist(err) {
		t.Fatal("a refused key was pinned")
	}

	// A wrong expected fingerprint is refused.
	o := sshOpts(s, pins)
	o.HostKeyFingerprint = "SHA256:" + strings.Repeat("A", 43)
	var mm *FingerprintMismatchError
	if _, err := Connect(ctx, o); !errors.As(err, &mm) {
		t.Fatalf("want mismatch, got %v", err)
	}

	// The confirm callback sees the fingerprint; a "no" pins nothing.
	o = sshOpts(s, pins)
	var asked string
	o.ConfirmHostKey = func(addr, fp, typ string) (bool, error) { asked = fp; return false, nil }
	if _, err := Connect(ctx, o); err == nil || asked != s.HostKeyFingerprint() {
		t.Fatalf("declined key: err %v, asked %q", err, asked)
	}

	// The right fingerprint (without prefix, as some people paste it) pins.
	o = sshOpts(s, pins)
	o.HostKeyFingerprint = strings.TrimPrefix(s.HostKeyFingerprint(), "SHA256:")
	h, err := Connect(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	if !h.NewlyPinned || h.Fingerprint != s.HostKeyFingerprint() {
		t.Fatalf("pinned %v fp %s", h.NewlyPinned, h.Fingerprint)
	}
	h.Close()
	if st, err := os.Stat(pins); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pin file: %v %v", st, err)
	}

	// The wizard's scan shows the key and whether it is the pinned one.
	info, err := ScanHostKey(ctx, s.Host, s.Port, HostKeyStore{Path: pins})
	if err != nil || info.Fingerprint != s.HostKeyFingerprint() || !info.Pinned || info.Changed || info.Type != "ssh-ed25519" {
		t.Fatalf("scan of the pinned host: %+v %v", info, err)
	}

	// Later connections need nothing more.
	h, err = Connect(ctx, sshOpts(s, pins))
	if err != nil || h.NewlyPinned {
		t.Fatalf("pinned reconnect: %v", err)
	}
	h.Close()

	// The host is "reinstalled": a hard error, even with a matching flag.
	s.RotateHostKey()
	if info, err := ScanHostKey(ctx, s.Host, s.Port, HostKeyStore{Path: pins}); err != nil || !info.Changed || info.Fingerprint != s.HostKeyFingerprint() {
		t.Fatalf("scan after the key changed: %+v %v", info, err)
	}
	o = sshOpts(s, pins)
	o.HostKeyFingerprint = s.HostKeyFingerprint()
	o.ConfirmHostKey = func(string, string, string) (bool, error) {
		t.Error("asked to confirm a changed key")
		return true, nil
	}
	_, err = Connect(ctx, o)
	var ch *HostKeyChangedError
	if !errors.As(err, &ch) || ch.Got != s.HostKeyFingerprint() || !strings.Contains(err.Error(), "HOST KEY CHANGED") || !strings.Contains(FixOf(err), pins) {
		t.Fatalf("want host-key-changed error with fix naming %s, got %v / %q", pins, err, FixOf(err))
	}
}

func TestRunStreamsQuotesAndTimesOut(t *testing.T) {
	s := testutil.StartSSHD(t, testutil.SSHDOptions{})
	o := sshOpts(s, filepath.Join(t.TempDir(), KnownHostsFile))
	o.HostKeyFingerprint = s.HostKeyFingerprint()
	h, err := Connect(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	marker := filepath.Join(t.TempDir(), "pwned")

	c := &collect{}
	err = stepReporter(t, c, func(r *Reporter) error {
		// Hostile arguments arrive as exactly these argv words.
		args := append([]string{"printf", "%s\\n"}, hostileArgs...)
		args = append(args, "$(touch "+marker+")", "; touch "+marker)
		res, err := h.Run(ctx, r, Cmd{Args: args})
		if err != nil {
			return err
		}
		got := strings.Split(strings.TrimSuffix(string(res.Stdout), "\n"), "\n")
		var want []string
		for _, a := range args[2:] {
			want = append(want, strings.Split(a, "\n")...)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("argv changed on the way:\n got %q\nwant %q", got, want)
		}
		// A secret never reaches the events.
		if _, err := h.Run(ctx, r, Cmd{Args: []string{"echo", "s3cret-value"}, Secret: true}); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a quoted argument ran a command on the host")
	}
	for _, l := range c.lines(EventOutput) {
		if strings.Contains(l, "s3cret-value") {
			t.Fatalf("secret leaked into events: %q", l)
		}
	}

	// Exit status and stderr make the error.
	c = &collect{}
	err = stepReporter(t, c, func(r *Reporter) error {
		_, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", "echo out; echo boom >&2; exit 3"}})
		return err
	})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 3 || !strings.Contains(ee.Stderr, "boom") {
		t.Fatalf("want exit 3 with stderr, got %v", err)
	}
	if out := c.lines(EventOutput); len(out) != 2 {
		t.Fatalf("streamed lines: %q", out)
	}
	if _, err := h.Run(ctx, nil, Cmd{Args: []string{"no-such-tool-dc"}}); !errors.As(err, &ee) || !ee.NotFound() {
		t.Fatalf("missing program: %v", err)
	}

	// A command that outlives its timeout is ended, and says so.
	start := time.Now()
	_, err = h.Run(ctx, nil, Cmd{Args: []string{"sleep", "30"}, Timeout: 200 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "timed out") || FixOf(err) == "" {
		t.Fatalf("want timeout, got %v", err)
	}
	if time.Since(start) > 20*time.Second {
		t.Fatal("timeout did not end the command")
	}
	// The connection is still usable afterwards.
	if out, err := h.Output(ctx, nil, "echo", "still here"); err != nil || out != "still here" {
		t.Fatalf("after timeout: %q %v", out, err)
	}
}

func TestConnectRefusesHostileHostNames(t *testing.T) {
	for _, host := range []string{"pve;touch /tmp/x", "$(id)", "a b", "`id`", "h'o"} {
		_, err := Connect(context.Background(), SSHOptions{Host: host, Password: "x", Pins: HostKeyStore{Path: filepath.Join(t.TempDir(), "k")}})
		if err == nil || !strings.Contains(err.Error(), "not a host name") {
			t.Errorf("%q: %v", host, err)
		}
	}
}
