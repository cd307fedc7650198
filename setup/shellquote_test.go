package setup

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// shells are the shells a remote command may meet: sshd runs it with the
// user's login shell (bash on Proxmox VE), and scripts use sh (dash).
func shells(t testing.TB) []string {
	var out []string
	for _, s := range []string{"/bin/sh", "/bin/dash", "/bin/bash"} {
		if _, err := os.Stat(s); err == nil {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		t.Skip("no shell found")
	}
	return out
}

// roundTrip runs the quoted command line in a real shell and returns the
// argv the shell handed to printf, one NUL-terminated word each.
func roundTrip(t testing.TB, shell, marker string, args []string) []string {
	t.Helper()
	line, err := Join(append([]string{"printf", "%s\\0"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shell, "-c", line)
	cmd.Dir = filepath.Dir(marker)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "X=expanded"}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s -c %q: %v", shell, line, err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatalf("%s -c %q created the marker file: injection", shell, line)
	}
	got := strings.Split(string(out), "\x00")
	return got[:len(got)-1]
}

var hostileArgs = []string{
	"", " ", "a b", "'", "''", `"`, `\`, `\'`, "$X", "${X}", "$(touch pwned)", "`touch pwned`",
	"; touch pwned", "&& touch pwned", "| touch pwned", "> pwned", "< /etc/passwd", "*", "?", "[a]",
	"~", "~root", "#comment", "a#b", "!", "!!", "-n", "--", "\n", "a\nb", "\t", "{a,b}", "$'x'",
	"vmbr0; touch pwned", "pve1$(touch pwned)", "x' ; touch pwned ; echo '", "é", "\x01\x7f",
	"a=b", "PATH=/tmp", "%s", "local-lvm:0,import-from=/var/lib/vz/x.img",
}

func TestJoinRoundTripsThroughRealShells(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	for _, sh := range shells(t) {
		got := roundTrip(t, sh, marker, hostileArgs)
		if strings.Join(got, "\x00") != strings.Join(hostileArgs, "\x00") {
			t.Errorf("%s: all at once: got %q", sh, got)
		}
	}
}

func TestQuoteLeavesPlainWordsAlone(t *testing.T) {
	for in, want := range map[string]string{
		"qm": "qm", "--output-format": "--output-format", "dc-agent@pve": "dc-agent@pve",
		"local-lvm:cloudinit": "local-lvm:cloudinit", "a b": "'a b'", "it's": `'it'\''s'`,
		"": "''", "dc-agent@pve!agent": "'dc-agent@pve!agent'", "~": "'~'",
	} {
		if got := Quote(in); got != want {
			t.Errorf("Quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestJoinRefusesNUL(t *testing.T) {
	if _, err := Join("echo", "a\x00b"); !errors.Is(err, ErrNUL) {
		t.Fatalf("want ErrNUL, got %v", err)
	}
	if _, err := Join(); err == nil {
		t.Fatal("empty command accepted")
	}
}

// FuzzJoin checks that any argument survives a real shell unchanged and
// never runs anything.
func FuzzJoin(f *testing.F) {
	for _, a := range hostileArgs {
		f.Add(a, "x")
	}
	dir := f.TempDir()
	marker := filepath.Join(dir, "pwned")
	sh := shells(f)
	f.Fuzz(func(t *testing.T, a, b string) {
		if strings.IndexByte(a, 0) >= 0 || strings.IndexByte(b, 0) >= 0 {
			if _, err := Join(a, b); !errors.Is(err, ErrNUL) {
				t.Fatalf("NUL accepted: %v", err)
			}
			return
		}
		for _, s := range sh {
			got := roundTrip(t, s, marker, []string{a, b})
			if len(got) != 2 || !bytes.Equal([]byte(got[0]), []byte(a)) || got[1] != b {
				t.Fatalf("%s: %q %q came back as %q", s, a, b, got)
			}
		}
	})
}
