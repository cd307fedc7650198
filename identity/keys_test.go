package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func TestAgentKeySaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "agent.key")
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveAgentKey(path, k, false); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
	b, _ := os.ReadFile(path)
	if string(b) != SeedHex(k)+"\n" || len(b) != 65 {
		t.Fatalf("key file content %q", b)
	}
	pub, _ := os.ReadFile(AgentPubPath(path))
	if string(pub) != PublicHex(k)+"\n" {
		t.Fatalf("agent.pub %q", pub)
	}
	loaded, err := LoadAgentKey(path)
	if err != nil || !loaded.Equal(k) {
		t.Fatalf("load: %v", err)
	}
	// Never silently replaced.
	k2, _ := GenerateKey()
	if err := SaveAgentKey(path, k2, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("overwrote an existing key: %v", err)
	}
	if err := SaveAgentKey(path, k2, true); err != nil {
		t.Fatal(err)
	}
	if loaded, _ := LoadAgentKey(path); !loaded.Equal(k2) {
		t.Fatal("overwrite did not replace the key")
	}
	// No temp files left behind.
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 2 {
		t.Fatalf("directory holds %d entries, want agent.key and agent.pub", len(entries))
	}
}

func TestLoadAgentKeyErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := strings.Repeat("ab", 32)
	cases := []struct {
		name, content string
		mode          os.FileMode
		want          string
	}{
		{"world-readable.key", seed, 0o644, "run: chmod 600 " + dir + "/world-readable.key"},
		{"group-writable.key", seed, 0o620, "chmod 600"},
		{"short.key", seed[:60], 0o600, "64 hex characters, got 60"},
		{"nothex.key", strings.Repeat("zz", 32), 0o600, "not valid hex"},
		{"big.key", strings.Repeat("a", 70<<10), 0o600, "not a key or token file"},
	}
	for _, c := range cases {
		p := write(c.name, c.content, c.mode)
		_, err := LoadAgentKey(p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := LoadAgentKey(filepath.Join(dir, "missing.key")); err == nil || !strings.Contains(err.Error(), "run: dc-agent init") {
		t.Errorf("missing key: %v", err)
	}
	if _, err := LoadAgentKey(write("perm.key", seed, 0o640)); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("permission error is not ErrKeyPermissions: %v", err)
	}
	// Paths with spaces are quoted in the fix.
	spaced := write("my key", seed, 0o644)
	if err := CheckSecretFileMode(spaced); err == nil || !strings.Contains(err.Error(), "chmod 600 '"+spaced+"'") {
		t.Errorf("unquoted path in %v", err)
	}
	// Upper-case hex and surrounding whitespace are accepted.
	if _, err := LoadAgentKey(write("upper.key", "\n "+strings.ToUpper(seed)+" \n", 0o600)); err != nil {
		t.Errorf("upper-case seed: %v", err)
	}
}

func TestParseMainKeyForms(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x42}, 32))
	pemBytes, err := MarshalPEMKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		data string
		form KeyForm
	}{
		{string(pemBytes), FormPEM},
		{"\n" + string(pemBytes) + "\n\n", FormPEM},
		{SeedHex(k), FormHexSeed},
		{SeedHex(k) + "\n", FormHexSeed},
	} {
		got, form, err := ParseMainKey([]byte(c.data))
		if err != nil || form != c.form || !got.Equal(k) {
			t.Errorf("%q: form %q, err %v", c.data, form, err)
		}
	}

	rsaLike := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	sshKey, err := ssh.MarshalPrivateKey(k, "")
	if err != nil {
		t.Fatal(err)
	}
	notEd, _ := x509.MarshalPKCS8PrivateKey(mustECKey(t))
	bad := []struct{ data, want string }{
		{"", "empty"},
		{"   \n", "empty"},
		{"hello", "unrecognised key format"},
		{strings.Repeat("ab", 31), "64 hex characters, got 62"},
		{string(rsaLike), `PEM block is "RSA PRIVATE KEY"`},
		{string(pem.EncodeToMemory(sshKey)), "OpenSSH key, not a provider key"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}})), "encrypted"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}})), "parse PKCS#8"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: notEd})), "want an Ed25519 key"},
		{"-----BEGIN PRIVATE KEY-----\nAAAA", "no PEM block"},
		{"abandon abandon abandon", "3 words"},
		{strings.Repeat("abandon ", 11) + "abandon", "checksum does not match"},
		{strings.Repeat("abandon ", 11) + "bitcoinz", `word 12 ("bitcoinz") is not in the BIP-39 English word list`},
	}
	for _, c := range bad {
		k, form, err := ParseMainKey([]byte(c.data))
		if err == nil || !strings.Contains(err.Error(), c.want) || k != nil || form != "" {
			t.Errorf("%.40q: key %v form %q err %v, want %q", c.data, k != nil, form, err, c.want)
		}
	}
}

func TestLoadMainKeyFile(t *testing.T) {
	dir := t.TempDir()
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x43}, 32))
	pemBytes, _ := MarshalPEMKey(k)
	p := filepath.Join(dir, "private.pem")
	if err := os.WriteFile(p, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	got, form, err := LoadMainKey(p)
	if err != nil || form != FormPEM || !got.Equal(k) {
		t.Fatalf("LoadMainKey: %v %v", form, err)
	}
	if err := os.Chmod(p, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadMainKey(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable main key accepted: %v", err)
	}
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadMainKey(garbage); err == nil || !strings.HasPrefix(err.Error(), garbage+": ") {
		t.Fatalf("error does not name the file: %v", err)
	}
}

func TestPublicKeyHex(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	up := strings.ToUpper(PublicHex(k))
	if got, err := NormalizePublicKeyHex(" " + up + "\n"); err != nil || got != PublicHex(k) {
		t.Fatalf("normalize: %q %v", got, err)
	}
	for _, bad := range []string{"", "ab", strings.Repeat("g", 64), strings.Repeat("a", 66)} {
		if _, err := ParsePublicKeyHex(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := ParseSignatureHex(strings.Repeat("a", 127)); err == nil {
		t.Error("short signature accepted")
	}
	if Verify(k.Public().(ed25519.PublicKey)[:31], []byte("x"), make([]byte, 64)) || Verify(k.Public().(ed25519.PublicKey), []byte("x"), nil) {
		t.Error("malformed key or signature verified")
	}
}
