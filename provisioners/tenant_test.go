package provisioners

import (
	"bytes"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

const edKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"

func TestCheckSSHKeyLine(t *testing.T) {
	if got, err := CheckSSHKeyLine("  " + edKey + " alice@laptop \t"); err != nil || got != edKey+" alice@laptop" {
		t.Fatalf("%q %v", got, err)
	}
	for in, want := range map[string]string{
		"":                                   "it is empty",
		edKey + "\nssh-rsa AAAA":             "more than one line",
		`command="rm -rf /" ` + edKey:        "authorized_keys options",
		"ssh-ed25519 bm90IGEga2V5":           "not an OpenSSH public key",
		strings.Repeat("a", MaxSSHKeyLine+1): "longer than",
	} {
		_, err := CheckSSHKeyLine(in)
		if err == nil || !strings.Contains(TenantMessage(err), want) || RetryPossible(err) {
			t.Errorf("%.40q: %v (tenant %q), want %q, permanent", in, err, TenantMessage(err), want)
		}
	}
}

func TestAddAuthorizedKey(t *testing.T) {
	other := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJgYx6PyVnAGhTtl2L4YlRnGBfBPSPNodSV5ExtYTqMx old"
	got, changed := AddAuthorizedKey([]byte("# mine\n"+other), edKey+" new")
	if !changed || string(got) != "# mine\n"+other+"\n"+edKey+" new\n" {
		t.Fatalf("%q", got)
	}
	// The same key again (another comment, with options) is not added.
	if again, changed := AddAuthorizedKey(got, edKey+" renamed"); changed || !bytes.Equal(again, got) {
		t.Fatalf("added twice: %q", again)
	}
	if _, changed := AddAuthorizedKey([]byte(`from="10.0.0.1" `+edKey), edKey); changed {
		t.Fatal("a key present with options was added again")
	}
	if got, _ := AddAuthorizedKey(nil, edKey); string(got) != edKey+"\n" {
		t.Fatalf("empty file: %q", got)
	}
}

// FuzzSSHKeyLine: whatever a tenant sends, an accepted key is exactly one
// line without options that parses back to the same key, and adding it to
// any file keeps the file's lines and adds at most that one line.
func FuzzSSHKeyLine(f *testing.F) {
	for _, s := range [][2]string{{edKey + " a@b", "ssh-rsa AAAA x\n"}, {"command=\"x\" " + edKey, ""}, {edKey + "\r\nfoo", edKey}, {"", "\x00"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, key, file string) {
		line, err := CheckSSHKeyLine(key)
		if err != nil {
			if RetryPossible(err) || TenantMessage(err) == "" {
				t.Fatalf("not a permanent tenant error: %v", err)
			}
			return
		}
		if strings.ContainsAny(line, "\r\n\x00") {
			t.Fatalf("accepted line %q spans lines", line)
		}
		pk, _, opts, rest, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil || len(opts) > 0 || len(bytes.TrimSpace(rest)) > 0 {
			t.Fatalf("accepted line %q does not parse cleanly: %v %v", line, err, opts)
		}
		out, changed := AddAuthorizedKey([]byte(file), line)
		if !bytes.HasPrefix(out, []byte(file)) {
			t.Fatalf("the file's content was not kept: %q -> %q", file, out)
		}
		added := strings.TrimSpace(string(out[len(file):]))
		if changed && added != line || !changed && len(out) != len(file) {
			t.Fatalf("changed %v, added %q for %q", changed, added, line)
		}
		if again, ch := AddAuthorizedKey(out, line); ch && changed {
			t.Fatalf("added twice: %q", again)
		}
		_ = pk
	})
}
