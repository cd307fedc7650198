package identity

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/cosmos/go-bip39"
)

// KeyForm names the encoding a provider main key was found in.
type KeyForm string

const (
	FormPEM      KeyForm = "pem"
	FormMnemonic KeyForm = "mnemonic"
	FormHexSeed  KeyForm = "hex"
)

// LoadMainKey reads a provider main key from a file in any accepted form
// (PKCS#8 PEM, BIP-39 mnemonic, 64-hex seed). Key files must not be readable
// by group or others.
func LoadMainKey(path string) (ed25519.PrivateKey, KeyForm, error) {
	b, err := readSecretBytes(path)
	if err != nil {
		return nil, "", err
	}
	k, form, err := ParseMainKey(b)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return k, form, nil
}

// ParseMainKey detects the form of data and parses the key.
func ParseMainKey(data []byte) (ed25519.PrivateKey, KeyForm, error) {
	s := strings.TrimSpace(string(data))
	switch {
	case s == "":
		return nil, "", errors.New("key file is empty")
	case strings.HasPrefix(s, "-----BEGIN"):
		k, err := ParsePEMKey([]byte(s))
		return keyOrNil(k, FormPEM, err)
	case isHex(s):
		k, err := KeyFromSeedHex(s)
		return keyOrNil(k, FormHexSeed, err)
	case strings.ContainsFunc(s, unicode.IsSpace):
		k, err := KeyFromMnemonic(s)
		return keyOrNil(k, FormMnemonic, err)
	default:
		return nil, "", errors.New("unrecognised key format: expected a PKCS#8 PEM private key, a BIP-39 mnemonic, or 64 hex characters")
	}
}

// keyOrNil keeps the form out of failed results, so callers never see a
// form without a key.
func keyOrNil(k ed25519.PrivateKey, form KeyForm, err error) (ed25519.PrivateKey, KeyForm, error) {
	if err != nil {
		return nil, "", err
	}
	return k, form, nil
}

func isHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// ParsePEMKey parses an Ed25519 PKCS#8 PEM private key (RFC 8410), the form
// Decent Cloud's own tools write to ~/.dcc/identity/<name>/private.pem.
func ParsePEMKey(data []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "OPENSSH PRIVATE KEY":
		return nil, errors.New("this is an OpenSSH key, not a provider key: use the PKCS#8 private.pem from ~/.dcc/identity/<name>/, the mnemonic, or the hex seed")
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("the PEM key is encrypted; decrypt it first (openssl pkey -in KEY -out plain.pem) and keep the result offline")
	default:
		return nil, fmt.Errorf("PEM block is %q, want \"PRIVATE KEY\" (PKCS#8 Ed25519)", block.Type)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse PKCS#8: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("PEM key is %T, want an Ed25519 key", k)
	}
	return ek, nil
}

// MarshalPEMKey encodes priv as PKCS#8 PEM.
func MarshalPEMKey(priv ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyFromMnemonic derives the provider key from a BIP-39 English mnemonic as
// Decent Cloud does: seed64 = PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048,
// 64); Ed25519 seed = HMAC-SHA512(key "ed25519 seed", seed64)[:32]. The
// mnemonic's checksum is verified first.
func KeyFromMnemonic(mnemonic string) (ed25519.PrivateKey, error) {
	words := strings.Fields(strings.ToLower(mnemonic))
	if err := ValidateMnemonic(words); err != nil {
		return nil, err
	}
	seed64, err := mnemonicSeed64(strings.Join(words, " "))
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha512.New, []byte("ed25519 seed"))
	mac.Write(seed64)
	return ed25519.NewKeyFromSeed(mac.Sum(nil)[:32]), nil
}

// mnemonicSeed64 is the BIP-39 seed of a normalized mnemonic with an empty
// passphrase: PBKDF2-HMAC-SHA512(mnemonic, "mnemonic", 2048, 64).
func mnemonicSeed64(normalized string) ([]byte, error) {
	seed64, err := pbkdf2.Key(sha512.New, normalized, []byte("mnemonic"), 2048, 64)
	if err != nil {
		return nil, fmt.Errorf("derive mnemonic seed: %w", err)
	}
	return seed64, nil
}

var bip39Index = func() map[string]int {
	m := make(map[string]int, len(bip39.EnglishWordList))
	for i, w := range bip39.EnglishWordList {
		m[w] = i
	}
	return m
}()

// ValidateMnemonic checks word count, that every word is on the English list,
// and the BIP-39 checksum.
func ValidateMnemonic(words []string) error {
	n := len(words)
	if n < 12 || n > 24 || n%3 != 0 {
		return fmt.Errorf("mnemonic has %d words; BIP-39 mnemonics have 12, 15, 18, 21 or 24", n)
	}
	bits := make([]bool, 0, n*11)
	for i, w := range words {
		idx, ok := bip39Index[w]
		if !ok {
			return fmt.Errorf("mnemonic word %d (%q) is not in the BIP-39 English word list", i+1, w)
		}
		for b := 10; b >= 0; b-- {
			bits = append(bits, idx&(1<<b) != 0)
		}
	}
	csBits := len(bits) / 33
	entBits := len(bits) - csBits
	entropy := make([]byte, entBits/8)
	for i := 0; i < entBits; i++ {
		if bits[i] {
			entropy[i/8] |= 1 << (7 - i%8)
		}
	}
	sum := sha256.Sum256(entropy)
	for i := 0; i < csBits; i++ {
		want := sum[i/8]&(1<<(7-i%8)) != 0
		if bits[entBits+i] != want {
			return errors.New("mnemonic checksum does not match: a word is wrong or out of order")
		}
	}
	return nil
}
