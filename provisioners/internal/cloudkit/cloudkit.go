// Package cloudkit holds what the cloud API backends (Hetzner, DigitalOcean,
// Vultr) share: contract ids and instance names, the requester's access
// (SSH key or root password), cloud-init user data, the choice of a region
// from a datacenter city and of a machine type, the API token and factory,
// an HTTP transport that honours rate limits, the uptime bookkeeping of
// APIs that report none, and (machines.go) the whole lifecycle of machines
// found by their tags, which DigitalOcean and Vultr run with their own API
// calls.
package cloudkit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// ContractID normalises a contract id (lowercase, trimmed) and checks that
// it is 64 hex characters; the error is permanent.
func ContractID(s string) (string, error) {
	id := strings.ToLower(strings.TrimSpace(s))
	if !IsContractID(id) {
		return "", provisioners.Permanent(fmt.Errorf("contract id %q is not 64 hex characters", s))
	}
	return id, nil
}

// IsContractID reports whether s is 64 lowercase hex characters.
func IsContractID(s string) bool {
	return len(s) == 64 && provisioners.ContractIDFromName(provisioners.InstanceName(s)) == s
}

// HostName is the deterministic instance name of a contract: "dc-" + the
// first 60 hex characters of the contract id, 63 characters in all, the
// longest valid hostname label. Cloud APIs find an instance by its labels
// or tags, which carry the whole id; the name is for people.
func HostName(contractID string) string {
	id := strings.ToLower(contractID)
	if len(id) > 60 {
		id = id[:60]
	}
	return "dc-" + id
}

// Access is how the requester logs in: an SSH key, or (without one) a root
// password the backend sets or receives.
type Access struct {
	Key  ssh.PublicKey // nil: password access
	Line string        // the key as an authorized_keys line
}

// HasKey reports whether the requester has an SSH key.
func (a Access) HasKey() bool { return a.Key != nil }

// RequestAccess checks the requester's SSH key, or that a password may be
// sealed for the requester when there is none (permanent errors: the
// contract data is wrong).
func RequestAccess(req provisioners.Request) (Access, error) {
	line := strings.TrimSpace(req.RequesterSSHPubkey)
	if line == "" {
		if !req.WantPassword {
			return Access{}, provisioners.Permanent(errors.New("the contract has no SSH key and no root password can be sealed for the requester; the requester must add an SSH key"))
		}
		return Access{}, nil
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		return Access{}, provisioners.Permanent(fmt.Errorf("the requester's SSH key is not a valid public key line (%v); the requester must set a key like \"ssh-ed25519 AAAA...\"", err))
	}
	return Access{Key: k, Line: line}, nil
}

// KeyName is the name of the SSH key object the agent uploads for a key:
// "dc-key-" and 16 hex characters of its SHA-256. Only key objects named so
// are ever deleted by a backend whose API has no labels on keys.
func KeyName(pub ssh.PublicKey) string {
	sum := sha256.Sum256(pub.Marshal())
	return KeyNamePrefix + hex.EncodeToString(sum[:8])
}

// KeyNamePrefix starts the name of every SSH key object the agent uploads.
const KeyNamePrefix = "dc-key-"

// SameKey reports whether two authorized_keys lines hold the same key
// (comments and options aside).
func SameKey(a, b string) bool {
	ka, _, _, _, err := ssh.ParseAuthorizedKey([]byte(a))
	if err != nil {
		return false
	}
	kb, _, _, _, err := ssh.ParseAuthorizedKey([]byte(b))
	if err != nil {
		return false
	}
	return string(ka.Marshal()) == string(kb.Marshal())
}

// Token reads an API token: from the 0600 file named by file (relative to
// the config file), else the legacy inline value. what names the setting in
// errors ("digitalocean api_token_file").
func Token(deps provisioners.Deps, file, inline, what string) (string, error) {
	if deps.Config != nil {
		return deps.Config.ReadSecret(file, inline, what)
	}
	if file != "" {
		s, err := identity.ReadSecretFile(file)
		if err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
		return s, nil
	}
	return inline, nil
}

// CheckToken trims a token and rejects an empty one or one with whitespace
// inside; how names where the token comes from, for the message.
func CheckToken(token, provider, how string) (string, error) {
	token = strings.TrimSpace(token)
	if token == "" {
		return "", fmt.Errorf("the %s API token is empty; %s", provider, how)
	}
	if strings.ContainsAny(token, " \t\r\n") {
		return "", fmt.Errorf("the %s API token contains whitespace; api_token_file must hold the token only", provider)
	}
	return token, nil
}

// Sleep waits d or until ctx is done.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Starts remembers since when an instance runs, for APIs that report no
// uptime: the time is recorded when the backend starts an instance or first
// sees it running, and dropped when it sees it stopped or gone.
type Starts struct {
	mu sync.Mutex
	m  map[string]time.Time
}

// Get returns the recorded start of id.
func (s *Starts) Get(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.m[id]
	return t, ok
}

// Mark records that id runs since t.
func (s *Starts) Mark(id string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string]time.Time{}
	}
	s.m[id] = t
}

// Forget drops id.
func (s *Starts) Forget(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, id)
}

// Factory is the registry factory of the cloud backend typ: it takes the
// backend's config section from pc (section; nil: the [provisioner.<typ>]
// section is missing), reads its API token (tokenOf: the api_token_file
// and the legacy inline token, see Token) and builds the backend with
// deps' logger.
func Factory[C any](typ string, section func(config.ProvisionerConfig) *C, tokenOf func(*C) (file, inline string),
	build func(cfg C, token string, log *slog.Logger) (provisioners.Provisioner, error)) provisioners.Factory {
	return func(pc config.ProvisionerConfig, deps provisioners.Deps) (provisioners.Provisioner, error) {
		c := section(pc)
		if c == nil {
			return nil, fmt.Errorf("[provisioner.%s] section is missing", typ)
		}
		file, inline := tokenOf(c)
		token, err := Token(deps, file, inline, typ+" api_token_file")
		if err != nil {
			return nil, err
		}
		return build(*c, token, deps.Logger)
	}
}
