package dcapi

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Kind classifies an API error by what the caller should do about it.
type Kind int

const (
	// KindPermanent: the request is wrong or refused; retrying the same
	// request will not help (4xx other than auth, or success:false).
	KindPermanent Kind = iota
	// KindRetryable: the server or network had a problem (5xx, 429,
	// timeouts, connection errors); retry with backoff.
	KindRetryable
	// KindAuth: 401/403: the key, delegation or permission is wrong; retrying
	// will not help until a human fixes the delegation.
	KindAuth
	// KindNotFound: 404; for extension endpoints it means "not supported".
	KindNotFound
)

func (k Kind) String() string {
	switch k {
	case KindRetryable:
		return "retryable"
	case KindAuth:
		return "auth"
	case KindNotFound:
		return "not found"
	default:
		return "permanent"
	}
}

// Error is every error the client returns for a request that reached the
// network layer.
type Error struct {
	Method     string
	Path       string
	StatusCode int // 0 for transport errors
	Message    string
	Kind       Kind
	RetryAfter time.Duration // from a Retry-After header, if any
	Err        error         // underlying transport error, if any
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: ", e.Method, e.Path)
	switch {
	case e.StatusCode == 0 && e.Err != nil:
		b.WriteString(e.Err.Error())
	case e.Message != "":
		fmt.Fprintf(&b, "%d %s", e.StatusCode, e.Message)
	default:
		fmt.Fprintf(&b, "%d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func kindOf(err error) (Kind, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind, true
	}
	return 0, false
}

// IsAuth reports whether err is a 401/403 from the server.
func IsAuth(err error) bool { k, ok := kindOf(err); return ok && k == KindAuth }

// IsRetryable reports whether err is worth retrying with backoff.
func IsRetryable(err error) bool { k, ok := kindOf(err); return ok && k == KindRetryable }

// IsNotFound reports whether err is a 404.
func IsNotFound(err error) bool { k, ok := kindOf(err); return ok && k == KindNotFound }

// IsPermanent reports whether err is a refusal that retrying will not change.
func IsPermanent(err error) bool { k, ok := kindOf(err); return ok && k == KindPermanent }

// StatusCode returns the HTTP status of an API error, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.StatusCode
	}
	return 0
}

// SetupTokenFix is how an agent is (re)registered on the live API, which
// registers agents by setup token only (api/src/openapi/agents.rs).
const SetupTokenFix = "re-register the agent with a setup token from the Decent Cloud dashboard (your agent pool → setup token): dc-agent register --setup-token TOKEN"

// AuthHint explains an auth refusal in terms of the delegation, with the
// command that fixes it. It returns "" for other errors.
func AuthHint(err error) string {
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindAuth {
		return ""
	}
	msg := strings.ToLower(e.Message)
	switch {
	case strings.Contains(msg, "must belong to a pool"):
		// Live: a delegation without a pool gets no contracts (providers.rs).
		return "the API serves contracts only to agents registered into an agent pool; " + SetupTokenFix
	case strings.Contains(msg, "revoked"):
		return "the agent's delegation was revoked by the provider; " + SetupTokenFix + " (or, where the API takes them, an offline-signed delegation: dc-agent delegation request, sign it offline, then dc-agent register)"
	case strings.Contains(msg, "expired"):
		return "the agent's delegation has expired; " + SetupTokenFix + " (or, where the API takes them, a new offline-signed delegation: dc-agent delegation request, sign it offline, then dc-agent register)"
	case strings.Contains(msg, "timestamp"):
		return "this machine's clock is off by more than 5 minutes; fix time sync (timedatectl set-ntp true) and restart"
	case e.StatusCode == http.StatusOK && (strings.Contains(msg, "permission") || strings.Contains(msg, "delegat") || strings.Contains(msg, "unauthorized")):
		// Live answers permission and ownership refusals as HTTP 200
		// success:false (require_permission, api/src/auth.rs); a setup
		// token grants every permission.
		return "the API refused this agent's delegation for the action; " + SetupTokenFix
	case e.StatusCode == http.StatusForbidden || strings.Contains(msg, "permission"):
		return "the agent's delegation lacks a permission this action needs; " + SetupTokenFix + " (or re-delegate with all permissions: dc-agent delegation request --permissions provision,health_check,heartbeat,fetch_contracts)"
	case strings.Contains(msg, "delegation"):
		return "the API knows no delegation for this agent key; " + SetupTokenFix + " (or, where the API takes them: dc-agent register --delegation file:PATH; check with dc-agent doctor --verify-api)"
	default:
		return "the API refused the agent's signature; check the key and provider in the config with: dc-agent doctor --verify-api"
	}
}

// classify maps an HTTP status to a Kind.
func classify(status int) Kind {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return KindAuth
	case status == http.StatusNotFound:
		return KindNotFound
	case status == http.StatusTooManyRequests || status == http.StatusRequestTimeout || status >= 500:
		return KindRetryable
	default:
		return KindPermanent
	}
}
