package setup

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// HostKeyStore pins SSH host keys on first use in an OpenSSH known_hosts
// file of its own (in the agent's state dir), so the provider's personal
// ~/.ssh/known_hosts is neither read nor changed.
type HostKeyStore struct {
	Path string
}

// KnownHostsFile is the pin file's name inside a state dir.
const KnownHostsFile = "ssh_known_hosts"

// Lookup returns the keys pinned for addr (host:port).
func (s HostKeyStore) Lookup(addr string) ([]ssh.PublicKey, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host key pins: %w", err)
	}
	want := knownhosts.Normalize(addr)
	var keys []ssh.PublicKey
	for len(bytes.TrimSpace(data)) > 0 {
		_, hosts, key, _, rest, err := ssh.ParseKnownHosts(data)
		if err != nil {
			return nil, Fixf("fix or delete "+s.Path+" (it holds only dc-agent's SSH host key pins)", "host key pins %s: %v", s.Path, err)
		}
		for _, h := range hosts {
			if h == want {
				keys = append(keys, key)
			}
		}
		data = rest
	}
	return keys, nil
}

// Pin records key for addr.
func (s HostKeyStore) Pin(addr string, key ssh.PublicKey) error {
	if err := os.MkdirAll(filepath.Dir(s.Path), 0o700); err != nil {
		return fmt.Errorf("pin host key: %w", err)
	}
	f, err := os.OpenFile(s.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pin host key: %w", err)
	}
	defer f.Close()
	if _, err := f.WriteString(knownhosts.Line([]string{knownhosts.Normalize(addr)}, key) + "\n"); err != nil {
		return fmt.Errorf("pin host key: %w", err)
	}
	return f.Sync()
}

// HostKeyChangedError is a host whose key differs from the pinned one: a
// reinstalled host, or someone intercepting the connection.
type HostKeyChangedError struct {
	Addr   string
	Pinned []string // fingerprints
	Got    string
	Type   string // of the key presented now (ssh-ed25519, ...)
	File   string
}

func (e *HostKeyChangedError) Error() string {
	return fmt.Sprintf("HOST KEY CHANGED for %s: pinned %s, but the host now presents %s; "+
		"refusing to connect: someone may be intercepting the connection, or the host was reinstalled",
		e.Addr, strings.Join(e.Pinned, ", "), e.Got)
}

// Fix says how to recover once the provider has checked the new key.
func (e *HostKeyChangedError) Fix() string {
	return fmt.Sprintf("check the key on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); only if it is %s, delete the %s line from %s and re-run",
		e.Got, knownhosts.Normalize(e.Addr), e.File)
}

// HostKeyUnknownError is a first connection without a way to confirm the key.
type HostKeyUnknownError struct {
	Addr string
	Got  string
}

func (e *HostKeyUnknownError) Error() string {
	return fmt.Sprintf("%s presents host key %s, which is not pinned yet and cannot be confirmed without a terminal", e.Addr, e.Got)
}

// UnknownHostKey is the error for a key seen for the first time where no
// one can confirm it.
func UnknownHostKey(addr, fingerprint string) error {
	return WithFix(&HostKeyUnknownError{Addr: addr, Got: fingerprint},
		"verify it on the host (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and pass --host-key-fingerprint "+fingerprint)
}

// FingerprintMismatchError is a host whose key is not the one the provider
// said to expect.
type FingerprintMismatchError struct {
	Addr     string
	Expected string
	Got      string
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("%s presents host key %s, but --host-key-fingerprint expects %s; refusing to connect", e.Addr, e.Got, e.Expected)
}

// NormalizeSSHFingerprint accepts "SHA256:base64", with or without the
// prefix and padding, and returns it as ssh.FingerprintSHA256 prints it.
func NormalizeSSHFingerprint(fp string) (string, error) {
	s := strings.TrimSpace(fp)
	if strings.HasPrefix(strings.ToUpper(s), "MD5:") || strings.Count(s, ":") > 1 {
		return "", fmt.Errorf("host key fingerprint %q is not SHA256; get it with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host", fp)
	}
	s = strings.TrimPrefix(s, "SHA256:")
	s = strings.TrimPrefix(s, "sha256:")
	s = strings.TrimRight(s, "=")
	if len(s) != 43 {
		return "", fmt.Errorf("host key fingerprint %q is not a SHA256 fingerprint (SHA256: and 43 base64 characters)", fp)
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '+' || r == '/') {
			return "", fmt.Errorf("host key fingerprint %q has a character that is not base64", fp)
		}
	}
	return "SHA256:" + s, nil
}

// hostKeyPolicy decides about a server's host key: pinned keys must match;
// an unpinned one must match the expected fingerprint or be confirmed.
type hostKeyPolicy struct {
	store    HostKeyStore
	expected string // normalized fingerprint, or ""
	confirm  func(addr, fingerprint, keyType string) (bool, error)
	pinned   []ssh.PublicKey
	// accepted is set once the key passed, with whether it was pinned now.
	accepted  ssh.PublicKey
	newlyPins bool
}

func (p *hostKeyPolicy) algorithms() []string {
	if len(p.pinned) == 0 {
		// Prefer the strongest key types, as OpenSSH does, so the key
		// pinned first is the one later connections see too.
		return []string{ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	var out []string
	for _, k := range p.pinned {
		if k.Type() == ssh.KeyAlgoRSA {
			out = append(out, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		} else {
			out = append(out, k.Type())
		}
	}
	return out
}

func (p *hostKeyPolicy) check(addr string, _ net.Addr, key ssh.PublicKey) error {
	got := ssh.FingerprintSHA256(key)
	if len(p.pinned) > 0 {
		var fps []string
		for _, k := range p.pinned {
			if bytes.Equal(k.Marshal(), key.Marshal()) {
				p.accepted = key
				return nil
			}
			fps = append(fps, ssh.FingerprintSHA256(k))
		}
		e := &HostKeyChangedError{Addr: addr, Pinned: fps, Got: got, Type: key.Type(), File: p.store.Path}
		return WithFix(e, e.Fix())
	}
	switch {
	case p.expected != "":
		if got != p.expected {
			return WithFix(&FingerprintMismatchError{Addr: addr, Expected: p.expected, Got: got},
				"check the fingerprint on the host with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub and pass that value")
		}
	case p.confirm != nil:
		ok, err := p.confirm(addr, got, key.Type())
		if err != nil {
			return err
		}
		if !ok {
			return Fixf("compare the fingerprint with ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host, then re-run and accept it",
				"host key %s of %s was not accepted", got, addr)
		}
	default:
		return UnknownHostKey(addr, got)
	}
	p.accepted = key
	p.newlyPins = true
	return nil
}
