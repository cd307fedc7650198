package dcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/decent-stuff/dc-agent/identity"
)

// SetupPath is the registration by setup token: an agent registers its own
// key with a provider's one-time token, unsigned (the token is the proof).
// Live API: api/src/openapi/agents.rs setup_agent.
const SetupPath = "/agents/setup"

// SetupAgent registers agentPubkey at endpoint with a one-time setup token:
// POST /api/v1/agents/setup {token, agentPubkey}, unsigned. The answer names
// the provider and the pool the agent now belongs to. The token is sent in
// the body only; it is never logged. A refusal is an *Error carrying the
// server's message ("Setup token already used", "… expired", "Invalid setup
// token" on the live server).
func SetupAgent(ctx context.Context, endpoint string, req AgentSetupRequest, opts ...Option) (AgentSetupResponse, error) {
	u, err := ParseEndpoint(endpoint)
	if err != nil {
		return AgentSetupResponse{}, err
	}
	c := unsignedClient(u, opts)
	raw, err := json.Marshal(req)
	if err != nil {
		return AgentSetupResponse{}, fmt.Errorf("encode the setup request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	target := *c.base
	target.Path = c.base.Path + APIPrefix + SetupPath
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), bytes.NewReader(raw))
	if err != nil {
		return AgentSetupResponse{}, fmt.Errorf("build the setup request: %w", err)
	}
	// poem-openapi refuses a JSON body without this header (415).
	hr.Header.Set("Content-Type", "application/json")
	r, data, err := c.roundTrip(hr, http.MethodPost, SetupPath)
	if err != nil {
		return AgentSetupResponse{}, err
	}
	return ParseSetupResponse(r.StatusCode, r.Header, data, c.now)
}

// Bounds of what a setup answer may hold: the pool's id goes into the
// config and its name and location are shown on status screens.
const (
	maxPoolID   = 128
	maxPoolText = 256
)

// ParseSetupResponse reads the answer to POST /agents/setup: a refusal in
// either style (status code, or HTTP 200 success:false) as an *Error, else
// the answer, checked: the provider key is 64 hex characters (returned
// lowercase), the pool id is a short token of letters, digits and . _ : -, and the
// pool's name and location are short printable text. now reads Retry-After
// dates (nil: time.Now).
func ParseSetupResponse(status int, header http.Header, body []byte, now func() time.Time) (AgentSetupResponse, error) {
	if now == nil {
		now = time.Now
	}
	var out AgentSetupResponse
	if err := decodeResponse(http.MethodPost, SetupPath, status, header, body, &out, now); err != nil {
		return AgentSetupResponse{}, err
	}
	bad := func(format string, args ...any) (AgentSetupResponse, error) {
		return AgentSetupResponse{}, &Error{Method: http.MethodPost, Path: SetupPath, StatusCode: status, Kind: KindPermanent,
			Message: "the API's answer to the setup token is not usable: " + fmt.Sprintf(format, args...)}
	}
	p, err := identity.NormalizePublicKeyHex(out.ProviderPubkey)
	if err != nil {
		return bad("providerPubkey: %v", err)
	}
	out.ProviderPubkey = p
	if out.PoolID == "" || len(out.PoolID) > maxPoolID || strings.ContainsFunc(out.PoolID, func(r rune) bool { return !isIDRune(r) }) {
		return bad("poolId %q must be 1 to %d letters, digits, '.', '_', ':' or '-'", clipText(out.PoolID), maxPoolID)
	}
	for _, f := range []struct{ name, v string }{{"poolName", out.PoolName}, {"poolLocation", out.PoolLocation}, {"provisionerType", out.ProvisionerType}} {
		if !printable(f.v) || utf8.RuneCountInString(f.v) > maxPoolText {
			return bad("%s %q must be printable text of at most %d characters", f.name, clipText(f.v), maxPoolText)
		}
	}
	for _, perm := range out.Permissions {
		if !printable(perm) || len(perm) > 64 {
			return bad("permission %q is not a permission name", clipText(perm))
		}
	}
	return out, nil
}

// isIDRune: the characters of a pool id (live: "<dc code>-<8 hex>", dc-api: a UUID).
func isIDRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._:-", r)
}

// printable: valid UTF-8 without control or format characters (nothing that
// could move a terminal's cursor or hide text).
func printable(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool {
		return unicode.IsControl(r) || unicode.Is(unicode.Cf, r)
	})
}

// clipText shortens s for an error message and quotes nothing itself.
func clipText(s string) string {
	if len(s) <= 80 {
		return s
	}
	cut := 80
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
