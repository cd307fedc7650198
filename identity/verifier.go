package identity

import (
	"crypto/ed25519"
	"crypto/sha512"
	"crypto/subtle"
	"errors"

	"filippo.io/edwards25519"
)

// Verifier checks Ed25519ph("decent-cloud") signatures by one public key,
// with the key decoded once: a server that sees the same agent keys again
// and again saves the point decompression (a field square root, ≈ 3 µs) that
// every ed25519.VerifyWithOptions call repeats.
//
// It accepts exactly what crypto/ed25519's VerifyWithOptions accepts for
// Ed25519ph with our context: the same algorithm, on the same curve code
// (filippo.io/edwards25519 is what crypto/ed25519 is built on), with the
// same checks — key on the curve (non-canonical encodings accepted, as the
// standard library does), S canonical, the top bits of S clear, and R
// compared as encoded bytes (cofactorless). FuzzVerifierMatchesStdlib and
// TestVerifierMatchesStdlib check that answer for answer.
type Verifier struct {
	minusA edwards25519.Point // −A, as the verification equation uses it
	a      [ed25519.PublicKeySize]byte
}

// NewVerifier decodes pub once. It fails for keys that are not 32 bytes or
// not a point on the curve (which no signature could verify under).
func NewVerifier(pub []byte) (*Verifier, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("ed25519 public key must be 32 bytes")
	}
	var A edwards25519.Point
	if _, err := A.SetBytes(pub); err != nil {
		return nil, errors.New("not a valid ed25519 public key (not a point on the curve)")
	}
	v := &Verifier{}
	v.minusA.Negate(&A)
	copy(v.a[:], pub)
	return v, nil
}

// Verify reports whether sig is the key's Ed25519ph("decent-cloud")
// signature of msg (as Verify does).
func (v *Verifier) Verify(msg, sig []byte) bool {
	digest := sha512.Sum512(msg)
	return v.verifyPH(&digest, SignatureContext, sig)
}

// VerifyRequest is VerifyRequest with this key: the signature of
// RequestMessage(timestamp, nonce, method, path, body).
func (v *Verifier) VerifyRequest(timestamp, nonce, method, path string, body, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize {
		return false
	}
	digest := requestDigest(timestamp, nonce, method, path, body)
	return v.verifyPH(&digest, SignatureContext, sig)
}

// dom2Prefix is RFC 8032's dom2 prefix with phflag 1 (Ed25519ph).
const dom2Prefix = "SigEd25519 no Ed25519 collisions\x01"

// verifyPH is RFC 8032 §5.1.7 for Ed25519ph, step for step as crypto/ed25519
// does it: k = SHA-512(dom2(1, context) ‖ R ‖ A ‖ PH(M)) mod L, then
// [S]B − [k]A must encode to R.
func (v *Verifier) verifyPH(digest *[sha512.Size]byte, context string, sig []byte) bool {
	if len(sig) != ed25519.SignatureSize || sig[63]&224 != 0 || len(context) > 255 {
		return false
	}
	// dom2(1, context) ‖ R ‖ A ‖ PH(M) fits one stack buffer: no allocation.
	var buf [len(dom2Prefix) + 1 + 255 + 32 + 32 + sha512.Size]byte
	m := append(buf[:0], dom2Prefix...)
	m = append(m, byte(len(context)))
	m = append(m, context...)
	m = append(m, sig[:32]...)
	m = append(m, v.a[:]...)
	m = append(m, digest[:]...)
	hram := sha512.Sum512(m)
	var k, S edwards25519.Scalar
	if _, err := k.SetUniformBytes(hram[:]); err != nil {
		return false // unreachable: a SHA-512 sum is 64 bytes
	}
	if _, err := S.SetCanonicalBytes(sig[32:]); err != nil {
		return false
	}
	var R edwards25519.Point
	R.VarTimeDoubleScalarBaseMult(&k, &v.minusA, &S)
	// Public values: a constant-time compare is not needed, and costs nothing.
	return subtle.ConstantTimeCompare(sig[:32], R.Bytes()) == 1
}
