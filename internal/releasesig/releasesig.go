// Package releasesig signs and verifies dc-agent releases: an Ed25519
// signature (SHA256SUMS.sig, the raw 64 bytes) over the release's
// SHA256SUMS, which names every file of the release by its SHA-256.
//
// Keys are written as OpenSSL does, so install.sh can check a release with
// `openssl pkeyutl -verify -rawin` where Go is not at hand: a private key
// is a PKCS#8 PEM file (`openssl genpkey -algorithm ed25519 -out KEY`), a
// public key is one line, the base64 body of its PEM
// (`openssl pkey -in KEY -pubout`, the line between the BEGIN and END
// lines). The public keys a binary trusts are built into it by
// `make release` (buildinfo.ReleaseKeys); a list, so a new key can be
// trusted one release before it signs.
package releasesig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/decent-stuff/dc-agent/identity"
)

// SigName is the signature file beside SHA256SUMS.
const SigName = "SHA256SUMS.sig"

// ErrNoKeys is returned by Verify when no key is trusted.
var ErrNoKeys = errors.New("no release keys are built into this dc-agent (it was not made by make release), so it cannot check a release's signature; install releases with install.sh or a binary from the releases page")

// ErrBadSignature is returned (wrapped) when no trusted key made sig.
var ErrBadSignature = errors.New("not signed by a dc-agent release key")

// ParsePublicKey reads one public key line (the base64 body of an Ed25519
// public key PEM).
func ParsePublicKey(line string) (ed25519.PublicKey, error) {
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(line))
	if err != nil {
		return nil, fmt.Errorf("release key %q is not base64: %w", short(line), err)
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("release key %q is not a public key: %w", short(line), err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("release key %q is %T, not Ed25519", short(line), k)
	}
	return pub, nil
}

// PublicKeyLine is the one-line form of pub.
func PublicKeyLine(pub ed25519.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err) // an ed25519.PublicKey always marshals
	}
	return base64.StdEncoding.EncodeToString(der)
}

// ParseKeys reads a list of public keys: lines or commas, blank lines and
// '#' comments ignored (the form of packaging/release-keys.pub and of
// buildinfo.ReleaseKeys).
func ParseKeys(list string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, line := range strings.Split(strings.ReplaceAll(list, ",", "\n"), "\n") {
		line, _, _ = strings.Cut(line, "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		k, err := ParsePublicKey(line)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Verify accepts sig when one of keys made it over msg.
func Verify(keys []ed25519.PublicKey, msg, sig []byte) error {
	if len(keys) == 0 {
		return ErrNoKeys
	}
	if len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("%w: the signature is %d bytes, not %d", ErrBadSignature, len(sig), ed25519.SignatureSize)
	}
	for _, k := range keys {
		if ed25519.Verify(k, msg, sig) {
			return nil
		}
	}
	return fmt.Errorf("%w (checked against the %d key(s) built into this dc-agent)", ErrBadSignature, len(keys))
}

// LoadPrivateKey reads a PKCS#8 PEM Ed25519 private key from a file only
// its owner can read.
func LoadPrivateKey(path string) (ed25519.PrivateKey, error) {
	if err := identity.CheckSecretFileMode(path); err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("release key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("release key %s is not a PEM \"PRIVATE KEY\"; make one with: openssl genpkey -algorithm ed25519 -out %s", path, path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("release key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("release key %s is %T, not Ed25519", path, k)
	}
	return priv, nil
}

// Sign signs a release's SHA256SUMS with priv, refusing a key that keys
// (the list the release's binaries will trust) does not hold: such a
// release could never be upgraded from.
func Sign(priv ed25519.PrivateKey, keys []ed25519.PublicKey, sums []byte) ([]byte, error) {
	pub := priv.Public().(ed25519.PublicKey)
	trusted := false
	for _, k := range keys {
		trusted = trusted || bytes.Equal(k, pub)
	}
	if !trusted {
		return nil, fmt.Errorf("the signing key (public %s) is not in the release's trusted keys; add that line to the keys file", PublicKeyLine(pub))
	}
	return ed25519.Sign(priv, sums), nil
}

func short(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 20 {
		return s[:20] + "…"
	}
	return s
}
