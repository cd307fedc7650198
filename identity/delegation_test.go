package identity

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func testDelegation(t testing.TB) (Delegation, ed25519.PrivateKey) {
	t.Helper()
	main := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	agent := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	exp := int64(1893456000000000000)
	return Delegation{
		AgentPubkey:    PublicHex(agent),
		ProviderPubkey: PublicHex(main),
		Permissions:    []string{PermFetchContracts, PermHeartbeat},
		ExpiresAtNs:    &exp,
		Label:          "rack-1",
	}, main
}

func TestCanonicalTextRoundTrip(t *testing.T) {
	d, _ := testDelegation(t)
	text, err := d.CanonicalText()
	if err != nil {
		t.Fatal(err)
	}
	want := "decent-cloud agent delegation v1\nagent: " + d.AgentPubkey + "\nprovider: " + d.ProviderPubkey +
		"\npermissions: fetch_contracts,heartbeat\nexpires_at_ns: 1893456000000000000\nlabel: rack-1\n"
	if string(text) != want {
		t.Fatalf("text\n%q\nwant\n%q", text, want)
	}
	back, err := ParseCanonicalText(text)
	if err != nil || !sameDelegation(back, d) {
		t.Fatalf("parse: %+v, %v", back, err)
	}
	d.ExpiresAtNs = nil
	text, _ = d.CanonicalText()
	if !strings.Contains(string(text), "\nexpires_at_ns: never\n") {
		t.Fatalf("never expiry: %q", text)
	}
}

// Every way canonical text can deviate from the one exact form is refused,
// with a message naming what is wrong.
func TestParseCanonicalTextStrict(t *testing.T) {
	d, _ := testDelegation(t)
	good, _ := d.CanonicalText()
	g := string(good)
	replace := func(old, new string) string {
		if !strings.Contains(g, old) {
			t.Fatalf("test setup: %q not in text", old)
		}
		return strings.Replace(g, old, new, 1)
	}
	cases := []struct{ name, text, want string }{
		{"no final newline", strings.TrimSuffix(g, "\n"), "end with a newline"},
		{"extra line", g + "extra: 1\n", `line 6 must start with "issued_at_ns: "`},
		{"blank line", g + "\n", `line 6 must start with "issued_at_ns: "`},
		{"two extra lines", g + "extra: 1\nextra: 2\n", "8 lines, want 6 (or 7 with issued_at_ns)"},
		{"missing line", replace("label: rack-1\n", ""), "5 lines, want 6"},
		{"issued after label", g + "issued_at_ns: 5\n", `line 6 must start with "issued_at_ns: "`},
		{"issued before expiry", replace("expires_at_ns: ", "issued_at_ns: 5\nexpires_at_ns: "), `line 5 must start with "expires_at_ns: "`},
		{"issued leading zero", replace("label: ", "issued_at_ns: 05\nlabel: "), "issued_at_ns \"05\" is not a decimal number"},
		{"issued zero", replace("label: ", "issued_at_ns: 0\nlabel: "), "issued_at_ns must be a positive"},
		{"issued negative", replace("label: ", "issued_at_ns: -1\nlabel: "), "issued_at_ns must be a positive"},
		{"issued never", replace("label: ", "issued_at_ns: never\nlabel: "), "is not a decimal number"},
		{"issued empty", replace("label: ", "issued_at_ns: \nlabel: "), "is not a decimal number"},
		{"wrong header", replace("delegation v1", "delegation v2"), "must start with"},
		{"CRLF", strings.ReplaceAll(g, "\n", "\r\n"), ""},
		{"field order", replace("agent: ", "agentx: "), `line 2 must start with "agent: "`},
		{"space before value", replace("agent: ", "agent:  "), "agent key must be 64 lowercase hex"},
		{"upper-case key", replace("agent: "+d.AgentPubkey, "agent: "+strings.ToUpper(d.AgentPubkey)), "agent key must be 64 lowercase hex"},
		{"short provider", replace(d.ProviderPubkey, d.ProviderPubkey[:62]), "provider key must be 64"},
		{"unsorted permissions", replace("fetch_contracts,heartbeat", "heartbeat,fetch_contracts"), "sorted ascending"},
		{"duplicate permission", replace("fetch_contracts,heartbeat", "heartbeat,heartbeat"), "sorted ascending without duplicates"},
		{"unknown permission", replace("fetch_contracts,heartbeat", "dns_manage"), `unknown permission "dns_manage"`},
		{"space in permissions", replace("fetch_contracts,heartbeat", "fetch_contracts, heartbeat"), `unknown permission " heartbeat"`},
		{"no permissions", replace("fetch_contracts,heartbeat", ""), "at least one permission"},
		{"expiry with plus", replace("1893456000000000000", "+1893456000000000000"), "neither a decimal number"},
		{"expiry leading zero", replace("1893456000000000000", "01893456000000000000"), "neither a decimal number"},
		{"expiry zero", replace("1893456000000000000", "0"), "positive"},
		{"expiry negative", replace("1893456000000000000", "-5"), "positive"},
		{"expiry NEVER", replace("1893456000000000000", "NEVER"), "neither a decimal number"},
		{"expiry overflow", replace("1893456000000000000", "99999999999999999999"), "neither a decimal number"},
		{"label tab", replace("rack-1", "rack\t1"), "control characters"},
		{"label bidi override", replace("rack-1", "rack\u202e1"), "invisible or layout"},
		{"label zero width", replace("rack-1", "ra\u200bck"), "invisible or layout"},
		{"label line separator", replace("rack-1", "rack\u20281"), "invisible or layout"},
		{"label too long", replace("rack-1", strings.Repeat("é", 65)), "65 characters; at most 64"},
		{"invalid utf-8", replace("rack-1", "rack\xff"), "not valid UTF-8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseCanonicalText([]byte(c.text))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.text)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not mention %q", err, c.want)
			}
		})
	}
	// 64 characters of any width are fine.
	if _, err := ParseCanonicalText([]byte(replace("rack-1", strings.Repeat("東", 64)))); err != nil {
		t.Fatal(err)
	}
}

func TestSignedCodeRoundTripAndTamper(t *testing.T) {
	d, main := testDelegation(t)
	sd, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	code, err := sd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(code, SignedPrefix) || strings.ContainsAny(code, "=+/") {
		t.Fatalf("code %s is not dcds1: + unpadded base64url", code)
	}
	got, err := DecodeSigned("  " + code + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if !sameDelegation(got.Delegation, d) || !bytes.Equal(got.Signature, sd.Signature) {
		t.Fatalf("decoded %+v", got)
	}
	// Either form decodes through DecodeAny.
	if _, s, err := DecodeAny(code); err != nil || s == nil {
		t.Fatalf("DecodeAny(signed): %v", err)
	}
	req, _ := d.EncodeRequest()
	if _, s, err := DecodeAny(req); err != nil || s != nil {
		t.Fatalf("DecodeAny(request): %v", err)
	}
	if _, _, err := DecodeAny("hello"); err == nil || !strings.Contains(err.Error(), `starts with "dcdr1:" (request) or "dcds1:" (signed)`) {
		t.Fatalf("DecodeAny(garbage): %v", err)
	}

	payload, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(code, SignedPrefix))
	reencode := func(p string) string { return SignedPrefix + base64.RawURLEncoding.EncodeToString([]byte(p)) }
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, 32))
	tamper := map[string]string{
		"agent":       strings.Replace(string(payload), d.AgentPubkey, PublicHex(other), 1),
		"provider":    strings.Replace(string(payload), d.ProviderPubkey, PublicHex(other), 1),
		"permissions": strings.Replace(string(payload), "fetch_contracts,heartbeat", "fetch_contracts,heartbeat,provision", 1),
		"expiry":      strings.Replace(string(payload), "1893456000000000000", "1893456000000000001", 1),
		"never":       strings.Replace(string(payload), "1893456000000000000", "never", 1),
		"label":       strings.Replace(string(payload), "rack-1", "rack-2", 1),
	}
	sigHex := sd.SignatureHex()
	flipped := []byte(sigHex) // one hex digit changed, still valid hex
	flipped[10] = '0'
	if sigHex[10] == '0' {
		flipped[10] = '1'
	}
	tamper["signature"] = strings.Replace(string(payload), sigHex, string(flipped), 1)
	for field, p := range tamper {
		if p == string(payload) {
			t.Fatalf("%s: tampering changed nothing", field)
		}
		_, err := DecodeSigned(reencode(p))
		if err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("tampered %s: err %v, want a verification failure", field, err)
		}
	}
}

func TestDecodeErrorsNameTheFix(t *testing.T) {
	d, main := testDelegation(t)
	sd, _ := d.Sign(main)
	code, _ := sd.Encode()
	req, _ := d.EncodeRequest()
	cases := []struct {
		name string
		fn   func(string) error
		in   string
		want string
	}{
		{"signed: request code", decSigned, req, `this is a delegation request code, expected a signed delegation (starting with "dcds1:")`},
		{"request: signed code", decRequest, code, `this is a signed delegation code, expected a delegation request (starting with "dcdr1:")`},
		{"signed: no prefix", decSigned, "hello", `must start with "dcds1:"`},
		{"signed: empty", decSigned, "dcds1:", "empty after the prefix; copy the whole code again"},
		{"signed: bad base64", decSigned, code[:20] + "!" + code[21:], "truncated or corrupted"},
		{"request: truncated", decRequest, req[:len(req)/2], "copy the whole"},
		{"request: too long", decRequest, RequestPrefix + strings.Repeat("A", 9000), "too long"},
	}
	// Truncation at every length gives a clear message, never a panic or a
	// generic error.
	for n := len(SignedPrefix) + 1; n < len(code); n++ {
		cases = append(cases, struct {
			name string
			fn   func(string) error
			in   string
			want string
		}{"signed: truncated", decSigned, code[:n], "copy the whole"})
	}
	for _, c := range cases {
		err := c.fn(c.in)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s (%d chars): error %v, want %q", c.name, len(c.in), err, c.want)
		}
	}
}

func decSigned(s string) error  { _, err := DecodeSigned(s); return err }
func decRequest(s string) error { _, err := DecodeRequest(s); return err }

func TestSignRefusesOtherKeyAndBadFields(t *testing.T) {
	d, _ := testDelegation(t)
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{5}, 32))
	if _, err := d.Sign(other); err == nil || !strings.Contains(err.Error(), "sign with the provider's own key") {
		t.Fatalf("signed with a foreign key: %v", err)
	}
	d.Permissions = []string{"dns_manage"}
	if _, err := d.EncodeRequest(); err == nil {
		t.Fatal("encoded an unknown permission")
	}
}

func TestParsePermissions(t *testing.T) {
	got, err := ParsePermissions(" provision, heartbeat,,provision ")
	if err != nil || strings.Join(got, ",") != "heartbeat,provision" {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", ",", "provision,admin"} {
		if _, err := ParsePermissions(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestExpiry(t *testing.T) {
	d, _ := testDelegation(t)
	at := time.Unix(0, *d.ExpiresAtNs)
	if d.Expired(at.Add(-time.Nanosecond)) || !d.Expired(at) {
		t.Fatal("expiry boundary wrong")
	}
	d.ExpiresAtNs = nil
	if d.Expired(time.Unix(1<<40, 0)) || !d.ExpiresAt().IsZero() {
		t.Fatal("never-expiring delegation expired")
	}
	if !d.Has(PermHeartbeat) || d.Has(PermProvision) {
		t.Fatal("Has")
	}
	if s := d.Summary(); !strings.Contains(s, "expires:      never") || !strings.Contains(s, d.AgentPubkey) {
		t.Fatalf("summary:\n%s", s)
	}
}

// The issued_at_ns line (PROTOCOL.md §3): written after expires_at_ns when
// set, parsed back, covered by the signature; a code without it (the older
// form) still verifies.
func TestCanonicalTextIssuedAt(t *testing.T) {
	d, main := testDelegation(t)
	old, _ := d.CanonicalText()
	oldSigned, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	issued := int64(1767225600123456789)
	d.IssuedAtNs = &issued
	text, err := d.CanonicalText()
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Replace(string(old), "label: ", "issued_at_ns: 1767225600123456789\nlabel: ", 1)
	if string(text) != want {
		t.Fatalf("text\n%q\nwant\n%q", text, want)
	}
	back, err := ParseCanonicalText(text)
	if err != nil || back.IssuedAtNs == nil || *back.IssuedAtNs != issued || back.Issued() != issued {
		t.Fatalf("parse: %+v, %v", back, err)
	}
	if !strings.Contains(d.Summary(), "issued:       2026-01-01T00:00:00Z (1767225600123456789 ns)") {
		t.Fatalf("summary does not show the issue time:\n%s", d.Summary())
	}
	sd, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	code, _ := sd.Encode()
	got, err := DecodeSigned(code)
	if err != nil || got.Issued() != issued || !bytes.Equal(got.Signature, sd.Signature) {
		t.Fatalf("decode stamped code: %+v, %v", got, err)
	}
	req, _ := d.EncodeRequest()
	if r, err := DecodeRequest(req); err != nil || r.Issued() != issued {
		t.Fatalf("decode stamped request: %+v, %v", r, err)
	}
	// The old code: verifies, and Issued() is 0 (older than any stamp).
	oldCode, _ := oldSigned.Encode()
	if o, err := DecodeSigned(oldCode); err != nil || o.IssuedAtNs != nil || o.Issued() != 0 {
		t.Fatalf("old code: %+v, %v", o, err)
	}
	// The stamp is signed: moving it, dropping it or changing it breaks the
	// signature.
	payload, _ := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(code, SignedPrefix))
	reencode := func(p string) string { return SignedPrefix + base64.RawURLEncoding.EncodeToString([]byte(p)) }
	for name, p := range map[string]string{
		"changed": strings.Replace(string(payload), "1767225600123456789", "1767225600123456790", 1),
		"dropped": strings.Replace(string(payload), "issued_at_ns: 1767225600123456789\n", "", 1),
	} {
		if _, err := DecodeSigned(reencode(p)); err == nil || !strings.Contains(err.Error(), "does not verify") {
			t.Errorf("%s stamp: %v, want a verification failure", name, err)
		}
	}
	// A stamped code truncated anywhere says so.
	for n := len(SignedPrefix) + 1; n < len(code); n++ {
		if err := decSigned(code[:n]); err == nil || !strings.Contains(err.Error(), "copy the whole") {
			t.Fatalf("stamped code truncated to %d chars: %v", n, err)
		}
	}
	for n := len(RequestPrefix) + 1; n < len(req); n++ {
		if err := decRequest(req[:n]); err == nil || !strings.Contains(err.Error(), "copy the whole") && !strings.Contains(err.Error(), "corrupted") {
			t.Fatalf("stamped request truncated to %d chars: %v", n, err)
		}
	}
	zero := int64(0)
	d.IssuedAtNs = &zero
	if _, err := d.Sign(main); err == nil || !strings.Contains(err.Error(), "issued_at_ns must be a positive") {
		t.Fatalf("sign with issued_at_ns 0: %v", err)
	}
}
