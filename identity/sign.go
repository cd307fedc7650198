package identity

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
)

// SignatureContext is the Ed25519ph context string of every Decent Cloud signature.
const SignatureContext = "decent-cloud"

var phOptions = &ed25519.Options{Hash: crypto.SHA512, Context: SignatureContext}

// Sign returns the Ed25519ph("decent-cloud") signature of msg.
func Sign(priv ed25519.PrivateKey, msg []byte) []byte {
	digest := sha512.Sum512(msg)
	sig, err := priv.Sign(nil, digest[:], phOptions)
	if err != nil {
		// Only reachable with a malformed private key or options, both
		// programming errors fixed at compile time here.
		panic("identity: ed25519ph sign: " + err.Error())
	}
	return sig
}

// Verify reports whether sig is a valid Ed25519ph("decent-cloud") signature of
// msg by pub. Malformed keys or signatures verify as false.
func Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	digest := sha512.Sum512(msg)
	return ed25519.VerifyWithOptions(pub, digest[:], sig, phOptions) == nil
}

// VerifyRequest is Verify of RequestMessage(timestamp, nonce, method, path,
// body), hashing the parts as they are instead of joining them first.
func VerifyRequest(pub ed25519.PublicKey, timestamp, nonce, method, path string, body, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	digest := requestDigest(timestamp, nonce, method, path, body)
	return ed25519.VerifyWithOptions(pub, digest[:], sig, phOptions) == nil
}

// requestDigest is SHA-512(RequestMessage(timestamp, nonce, method, path,
// body)), the Ed25519ph pre-hash of a request.
func requestDigest(timestamp, nonce, method, path string, body []byte) [sha512.Size]byte {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	h := sha512.New()
	_, _ = io.WriteString(h, timestamp)
	_, _ = io.WriteString(h, nonce)
	_, _ = io.WriteString(h, strings.ToUpper(method))
	_, _ = io.WriteString(h, path)
	_, _ = h.Write(body)
	var digest [sha512.Size]byte
	h.Sum(digest[:0])
	return digest
}

// RequestMessage builds the signed message of PROTOCOL.md §2:
// timestamp ‖ nonce ‖ METHOD ‖ path (without query) ‖ body.
func RequestMessage(timestamp, nonce, method, path string, body []byte) []byte {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	msg := make([]byte, 0, len(timestamp)+len(nonce)+len(method)+len(path)+len(body))
	msg = append(msg, timestamp...)
	msg = append(msg, nonce...)
	msg = append(msg, strings.ToUpper(method)...)
	msg = append(msg, path...)
	msg = append(msg, body...)
	return msg
}

// SignRequest returns the hex X-Signature value for a request.
func SignRequest(priv ed25519.PrivateKey, timestamp, nonce, method, path string, body []byte) string {
	return hex.EncodeToString(Sign(priv, RequestMessage(timestamp, nonce, method, path, body)))
}

// ParseSignatureHex decodes a 128-character hex signature.
func ParseSignatureHex(s string) ([]byte, error) {
	if len(s) != 2*ed25519.SignatureSize {
		return nil, fmt.Errorf("signature must be %d hex characters, got %d", 2*ed25519.SignatureSize, len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("signature is not valid hex: %w", err)
	}
	return b, nil
}
