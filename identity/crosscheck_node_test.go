package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cosmos/go-bip39"
	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// These tests run the independent JavaScript implementation (testdata/js,
// @noble + @scure, installed by `make test-deps` with npm ci) live, on fresh
// random inputs, so the cross-check covers more than the committed vectors.

// TestVectorsReproducible reruns the generator: the committed vectors must be
// exactly what the pinned JavaScript libraries produce today.
func TestVectorsReproducible(t *testing.T) {
	t.Parallel()
	got := testutil.RunNode(t, "gen-vectors.mjs", nil)
	want, err := os.ReadFile(vectorsPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale or was edited by hand: regenerate with (cd testdata/js && node gen-vectors.mjs > ../../identity/%s)", vectorsPath, vectorsPath)
	}
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randN(t *testing.T, n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		t.Fatal(err)
	}
	return int(v.Int64())
}

// labelRunes are characters a label may hold, from every width of UTF-8.
var labelRunes = []rune("abcXYZ019 -_.:,;'\"/\\éüßЖ東京☁💻")

type nodeRequestCase struct {
	Seed      string `json:"seed"`
	Timestamp string `json:"timestamp"`
	Nonce     string `json:"nonce"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	BodyHex   string `json:"body_hex"`
	Signature string `json:"signature"`
}

type nodeDelegationCase struct {
	delegationJSON

	text, requestCode string
	sig               string
}

type nodeSealCase struct {
	RecipientSeed   string `json:"recipient_seed,omitempty"`
	RecipientPubkey string `json:"recipient_pubkey,omitempty"`
	ContractID      string `json:"contract_id,omitempty"`
	PlaintextHex    string `json:"plaintext_hex"`
	Sealed          string `json:"sealed,omitempty"`
}

func TestCrossCheckNodeLive(t *testing.T) {
	t.Parallel()
	testutil.JSDir(t) // skip or fail early, before building inputs
	const n = 16
	var in struct {
		Requests         []nodeRequestCase    `json:"requests"`
		Delegations      []nodeDelegationCase `json:"delegations"`
		Mnemonics        []map[string]string  `json:"mnemonics"`
		MnemonicValidity []string             `json:"mnemonic_validity"`
		X25519           []string             `json:"x25519"`
		Open             []nodeSealCase       `json:"open"`
		Seal             []nodeSealCase       `json:"seal"`
	}
	methods := []string{"GET", "POST", "PUT", "DELETE"}
	for i := range n {
		priv := ed25519.NewKeyFromSeed(randBytes(t, 32))
		c := nodeRequestCase{
			Seed:      hex.EncodeToString(priv.Seed()),
			Timestamp: strconv.FormatInt(time.Now().UnixNano()+int64(randN(t, 1<<30)), 10),
			Nonce:     uuid.NewString(),
			Method:    methods[i%len(methods)],
			Path:      "/api/v1/providers/" + hex.EncodeToString(randBytes(t, 32)) + "/x" + strconv.Itoa(i),
		}
		if i%3 == 0 {
			c.Path += "?waitSeconds=" + strconv.Itoa(i) + "&a=%2F"
		}
		body := randBytes(t, randN(t, 300)) // arbitrary bytes, not only UTF-8
		if i%4 == 0 {
			body = nil
		}
		c.BodyHex = hex.EncodeToString(body)
		c.Signature = SignRequest(priv, c.Timestamp, c.Nonce, c.Method, c.Path, body)
		in.Requests = append(in.Requests, c)
	}
	for range n {
		main := ed25519.NewKeyFromSeed(randBytes(t, 32))
		var perms []string
		for _, p := range AllPermissions {
			if randN(t, 2) == 1 {
				perms = append(perms, p)
			}
		}
		if len(perms) == 0 {
			perms = []string{PermHeartbeat}
		}
		label := make([]rune, randN(t, MaxLabelRunes+1))
		for j := range label {
			label[j] = labelRunes[randN(t, len(labelRunes))]
		}
		d := Delegation{
			AgentPubkey:    hex.EncodeToString(randBytes(t, 32)),
			ProviderPubkey: PublicHex(main),
			Permissions:    perms,
			Label:          string(label),
		}
		c := nodeDelegationCase{delegationJSON: delegationJSON{ProviderSeed: hex.EncodeToString(main.Seed()), AgentPubkey: d.AgentPubkey,
			ProviderPubkey: d.ProviderPubkey, Permissions: perms, Label: d.Label}}
		if randN(t, 2) == 1 {
			exp := time.Now().UnixNano() + int64(randN(t, 1<<62))
			d.ExpiresAtNs = &exp
			s := strconv.FormatInt(exp, 10)
			c.ExpiresAtNs = &s
		}
		if randN(t, 2) == 1 {
			issued := time.Now().UnixNano() - int64(randN(t, 1<<50))
			d.IssuedAtNs = &issued
			s := strconv.FormatInt(issued, 10)
			c.IssuedAtNs = &s
		}
		sd, err := d.Sign(main)
		if err != nil {
			t.Fatal(err)
		}
		text, _ := d.CanonicalText()
		c.text, c.sig = string(text), sd.SignatureHex()
		c.requestCode, _ = d.EncodeRequest()
		c.SignedCode, _ = sd.Encode()
		in.Delegations = append(in.Delegations, c)
	}
	entropies := make([][]byte, n)
	for i := range n {
		entropies[i] = randBytes(t, 16+4*(i%5))
		in.Mnemonics = append(in.Mnemonics, map[string]string{"entropy": hex.EncodeToString(entropies[i])})
		// Valid mnemonics and small corruptions of them: Go and JS must agree
		// on which pass the checksum.
		m, err := bip39.NewMnemonic(entropies[i])
		if err != nil {
			t.Fatal(err)
		}
		words := strings.Fields(m)
		switch i % 3 {
		case 1:
			words[randN(t, len(words))] = bip39.EnglishWordList[randN(t, 2048)]
		case 2:
			a, b := randN(t, len(words)), randN(t, len(words))
			words[a], words[b] = words[b], words[a]
		}
		in.MnemonicValidity = append(in.MnemonicValidity, strings.Join(words, " "))
		in.X25519 = append(in.X25519, hex.EncodeToString(randBytes(t, 32)))
	}
	openPlain := make([][]byte, n)
	for i := range n {
		recipient := ed25519.NewKeyFromSeed(randBytes(t, 32))
		openPlain[i] = randBytes(t, randN(t, 200))
		sealed, err := Seal(openPlain[i], recipient.Public().(ed25519.PublicKey), hex.EncodeToString(randBytes(t, 32)))
		if err != nil {
			t.Fatal(err)
		}
		in.Open = append(in.Open, nodeSealCase{RecipientSeed: hex.EncodeToString(recipient.Seed()), Sealed: sealed})
	}
	sealKeys := make([]ed25519.PrivateKey, n)
	for i := range n {
		sealKeys[i] = ed25519.NewKeyFromSeed(randBytes(t, 32))
		in.Seal = append(in.Seal, nodeSealCase{
			RecipientPubkey: PublicHex(sealKeys[i]),
			ContractID:      hex.EncodeToString(randBytes(t, 32)),
			PlaintextHex:    hex.EncodeToString(randBytes(t, randN(t, 200))),
		})
	}

	stdin, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Requests []struct {
			GoSignatureValid bool   `json:"go_signature_valid"`
			Signature        string `json:"signature"`
		}
		Delegations []struct {
			Text             string `json:"text"`
			RequestCode      string `json:"request_code"`
			CodeText         string `json:"code_text"`
			GoSignatureValid bool   `json:"go_signature_valid"`
			Signature        string `json:"signature"`
		}
		Mnemonics []struct {
			Mnemonic    string `json:"mnemonic"`
			Ed25519Seed string `json:"ed25519_seed"`
			Pubkey      string `json:"pubkey"`
		}
		MnemonicValidity []bool `json:"mnemonic_validity"`
		X25519           []struct {
			X25519Pubkey string `json:"x25519_pubkey"`
			X25519Secret string `json:"x25519_secret"`
		}
		Open []struct {
			PlaintextHex *string `json:"plaintext_hex"`
			Error        string  `json:"error"`
		}
		Seal []struct {
			Sealed string `json:"sealed"`
		}
	}
	raw := testutil.RunNode(t, "crosscheck.mjs", stdin)
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("crosscheck.mjs output: %v\n%s", err, raw)
	}
	if len(out.Requests) != n || len(out.Delegations) != n || len(out.Mnemonics) != n || len(out.MnemonicValidity) != n ||
		len(out.X25519) != n || len(out.Open) != n || len(out.Seal) != n {
		t.Fatalf("crosscheck.mjs answered an incomplete batch: %s", raw)
	}

	for i, r := range out.Requests {
		if !r.GoSignatureValid {
			t.Errorf("request %d: JS rejects the Go signature of %+v", i, in.Requests[i])
		}
		if r.Signature != in.Requests[i].Signature {
			t.Errorf("request %d: JS signs %s, Go signed %s", i, r.Signature, in.Requests[i].Signature)
		}
	}
	for i, d := range out.Delegations {
		c := in.Delegations[i]
		if d.Text != c.text || d.CodeText != c.text || d.RequestCode != c.requestCode {
			t.Errorf("delegation %d: JS text %q / code text %q / %s, Go %q / %s", i, d.Text, d.CodeText, d.RequestCode, c.text, c.requestCode)
		}
		if !d.GoSignatureValid || d.Signature != c.sig {
			t.Errorf("delegation %d: JS verifies Go signature: %v; JS signs %s, Go %s", i, d.GoSignatureValid, d.Signature, c.sig)
		}
	}
	for i, m := range out.Mnemonics {
		k, err := KeyFromMnemonic(m.Mnemonic)
		if err != nil {
			t.Errorf("mnemonic %d: Go refuses the JS mnemonic %q: %v", i, m.Mnemonic, err)
			continue
		}
		if hex.EncodeToString(k.Seed()) != m.Ed25519Seed || PublicHex(k) != m.Pubkey {
			t.Errorf("mnemonic %d %q: Go derives %s, JS %s", i, m.Mnemonic, PublicHex(k), m.Pubkey)
		}
	}
	valid, invalid := 0, 0
	for i, jsValid := range out.MnemonicValidity {
		goValid := ValidateMnemonic(strings.Fields(in.MnemonicValidity[i])) == nil
		if goValid != jsValid {
			t.Errorf("mnemonic %q: Go says valid=%v, JS valid=%v", in.MnemonicValidity[i], goValid, jsValid)
		}
		if goValid {
			valid++
		} else {
			invalid++
		}
	}
	if valid == 0 || invalid == 0 {
		t.Errorf("validity cases not mixed: %d valid, %d invalid", valid, invalid)
	}
	for i, x := range out.X25519 {
		priv := ed25519.NewKeyFromSeed(mustHex(t, in.X25519[i]))
		xp, err := Ed25519PublicToX25519(priv.Public().(ed25519.PublicKey))
		if err != nil || hex.EncodeToString(xp) != x.X25519Pubkey {
			t.Errorf("x25519 %d: Go %x (%v), JS %s", i, xp, err, x.X25519Pubkey)
		}
		if xs := hex.EncodeToString(Ed25519SeedToX25519(priv)); xs != x.X25519Secret {
			t.Errorf("x25519 %d: Go secret %s, JS %s", i, xs, x.X25519Secret)
		}
	}
	for i, o := range out.Open {
		if o.PlaintextHex == nil {
			t.Errorf("open %d: JS cannot open the Go-sealed credential: %s", i, o.Error)
			continue
		}
		if !slices.Equal(mustHex(t, *o.PlaintextHex), openPlain[i]) {
			t.Errorf("open %d: JS decrypted %s, sealed %x", i, *o.PlaintextHex, openPlain[i])
		}
	}
	for i, s := range out.Seal {
		pt, err := Open(s.Sealed, sealKeys[i])
		if err != nil {
			t.Errorf("seal %d: Go cannot open the JS-sealed credential: %v", i, err)
			continue
		}
		if hex.EncodeToString(pt) != in.Seal[i].PlaintextHex {
			t.Errorf("seal %d: Go decrypted %x, JS sealed %s", i, pt, in.Seal[i].PlaintextHex)
		}
	}
}
