package setup

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Registration by setup token, the live Decent Cloud API's only way to
// register an agent: the provider makes a one-time token for an agent pool
// on the dashboard, and the agent sends it with its own public key,
// unsigned: POST /api/v1/agents/setup {token, agentPubkey} → the provider,
// the pool (api/src/openapi/agents.rs setup_agent). A token is good for one
// registration within 24 hours; the server refuses it as "Setup token
// already used", "Setup token expired" or "Invalid setup token"
// (api/src/database/agent_pools.rs validate_and_use_setup_token).

// TokenSource says where a setup token comes from, for every front end.
const TokenSource = "the Decent Cloud dashboard: Agents > your pool > Add Agent"

// TokenFix is the fix of every token refusal.
const TokenFix = "make a new setup token on " + TokenSource + " (one token registers one agent, within 24 hours)"

// Pool is the agent pool a setup token registered the agent into.
type Pool struct {
	ID, Name, Location string
}

func (p Pool) String() string {
	s := p.ID
	if p.Name != "" {
		s = p.Name + " (" + p.ID
		if p.Location != "" {
			s += ", " + p.Location
		}
		s += ")"
	}
	return s
}

// TokenRegistration is what registering by setup token established.
type TokenRegistration struct {
	Endpoint       string
	ProviderPubkey string
	Pool           Pool
	// ProvisionerType is the pool's provisioner (shown, not enforced).
	ProvisionerType string
	Permissions     []string
}

// TokenError is a setup token the API (or its form) refuses: asking for
// another token is the fix. Reason: "malformed", "used", "expired",
// "unknown".
type TokenError struct {
	Reason string
	Err    error
}

func (e *TokenError) Error() string { return e.Err.Error() }
func (e *TokenError) Unwrap() error { return e.Err }

func tokenErr(reason, fix, format string, args ...any) error {
	return &TokenError{Reason: reason, Err: Fixf(fix, format, args...)}
}

// CheckSetupToken checks the form of a typed or pasted setup token
// (apt_<location>_<16 hex> today); what it is not is said plainly.
func CheckSetupToken(s string) error {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return tokenErr("malformed", TokenFix, "required: the setup token from %s", TokenSource)
	case strings.HasPrefix(s, identity.RequestPrefix) || strings.HasPrefix(s, identity.SignedPrefix):
		return tokenErr("malformed", "choose the offline-signed delegation instead, or paste the setup token (apt_...) from "+TokenSource,
			"this is a delegation code, not a setup token")
	case isHexKey(s):
		return tokenErr("malformed", "paste the setup token (apt_...) from "+TokenSource+"; a provider key goes with the offline-signed delegation",
			"this is a 64-hex key, not a setup token")
	case len(s) > 256 || strings.ContainsFunc(s, func(r rune) bool { return r > unicode.MaxASCII || !unicode.IsGraphic(r) || unicode.IsSpace(r) }):
		return tokenErr("malformed", "copy the whole token (apt_...) from "+TokenSource+", without spaces",
			"this is not a setup token: a token is one word of up to 256 ASCII letters, digits and punctuation")
	}
	return nil
}

// ReadSetupToken reads a setup token given as file:PATH (a 0600 file),
// "-" (stdin), or the token itself, and checks its form.
func ReadSetupToken(v string, stdin io.Reader) (string, error) {
	var tok string
	switch {
	case v == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 4096))
		if err != nil {
			return "", fmt.Errorf("read the setup token from stdin: %w", err)
		}
		tok = string(b)
	case strings.HasPrefix(v, "file:"):
		s, err := identity.ReadSecretFile(strings.TrimPrefix(v, "file:"))
		if err != nil {
			return "", WithFix(err, "keep the setup token in a file only you can read: install -m 0600 /dev/null FILE, then paste the token into it")
		}
		tok = s
	default:
		tok = v
	}
	tok = strings.TrimSpace(tok)
	return tok, CheckSetupToken(tok)
}

// RegisterSetupToken registers key's public key at endpoint with a setup
// token, and explains each refusal with its fix.
func RegisterSetupToken(ctx context.Context, endpoint, token string, key ed25519.PrivateKey, userAgent string) (TokenRegistration, error) {
	if err := CheckSetupToken(token); err != nil {
		return TokenRegistration{}, err
	}
	if userAgent == "" {
		userAgent = "dc-agent"
	}
	res, err := dcapi.SetupAgent(ctx, endpoint, dcapi.AgentSetupRequest{Token: strings.TrimSpace(token), AgentPubkey: identity.PublicHex(key)}, dcapi.WithUserAgent(userAgent))
	if err != nil {
		return TokenRegistration{}, explainSetup(err, endpoint)
	}
	u, _ := dcapi.ParseEndpoint(endpoint)
	return TokenRegistration{Endpoint: u.String(), ProviderPubkey: res.ProviderPubkey,
		Pool:            Pool{ID: res.PoolID, Name: res.PoolName, Location: res.PoolLocation},
		ProvisionerType: res.ProvisionerType, Permissions: res.Permissions}, nil
}

// explainSetup turns a refused setup into one clear message with its fix.
func explainSetup(err error, endpoint string) error {
	var e *dcapi.Error
	if !errors.As(err, &e) {
		return err
	}
	msg := strings.ToLower(e.Message)
	switch {
	case strings.Contains(msg, "already used"):
		return tokenErr("used", TokenFix, "the setup token was already used: each token registers one agent, once")
	case strings.Contains(msg, "expired"):
		return tokenErr("expired", TokenFix, "the setup token has expired (a token is valid for 24 hours after it was made)")
	case strings.Contains(msg, "invalid setup token"):
		return tokenErr("unknown", "copy the whole token (apt_...) from "+TokenSource+", and check --api-endpoint: a token works only on the API it was made on",
			"the API at %s does not know this setup token", endpoint)
	case e.StatusCode == http.StatusNotFound || e.StatusCode == http.StatusMethodNotAllowed:
		return Fixf("use an API that registers agents by setup token (the Decent Cloud API does), or register with an offline-signed delegation (dc-agent register --delegation)",
			"the API at %s has no setup-token registration (POST %s%s answered %d)", endpoint, dcapi.APIPrefix, dcapi.SetupPath, e.StatusCode)
	case e.Kind == dcapi.KindRetryable:
		return Fixf("check the network and the API endpoint, then try again: the token is not used until the API answers", "the API at %s did not answer: %v", endpoint, err)
	}
	return WithFix(fmt.Errorf("the API refused the setup token: %w", err), "check the API endpoint; if the token is right, "+TokenFix)
}

// TokenStepOptions are what registering by setup token needs.
type TokenStepOptions struct {
	ConfigPath, KeyPath, Endpoint string
	// Token is the setup token; "" keeps the registration the config
	// already holds for this agent key.
	Token     string
	UserAgent string
	// Key is the agent key, filled by the key step before this one runs.
	Key *KeyStatus
	// Result is filled with the registration.
	Result *TokenRegistration
}

// TokenStep registers the agent key with the setup token and writes the
// provider and pool into the config's [api] at once (the rest of the
// config is kept), so a setup stopped later keeps what the one-time token
// bought. It is done already when the config holds a registration of this
// agent key at this endpoint and the token is empty or was used.
func TokenStep(o TokenStepOptions) Step {
	return Step{ID: "setup-token", Title: "Register with the setup token", Run: func(ctx context.Context, r *Reporter) error {
		kept, hasKept := KeptRegistration(o.ConfigPath, o.KeyPath, o.Endpoint)
		hasKept = hasKept && o.Key != nil && !o.Key.Created
		if strings.TrimSpace(o.Token) == "" {
			if !hasKept {
				return tokenErr("malformed", TokenFix, "no setup token, and %s holds no registration of this agent at %s", o.ConfigPath, o.Endpoint)
			}
			*o.Result = kept
			r.Skip("registered already: pool %s of provider %s", kept.Pool, kept.ProviderPubkey)
			return nil
		}
		reg, err := RegisterSetupToken(ctx, o.Endpoint, o.Token, o.Key.Key, o.UserAgent)
		var te *TokenError
		if errors.As(err, &te) && te.Reason == "used" && hasKept {
			*o.Result = kept
			r.Skip("the setup token is used, and this agent is registered already: pool %s of provider %s", kept.Pool, kept.ProviderPubkey)
			return nil
		}
		if err != nil {
			return err
		}
		*o.Result = reg
		if _, err := SaveRegistration(o.ConfigPath, o.KeyPath, reg); err != nil {
			return WithFix(fmt.Errorf("the agent is registered (pool %s of provider %s), but writing %s failed: %w", reg.Pool, reg.ProviderPubkey, o.ConfigPath, err),
				"make the config writable and re-run: the registration is kept by the API, but the used token cannot be sent again, so a re-run needs a new token")
		}
		r.Changed("registered agent %s in pool %s of provider %s", o.Key.Pubkey, reg.Pool, reg.ProviderPubkey)
		return nil
	}}
}

// KeptRegistration is the setup-token registration the config at path
// holds for the agent key at keyPath and this endpoint, if any.
func KeptRegistration(path, keyPath, endpoint string) (TokenRegistration, bool) {
	cfg, _, err := LoadForUpdate(path)
	if err != nil || cfg.API.PoolID == "" || cfg.API.ProviderPubkey == "" || cfg.API.AgentSecretKey == "" {
		return TokenRegistration{}, false
	}
	cfg.Path = path
	if cfg.AgentKeyPath() != keyPath || !sameEndpoint(cfg.API.Endpoint, endpoint) {
		return TokenRegistration{}, false
	}
	return TokenRegistration{Endpoint: cfg.API.Endpoint, ProviderPubkey: cfg.API.ProviderPubkey,
		Pool: Pool{ID: cfg.API.PoolID, Name: cfg.API.PoolName, Location: cfg.API.PoolLocation}}, true
}

func sameEndpoint(a, b string) bool {
	ua, err1 := dcapi.ParseEndpoint(a)
	ub, err2 := dcapi.ParseEndpoint(b)
	return err1 == nil && err2 == nil && ua.String() == ub.String()
}

// SaveRegistration writes a setup-token registration into the config's
// [api] (endpoint, provider, agent key, pool), keeping everything else;
// a config that does not exist yet gets [api] only. It reports whether
// the file changed.
func SaveRegistration(path, keyPath string, reg TokenRegistration) (bool, error) {
	cfg, old, err := LoadForUpdate(path)
	if err != nil {
		return false, err
	}
	cfg.API.Endpoint, cfg.API.ProviderPubkey, cfg.API.AgentSecretKey = reg.Endpoint, reg.ProviderPubkey, keyPath
	setPool(cfg, reg.Pool)
	_, changed, err := writeConfig(path, old, cfg)
	return changed, err
}

func isHexKey(s string) bool { _, err := identity.ParsePublicKeyHex(s); return err == nil }
