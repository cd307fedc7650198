package packaging

// Finding 6 of issue 15: updates were trusted through HTTPS alone. These
// tests take `make release` signed with a throwaway key and show
// install.sh and `dc-agent upgrade` installing it, and refusing a tampered
// SHA256SUMS, a signature by another key, an unsigned release and a
// redirect from https to http.

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// tlsFront is an https server in front of the plain release server srv:
// /rel/... serves the release (through srv), /to-http/... redirects to the
// same file on srv over plain http. caFile trusts its certificate.
type tlsFront struct {
	URL, caFile string
}

func serveTLSFront(t *testing.T, srv *server) tlsFront {
	t.Helper()
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest, redirect := strings.CutPrefix(r.URL.Path, "/to-http/")
		if redirect {
			http.Redirect(w, r, srv.URL+"/rel/"+rest, http.StatusFound)
			return
		}
		resp, err := http.Get(srv.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		_, _ = w.Write(b.Bytes())
	}))
	t.Cleanup(front.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	testutil.WriteFile(t, ca, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw})), 0o644)
	return tlsFront{URL: front.URL, caFile: ca}
}

// trustEnv makes curl, wget and Go trust the front's certificate.
func (f tlsFront) trustEnv(t *testing.T) []string {
	wgetrc := filepath.Join(t.TempDir(), "wgetrc")
	testutil.WriteFile(t, wgetrc, "ca_certificate = "+f.caFile+"\n", 0o644)
	return []string{"CURL_CA_BUNDLE=" + f.caFile, "SSL_CERT_FILE=" + f.caFile, "WGETRC=" + wgetrc}
}

func TestReleaseIsSigned(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	openssl := testutil.RequireBinary(t, "openssl")
	keys, _ := os.ReadFile(rel.keysFile)
	line := strings.TrimSpace(strings.SplitN(string(keys), "\n", 2)[1])
	for _, v := range []string{v1, v2} {
		sums, _ := os.ReadFile(filepath.Join(dist, v, "SHA256SUMS"))
		sig, err := os.ReadFile(filepath.Join(dist, v, "SHA256SUMS.sig"))
		if err != nil || !ed25519.Verify(rel.key.Public().(ed25519.PublicKey), sums, sig) {
			t.Fatalf("%s: SHA256SUMS.sig does not verify: %v", v, err)
		}
		// The way install.sh checks it.
		pub := testutil.WriteFile(t, filepath.Join(t.TempDir(), "pub.pem"), "-----BEGIN PUBLIC KEY-----\n"+line+"\n-----END PUBLIC KEY-----\n", 0o644)
		out, err := exec.Command(openssl, "pkeyutl", "-verify", "-pubin", "-inkey", pub, "-rawin",
			"-in", filepath.Join(dist, v, "SHA256SUMS"), "-sigfile", filepath.Join(dist, v, "SHA256SUMS.sig")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Signature Verified Successfully") {
			t.Fatalf("%s: openssl: %v %s", v, err, out)
		}
	}
	// The installer carries the trusted key; SHA256SUMS covers that installer.
	inst, _ := os.ReadFile(filepath.Join(dist, v1, "install.sh"))
	if !strings.Contains(string(inst), "\nRELEASE_KEYS=\""+line+"\"\n") {
		t.Fatal("the released install.sh does not carry the release key")
	}
	if latest, _ := os.ReadFile(filepath.Join(dist, "install.sh")); !bytes.Equal(latest, mustRead(t, filepath.Join(dist, v2, "install.sh"))) {
		t.Fatal("the top-level install.sh is not the latest release's")
	}
	// Without a key, make release refuses and says how to make one.
	err := buildRelease(repoRoot(t), t.TempDir(), "v9.0.0", "RELEASE_KEY=", "ARCHES=amd64", "PACKAGES=")
	if err == nil || !strings.Contains(err.Error(), "RELEASE_KEY is not set") || !strings.Contains(err.Error(), "openssl genpkey -algorithm ed25519") {
		t.Fatalf("make release without a key: %v", err)
	}
	// A key the trusted list does not hold: refused before anything is built.
	_, other, _ := ed25519.GenerateKey(nil)
	otherFile := filepath.Join(t.TempDir(), "other.key")
	der := mustPKCS8(t, other)
	testutil.WriteFile(t, otherFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), 0o600)
	err = buildRelease(repoRoot(t), t.TempDir(), "v9.0.0", "RELEASE_KEY="+otherFile, "ARCHES=amd64", "PACKAGES=")
	if err == nil || !strings.Contains(err.Error(), "not in the release's trusted keys") {
		t.Fatalf("make release with an untrusted key: %v", err)
	}
}

func TestInstallScriptRefusesUnsignedTamperedOrRedirectedRelease(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	testutil.RequireBinary(t, "openssl")
	script := releasedInstallScript(t, dist)
	srv := serveRelease(t, dist)
	front := serveTLSFront(t, srv)
	for _, sh := range []string{"dash", "bash"} {
		t.Run(sh, func(t *testing.T) {
			t.Parallel()
			shPath := testutil.RequireBinary(t, sh)
			install := func(base string, extra ...string) (run, string) {
				t.Helper()
				prefix := t.TempDir()
				env := append([]string{"DC_AGENT_BASE_URL=" + base, "DC_AGENT_PREFIX=" + prefix, "DC_AGENT_VERSION=" + v2}, front.trustEnv(t)...)
				return shell(t, shPath, script, append(env, extra...)), prefix
			}
			refuse := func(name, base, want string) {
				t.Helper()
				r, prefix := install(base)
				if r.code == 0 || !strings.Contains(r.stderr, want) {
					t.Errorf("%s: exit %d, stderr lacks %q:\n%s", name, r.code, want, r.stderr)
				}
				if entries, _ := os.ReadDir(prefix); len(entries) != 0 {
					t.Errorf("%s: something was installed: %v", name, entries)
				}
			}
			// The signed release installs, over https too (the trust set-up works).
			for _, base := range []string{srv.URL + "/rel", front.URL + "/rel"} {
				r, prefix := install(base)
				if r.code != 0 || !strings.Contains(binVersion(t, filepath.Join(prefix, "usr/local/bin/dc-agent")), v2) {
					t.Fatalf("signed release from %s: exit %d\n%s", base, r.code, r.stderr)
				}
				if !strings.Contains(r.stderr, "SHA256SUMS is signed by a dc-agent release key") {
					t.Errorf("signed release from %s: the signature was not checked:\n%s", base, r.stderr)
				}
			}
			refuse("tampered SHA256SUMS", srv.URL+"/tampered-sums", "SHA256SUMS is not signed by a dc-agent release key")
			refuse("signed by another key", srv.URL+"/wrong-sig", "SHA256SUMS is not signed by a dc-agent release key")
			refuse("unsigned", srv.URL+"/unsigned", "refusing an unsigned release")
			refuse("redirect to http", front.URL+"/to-http", "cannot download SHA256SUMS")
			refuse("loopback look-alike", "http://127.0.0.1@evil.example/rel", "must be an https:// URL")
			refuse("loopback-named host", "http://127.0.0.1.evil.example/rel", "must be an https:// URL")
			refuse("localhost-named host", "http://localhost.evil.example/rel", "must be an https:// URL")
			refuse("user info with a port", "http://127.0.0.1:80@evil.example/rel", "must be an https:// URL")
			refuse("not ::1", "http://[::2]:80/rel", "must be an https:// URL")
		})
	}
	t.Run("wget", func(t *testing.T) {
		t.Parallel()
		shim := toolShim(t, "wget", "openssl")
		for _, tc := range []struct{ name, base, want string }{
			{"tampered SHA256SUMS", srv.URL + "/tampered-sums", "SHA256SUMS is not signed by a dc-agent release key"},
			{"redirect to http", front.URL + "/to-http", "it leaves https"},
		} {
			prefix := t.TempDir()
			env := append([]string{"PATH=" + shim, "DC_AGENT_BASE_URL=" + tc.base, "DC_AGENT_PREFIX=" + prefix, "DC_AGENT_VERSION=" + v2}, front.trustEnv(t)...)
			r := shell(t, testutil.RequireBinary(t, "dash"), script, env)
			if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
				t.Errorf("wget, %s: exit %d, stderr lacks %q:\n%s", tc.name, r.code, tc.want, r.stderr)
			}
			if entries, _ := os.ReadDir(prefix); len(entries) != 0 {
				t.Errorf("wget, %s: something was installed: %v", tc.name, entries)
			}
		}
		// https to https is followed.
		prefix := t.TempDir()
		env := append([]string{"PATH=" + shim, "DC_AGENT_BASE_URL=" + front.URL + "/rel", "DC_AGENT_PREFIX=" + prefix, "DC_AGENT_VERSION=" + v2}, front.trustEnv(t)...)
		if r := shell(t, testutil.RequireBinary(t, "dash"), script, env); r.code != 0 {
			t.Errorf("wget over https: exit %d\n%s", r.code, r.stderr)
		}
	})
}

// toolShim is a PATH with the basic tools install.sh uses and the given
// extra ones, and no curl.
func toolShim(t *testing.T, extra ...string) string {
	t.Helper()
	shim := t.TempDir()
	for _, tool := range append([]string{"sh", "uname", "mktemp", "head", "tr", "awk", "cut", "sha256sum", "chmod", "cp", "mv", "rm", "mkdir", "id", "cat", "sed", "grep", "tail", "wc"}, extra...) {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(shim, tool)); err != nil {
			t.Fatal(err)
		}
	}
	return shim
}

func TestUpgradeRefusesUnsignedTamperedOrRedirectedRelease(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	front := serveTLSFront(t, srv)
	prefix := t.TempDir()
	bin := filepath.Join(prefix, "usr/local/bin/dc-agent")
	if r := shell(t, testutil.RequireBinary(t, "dash"), releasedInstallScript(t, dist), []string{"DC_AGENT_BASE_URL=" + srv.URL + "/rel", "DC_AGENT_PREFIX=" + prefix, "DC_AGENT_VERSION=" + v1}); r.code != 0 {
		t.Fatalf("install: %s", r.stderr)
	}
	upgrade := func(base string) run {
		t.Helper()
		return runCmd(t, exec.Command(bin, "--config", filepath.Join(prefix, "none.toml"), "upgrade", "--no-restart", "--release-url", base, "--version", v2), front.trustEnv(t))
	}
	for _, tc := range []struct{ name, base, want string }{
		{"tampered SHA256SUMS", srv.URL + "/tampered-sums", "SHA256SUMS of " + v2 + " is not signed by a dc-agent release key"},
		{"signed by another key", srv.URL + "/wrong-sig", "SHA256SUMS of " + v2 + " is not signed by a dc-agent release key"},
		{"unsigned", srv.URL + "/unsigned", "refusing an unsigned release"},
		{"redirect to http", front.URL + "/to-http", "it leaves https"},
	} {
		r := upgrade(tc.base)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr lacks %q:\n%s%s", tc.name, r.code, tc.want, r.stdout, r.stderr)
		}
		if !strings.Contains(binVersion(t, bin), v1) {
			t.Fatalf("%s: the binary was replaced", tc.name)
		}
	}
	onlyFiles(t, filepath.Dir(bin), "dc-agent")
	// The signed release over https: installed.
	if r := upgrade(front.URL + "/rel"); r.code != 0 || !strings.Contains(binVersion(t, bin), v2) {
		t.Fatalf("signed release over https: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// releasedInstallScript is the install.sh a release publishes (with its
// release keys), as `curl …/install.sh | sh` runs it.
func releasedInstallScript(t *testing.T, dist string) []byte {
	t.Helper()
	return mustRead(t, filepath.Join(dist, "install.sh"))
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPKCS8(t *testing.T, k ed25519.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
