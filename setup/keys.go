package setup

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// ParseExpiry accepts "never", a Go duration, "<n>d", or RFC 3339, and
// returns the expiry in nanoseconds (nil for never).
func ParseExpiry(s string, now time.Time) (*int64, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "never" {
		return nil, nil
	}
	var t time.Time
	if n, ok := strings.CutSuffix(s, "d"); ok {
		var days int
		if _, err := fmt.Sscanf(n, "%d", &days); err != nil || days <= 0 || fmt.Sprint(days) != n {
			return nil, fmt.Errorf("%q is not a number of days", s)
		}
		t = now.Add(time.Duration(days) * 24 * time.Hour)
	} else if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return nil, fmt.Errorf("%q must be positive", s)
		}
		t = now.Add(d)
	} else if ts, err := time.Parse(time.RFC3339, s); err == nil {
		if !ts.After(now) {
			return nil, fmt.Errorf("%s is in the past", s)
		}
		t = ts
	} else {
		return nil, fmt.Errorf("%q is not never, a duration (8760h, 365d) or an RFC 3339 time", s)
	}
	ns := t.UnixNano()
	return &ns, nil
}

// KeyStatus is the agent key after EnsureKey.
type KeyStatus struct {
	Path    string
	Pubkey  string
	Created bool
	Key     ed25519.PrivateKey
}

// KeyStep makes sure the agent key exists (dc-agent init): it creates one
// if none exists and never replaces an existing key.
func KeyStep(path string, out *KeyStatus) Step {
	return Step{ID: "agent-key", Title: "Agent key", Run: func(ctx context.Context, r *Reporter) error {
		k, created, err := identity.EnsureAgentKey(path, false)
		if err != nil {
			return WithFix(err, "fix or move away "+path+"; dc-agent init creates a new key")
		}
		*out = KeyStatus{Path: path, Pubkey: identity.PublicHex(k), Created: created, Key: k}
		if created {
			r.Changed("created %s (public key %s)", path, out.Pubkey)
		} else {
			r.Skip("using %s (public key %s)", path, out.Pubkey)
		}
		return nil
	}}
}

// AcceptError explains why a pasted signed delegation cannot be used.
type AcceptError struct {
	Reason string // "malformed", "wrong-agent", "wrong-provider", "expired", "missing-permissions"
	Err    error
}

func (e *AcceptError) Error() string { return e.Err.Error() }
func (e *AcceptError) Unwrap() error { return e.Err }

// AcceptDelegation checks a pasted signed delegation (dcds1:...) against
// this agent: well-formed with a valid signature, for this agent key, from
// the configured provider (if known), not expired. Missing permissions are
// returned as warnings: the agent can run, but some work will be refused.
// The TUI calls it live as the provider pastes.
func AcceptDelegation(code, agentPubkey, providerPubkey string, now time.Time) (identity.SignedDelegation, []string, error) {
	code = strings.TrimSpace(code)
	if code == "" {
		return identity.SignedDelegation{}, nil, &AcceptError{"malformed", Fixf("paste the dcds1: code printed by dc-agent delegation sign", "no signed delegation given")}
	}
	if strings.HasPrefix(code, identity.RequestPrefix) {
		return identity.SignedDelegation{}, nil, &AcceptError{"malformed", WithFix(errors.New("this is the delegation request (dcdr1:), not the signed delegation"),
			"sign it on the machine with your provider key: dc-agent delegation sign --identity KEY 'dcdr1:...', and paste the dcds1: code it prints")}
	}
	sd, err := identity.DecodeSigned(code)
	if err != nil {
		return identity.SignedDelegation{}, nil, &AcceptError{"malformed", WithFix(err, "paste the whole dcds1: code printed by dc-agent delegation sign, on one line")}
	}
	if sd.AgentPubkey != agentPubkey {
		return sd, nil, &AcceptError{"wrong-agent", WithFix(
			fmt.Errorf("this delegation is for agent key %s, but this host's agent key is %s", sd.AgentPubkey, agentPubkey),
			"sign the request this host prints (dc-agent delegation request), not one from another host")}
	}
	if providerPubkey != "" && sd.ProviderPubkey != providerPubkey {
		return sd, nil, &AcceptError{"wrong-provider", WithFix(
			fmt.Errorf("this delegation was signed by provider %s, but this agent is set up for provider %s", sd.ProviderPubkey, providerPubkey),
			"sign with the provider key shown on your dashboard, or correct --provider-pubkey")}
	}
	if sd.Expired(now) {
		return sd, nil, &AcceptError{"expired", WithFix(
			fmt.Errorf("this delegation expired at %s", sd.ExpiresAt().UTC().Format(time.RFC3339)),
			"create a new request (dc-agent delegation request --expires 365d) and sign it again")}
	}
	var warns []string
	var missing []string
	for _, p := range identity.AllPermissions {
		if !sd.Has(p) {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		warns = append(warns, fmt.Sprintf("the delegation lacks %s; the agent cannot do what needs it", strings.Join(missing, ", ")))
	}
	if sd.ExpiresAtNs != nil && sd.ExpiresAt().Sub(now) < 7*24*time.Hour {
		warns = append(warns, fmt.Sprintf("the delegation expires soon, at %s", sd.ExpiresAt().UTC().Format(time.RFC3339)))
	}
	return sd, warns, nil
}

// SaveDelegation keeps the signed delegation beside the agent key.
func SaveDelegation(path string, sd identity.SignedDelegation) error {
	code, err := sd.Encode()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return writeOwned(path, []byte(code+"\n"), 0o600, filepath.Join(filepath.Dir(path), "agent.key"))
}

// LoadDelegation reads the kept signed delegation.
func LoadDelegation(path string) (identity.SignedDelegation, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return identity.SignedDelegation{}, Fixf("dc-agent delegation request, sign it offline, then dc-agent register --delegation file:PATH",
				"no signed delegation at %s", path)
		}
		return identity.SignedDelegation{}, err
	}
	sd, err := identity.DecodeSigned(strings.TrimSpace(string(b)))
	if err != nil {
		return sd, WithFix(fmt.Errorf("%s: %w", path, err), "register the signed delegation again: dc-agent register --delegation file:PATH")
	}
	return sd, nil
}

// Registered reports whether the API already holds exactly this
// delegation as active. Servers that list delegations only to the
// provider's main key make it report false (then registering again is
// harmless: the API replaces the delegation).
func Registered(ctx context.Context, c *dcapi.Client, sd identity.SignedDelegation) bool {
	d, found, err := RegisteredDelegation(ctx, c, sd.AgentPubkey)
	return err == nil && found && SameDelegation(d, sd)
}

// ErrCannotList means the API shows delegations to the provider's main key
// only (the live service), so an agent cannot read its own.
var ErrCannotList = errors.New("the API does not show delegations to the agent key")

// RegisteredDelegation reads what the API holds for agentPubkey: the
// reference server's own-delegation endpoint (which any agent key may ask
// about itself: 404 means none), else the list.
func RegisteredDelegation(ctx context.Context, c *dcapi.Client, agentPubkey string) (dcapi.DelegationInfo, bool, error) {
	d, err := c.GetDelegation(ctx, agentPubkey)
	switch {
	case err == nil:
		return d, true, nil
	case dcapi.IsNotFound(err):
		return dcapi.DelegationInfo{}, false, nil
	}
	list, lerr := c.ListDelegations(ctx)
	if lerr != nil {
		return dcapi.DelegationInfo{}, false, ErrCannotList
	}
	for _, d := range list {
		if d.AgentPubkey == agentPubkey {
			return d, true, nil
		}
	}
	return dcapi.DelegationInfo{}, false, nil
}

// SameDelegation reports whether the API's active delegation grants what
// sd grants.
func SameDelegation(d dcapi.DelegationInfo, sd identity.SignedDelegation) bool {
	return d.AgentPubkey == sd.AgentPubkey && d.Active && strings.Join(d.Permissions, ",") == strings.Join(sd.Permissions, ",") &&
		(d.ExpiresAtNs == nil) == (sd.ExpiresAtNs == nil) && (d.ExpiresAtNs == nil || *d.ExpiresAtNs == *sd.ExpiresAtNs)
}

// RegisterResult says what the API did with the delegation.
type RegisterResult struct {
	// Already is true when the API already had this delegation.
	Already bool
}

// Register POSTs the signed delegation to the API, signed by the agent key
// it delegates (PROTOCOL.md §3), and explains refusals.
func Register(ctx context.Context, c *dcapi.Client, sd identity.SignedDelegation) (RegisterResult, error) {
	if sd.ProviderPubkey != c.Provider() {
		return RegisterResult{}, Fixf("sign with the provider key the config names (api.provider_pubkey), or correct it",
			"the delegation was signed by provider %s, but the config's provider is %s", sd.ProviderPubkey, c.Provider())
	}
	if sd.AgentPubkey != c.KeyHex() {
		return RegisterResult{}, Fixf("sign the request this host prints: dc-agent delegation request",
			"the delegation is for agent key %s, but this host's key is %s", sd.AgentPubkey, c.KeyHex())
	}
	err := c.RegisterDelegation(ctx, sd)
	if err == nil {
		return RegisterResult{}, nil
	}
	var e *dcapi.Error
	if !errors.As(err, &e) {
		return RegisterResult{}, err
	}
	msg := strings.ToLower(e.Message)
	switch {
	case e.StatusCode == http.StatusMethodNotAllowed:
		// The live API removed the route (2025-12-21): agents register by
		// setup token only (api/src/openapi/agents.rs).
		return RegisterResult{}, Fixf("register with a setup token instead: make one on "+TokenSource+", then dc-agent register --setup-token file:PATH",
			"the API at %s does not take offline-signed delegations (POST %s answered 405 Method Not Allowed)", c.Endpoint(), e.Path)
	case e.StatusCode == http.StatusConflict || strings.Contains(msg, "already"):
		return RegisterResult{Already: true}, nil
	case strings.Contains(msg, "expired"):
		return RegisterResult{}, Fixf("create a new request (dc-agent delegation request --expires 365d), sign it and register again",
			"the API refused the delegation as expired: %s", e.Message)
	case e.StatusCode == http.StatusNotFound || strings.Contains(msg, "provider") && (strings.Contains(msg, "not found") || strings.Contains(msg, "unknown")):
		return RegisterResult{}, Fixf("check api.endpoint and api.provider_pubkey; the provider must be registered on Decent Cloud first",
			"the API at %s does not know provider %s: %s", c.Endpoint(), c.Provider(), e.Message)
	case strings.Contains(msg, "signature"):
		return RegisterResult{}, Fixf("sign the request this host prints with the provider's own key and paste the result unchanged",
			"the API refused the delegation's signature: %s", e.Message)
	case e.Kind == dcapi.KindRetryable:
		return RegisterResult{}, Fixf("check the network and api.endpoint, then re-run dc-agent register", "the API is unreachable: %v", err)
	case e.Kind == dcapi.KindAuth:
		return RegisterResult{}, WithFix(fmt.Errorf("the API refused the registration: %w", err), dcapi.AuthHint(err))
	}
	return RegisterResult{}, fmt.Errorf("register delegation: %w", err)
}

// DelegationAnswers shape the delegation request this host prints.
type DelegationAnswers struct {
	Provider    string // hex provider public key
	Permissions string // comma-separated ("" = all)
	Expires     string // never, a duration, or RFC 3339
	Label       string
}

// DelegationRequest builds the request for agentPub: the Delegation to
// show field by field and its dcdr1: code.
func DelegationRequest(agentPub string, a DelegationAnswers, now time.Time) (identity.Delegation, string, error) {
	p, err := identity.NormalizePublicKeyHex(a.Provider)
	if err != nil {
		return identity.Delegation{}, "", WithFix(fmt.Errorf("provider public key: %w", err), "copy the 64-hex provider public key from the Decent Cloud dashboard")
	}
	perms := a.Permissions
	if perms == "" {
		perms = strings.Join(identity.AllPermissions, ",")
	}
	ps, err := identity.ParsePermissions(perms)
	if err != nil {
		return identity.Delegation{}, "", fmt.Errorf("permissions: %w", err)
	}
	exp, err := ParseExpiry(a.Expires, now)
	if err != nil {
		return identity.Delegation{}, "", fmt.Errorf("expiry: %w", err)
	}
	d := identity.Delegation{AgentPubkey: agentPub, ProviderPubkey: p, Permissions: ps, ExpiresAtNs: exp, Label: a.Label}
	if err := d.Validate(); err != nil {
		return identity.Delegation{}, "", err
	}
	code, err := d.EncodeRequest()
	return d, code, err
}

// RegisterStep accepts a signed delegation for the agent key, keeps it
// beside the key and registers it with the API. key is read when the step
// runs (an earlier KeyStep may create it). client builds the API client.
func RegisterStep(code string, key *KeyStatus, provider string, client func(k ed25519.PrivateKey) (*dcapi.Client, error), now func() time.Time) Step {
	return Step{ID: "register", Title: "Register the delegation", Run: func(ctx context.Context, r *Reporter) error {
		sd, warns, err := AcceptDelegation(code, key.Pubkey, provider, now())
		if err != nil {
			return err
		}
		for _, w := range warns {
			r.Warn(w, "dc-agent delegation request, sign it again with what is missing, then dc-agent register")
		}
		if err := SaveDelegation(identity.DelegationPath(key.Path), sd); err != nil {
			return fmt.Errorf("keep the delegation: %w", err)
		}
		c, err := client(key.Key)
		if err != nil {
			return err
		}
		if Registered(ctx, c, sd) {
			r.Skip("already registered with %s", c.Endpoint())
			return nil
		}
		res, err := Register(ctx, c, sd)
		if err != nil {
			return err
		}
		if res.Already {
			r.Skip("already registered with %s", c.Endpoint())
		} else {
			r.Changed("registered agent %s with %s", key.Pubkey, c.Endpoint())
		}
		return nil
	}}
}
