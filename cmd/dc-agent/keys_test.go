package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cosmos/go-bip39"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/identity"
)

var pubHexRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

func writeFile(t *testing.T, path, content string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// providerIdentities writes the provider main key in the forms a provider
// has it: a PKCS#8 PEM (as Decent Cloud's tools write) and a BIP-39 mnemonic.
func providerIdentities(t *testing.T, dir string) map[string]struct {
	file string
	pub  string
} {
	t.Helper()
	_, pemKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, err := identity.MarshalPEMKey(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	entropy := make([]byte, 32)
	if _, err := rand.Read(entropy); err != nil {
		t.Fatal(err)
	}
	mnemonic, err := bip39.NewMnemonic(entropy)
	if err != nil {
		t.Fatal(err)
	}
	mKey, err := identity.KeyFromMnemonic(mnemonic)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]struct {
		file string
		pub  string
	}{
		"pem":      {writeFile(t, filepath.Join(dir, "private.pem"), string(pemBytes), 0o600), identity.PublicHex(pemKey)},
		"mnemonic": {writeFile(t, filepath.Join(dir, "seed.words"), mnemonic+"\n", 0o600), identity.PublicHex(mKey)},
	}
}

// TestDelegationRoundTrip is the offline exchange of PROTOCOL.md §3 with the
// real binary: init on the agent host, request, sign on the provider's
// machine (PEM and mnemonic identities), show verifies.
func TestDelegationRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "etc", "dc-agent.toml")

	// init creates the key beside the (not yet existing) config.
	r := runAgent(t, runOpts{}, "--config", cfg, "init")
	agentPub := strings.TrimSpace(r.stdout)
	if r.code != 0 || !pubHexRe.MatchString(agentPub) || !strings.Contains(r.stderr, "Created agent key") {
		t.Fatalf("init:\n%s", r)
	}
	keyFile := filepath.Join(dir, "etc", "agent.key")
	if st, err := os.Stat(keyFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("agent key %v mode %v", err, st)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "etc", "agent.pub")); strings.TrimSpace(string(b)) != agentPub {
		t.Fatalf("agent.pub %q, want %s", b, agentPub)
	}
	// Re-running keeps the key.
	r = runAgent(t, runOpts{}, "--config", cfg, "init", "--json")
	var initOut struct {
		AgentPubkey string `json:"agent_pubkey"`
		KeyFile     string `json:"key_file"`
		Created     bool   `json:"created"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &initOut); err != nil || r.code != 0 || initOut.AgentPubkey != agentPub || initOut.Created || initOut.KeyFile != keyFile {
		t.Fatalf("second init changed the key or did not say so: %+v\n%s", initOut, r)
	}

	for form, id := range providerIdentities(t, dir) {
		t.Run(form, func(t *testing.T) {
			r := runAgent(t, runOpts{}, "--config", cfg, "delegation", "request", "--provider", id.pub,
				"--permissions", "provision, heartbeat", "--expires", "30d", "--label", "rack 7 — Zürich")
			request := strings.TrimSpace(r.stdout)
			if r.code != 0 || !strings.HasPrefix(request, "dcdr1:") || strings.Contains(request, "\n") {
				t.Fatalf("request:\n%s", r)
			}
			for _, want := range []string{agentPub, id.pub, "heartbeat, provision", "rack 7 — Zürich", "delegation sign"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("request summary lacks %q:\n%s", want, r.stderr)
				}
			}

			// Signing without --yes and without a terminal refuses, never hangs.
			r = runAgent(t, runOpts{}, "delegation", "sign", "--identity", id.file, request)
			if r.code != 2 || !strings.Contains(r.stderr, "pass --yes") {
				t.Fatalf("sign without --yes:\n%s", r)
			}
			r = runAgent(t, runOpts{}, "delegation", "sign", "--identity", id.file, "--yes", request)
			signed := strings.TrimSpace(r.stdout)
			if r.code != 0 || !strings.HasPrefix(signed, "dcds1:") {
				t.Fatalf("sign:\n%s", r)
			}
			if !strings.Contains(r.stderr, "Signing with the "+form+" key "+id.pub) {
				t.Errorf("sign does not say which key signs:\n%s", r.stderr)
			}
			// Stamped with the signing time (PROTOCOL.md §3).
			sd, err := identity.DecodeSigned(signed)
			if err != nil || sd.IssuedAtNs == nil || time.Since(time.Unix(0, *sd.IssuedAtNs)).Abs() > time.Minute {
				t.Fatalf("signed delegation is not stamped with the signing time: %+v, %v", sd, err)
			}
			if !strings.Contains(r.stderr, "issued:       "+time.Unix(0, *sd.IssuedAtNs).UTC().Format(time.RFC3339)) {
				t.Errorf("sign does not show the issue time it stamps:\n%s", r.stderr)
			}
			// The request can also come from a file or stdin, with the same
			// delegation (only the stamp differs).
			sameButStamp := func(code string) bool {
				other, err := identity.DecodeSigned(code)
				if err != nil || other.IssuedAtNs == nil || *other.IssuedAtNs < *sd.IssuedAtNs {
					return false
				}
				other.IssuedAtNs = sd.IssuedAtNs
				a, _ := other.CanonicalText()
				b, _ := sd.CanonicalText()
				return string(a) == string(b)
			}
			reqFile := writeFile(t, filepath.Join(t.TempDir(), "req.txt"), request+"\n", 0o644)
			if r := runAgent(t, runOpts{}, "delegation", "sign", "--identity", id.file, "--yes", "--request", "file:"+reqFile); !sameButStamp(strings.TrimSpace(r.stdout)) {
				t.Errorf("sign from file:\n%s", r)
			}
			if r := runAgent(t, runOpts{stdin: request + "\n"}, "delegation", "sign", "--identity", id.file, "--yes", "-"); !sameButStamp(strings.TrimSpace(r.stdout)) {
				t.Errorf("sign from stdin:\n%s", r)
			}

			r = runAgent(t, runOpts{}, "delegation", "show", signed)
			if r.code != 0 || !strings.Contains(r.stdout, "signature verified") || !strings.Contains(r.stdout, agentPub) {
				t.Fatalf("show:\n%s", r)
			}
			r = runAgent(t, runOpts{}, "delegation", "show", "--json", signed)
			var shown struct {
				AgentPubkey    string   `json:"agent_pubkey"`
				ProviderPubkey string   `json:"provider_pubkey"`
				Permissions    []string `json:"permissions"`
				ExpiresAtNs    *int64   `json:"expires_at_ns"`
				Label          string   `json:"label"`
				Signed         bool     `json:"signed"`
				Verified       bool     `json:"verified"`
				Expired        bool     `json:"expired"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &shown); err != nil || r.code != 0 {
				t.Fatalf("show --json: %v\n%s", err, r)
			}
			if shown.AgentPubkey != agentPub || shown.ProviderPubkey != id.pub || strings.Join(shown.Permissions, ",") != "heartbeat,provision" ||
				shown.ExpiresAtNs == nil || shown.Label != "rack 7 — Zürich" || !shown.Signed || !shown.Verified || shown.Expired {
				t.Fatalf("show --json fields: %+v", shown)
			}
			// The request itself shows as unsigned.
			if r := runAgent(t, runOpts{}, "delegation", "show", request); r.code != 0 || !strings.Contains(r.stdout, "not signed yet") {
				t.Errorf("show request:\n%s", r)
			}

			assertTamperingFails(t, signed)
		})
	}
}

// assertTamperingFails changes every field of a signed delegation (keeping
// the text well-formed, so only the signature can catch it) and truncates
// it; show must refuse each with a clear message and a non-zero exit.
func assertTamperingFails(t *testing.T, signed string) {
	t.Helper()
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(signed, "dcds1:"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(payload), "\n") // header, 6 fields (with issued_at_ns), signature, ""
	if len(lines) != 9 {
		t.Fatalf("payload has %d lines", len(lines))
	}
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherHex := identity.PublicHex(other)
	sig := []byte(lines[7])
	if sig[0] == 'a' {
		sig[0] = 'b'
	} else {
		sig[0] = 'a'
	}
	edits := map[string][2]string{ // field: line index, new line
		"agent":       {"1", "agent: " + otherHex},
		"provider":    {"2", "provider: " + otherHex},
		"permissions": {"3", "permissions: fetch_contracts,health_check,heartbeat,provision"},
		"expiry":      {"4", "expires_at_ns: never"},
		"issued":      {"5", "issued_at_ns: 9000000000000000000"},
		"label":       {"6", "label: rack 8 — Zürich"},
		"signature":   {"7", string(sig)},
	}
	idx := map[string]int{"1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "7": 7}
	for field, e := range edits {
		l := append([]string(nil), lines...)
		l[idx[e[0]]] = e[1]
		code := "dcds1:" + base64.RawURLEncoding.EncodeToString([]byte(strings.Join(l, "\n")))
		r := runAgent(t, runOpts{}, "delegation", "show", code)
		if r.code == 0 || !strings.Contains(r.stderr, "signature does not verify against the provider key") {
			t.Errorf("tampered %s: want a verification failure\n%s", field, r)
		}
		if strings.Contains(r.stdout, "verified") {
			t.Errorf("tampered %s: stdout claims verification:\n%s", field, r.stdout)
		}
	}
	for _, n := range []int{len(signed) - 1, len(signed) - 40, len(signed) / 2, 10} {
		r := runAgent(t, runOpts{}, "delegation", "show", signed[:n])
		if r.code == 0 || !strings.Contains(r.stderr, "copy the whole") {
			t.Errorf("truncated to %d chars: want a truncation message\n%s", n, r)
		}
	}
}

func TestSignRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	if r := runAgent(t, runOpts{}, "--config", cfg, "init"); r.code != 0 {
		t.Fatalf("init:\n%s", r)
	}
	ids := providerIdentities(t, dir)
	r := runAgent(t, runOpts{}, "--config", cfg, "delegation", "request", "--provider", ids["pem"].pub)
	request := strings.TrimSpace(r.stdout)

	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"other provider's key", []string{"--identity", ids["mnemonic"].file, "--yes", request}, 1, "sign with the provider's own key"},
		{"no identity", []string{"--yes", request}, 2, "--identity is required"},
		{"no request", []string{"--identity", ids["pem"].file, "--yes"}, 2, "give the dcdr1: request"},
		{"signed code given", []string{"--identity", ids["pem"].file, "--yes", "dcds1:AAAA"}, 1, `expected a delegation request (starting with "dcdr1:")`},
		{"truncated request", []string{"--identity", ids["pem"].file, "--yes", request[:len(request)-30]}, 1, "copy the whole"},
		{"missing identity file", []string{"--identity", filepath.Join(dir, "nope.pem"), "--yes", request}, 3, "no such file"},
	}
	for _, c := range cases {
		r := runAgent(t, runOpts{}, append([]string{"delegation", "sign"}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("%s: want exit %d and %q\n%s", c.name, c.code, c.want, r)
		}
	}
	// A world-readable main key is refused with the chmod that fixes it.
	if err := os.Chmod(ids["pem"].file, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runAgent(t, runOpts{}, "delegation", "sign", "--identity", ids["pem"].file, "--yes", request)
	if r.code != exitConfig || !strings.Contains(r.stderr, "run: chmod 600 "+ids["pem"].file) {
		t.Errorf("world-readable identity:\n%s", r)
	}
}

func TestCredentialsDecrypt(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ids := providerIdentities(t, dir) // any Ed25519 key form works for requesters too
	contract := strings.Repeat("0f", 32)
	for form, id := range ids {
		pub, _ := identity.ParsePublicKeyHex(id.pub)
		sealed, err := identity.Seal([]byte("r00t-"+form), pub, contract)
		if err != nil {
			t.Fatal(err)
		}
		r := runAgent(t, runOpts{stdin: sealed}, "credentials", "decrypt", "--identity", id.file)
		if r.code != 0 || strings.TrimSpace(r.stdout) != "r00t-"+form {
			t.Fatalf("%s: decrypt from stdin:\n%s", form, r)
		}
		// The whole instance_details JSON is accepted too.
		details, _ := json.Marshal(map[string]any{"external_id": "x", "root_password": sealed})
		f := writeFile(t, filepath.Join(dir, form+".json"), string(details), 0o644)
		r = runAgent(t, runOpts{}, "credentials", "decrypt", "--identity", id.file, "--json", "file:"+f)
		var out map[string]string
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || out["root_password"] != "r00t-"+form {
			t.Fatalf("%s: decrypt --json from instance details:\n%s", form, r)
		}
	}
	// An OpenSSH ed25519 key (a credential sealed to the requester's SSH key).
	sshPub, sshPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := ssh.MarshalPrivateKey(sshPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	sshFile := writeFile(t, filepath.Join(dir, "id_ed25519"), string(pemEncode(block)), 0o600)
	sealed, _ := identity.Seal([]byte("via-ssh"), sshPub, contract)
	if r := runAgent(t, runOpts{stdin: sealed}, "credentials", "decrypt", "--identity", sshFile); strings.TrimSpace(r.stdout) != "via-ssh" {
		t.Fatalf("OpenSSH key:\n%s", r)
	}
	// The wrong key fails clearly.
	r := runAgent(t, runOpts{stdin: sealed}, "credentials", "decrypt", "--identity", ids["pem"].file)
	if r.code == 0 || !strings.Contains(r.stderr, "sealed for another key") || r.stdout != "" {
		t.Fatalf("wrong key:\n%s", r)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	r := runAgent(t, runOpts{}, "version", "--json")
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || r.code != 0 || v["version"] == "" || !strings.HasPrefix(v["go"], "go1.") || v["commit"] == "" {
		t.Fatalf("version --json:\n%s", r)
	}
	r = runAgent(t, runOpts{}, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "dc-agent ") {
		t.Fatalf("version:\n%s", r)
	}
	r = runAgent(t, runOpts{}, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "Exit codes:") || !strings.Contains(r.stdout, "3  configuration or key file problem") {
		t.Fatalf("--help does not document exit codes:\n%s", r)
	}
}

func pemEncode(b *pem.Block) []byte { return pem.EncodeToMemory(b) }

func TestInitForceAndKeyFlag(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := filepath.Join(dir, "keys", "agent.key")
	first := runAgent(t, runOpts{}, "--config", filepath.Join(dir, "none.toml"), "init", "--key", key)
	again := runAgent(t, runOpts{}, "--config", filepath.Join(dir, "none.toml"), "init", "--key", key)
	forced := runAgent(t, runOpts{}, "--config", filepath.Join(dir, "none.toml"), "init", "--key", key, "--force")
	if first.code != 0 || again.code != 0 || forced.code != 0 {
		t.Fatalf("init runs:\n%s\n%s\n%s", first, again, forced)
	}
	if first.stdout != again.stdout || first.stdout == forced.stdout {
		t.Fatalf("keep/force: %q %q %q", first.stdout, again.stdout, forced.stdout)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "keys", "agent.pub"))
	if string(b) != forced.stdout {
		t.Fatalf("agent.pub %q not updated to %q", b, forced.stdout)
	}
	// The key named in the config is the one init creates.
	cfg := writeFile(t, filepath.Join(dir, "dc-agent.toml"), strings.Replace(goodConfig, `"agent.key"`, `"state/my.key"`, 1), 0o600)
	r := runAgent(t, runOpts{}, "--config", cfg, "init")
	if _, err := os.Stat(filepath.Join(dir, "state", "my.key")); err != nil || r.code != 0 {
		t.Fatalf("init did not use api.agent_secret_key: %v\n%s", err, r)
	}
}
