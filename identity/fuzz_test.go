package identity

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/cosmos/go-bip39"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (valid codes, texts, keys
// and sealed credentials, plus crashers found so far); `make fuzz` runs each
// target for FUZZTIME.

// Parsing is exact: whatever parses re-encodes to the same bytes.
func FuzzParseCanonicalText(f *testing.F) {
	d, _ := testDelegation(f)
	text, _ := d.CanonicalText()
	f.Add(text)
	text, _ = stamped(d).CanonicalText()
	f.Add(text)
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseCanonicalText(data)
		if err != nil {
			return
		}
		again, err := d.CanonicalText()
		if err != nil {
			t.Fatalf("parsed %q but cannot re-encode: %v", data, err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("not exact: parsed\n%q\nre-encodes to\n%q", data, again)
		}
	})
}

func FuzzDecodeRequest(f *testing.F) {
	d, _ := testDelegation(f)
	code, _ := d.EncodeRequest()
	f.Add(code)
	code, _ = stamped(d).EncodeRequest()
	f.Add(code)
	f.Fuzz(func(t *testing.T, code string) {
		d, err := DecodeRequest(code)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		again, err := d.EncodeRequest()
		if err != nil {
			t.Fatalf("decoded %q but cannot re-encode: %v", code, err)
		}
		d2, err := DecodeRequest(again)
		if err != nil || !sameDelegation(d, d2) {
			t.Fatalf("re-encoded %q does not decode to the same delegation: %v", again, err)
		}
	})
}

func FuzzDecodeSigned(f *testing.F) {
	d, main := testDelegation(f)
	sd, _ := d.Sign(main)
	code, _ := sd.Encode()
	f.Add(code)
	sd, _ = stamped(d).Sign(main)
	code, _ = sd.Encode()
	f.Add(code)
	f.Fuzz(func(t *testing.T, code string) {
		sd, err := DecodeSigned(code)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := sd.Verify(); err != nil {
			t.Fatalf("DecodeSigned accepted an unverifiable delegation: %v", err)
		}
		again, err := sd.Encode()
		if err != nil {
			t.Fatal(err)
		}
		sd2, err := DecodeSigned(again)
		if err != nil || !sameDelegation(sd.Delegation, sd2.Delegation) || !bytes.Equal(sd.Signature, sd2.Signature) {
			t.Fatalf("round trip of %q failed: %v", again, err)
		}
	})
}

// stamped is d with an issued_at_ns line.
func stamped(d Delegation) Delegation {
	issued := int64(1767225600123456789)
	d.IssuedAtNs = &issued
	return d
}

// fuzzSealKey is the recipient of the sealed credentials in the corpus.
var fuzzSealKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{0x5e}, 32))

func FuzzOpen(f *testing.F) {
	s, err := Seal([]byte("hunter2"), fuzzSealKey.Public().(ed25519.PublicKey), testContract)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s)
	f.Fuzz(func(t *testing.T, sealed string) {
		pt, err := Open(sealed, fuzzSealKey)
		if err != nil {
			return
		}
		// Only an authentic credential opens: re-sealing what came out and
		// opening that must give the same plaintext.
		again, err := Seal(pt, fuzzSealKey.Public().(ed25519.PublicKey), testContract)
		if err != nil {
			t.Fatal(err)
		}
		if pt2, err := Open(again, fuzzSealKey); err != nil || !bytes.Equal(pt, pt2) {
			t.Fatalf("re-seal round trip failed: %v", err)
		}
	})
}

func FuzzParseMainKey(f *testing.F) {
	pemBytes, _ := MarshalPEMKey(fuzzSealKey)
	f.Add(pemBytes)
	f.Add([]byte(SeedHex(fuzzSealKey) + "\n"))
	f.Add([]byte("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, form, err := ParseMainKey(data)
		if err != nil {
			if k != nil || form != "" {
				t.Fatal("a failed parse returned a key or form")
			}
			return
		}
		if len(k) != ed25519.PrivateKeySize || form == "" {
			t.Fatalf("parsed %q into a %d-byte key, form %q", data, len(k), form)
		}
		// The key signs and verifies (a usable key, not just bytes).
		if !Verify(k.Public().(ed25519.PublicKey), []byte("m"), Sign(k, []byte("m"))) {
			t.Fatal("parsed key cannot sign")
		}
	})
}

// Differential: our BIP-39 checksum check agrees with go-bip39's
// MnemonicToByteArray (its IsMnemonicValid checks only the words, not the
// checksum, so it is not the oracle).
func FuzzValidateMnemonic(f *testing.F) {
	f.Add("abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about")
	f.Add("zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong")
	f.Fuzz(func(t *testing.T, m string) {
		words := strings.Fields(m)
		ours := ValidateMnemonic(words) == nil
		theirs, ok := goBIP39Valid(strings.Join(words, " "))
		if !ok {
			return // the oracle itself failed; nothing to compare
		}
		if ours != theirs {
			t.Fatalf("%q: ours valid=%v, go-bip39 valid=%v", m, ours, theirs)
		}
	})
}

func goBIP39Valid(m string) (valid, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	_, err := bip39.MnemonicToByteArray(m)
	return err == nil, true
}
