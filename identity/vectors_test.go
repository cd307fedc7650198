package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cosmos/go-bip39"
)

// delegationJSON is a delegation case as the JavaScript implementation
// reads and writes it (vectors.json, crosscheck.mjs).
type delegationJSON struct {
	ProviderSeed   string   `json:"provider_seed"`
	AgentPubkey    string   `json:"agent_pubkey"`
	ProviderPubkey string   `json:"provider_pubkey"`
	Permissions    []string `json:"permissions"`
	ExpiresAtNs    *string  `json:"expires_at_ns"`
	IssuedAtNs     *string  `json:"issued_at_ns"`
	Label          string   `json:"label"`
	SignedCode     string   `json:"signed_code"`
}

// vectors is identity/testdata/vectors.json, written by the independent
// JavaScript implementation testdata/js/gen-vectors.mjs (@noble, @scure).
type vectors struct {
	Generator string
	Requests  []struct {
		Seed, Pubkey, Timestamp, Nonce, Method, Path, Body, Message, Signature string
	}
	Delegations []struct {
		delegationJSON
		Text        string `json:"text"`
		RequestCode string `json:"request_code"`
		Signature   string `json:"signature"`
	}
	Mnemonics []struct {
		Entropy, Mnemonic, Seed64 string
		Ed25519Seed               string `json:"ed25519_seed"`
		Pubkey                    string
	}
	X25519 []struct {
		Ed25519Seed   string `json:"ed25519_seed"`
		Ed25519Pubkey string `json:"ed25519_pubkey"`
		X25519Pubkey  string `json:"x25519_pubkey"`
		X25519Secret  string `json:"x25519_secret"`
	}
	Sealed []struct {
		RecipientSeed   string `json:"recipient_seed"`
		RecipientPubkey string `json:"recipient_pubkey"`
		ContractID      string `json:"contract_id"`
		Plaintext       string `json:"plaintext"`
		Rand            string `json:"rand"`
		Sealed          string `json:"sealed"`
	}
}

const vectorsPath = "testdata/vectors.json"

func loadVectors(t testing.TB) vectors {
	t.Helper()
	b, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v", vectorsPath, err)
	}
	if len(v.Requests) < 5 || len(v.Delegations) < 5 || len(v.Mnemonics) < 5 || len(v.X25519) < 3 || len(v.Sealed) < 3 {
		t.Fatalf("%s has too few vectors; regenerate it with testdata/js/gen-vectors.mjs", vectorsPath)
	}
	return v
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func TestVectorsRequests(t *testing.T) {
	v := loadVectors(t)
	if v.Requests[0].Signature != "6b38a0d970fb82163469bcff6461210741bccb2541b82088f0cc5e26e280ae4a9ab721599c4124188ca144728d4b5062bbf066f8338782973db0de8f4e6ab400" {
		t.Fatal("the first request vector must be PROTOCOL.md §9")
	}
	for i, r := range v.Requests {
		priv, err := KeyFromSeedHex(r.Seed)
		if err != nil {
			t.Fatal(err)
		}
		if got := PublicHex(priv); got != r.Pubkey {
			t.Errorf("request %d: pubkey %s, want %s", i, got, r.Pubkey)
		}
		msg := RequestMessage(r.Timestamp, r.Nonce, r.Method, r.Path, []byte(r.Body))
		if string(msg) != r.Message {
			t.Errorf("request %d: message\n%q\nwant\n%q", i, msg, r.Message)
		}
		if got := SignRequest(priv, r.Timestamp, r.Nonce, r.Method, r.Path, []byte(r.Body)); got != r.Signature {
			t.Errorf("request %d: signature %s, want %s", i, got, r.Signature)
		}
		sig, err := ParseSignatureHex(r.Signature)
		if err != nil {
			t.Fatal(err)
		}
		pub := priv.Public().(ed25519.PublicKey)
		if !Verify(pub, msg, sig) {
			t.Errorf("request %d: JS signature does not verify in Go", i)
		}
		// Every part of the message is covered.
		flip := func(s string) string { // change the first character
			if s[0] == '1' {
				return "2" + s[1:]
			}
			return "1" + s[1:]
		}
		for _, tampered := range [][]byte{
			RequestMessage(flip(r.Timestamp), r.Nonce, r.Method, r.Path, []byte(r.Body)),
			RequestMessage(r.Timestamp, flip(r.Nonce), r.Method, r.Path, []byte(r.Body)),
			RequestMessage(r.Timestamp, r.Nonce, "PATCH", r.Path, []byte(r.Body)),
			RequestMessage(r.Timestamp, r.Nonce, r.Method, "/x"+r.Path, []byte(r.Body)),
			RequestMessage(r.Timestamp, r.Nonce, r.Method, r.Path, []byte(r.Body+" ")),
		} {
			if Verify(pub, tampered, sig) {
				t.Errorf("request %d: signature verifies for altered message %q", i, tampered)
			}
		}
		// Plain Ed25519 (no prehash, no context) must not be what we do.
		if ed25519.Verify(pub, msg, sig) {
			t.Errorf("request %d: signature is plain Ed25519, want Ed25519ph", i)
		}
	}
}

func TestVectorsQueryExcluded(t *testing.T) {
	v := loadVectors(t)
	n := 0
	for _, r := range v.Requests {
		path, _, hasQuery := strings.Cut(r.Path, "?")
		if !hasQuery {
			continue
		}
		n++
		priv, _ := KeyFromSeedHex(r.Seed)
		if got := SignRequest(priv, r.Timestamp, r.Nonce, r.Method, path, []byte(r.Body)); got != r.Signature {
			t.Errorf("signature over %s differs from the one over %s: the query must not be signed", path, r.Path)
		}
	}
	if n == 0 {
		t.Fatal("no vector has a query string")
	}
}

func TestVectorsDelegations(t *testing.T) {
	v := loadVectors(t)
	stampedVectors := 0
	defer func() {
		if stampedVectors == 0 && !t.Failed() {
			t.Error("no delegation vector has the issued_at_ns line; regenerate with testdata/js/gen-vectors.mjs")
		}
	}()
	for i, c := range v.Delegations {
		d := Delegation{AgentPubkey: c.AgentPubkey, ProviderPubkey: c.ProviderPubkey, Permissions: c.Permissions, Label: c.Label}
		if c.ExpiresAtNs != nil {
			exp, err := parseDecimalNs(*c.ExpiresAtNs)
			if err != nil {
				t.Fatal(err)
			}
			d.ExpiresAtNs = &exp
		}
		if c.IssuedAtNs != nil {
			issued, err := strconv.ParseInt(*c.IssuedAtNs, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			d.IssuedAtNs = &issued
			stampedVectors++
		}
		text, err := d.CanonicalText()
		if err != nil {
			t.Fatalf("delegation %d: %v", i, err)
		}
		if string(text) != c.Text {
			t.Errorf("delegation %d: canonical text\n%q\nwant\n%q", i, text, c.Text)
		}
		if code, _ := d.EncodeRequest(); code != c.RequestCode {
			t.Errorf("delegation %d: request code %s, want %s", i, code, c.RequestCode)
		}
		back, err := DecodeRequest(c.RequestCode)
		if err != nil {
			t.Fatalf("delegation %d: DecodeRequest of JS code: %v", i, err)
		}
		if !sameDelegation(back, d) {
			t.Errorf("delegation %d: decoded %+v, want %+v", i, back, d)
		}
		main, err := KeyFromSeedHex(c.ProviderSeed)
		if err != nil {
			t.Fatal(err)
		}
		sd, err := d.Sign(main)
		if err != nil {
			t.Fatalf("delegation %d: sign: %v", i, err)
		}
		if sd.SignatureHex() != c.Signature {
			t.Errorf("delegation %d: signature %s, want %s", i, sd.SignatureHex(), c.Signature)
		}
		if code, _ := sd.Encode(); code != c.SignedCode {
			t.Errorf("delegation %d: signed code %s, want %s", i, code, c.SignedCode)
		}
		got, err := DecodeSigned(c.SignedCode)
		if err != nil {
			t.Fatalf("delegation %d: DecodeSigned of JS code: %v", i, err)
		}
		if !sameDelegation(got.Delegation, d) || got.SignatureHex() != c.Signature {
			t.Errorf("delegation %d: decoded %+v", i, got)
		}
	}
}

func parseDecimalNs(s string) (int64, error) {
	var d Delegation
	text := "decent-cloud agent delegation v1\nagent: " + strings.Repeat("a", 64) + "\nprovider: " + strings.Repeat("b", 64) +
		"\npermissions: heartbeat\nexpires_at_ns: " + s + "\nlabel: \n"
	d, err := ParseCanonicalText([]byte(text))
	if err != nil {
		return 0, err
	}
	return *d.ExpiresAtNs, nil
}

func sameDelegation(a, b Delegation) bool {
	if (a.ExpiresAtNs == nil) != (b.ExpiresAtNs == nil) || a.ExpiresAtNs != nil && *a.ExpiresAtNs != *b.ExpiresAtNs {
		return false
	}
	if (a.IssuedAtNs == nil) != (b.IssuedAtNs == nil) || a.IssuedAtNs != nil && *a.IssuedAtNs != *b.IssuedAtNs {
		return false
	}
	return a.AgentPubkey == b.AgentPubkey && a.ProviderPubkey == b.ProviderPubkey &&
		slices.Equal(a.Permissions, b.Permissions) && a.Label == b.Label
}

func TestVectorsMnemonics(t *testing.T) {
	v := loadVectors(t)
	lengths := map[int]bool{}
	for i, m := range v.Mnemonics {
		words := strings.Fields(m.Mnemonic)
		lengths[len(words)] = true
		if err := ValidateMnemonic(words); err != nil {
			t.Errorf("mnemonic %d: %v", i, err)
		}
		// Entropy → words agrees with the JS generator (checksum bits included).
		if got, err := bip39.NewMnemonic(mustHex(t, m.Entropy)); err != nil || got != m.Mnemonic {
			t.Errorf("mnemonic %d: go-bip39 gives %q (%v)", i, got, err)
		}
		seed64, err := mnemonicSeed64(m.Mnemonic)
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(seed64) != m.Seed64 {
			t.Errorf("mnemonic %d: seed64 %x, want %s", i, seed64, m.Seed64)
		}
		k, err := KeyFromMnemonic(m.Mnemonic)
		if err != nil {
			t.Fatalf("mnemonic %d: %v", i, err)
		}
		if hex.EncodeToString(k.Seed()) != m.Ed25519Seed || PublicHex(k) != m.Pubkey {
			t.Errorf("mnemonic %d: key %x / %s, want %s / %s", i, k.Seed(), PublicHex(k), m.Ed25519Seed, m.Pubkey)
		}
		// The file form: upper case, line breaks and extra spaces are normalised.
		k2, form, err := ParseMainKey([]byte("  " + strings.ToUpper(strings.Join(words, "\n  ")) + "\n"))
		if err != nil || form != FormMnemonic || PublicHex(k2) != m.Pubkey {
			t.Errorf("mnemonic %d as a file: %v, form %q, key %x", i, err, form, k2)
		}
	}
	for _, n := range []int{12, 15, 18, 21, 24} {
		if !lengths[n] {
			t.Errorf("no %d-word vector", n)
		}
	}
}

func TestVectorsX25519(t *testing.T) {
	v := loadVectors(t)
	for i, c := range v.X25519 {
		priv, _ := KeyFromSeedHex(c.Ed25519Seed)
		if PublicHex(priv) != c.Ed25519Pubkey {
			t.Fatalf("x25519 %d: ed25519 pubkey mismatch", i)
		}
		xp, err := Ed25519PublicToX25519(priv.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		if hex.EncodeToString(xp) != c.X25519Pubkey {
			t.Errorf("x25519 %d: public %x, want %s", i, xp, c.X25519Pubkey)
		}
		if xs := Ed25519SeedToX25519(priv); hex.EncodeToString(xs) != c.X25519Secret {
			t.Errorf("x25519 %d: secret %x, want %s", i, xs, c.X25519Secret)
		}
	}
}

func TestVectorsSealed(t *testing.T) {
	v := loadVectors(t)
	for i, c := range v.Sealed {
		priv, _ := KeyFromSeedHex(c.RecipientSeed)
		pt, err := Open(c.Sealed, priv)
		if err != nil {
			t.Fatalf("sealed %d: Go cannot open the JS credential: %v", i, err)
		}
		if string(pt) != c.Plaintext {
			t.Errorf("sealed %d: plaintext %q, want %q", i, pt, c.Plaintext)
		}
		// Sealing in Go with the same randomness yields the same bytes.
		pub, _ := ParsePublicKeyHex(c.RecipientPubkey)
		got, err := sealWithRand(bytes.NewReader(mustHex(t, c.Rand)), []byte(c.Plaintext), pub, c.ContractID)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.Sealed {
			t.Errorf("sealed %d: Go seals\n%s\nJS sealed\n%s", i, got, c.Sealed)
		}
		// Another key cannot open it.
		other, _ := KeyFromSeedHex(strings.Repeat("11", 32))
		if _, err := Open(c.Sealed, other); err == nil || !strings.Contains(err.Error(), "another key") {
			t.Errorf("sealed %d: opened with the wrong key (err %v)", i, err)
		}
	}
}
