// Package identity holds the cryptographic ground floor of dc-agent: the agent
// key and the provider main key, Ed25519ph request signing as PROTOCOL.md §2
// defines it, the delegation text a provider signs offline (§3), and the
// sealed-credential format used to hand root passwords to requesters (§7).
//
// It depends on the standard library and golang.org/x/crypto only, so that
// every other package can build on it.
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// PublicKeyHex is the wire form of a public key: lowercase hex of the 32 raw bytes.
func PublicKeyHex(pub ed25519.PublicKey) string { return hex.EncodeToString(pub) }

// PublicHex returns the wire form of the public half of priv.
func PublicHex(priv ed25519.PrivateKey) string {
	return PublicKeyHex(priv.Public().(ed25519.PublicKey))
}

// ParsePublicKeyHex parses a 64-character hex Ed25519 public key. Upper-case
// hex is accepted; the wire always carries lower case.
func ParsePublicKeyHex(s string) (ed25519.PublicKey, error) {
	s = strings.TrimSpace(s)
	if len(s) != 2*ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key must be %d hex characters, got %d", 2*ed25519.PublicKeySize, len(s))
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not valid hex: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

// NormalizePublicKeyHex validates s and returns it in lowercase wire form.
func NormalizePublicKeyHex(s string) (string, error) {
	pub, err := ParsePublicKeyHex(s)
	if err != nil {
		return "", err
	}
	return PublicKeyHex(pub), nil
}

// GenerateKey returns a fresh Ed25519 key from the system's CSPRNG.
func GenerateKey() (ed25519.PrivateKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return priv, nil
}

// KeyFromSeedHex parses a 64-hex seed (the agent key file format).
func KeyFromSeedHex(s string) (ed25519.PrivateKey, error) {
	s = strings.TrimSpace(s)
	if len(s) != 2*ed25519.SeedSize {
		return nil, fmt.Errorf("key seed must be %d hex characters, got %d", 2*ed25519.SeedSize, len(s))
	}
	seed, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("key seed is not valid hex: %w", err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// SeedHex is the agent key file's content for priv (without newline).
func SeedHex(priv ed25519.PrivateKey) string { return hex.EncodeToString(priv.Seed()) }

// ErrKeyPermissions is returned (wrapped) when a secret key file can be read by
// group or others.
var ErrKeyPermissions = errors.New("secret file is accessible by other users")

// maxSecretFileBytes bounds what is read from a secret file: keys, mnemonics
// and tokens are far smaller, so a bigger file is a wrong path.
const maxSecretFileBytes = 64 << 10

// CheckSecretFileMode refuses a secret file that group or others can read or
// write. The error names the chmod that fixes it.
func CheckSecretFileMode(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; run: chmod 600 %s", ErrKeyPermissions, path, perm, shellQuote(path))
	}
	return nil
}

// shellQuote quotes a path for a command the user is told to run.
func shellQuote(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-+,:@%", r))
	}) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ReadSecretFile reads a secret (key, token) from a file that must be 0600 or
// stricter, trimming surrounding whitespace.
func ReadSecretFile(path string) (string, error) {
	b, err := readSecretBytes(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func readSecretBytes(path string) ([]byte, error) {
	if err := CheckSecretFileMode(path); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > maxSecretFileBytes {
		return nil, fmt.Errorf("%s is larger than %d KiB; it is not a key or token file", path, maxSecretFileBytes>>10)
	}
	return b, nil
}

// LoadAgentKey reads the agent key file: 64 hex characters, newline optional,
// mode 0600 or stricter.
func LoadAgentKey(path string) (ed25519.PrivateKey, error) {
	s, err := ReadSecretFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("agent key %s does not exist; run: dc-agent init", path)
		}
		return nil, fmt.Errorf("agent key: %w", err)
	}
	k, err := KeyFromSeedHex(s)
	if err != nil {
		return nil, fmt.Errorf("agent key %s: %w", path, err)
	}
	return k, nil
}

// AgentPubPath is where the public half of the agent key at keyPath lives.
func AgentPubPath(keyPath string) string {
	return filepath.Join(filepath.Dir(keyPath), "agent.pub")
}

// DelegationPath is where the signed delegation (its dcds1: code) for the
// agent key at keyPath is kept: beside the key.
func DelegationPath(keyPath string) string {
	return filepath.Join(filepath.Dir(keyPath), "agent.delegation")
}

// EnsureAgentKey loads the key at path, creating it (and agent.pub) if it
// does not exist, or replacing it if force.
func EnsureAgentKey(path string, force bool) (key ed25519.PrivateKey, created bool, err error) {
	if !force {
		if _, statErr := os.Stat(path); statErr == nil {
			k, err := LoadAgentKey(path)
			return k, false, err
		}
	}
	k, err := GenerateKey()
	if err != nil {
		return nil, false, err
	}
	if err := SaveAgentKey(path, k, force); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// SaveAgentKey writes the seed to path (0600, atomically) and the public key
// beside it as agent.pub (0644). It never overwrites an existing key file
// unless overwrite is set.
func SaveAgentKey(path string, priv ed25519.PrivateKey, overwrite bool) error {
	if !overwrite {
		if _, err := os.Lstat(path); err == nil {
			return fmt.Errorf("agent key %s already exists; pass --force to replace it (the old key's delegation stops working)", path)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := WriteFileAtomic(path, []byte(SeedHex(priv)+"\n"), 0o600); err != nil {
		return err
	}
	return WriteFileAtomic(AgentPubPath(path), []byte(PublicHex(priv)+"\n"), 0o644)
}

// WriteFileAtomic writes data to a temporary file in the same directory with
// the given mode, fsyncs it and renames it over path, so readers see either
// the old or the new content, never a torn file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// SameKey reports whether two public keys are equal.
func SameKey(a, b ed25519.PublicKey) bool { return bytes.Equal(a, b) }
