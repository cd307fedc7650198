package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/edwards25519"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/ssh"
)

// SealedCredential is format v2 of PROTOCOL.md §7.
type SealedCredential struct {
	Version         int    `json:"version"`
	EphemeralPubkey string `json:"ephemeral_pubkey"`
	Nonce           string `json:"nonce"`
	Ciphertext      string `json:"ciphertext"`
	AAD             string `json:"aad"`
}

const sealKDFLabel = "credential-encryption-v2-aad"

// Ed25519PublicToX25519 converts an Edwards public key to its Montgomery form.
func Ed25519PublicToX25519(pub ed25519.PublicKey) ([]byte, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("ed25519 public key must be %d bytes", ed25519.PublicKeySize)
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("not a valid ed25519 public key: %w", err)
	}
	return p.BytesMontgomery(), nil
}

// Ed25519SeedToX25519 returns the clamped X25519 scalar of an Ed25519 key:
// SHA-512(seed)[0:32], clamped.
func Ed25519SeedToX25519(priv ed25519.PrivateKey) []byte {
	h := sha512.Sum512(priv.Seed())
	s := make([]byte, 32)
	copy(s, h[:32])
	clamp(s)
	return s
}

func clamp(s []byte) {
	s[0] &= 248
	s[31] &= 127
	s[31] |= 64
}

func sealKey(shared []byte) []byte {
	h := sha512.New()
	h.Write([]byte(sealKDFLabel))
	h.Write(shared)
	return h.Sum(nil)[:32]
}

// ContractIDBytes decodes a 64-hex contract id to the 32 raw bytes used as AAD.
func ContractIDBytes(contractID string) ([]byte, error) {
	b, err := hex.DecodeString(contractID)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf("contract id must be 64 hex characters, got %q", contractID)
	}
	return b, nil
}

// Seal encrypts plaintext for the holder of the Ed25519 key recipient, bound
// to the contract id. The result is the JSON string placed in root_password.
func Seal(plaintext []byte, recipient ed25519.PublicKey, contractID string) (string, error) {
	return sealWithRand(rand.Reader, plaintext, recipient, contractID)
}

// sealWithRand is Seal with the randomness injected: the first 32 bytes of
// rnd are the ephemeral secret, the next 24 the nonce. Tests feed it the
// bytes an independent implementation used, and compare outputs exactly.
func sealWithRand(rnd io.Reader, plaintext []byte, recipient ed25519.PublicKey, contractID string) (string, error) {
	aad, err := ContractIDBytes(contractID)
	if err != nil {
		return "", err
	}
	rx, err := Ed25519PublicToX25519(recipient)
	if err != nil {
		return "", err
	}
	eph := make([]byte, 32)
	if _, err := io.ReadFull(rnd, eph); err != nil {
		return "", fmt.Errorf("ephemeral key: %w", err)
	}
	clamp(eph)
	ephPub, err := curve25519.X25519(eph, curve25519.Basepoint)
	if err != nil {
		return "", err
	}
	shared, err := curve25519.X25519(eph, rx)
	if err != nil {
		// A low-order recipient key gives an all-zero shared secret.
		return "", fmt.Errorf("recipient key is not usable for encryption (low-order point): %w", err)
	}
	aead, err := chacha20poly1305.NewX(sealKey(shared))
	if err != nil {
		return "", err
	}
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := io.ReadFull(rnd, nonce); err != nil {
		return "", fmt.Errorf("nonce: %w", err)
	}
	ct := aead.Seal(nil, nonce, plaintext, aad)
	out, err := json.Marshal(SealedCredential{
		Version:         2,
		EphemeralPubkey: base64.StdEncoding.EncodeToString(ephPub),
		Nonce:           base64.StdEncoding.EncodeToString(nonce),
		Ciphertext:      base64.StdEncoding.EncodeToString(ct),
		AAD:             base64.StdEncoding.EncodeToString(aad),
	})
	return string(out), err
}

// Open decrypts a sealed credential JSON with the recipient's Ed25519 key.
func Open(sealed string, recipient ed25519.PrivateKey) ([]byte, error) {
	var sc SealedCredential
	dec := json.NewDecoder(strings.NewReader(sealed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sc); err != nil {
		return nil, fmt.Errorf("sealed credential is not the expected JSON object {\"version\":2,...}: %w", err)
	}
	if dec.More() {
		return nil, errors.New("sealed credential has trailing data after the JSON object")
	}
	if sc.Version != 2 {
		return nil, fmt.Errorf("sealed credential version %d is not supported (want 2)", sc.Version)
	}
	field := func(name, v string, n int) ([]byte, error) {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			return nil, fmt.Errorf("sealed credential %s is not base64: %w", name, err)
		}
		if n > 0 && len(b) != n {
			return nil, fmt.Errorf("sealed credential %s has %d bytes, want %d", name, len(b), n)
		}
		return b, nil
	}
	ephPub, err := field("ephemeral_pubkey", sc.EphemeralPubkey, 32)
	if err != nil {
		return nil, err
	}
	nonce, err := field("nonce", sc.Nonce, chacha20poly1305.NonceSizeX)
	if err != nil {
		return nil, err
	}
	ct, err := field("ciphertext", sc.Ciphertext, 0)
	if err != nil {
		return nil, err
	}
	if len(ct) < chacha20poly1305.Overhead {
		return nil, fmt.Errorf("sealed credential ciphertext has %d bytes, less than the %d-byte tag", len(ct), chacha20poly1305.Overhead)
	}
	// PROTOCOL.md §7: the AAD is the contract id's raw 32 bytes.
	aad, err := field("aad", sc.AAD, 32)
	if err != nil {
		return nil, err
	}
	shared, err := curve25519.X25519(Ed25519SeedToX25519(recipient), ephPub)
	if err != nil {
		return nil, fmt.Errorf("key agreement: %w", err)
	}
	aead, err := chacha20poly1305.NewX(sealKey(shared))
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, ct, aad)
	if err != nil {
		return nil, errors.New("cannot decrypt: this credential was sealed for another key, or it was altered")
	}
	return pt, nil
}

// SealRecipient picks the key to seal a credential for, as PROTOCOL.md §7
// says: the requester's Ed25519 key if given, else the requester's SSH key if
// it is ssh-ed25519. ok is false when there is nothing to encrypt to (then no
// password may be set at all).
func SealRecipient(requesterPubkeyHex, requesterSSHPubkey string) (pub ed25519.PublicKey, ok bool, err error) {
	if strings.TrimSpace(requesterPubkeyHex) != "" {
		pub, err := ParsePublicKeyHex(requesterPubkeyHex)
		if err != nil {
			return nil, false, fmt.Errorf("requester_pubkey: %w", err)
		}
		return pub, true, nil
	}
	if pub := SSHEd25519Key(requesterSSHPubkey); pub != nil {
		return pub, true, nil
	}
	return nil, false, nil
}

// SSHEd25519Key returns the raw key of the first "ssh-ed25519 ..." line of
// an authorized_keys text, or nil if it has none (RSA, ECDSA, garbage).
func SSHEd25519Key(keys string) ed25519.PublicKey {
	for _, l := range strings.Split(keys, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		pk, _, _, _, err := ssh.ParseAuthorizedKey([]byte(l))
		if err != nil || pk.Type() != ssh.KeyAlgoED25519 {
			continue
		}
		cpk, ok := pk.(ssh.CryptoPublicKey)
		if !ok {
			continue
		}
		if ek, ok := cpk.CryptoPublicKey().(ed25519.PublicKey); ok {
			return ek
		}
	}
	return nil
}
