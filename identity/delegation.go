package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Agent permissions (PROTOCOL.md §3).
const (
	PermProvision      = "provision"
	PermHealthCheck    = "health_check"
	PermHeartbeat      = "heartbeat"
	PermFetchContracts = "fetch_contracts"
)

// AllPermissions is every permission an agent can be granted, sorted.
var AllPermissions = []string{PermFetchContracts, PermHealthCheck, PermHeartbeat, PermProvision}

// KnownPermission reports whether p may appear in a delegation this agent signs.
func KnownPermission(p string) bool { return slices.Contains(AllPermissions, p) }

const (
	delegationHeader   = "decent-cloud agent delegation v1"
	RequestPrefix      = "dcdr1:"
	SignedPrefix       = "dcds1:"
	MaxLabelRunes      = 64
	delegationNever    = "never"
	maxDelegationBytes = 4096
)

// Delegation is what a provider's main key grants an agent key.
type Delegation struct {
	AgentPubkey    string   // lowercase hex
	ProviderPubkey string   // lowercase hex
	Permissions    []string // sorted, unique, known
	ExpiresAtNs    *int64   // nil = never
	// IssuedAtNs is when the provider signed it (`dc-agent delegation sign`
	// stamps it). nil: a code of the older form, without the line; it
	// still verifies, but cannot replace a delegation issued later
	// (PROTOCOL.md §3).
	IssuedAtNs *int64
	Label      string
}

// SignedDelegation is a Delegation with the provider's signature over its
// canonical text.
type SignedDelegation struct {
	Delegation
	Signature []byte
}

// ParsePermissions splits a comma-separated list, sorts it and validates it.
func ParsePermissions(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		out = append(out, p)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if err := validatePermissions(out); err != nil {
		return nil, err
	}
	return out, nil
}

func validatePermissions(perms []string) error {
	if len(perms) == 0 {
		return errors.New("a delegation needs at least one permission (" + strings.Join(AllPermissions, ",") + ")")
	}
	for i, p := range perms {
		if !KnownPermission(p) {
			return fmt.Errorf("unknown permission %q; known: %s", p, strings.Join(AllPermissions, ","))
		}
		if i > 0 && perms[i-1] >= p {
			return errors.New("permissions must be sorted ascending without duplicates")
		}
	}
	return nil
}

// ValidateLabel checks the label rules of the canonical text.
func ValidateLabel(label string) error {
	if !utf8.ValidString(label) {
		return errors.New("label is not valid UTF-8")
	}
	if n := utf8.RuneCountInString(label); n > MaxLabelRunes {
		return fmt.Errorf("label is %d characters; at most %d", n, MaxLabelRunes)
	}
	for _, r := range label {
		if unicode.IsControl(r) {
			return fmt.Errorf("label must not contain control characters (found %U; newline, tab, ...)", r)
		}
		// Format characters (bidi overrides, zero-width) and line/paragraph
		// separators would let a label change how the other fields look
		// on the screen where the provider decides to sign.
		if unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp) {
			return fmt.Errorf("label must not contain invisible or layout characters (found %U)", r)
		}
	}
	return nil
}

func validateKeyHex(what, s string) error {
	if !IsLowerHex64(s) {
		return fmt.Errorf("%s key must be 64 lowercase hex characters", what)
	}
	return nil
}

// IsLowerHex64 reports whether s is 64 lowercase hex characters: the form
// of public keys, contract ids and SHA-256 sums on the wire.
func IsLowerHex64(s string) bool { return len(s) == 64 && isLowerHex(s) }

func isLowerHex(s string) bool {
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Validate checks every field against PROTOCOL.md §3.
func (d Delegation) Validate() error {
	if err := validateKeyHex("agent", d.AgentPubkey); err != nil {
		return err
	}
	if err := validateKeyHex("provider", d.ProviderPubkey); err != nil {
		return err
	}
	if err := validatePermissions(d.Permissions); err != nil {
		return err
	}
	if d.ExpiresAtNs != nil && *d.ExpiresAtNs <= 0 {
		return errors.New("expires_at_ns must be a positive number of nanoseconds")
	}
	if d.IssuedAtNs != nil && *d.IssuedAtNs <= 0 {
		return errors.New("issued_at_ns must be a positive number of nanoseconds")
	}
	return ValidateLabel(d.Label)
}

// CanonicalText returns the exact bytes the provider's main key signs.
func (d Delegation) CanonicalText() ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	exp := delegationNever
	if d.ExpiresAtNs != nil {
		exp = strconv.FormatInt(*d.ExpiresAtNs, 10)
	}
	var b strings.Builder
	b.WriteString(delegationHeader + "\n")
	b.WriteString("agent: " + d.AgentPubkey + "\n")
	b.WriteString("provider: " + d.ProviderPubkey + "\n")
	b.WriteString("permissions: " + strings.Join(d.Permissions, ",") + "\n")
	b.WriteString("expires_at_ns: " + exp + "\n")
	if d.IssuedAtNs != nil {
		b.WriteString("issued_at_ns: " + strconv.FormatInt(*d.IssuedAtNs, 10) + "\n")
	}
	b.WriteString("label: " + d.Label + "\n")
	return []byte(b.String()), nil
}

// Expired reports whether the delegation has expired at now.
func (d Delegation) Expired(now time.Time) bool {
	return d.ExpiresAtNs != nil && now.UnixNano() >= *d.ExpiresAtNs
}

// ExpiresAt is the expiry as a time, or the zero time for never.
func (d Delegation) ExpiresAt() time.Time {
	if d.ExpiresAtNs == nil {
		return time.Time{}
	}
	return time.Unix(0, *d.ExpiresAtNs)
}

// Issued is IssuedAtNs, or 0 for a code of the older form without it:
// older than any stamped one.
func (d Delegation) Issued() int64 {
	if d.IssuedAtNs == nil {
		return 0
	}
	return *d.IssuedAtNs
}

// Has reports whether the delegation grants perm.
func (d Delegation) Has(perm string) bool { return slices.Contains(d.Permissions, perm) }

// Summary is the human-readable rendering shown before signing or accepting.
func (d Delegation) Summary() string {
	exp := "never"
	if d.ExpiresAtNs != nil {
		exp = d.ExpiresAt().UTC().Format(time.RFC3339) + " (" + strconv.FormatInt(*d.ExpiresAtNs, 10) + " ns)"
	}
	issued := "(not stamped: an older code)"
	if d.IssuedAtNs != nil {
		issued = time.Unix(0, *d.IssuedAtNs).UTC().Format(time.RFC3339) + " (" + strconv.FormatInt(*d.IssuedAtNs, 10) + " ns)"
	}
	label := d.Label
	if label == "" {
		label = "(none)"
	}
	return fmt.Sprintf("  agent key:    %s\n  provider key: %s\n  permissions:  %s\n  expires:      %s\n  issued:       %s\n  label:        %s\n",
		d.AgentPubkey, d.ProviderPubkey, strings.Join(d.Permissions, ", "), exp, issued, label)
}

// ParseCanonicalText parses canonical delegation text strictly: anything that
// would not re-encode to the same bytes is refused.
func ParseCanonicalText(text []byte) (Delegation, error) {
	var d Delegation
	if len(text) > maxDelegationBytes {
		return d, errors.New("delegation text is too long")
	}
	if !utf8.Valid(text) {
		return d, errors.New("delegation text is not valid UTF-8")
	}
	s := string(text)
	if !strings.HasSuffix(s, "\n") {
		return d, errors.New("delegation text must end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != 6 && len(lines) != 7 {
		return d, fmt.Errorf("delegation text has %d lines, want 6 (or 7 with issued_at_ns)", len(lines))
	}
	if lines[0] != delegationHeader {
		return d, fmt.Errorf("delegation text must start with %q", delegationHeader)
	}
	fields := []string{"agent", "provider", "permissions", "expires_at_ns", "label"}
	if len(lines) == 7 {
		fields = []string{"agent", "provider", "permissions", "expires_at_ns", "issued_at_ns", "label"}
	}
	vals := make(map[string]string, len(fields))
	for i, f := range fields {
		v, ok := strings.CutPrefix(lines[i+1], f+": ")
		if !ok {
			if f == "issued_at_ns" {
				return d, fmt.Errorf("line %d must start with %q (a text of 7 lines has issued_at_ns after expires_at_ns)", i+2, f+": ")
			}
			return d, fmt.Errorf("line %d must start with %q", i+2, f+": ")
		}
		vals[f] = v
	}
	d.AgentPubkey, d.ProviderPubkey, d.Label = vals["agent"], vals["provider"], vals["label"]
	if vals["permissions"] != "" {
		d.Permissions = strings.Split(vals["permissions"], ",")
	}
	if v := vals["expires_at_ns"]; v != delegationNever {
		n, err := parseCanonicalInt(v)
		if err != nil {
			return d, fmt.Errorf("expires_at_ns %q is neither a decimal number nor %q", v, delegationNever)
		}
		d.ExpiresAtNs = &n
	}
	if v, ok := vals["issued_at_ns"]; ok {
		n, err := parseCanonicalInt(v)
		if err != nil {
			return d, fmt.Errorf("issued_at_ns %q is not a decimal number", v)
		}
		d.IssuedAtNs = &n
	}
	if err := d.Validate(); err != nil {
		return Delegation{}, err
	}
	return d, nil
}

// parseCanonicalInt parses a decimal int64 in its one canonical spelling.
func parseCanonicalInt(v string) (int64, error) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != v {
		return 0, errors.New("not canonical")
	}
	return n, nil
}

// EncodeRequest returns the dcdr1: code the agent host shows the provider.
func (d Delegation) EncodeRequest() (string, error) {
	text, err := d.CanonicalText()
	if err != nil {
		return "", err
	}
	return RequestPrefix + base64.RawURLEncoding.EncodeToString(text), nil
}

// DecodeRequest parses a dcdr1: code.
func DecodeRequest(code string) (Delegation, error) {
	text, err := decodeCode(code, RequestPrefix, "delegation request")
	if err != nil {
		return Delegation{}, err
	}
	const truncated = "delegation request is truncated; copy the whole dcdr1: code again"
	if n := bytes.Count(text, []byte("\n")); n < 6 || n == 6 && !bytes.HasSuffix(text, []byte("\n")) {
		return Delegation{}, errors.New(truncated)
	}
	if lines := strings.Split(string(text), "\n"); len(lines) == 7 && strings.HasPrefix(lines[5], "issued_at_ns: ") {
		return Delegation{}, errors.New(truncated) // the label line is missing
	}
	d, err := ParseCanonicalText(text)
	if err != nil {
		return Delegation{}, fmt.Errorf("delegation request: %w", err)
	}
	return d, nil
}

func decodeCode(code, prefix, what string) ([]byte, error) {
	code = strings.TrimSpace(code)
	rest, ok := strings.CutPrefix(code, prefix)
	if !ok {
		other := SignedPrefix
		if prefix == SignedPrefix {
			other = RequestPrefix
		}
		if strings.HasPrefix(code, other) {
			return nil, fmt.Errorf("this is a %s code, expected a %s (starting with %q)", codeKind(other), what, prefix)
		}
		return nil, fmt.Errorf("%s must start with %q", what, prefix)
	}
	if len(rest) > maxDelegationBytes*2 {
		return nil, fmt.Errorf("%s is too long", what)
	}
	if rest == "" {
		return nil, fmt.Errorf("%s %q is empty after the prefix; copy the whole code again", what, prefix)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil {
		return nil, fmt.Errorf("%s is truncated or corrupted (base64: %v); copy the whole code again", what, err)
	}
	return b, nil
}

func codeKind(prefix string) string {
	if prefix == SignedPrefix {
		return "signed delegation"
	}
	return "delegation request"
}

// Sign signs the delegation with the provider main key. The key must be the
// delegation's provider key.
func (d Delegation) Sign(main ed25519.PrivateKey) (SignedDelegation, error) {
	text, err := d.CanonicalText()
	if err != nil {
		return SignedDelegation{}, err
	}
	if got := PublicHex(main); got != d.ProviderPubkey {
		return SignedDelegation{}, fmt.Errorf("this main key is %s but the request names provider %s; sign with the provider's own key", got, d.ProviderPubkey)
	}
	return SignedDelegation{Delegation: d, Signature: Sign(main, text)}, nil
}

// Verify checks the provider's signature over the canonical text.
func (s SignedDelegation) Verify() error {
	text, err := s.CanonicalText()
	if err != nil {
		return err
	}
	pub, err := ParsePublicKeyHex(s.ProviderPubkey)
	if err != nil {
		return err
	}
	if !Verify(pub, text, s.Signature) {
		return errors.New("signature does not verify against the provider key: the delegation was altered or signed by another key")
	}
	return nil
}

// SignatureHex is the wire form of the signature.
func (s SignedDelegation) SignatureHex() string { return hex.EncodeToString(s.Signature) }

// Encode returns the dcds1: code.
func (s SignedDelegation) Encode() (string, error) {
	text, err := s.CanonicalText()
	if err != nil {
		return "", err
	}
	payload := append(text, s.SignatureHex()+"\n"...)
	return SignedPrefix + base64.RawURLEncoding.EncodeToString(payload), nil
}

// DecodeSigned parses a dcds1: code strictly and verifies its signature.
func DecodeSigned(code string) (SignedDelegation, error) {
	payload, err := decodeCode(code, SignedPrefix, "signed delegation")
	if err != nil {
		return SignedDelegation{}, err
	}
	const truncated = "signed delegation is truncated"
	const again = "; copy the whole dcds1: code again"
	s := string(payload)
	// The canonical text's six lines (seven when its sixth is
	// issued_at_ns), then the signature.
	lines := strings.SplitAfter(s, "\n")
	if last := lines[len(lines)-1]; last == "" {
		lines = lines[:len(lines)-1]
	}
	want := 7
	if len(lines) >= 6 && strings.HasPrefix(lines[5], "issued_at_ns: ") {
		want = 8
	}
	switch {
	case len(lines) < want || len(lines) == want && !strings.HasSuffix(s, "\n"):
		return SignedDelegation{}, errors.New(truncated + again)
	case len(lines) > want || !strings.HasSuffix(s, "\n"):
		return SignedDelegation{}, errors.New("signed delegation has extra content after the signature line" + again)
	}
	sigHex := strings.TrimSuffix(lines[want-1], "\n")
	text := strings.Join(lines[:want-1], "")
	if !isLowerHex(sigHex) {
		return SignedDelegation{}, errors.New("signed delegation: the signature line is not lowercase hex" + again)
	}
	if len(sigHex) < 2*ed25519.SignatureSize {
		return SignedDelegation{}, fmt.Errorf("%s: the signature has %d of %d hex characters%s", truncated, len(sigHex), 2*ed25519.SignatureSize, again)
	}
	sig, err := ParseSignatureHex(sigHex)
	if err != nil {
		return SignedDelegation{}, fmt.Errorf("signed delegation: %w", err)
	}
	d, err := ParseCanonicalText([]byte(text))
	if err != nil {
		return SignedDelegation{}, fmt.Errorf("signed delegation: %w", err)
	}
	sd := SignedDelegation{Delegation: d, Signature: sig}
	if err := sd.Verify(); err != nil {
		return SignedDelegation{}, fmt.Errorf("signed delegation: %w", err)
	}
	return sd, nil
}

// DecodeAny parses either a dcdr1: request or a dcds1: signed delegation.
// signed is nil for a request.
func DecodeAny(code string) (Delegation, *SignedDelegation, error) {
	code = strings.TrimSpace(code)
	if strings.HasPrefix(code, SignedPrefix) {
		sd, err := DecodeSigned(code)
		if err != nil {
			return Delegation{}, nil, err
		}
		return sd.Delegation, &sd, nil
	}
	if !strings.HasPrefix(code, RequestPrefix) {
		return Delegation{}, nil, fmt.Errorf("a delegation code starts with %q (request) or %q (signed); copy the whole code", RequestPrefix, SignedPrefix)
	}
	d, err := DecodeRequest(code)
	return d, nil, err
}
