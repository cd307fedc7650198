package setup

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/identity"
)

func mustKey(t *testing.T) []byte {
	t.Helper()
	k, err := identity.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func signed(t *testing.T, agent, main []byte, perms []string, exp *int64) string {
	t.Helper()
	d := identity.Delegation{AgentPubkey: identity.PublicHex(agent), ProviderPubkey: identity.PublicHex(main), Permissions: perms, ExpiresAtNs: exp, Label: "test"}
	sd, err := d.Sign(main)
	if err != nil {
		t.Fatal(err)
	}
	code, err := sd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return code
}

func TestAcceptDelegationExplainsEachRefusal(t *testing.T) {
	agent, main, other := mustKey(t), mustKey(t), mustKey(t)
	now := time.Now()
	past := now.Add(-time.Hour).UnixNano()
	soon := now.Add(48 * time.Hour).UnixNano()
	good := signed(t, agent, main, identity.AllPermissions, nil)
	agentHex, mainHex := identity.PublicHex(agent), identity.PublicHex(main)

	if sd, warns, err := AcceptDelegation(good, agentHex, mainHex, now); err != nil || len(warns) != 0 || sd.AgentPubkey != agentHex {
		t.Fatalf("good delegation: %v %v", warns, err)
	}
	req, _ := identity.Delegation{AgentPubkey: agentHex, ProviderPubkey: mainHex, Permissions: identity.AllPermissions}.EncodeRequest()
	for name, tc := range map[string]struct {
		code, provider, reason, want string
	}{
		"request pasted": {req, mainHex, "malformed", "not the signed delegation"},
		"garbage":        {"dcds1:!!!", mainHex, "malformed", ""},
		"truncated":      {good[:len(good)-10], mainHex, "malformed", ""},
		"other agent":    {signed(t, other, main, identity.AllPermissions, nil), mainHex, "wrong-agent", "this host's agent key is " + agentHex},
		"wrong provider": {signed(t, agent, other, identity.AllPermissions, nil), mainHex, "wrong-provider", "set up for provider " + mainHex},
		"expired":        {signed(t, agent, main, identity.AllPermissions, &past), mainHex, "expired", "expired at"},
		"empty":          {"  ", mainHex, "malformed", "no signed delegation"},
	} {
		_, _, err := AcceptDelegation(tc.code, agentHex, tc.provider, now)
		var ae *AcceptError
		if !errors.As(err, &ae) || ae.Reason != tc.reason || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: want %s containing %q, got %v", name, tc.reason, tc.want, err)
			continue
		}
		if FixOf(err) == "" {
			t.Errorf("%s: no fix in %v", name, err)
		}
	}
	_, warns, err := AcceptDelegation(signed(t, agent, main, []string{identity.PermHeartbeat}, &soon), agentHex, mainHex, now)
	if err != nil || len(warns) != 2 || !strings.Contains(warns[0], "provision") || !strings.Contains(warns[1], "expires soon") {
		t.Fatalf("partial, expiring delegation: %q %v", warns, err)
	}

	// Kept beside the key and read back the same.
	sd, _, _ := AcceptDelegation(good, agentHex, mainHex, now)
	p := filepath.Join(t.TempDir(), "agent.delegation")
	if err := SaveDelegation(p, sd); err != nil {
		t.Fatal(err)
	}
	back, err := LoadDelegation(p)
	if err != nil || back.SignatureHex() != sd.SignatureHex() {
		t.Fatalf("load: %v", err)
	}
	if _, err := LoadDelegation(p + ".missing"); err == nil || FixOf(err) == "" {
		t.Fatalf("missing file: %v", err)
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for in, want := range map[string]time.Duration{"365d": 365 * 24 * time.Hour, "8760h": 8760 * time.Hour, "90m": 90 * time.Minute} {
		got, err := ParseExpiry(in, now)
		if err != nil || time.Unix(0, *got).Sub(now) != want {
			t.Errorf("%s: %v %v", in, got, err)
		}
	}
	if got, err := ParseExpiry("never", now); got != nil || err != nil {
		t.Errorf("never: %v %v", got, err)
	}
	for _, bad := range []string{"0d", "-5h", "2001-01-01T00:00:00Z", "soon", "1.5d"} {
		if _, err := ParseExpiry(bad, now); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
