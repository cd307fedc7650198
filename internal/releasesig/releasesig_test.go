package releasesig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

func writeKey(t *testing.T, priv ed25519.PrivateKey, mode os.FileMode) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "release.key")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSignVerifyRotation(t *testing.T) {
	oldPub, oldPriv, _ := ed25519.GenerateKey(nil)
	newPub, newPriv, _ := ed25519.GenerateKey(nil)
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	list := "# release keys\n" + PublicKeyLine(oldPub) + "\n\n" + PublicKeyLine(newPub) + " # next\n"
	keys, err := ParseKeys(list)
	if err != nil || len(keys) != 2 {
		t.Fatalf("ParseKeys: %v %d", err, len(keys))
	}
	if again, err := ParseKeys(PublicKeyLine(oldPub) + "," + PublicKeyLine(newPub)); err != nil || len(again) != 2 {
		t.Fatalf("comma list: %v %d", err, len(again))
	}
	sums := []byte("abc  dc-agent_linux_amd64\n")
	for _, priv := range []ed25519.PrivateKey{oldPriv, newPriv} {
		sig, err := Sign(priv, keys, sums)
		if err != nil {
			t.Fatal(err)
		}
		if err := Verify(keys, sums, sig); err != nil {
			t.Fatalf("either trusted key verifies: %v", err)
		}
		if err := Verify(keys, append(sums, 'x'), sig); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered sums: %v", err)
		}
	}
	if _, err := Sign(otherPriv, keys, sums); err == nil || !strings.Contains(err.Error(), "not in the release's trusted keys") {
		t.Fatalf("untrusted signing key: %v", err)
	}
	if err := Verify(keys, sums, ed25519.Sign(otherPriv, sums)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("another key's signature: %v", err)
	}
	if err := Verify(keys, sums, []byte("short")); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("short signature: %v", err)
	}
	if err := Verify(nil, sums, make([]byte, 64)); !errors.Is(err, ErrNoKeys) {
		t.Fatalf("no keys: %v", err)
	}
	for _, bad := range []string{"not base64!", "aGVsbG8=", "MCowBQYDK2VwAyEA"} {
		if _, err := ParseKeys(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoadPrivateKey(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	got, err := LoadPrivateKey(writeKey(t, priv, 0o600))
	if err != nil || !bytes.Equal(got, priv) {
		t.Fatalf("load: %v", err)
	}
	if _, err := LoadPrivateKey(writeKey(t, priv, 0o644)); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key: %v", err)
	}
	p := filepath.Join(t.TempDir(), "k")
	os.WriteFile(p, []byte("hello"), 0o600)
	if _, err := LoadPrivateKey(p); err == nil || !strings.Contains(err.Error(), "openssl genpkey -algorithm ed25519") {
		t.Fatalf("not a key: %v", err)
	}
}

// The formats are OpenSSL's: a key openssl made signs here, and openssl
// verifies what Go signed (install.sh relies on it).
func TestOpenSSLInterop(t *testing.T) {
	openssl := testutil.RequireBinary(t, "openssl")
	dir := t.TempDir()
	key := filepath.Join(dir, "k.pem")
	if out, err := exec.Command(openssl, "genpkey", "-algorithm", "ed25519", "-out", key).CombinedOutput(); err != nil {
		t.Fatalf("genpkey: %v %s", err, out)
	}
	os.Chmod(key, 0o600)
	pubPEM, err := exec.Command(openssl, "pkey", "-in", key, "-pubout").Output()
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Split(strings.TrimSpace(string(pubPEM)), "\n")[1]
	keys, err := ParseKeys(line)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := LoadPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	sums := []byte("0000  x\n")
	sig, err := Sign(priv, keys, sums)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "SHA256SUMS"), sums, 0o644)
	os.WriteFile(filepath.Join(dir, SigName), sig, 0o644)
	os.WriteFile(filepath.Join(dir, "pub.pem"), pubPEM, 0o644)
	out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", filepath.Join(dir, "pub.pem"), "-rawin",
		"-in", filepath.Join(dir, "SHA256SUMS"), "-sigfile", filepath.Join(dir, SigName)).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
		t.Fatalf("openssl verify: %v %s", err, out)
	}
	osslSig, err := exec.Command(openssl, "pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", filepath.Join(dir, "SHA256SUMS")).Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(keys, sums, osslSig); err != nil {
		t.Fatalf("Go rejects openssl's signature: %v", err)
	}
}

// FuzzParseKeys: any text parses to keys or a clear error, never a panic,
// and every key it returns is one Verify can use.
func FuzzParseKeys(f *testing.F) {
	pub, _, _ := ed25519.GenerateKey(nil)
	f.Add(PublicKeyLine(pub))
	f.Add("# comment\n" + PublicKeyLine(pub) + ",\n")
	f.Add("MCowBQYDK2VwAyEA")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseKeys(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for _, k := range keys {
			if len(k) != ed25519.PublicKeySize {
				t.Fatalf("key of %d bytes", len(k))
			}
		}
	})
}
