package identity

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"math/big"
	"math/rand/v2"
	"testing"
)

// stdlibVerifyPH is the reference answer: crypto/ed25519 on the same input.
func stdlibVerifyPH(pub []byte, digest []byte, context string, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize {
		return false // VerifyWithOptions panics on that; NewVerifier refuses it
	}
	return ed25519.VerifyWithOptions(pub, digest, sig, &ed25519.Options{Hash: crypto.SHA512, Context: context}) == nil
}

// ourVerifyPH is the same check through a Verifier.
func ourVerifyPH(pub []byte, digest []byte, context string, sig []byte) bool {
	v, err := NewVerifier(pub)
	if err != nil {
		return false
	}
	var d [sha512.Size]byte
	if copy(d[:], digest) != sha512.Size {
		return false
	}
	return v.verifyPH(&d, context, sig)
}

// checkSame fails t when the Verifier and crypto/ed25519 disagree.
func checkSame(t *testing.T, what string, pub, digest []byte, context string, sig []byte) bool {
	t.Helper()
	want := stdlibVerifyPH(pub, digest, context, sig)
	if got := ourVerifyPH(pub, digest, context, sig); got != want {
		t.Fatalf("%s: Verifier says %v, crypto/ed25519 says %v\npub %x\ndigest %x\ncontext %q\nsig %x", what, got, want, pub, digest, context, sig)
	}
	return want
}

// smallOrderEncodings are encodings of the eight points of order dividing 8
// (and non-canonical spellings of some), the keys and R values where
// Ed25519 implementations are known to disagree.
var smallOrderEncodings = []string{
	"0100000000000000000000000000000000000000000000000000000000000000", // identity
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // order 2
	"0000000000000000000000000000000000000000000000000000000000000080", // order 4 (x sign set)
	"0000000000000000000000000000000000000000000000000000000000000000", // order 4
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // order 8
	"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", // order 8
	"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85", // order 8
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p+1 (non-canonical identity)
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // y = p (non-canonical 0)
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", // y = p+1, x sign set
}

// TestVerifierRFC8032 checks the Ed25519ph test vector of RFC 8032 §7.3.
func TestVerifierRFC8032(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(mustHex(t, "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42"))
	pub := mustHex(t, "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf")
	sig := mustHex(t, "98a70222f0b8121aa9d30f813d683f809e462b469c7ff87639499bb94e6dae4131f85042463c2a355a2003d062adf5aaa10b8c61e636062aaad11c2a26083406")
	digest := sha512.Sum512([]byte("abc"))
	if got, _ := priv.Sign(nil, digest[:], &ed25519.Options{Hash: crypto.SHA512}); hex.EncodeToString(got) != hex.EncodeToString(sig) {
		t.Fatalf("vector transcribed wrong: crypto/ed25519 signs %x", got)
	}
	if !checkSame(t, "RFC 8032 Ed25519ph", pub, digest[:], "", sig) {
		t.Fatal("RFC 8032 Ed25519ph vector does not verify")
	}
	sig[0] ^= 1
	if checkSame(t, "RFC 8032 Ed25519ph, R altered", pub, digest[:], "", sig) {
		t.Fatal("altered signature verifies")
	}
}

// TestVerifierMatchesStdlib compares the Verifier with crypto/ed25519 on
// valid signatures, every single-bit change of them, non-canonical S,
// small-order and non-canonical keys and R values, and random bytes.
func TestVerifierMatchesStdlib(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var seed [32]byte
	accepted, rejected := 0, 0
	count := func(ok bool) {
		if ok {
			accepted++
		} else {
			rejected++
		}
	}
	for i := 0; i < 8; i++ {
		for j := range seed {
			seed[j] = byte(rng.Uint32())
		}
		priv := ed25519.NewKeyFromSeed(seed[:])
		pub := priv.Public().(ed25519.PublicKey)
		msg := []byte("heartbeat " + string(rune('a'+i)))
		digest := sha512.Sum512(msg)
		sig := Sign(priv, msg)
		if !checkSame(t, "valid", pub, digest[:], SignatureContext, sig) {
			t.Fatal("a valid signature does not verify")
		}
		v, err := NewVerifier(pub)
		if err != nil {
			t.Fatal(err)
		}
		if !v.Verify(msg, sig) || v.Verify(append(msg, '!'), sig) {
			t.Fatal("Verifier.Verify disagrees with Sign")
		}
		if checkSame(t, "other context", pub, digest[:], "decent-cloud2", sig) {
			t.Fatal("a signature verifies under another context")
		}
		for bit := 0; bit < 8*len(sig); bit++ {
			bad := append([]byte(nil), sig...)
			bad[bit/8] ^= 1 << (bit % 8)
			count(checkSame(t, "signature bit flipped", pub, digest[:], SignatureContext, bad))
		}
		for bit := 0; bit < 8*len(pub); bit += 7 {
			bad := append([]byte(nil), pub...)
			bad[bit/8] ^= 1 << (bit % 8)
			count(checkSame(t, "key bit flipped", bad, digest[:], SignatureContext, sig))
		}
		// S + L: the same scalar, not canonical.
		s := new(big.Int).SetBytes(reversed(sig[32:]))
		s.Add(s, groupOrder)
		bad := append(append([]byte(nil), sig[:32]...), reversed(leftPad(s.Bytes(), 32))...)
		if checkSame(t, "S + L", pub, digest[:], SignatureContext, bad) {
			t.Fatal("a non-canonical S verifies")
		}
	}
	// Small-order and non-canonical keys and R, with S = 0 and random S.
	digest := sha512.Sum512([]byte("any message"))
	for _, a := range smallOrderEncodings {
		for _, r := range smallOrderEncodings {
			for _, sHex := range []string{"00", "01", "ed"} {
				sig := append(mustHex(t, r), make([]byte, 32)...)
				sig[32] = mustHex(t, sHex)[0]
				count(checkSame(t, "small order", mustHex(t, a), digest[:], SignatureContext, sig))
			}
		}
	}
	// Random bytes.
	for i := 0; i < 200; i++ {
		pub, sig := make([]byte, 32), make([]byte, 64)
		for j := range pub {
			pub[j] = byte(rng.Uint32())
		}
		for j := range sig {
			sig[j] = byte(rng.Uint32())
		}
		sig[63] &= 0x0f
		count(checkSame(t, "random", pub, digest[:], SignatureContext, sig))
	}
	// Both answers must occur, or the comparison proved little.
	if accepted == 0 || rejected == 0 {
		t.Fatalf("accepted %d, rejected %d: the cases do not exercise both answers", accepted, rejected)
	}
	t.Logf("%d accepted, %d rejected, all as crypto/ed25519 answers", accepted, rejected)
}

func TestNewVerifierRefusesBadKeys(t *testing.T) {
	if _, err := NewVerifier(make([]byte, 31)); err == nil {
		t.Fatal("31-byte key accepted")
	}
	// y = 2 is not on the curve (x² would be a non-square).
	notOnCurve := make([]byte, 32)
	notOnCurve[0] = 2
	if _, err := NewVerifier(notOnCurve); err == nil {
		t.Fatal("a key off the curve accepted")
	}
	if stdlibVerifyPH(notOnCurve, make([]byte, 64), SignatureContext, make([]byte, 64)) {
		t.Fatal("crypto/ed25519 accepts it, so the test's premise is wrong")
	}
}

// FuzzVerifierMatchesStdlib: for any key, signature and message the
// Verifier answers as crypto/ed25519 does. mode 0 signs msg with a key made
// from keySeed and flips bit flip of the signature (none when flip ≥ 512);
// otherwise key and sig are taken as given.
func FuzzVerifierMatchesStdlib(f *testing.F) {
	f.Add(byte(0), make([]byte, 32), []byte("msg"), make([]byte, 64), uint16(1000))
	f.Add(byte(0), make([]byte, 32), []byte("msg"), make([]byte, 64), uint16(3))
	f.Add(byte(0), make([]byte, 32), []byte("msg"), make([]byte, 64), uint16(300))
	for _, a := range smallOrderEncodings {
		f.Add(byte(1), mustHex(f, a), []byte("msg"), append(mustHex(f, a), make([]byte, 32)...), uint16(0))
	}
	f.Fuzz(func(t *testing.T, mode byte, key, msg, sig []byte, flip uint16) {
		digest := sha512.Sum512(msg)
		pub := key
		if mode == 0 {
			var seed [32]byte
			copy(seed[:], key)
			priv := ed25519.NewKeyFromSeed(seed[:])
			pub = priv.Public().(ed25519.PublicKey)
			sig = Sign(priv, msg)
			if int(flip) < 8*len(sig) {
				sig[flip/8] ^= 1 << (flip % 8)
			}
		}
		ok := checkSame(t, "fuzz", pub, digest[:], SignatureContext, sig)
		if mode == 0 && int(flip) >= 8*len(sig) && !ok {
			t.Fatal("a valid signature does not verify")
		}
	})
}

var groupOrder, _ = new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)

func reversed(b []byte) []byte {
	r := make([]byte, len(b))
	for i := range b {
		r[len(b)-1-i] = b[i]
	}
	return r
}

func leftPad(b []byte, n int) []byte {
	return append(make([]byte, n-len(b)), b...)
}
