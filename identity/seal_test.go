package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
)

func mustECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const testContract = "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"

func TestSealOpen(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x31}, 32))
	pub := k.Public().(ed25519.PublicKey)
	s1, err := Seal([]byte("s3cret"), pub, testContract)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := Seal([]byte("s3cret"), pub, testContract)
	if s1 == s2 {
		t.Fatal("two seals are identical: ephemeral key or nonce not fresh")
	}
	if strings.Contains(s1, "s3cret") {
		t.Fatal("plaintext visible in the sealed JSON")
	}
	var sc SealedCredential
	if err := json.Unmarshal([]byte(s1), &sc); err != nil || sc.Version != 2 {
		t.Fatalf("sealed JSON %s: %v", s1, err)
	}
	if aad, _ := base64.StdEncoding.DecodeString(sc.AAD); hex.EncodeToString(aad) != testContract {
		t.Fatalf("aad %x is not the contract id", aad)
	}
	pt, err := Open(s1, k)
	if err != nil || string(pt) != "s3cret" {
		t.Fatalf("open: %q %v", pt, err)
	}

	// Any change to the envelope makes it unopenable.
	mod := func(f func(*SealedCredential)) string {
		c := sc
		f(&c)
		b, _ := json.Marshal(c)
		return string(b)
	}
	flip := func(b64 string) string {
		b, _ := base64.StdEncoding.DecodeString(b64)
		b[0] ^= 1
		return base64.StdEncoding.EncodeToString(b)
	}
	bad := map[string]struct{ sealed, want string }{
		"aad":         {mod(func(c *SealedCredential) { c.AAD = flip(c.AAD) }), "another key, or it was altered"},
		"nonce":       {mod(func(c *SealedCredential) { c.Nonce = flip(c.Nonce) }), "altered"},
		"ciphertext":  {mod(func(c *SealedCredential) { c.Ciphertext = flip(c.Ciphertext) }), "altered"},
		"ephemeral":   {mod(func(c *SealedCredential) { c.EphemeralPubkey = flip(c.EphemeralPubkey) }), "altered"},
		"version":     {mod(func(c *SealedCredential) { c.Version = 1 }), "version 1 is not supported"},
		"short nonce": {mod(func(c *SealedCredential) { c.Nonce = base64.StdEncoding.EncodeToString(make([]byte, 12)) }), "nonce has 12 bytes, want 24"},
		"short aad":   {mod(func(c *SealedCredential) { c.AAD = base64.StdEncoding.EncodeToString(make([]byte, 8)) }), "aad has 8 bytes, want 32"},
		"short ct":    {mod(func(c *SealedCredential) { c.Ciphertext = "AAAA" }), "less than the 16-byte tag"},
		"not b64":     {mod(func(c *SealedCredential) { c.Nonce = "!!" }), "nonce is not base64"},
		"unknown":     {strings.Replace(s1, "{", `{"extra":1,`, 1), "unknown field"},
		"trailing":    {s1 + " {}", "trailing data"},
		"not json":    {"hunter2", "not the expected JSON object"},
	}
	for name, c := range bad {
		if _, err := Open(c.sealed, k); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

func TestSealRefusesBadInput(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x32}, 32))
	pub := k.Public().(ed25519.PublicKey)
	if _, err := Seal([]byte("x"), pub, "abc"); err == nil || !strings.Contains(err.Error(), "contract id must be 64 hex") {
		t.Errorf("short contract id: %v", err)
	}
	if _, err := Seal([]byte("x"), pub[:31], testContract); err == nil {
		t.Error("short key accepted")
	}
	// The identity point (a low-order key) would give an all-zero shared secret.
	identityPoint := make([]byte, 32)
	identityPoint[0] = 1
	if _, err := Seal([]byte("x"), identityPoint, testContract); err == nil {
		t.Error("low-order recipient key accepted")
	}
	// Not a point at all.
	notPoint, _ := hex.DecodeString("0200000000000000000000000000000000000000000000000000000000000000")
	if _, err := Seal([]byte("x"), notPoint, testContract); err == nil || !strings.Contains(err.Error(), "not a valid ed25519 public key") {
		t.Errorf("invalid point: %v", err)
	}
}

func TestSealRecipient(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x33}, 32))
	pub := k.Public().(ed25519.PublicKey)
	sshPub, _ := ssh.NewPublicKey(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sshPub))) + " user@host"
	rsaKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	rsaPub, _ := ssh.NewPublicKey(&rsaKey.PublicKey)
	rsaLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaPub)))

	got, ok, err := SealRecipient(PublicHex(k), rsaLine)
	if err != nil || !ok || !got.Equal(pub) {
		t.Fatalf("requester_pubkey: %v %v", ok, err)
	}
	got, ok, err = SealRecipient("", "# keys\n"+rsaLine+"\n"+line+"\n")
	if err != nil || !ok || !got.Equal(pub) {
		t.Fatalf("ssh-ed25519 after an RSA line: %v %v", ok, err)
	}
	if _, ok, err := SealRecipient("", rsaLine); ok || err != nil {
		t.Fatalf("RSA-only requester got a recipient: %v %v", ok, err)
	}
	if _, ok, err := SealRecipient(" ", "garbage"); ok || err != nil {
		t.Fatalf("garbage: %v %v", ok, err)
	}
	if _, _, err := SealRecipient("zz", ""); err == nil || !strings.Contains(err.Error(), "requester_pubkey") {
		t.Fatalf("bad requester_pubkey: %v", err)
	}
}
