package packaging

// End-to-end tests of the release artifacts: `make release` output served
// by a real local HTTP server, installed by scripts/install.sh under dash
// and bash, upgraded by the released binary's own `dc-agent upgrade`, and
// the deb unpacked with dpkg. The release is built once per test run
// (releaseTree) and shared.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

const (
	v1 = "v1.0.0"
	v2 = "v1.1.0"
	// vBroken is a release whose amd64 binary matches its checksum but
	// does not run here (it is the arm64 build): upgrade must roll back.
	vBroken = "v1.2.0"
	// vNoStart is a release whose binary answers --version but exits at
	// once as a service: upgrade must roll back after the failed restart.
	vNoStart = "v1.3.0"
	// epoch fixes SOURCE_DATE_EPOCH so two builds can be compared.
	epoch = "1700000000"
)

var rel struct {
	once sync.Once
	dir  string // the dist tree: v1 (full make release), v2 (amd64), vBroken
	err  error
	// key is the throwaway release key (keyFile, 0600) the tree is signed
	// with; keysFile lists its public half, the key the binaries trust.
	key               ed25519.PrivateKey
	keyFile, keysFile string
}

func TestMain(m *testing.M) {
	code := m.Run()
	if rel.dir != "" {
		os.RemoveAll(rel.dir)
	}
	if rel.keyFile != "" {
		os.RemoveAll(filepath.Dir(rel.keyFile))
	}
	os.Exit(code)
}

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildRelease runs `make release` into dist with the given version,
// signed with the test release key.
func buildRelease(root, dist, version string, env ...string) error {
	cmd := exec.Command("make", "-s", "release", "VERSION="+version, "COMMIT=0123456789abcdef", "DIST="+dist)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), append([]string{"SOURCE_DATE_EPOCH=" + epoch, "RELEASE_KEY=" + rel.keyFile, "RELEASE_KEYS=" + rel.keysFile}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make release %s: %v\n%s", version, err, out)
	}
	return nil
}

// releaseTree builds the shared release tree once.
func releaseTree(t *testing.T) string {
	t.Helper()
	testutil.RequireBinary(t, "make")
	rel.once.Do(func() {
		dir, err := os.MkdirTemp("", "dc-agent-release-")
		if err != nil {
			rel.err = err
			return
		}
		rel.dir = dir
		if rel.err = makeReleaseKey(); rel.err != nil {
			return
		}
		root := repoRoot(t)
		if rel.err = buildRelease(root, dir, v1); rel.err != nil {
			return
		}
		// The newer release only needs the binary this machine runs.
		if rel.err = buildRelease(root, dir, v2, "ARCHES=amd64", "PACKAGES="); rel.err != nil {
			return
		}
		rel.err = makeBrokenRelease(dir)
	})
	if rel.err != nil {
		t.Fatal(rel.err)
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the release tests run the amd64 binaries")
	}
	return rel.dir
}

// makeReleaseKey makes the throwaway release key and the trusted-keys file
// naming its public half (in a directory of its own, outside any tree a
// test serves), as `openssl genpkey -algorithm ed25519` and
// `openssl pkey -pubout` write them.
func makeReleaseKey() error {
	dir, err := os.MkdirTemp("", "dc-agent-release-key-")
	if err != nil {
		return err
	}
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	rel.key, rel.keyFile, rel.keysFile = priv, filepath.Join(dir, "release.key"), filepath.Join(dir, "release-keys.pub")
	if err := os.WriteFile(rel.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(rel.keysFile, []byte("# test release key\n"+base64.StdEncoding.EncodeToString(pubDER)+"\n"), 0o644)
}

// writeSums writes SHA256SUMS and its signature by the test release key.
func writeSums(dir, sums string) error {
	if err := os.WriteFile(filepath.Join(dir, "SHA256SUMS"), []byte(sums), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "SHA256SUMS.sig"), ed25519.Sign(rel.key, []byte(sums)), 0o644)
}

// makeBrokenRelease publishes vBroken: the arm64 binary named as amd64,
// with a correct, signed SHA256SUMS (it is not in latest/).
func makeBrokenRelease(dist string) error {
	b, err := os.ReadFile(filepath.Join(dist, v1, "dc-agent_linux_arm64"))
	if err != nil {
		return err
	}
	dir := filepath.Join(dist, vBroken)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "dc-agent_linux_amd64"), b, 0o755); err != nil {
		return err
	}
	if err := writeSums(dir, hexSum(b)+"  dc-agent_linux_amd64\n"); err != nil {
		return err
	}
	noStart := []byte("#!/bin/sh\ncase \"$*\" in *--version*) echo 'dc-agent " + vNoStart + " (commit x, go, linux/amd64)' ;; *) echo 'cannot start' >&2; exit 1 ;; esac\n")
	dir = filepath.Join(dist, vNoStart)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "dc-agent_linux_amd64"), noStart, 0o755); err != nil {
		return err
	}
	return writeSums(dir, hexSum(noStart)+"  dc-agent_linux_amd64\n")
}

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func fileSum(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return hexSum(b)
}

// server serves the release tree on loopback: /rel/ as built, /tampered/
// the same but with a different amd64 binary than SHA256SUMS names, and
// /tampered-sums/, /wrong-sig/, /unsigned/ (see below). It counts requests.
type server struct {
	URL  string
	mu   sync.Mutex
	hits int
}

func (s *server) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits
}

func serveRelease(t *testing.T, dist string) *server {
	t.Helper()
	s := &server{}
	files := http.FileServer(http.Dir(dist))
	mux := http.NewServeMux()
	mux.Handle("/rel/", http.StripPrefix("/rel", files))
	mux.HandleFunc("/tampered/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/dc-agent_linux_amd64") {
			// A binary that is not the one SHA256SUMS names.
			http.ServeFile(w, r, filepath.Join(dist, v1, "dc-agent_linux_amd64"))
			return
		}
		http.StripPrefix("/tampered", files).ServeHTTP(w, r)
	})
	// SHA256SUMS changed after it was signed: it names another binary,
	// which is served, so the checksums agree and only the signature does not.
	mux.HandleFunc("/tampered-sums/", func(w http.ResponseWriter, r *http.Request) {
		other := filepath.Join(dist, v1, "dc-agent_linux_amd64")
		switch {
		case strings.HasSuffix(r.URL.Path, "/SHA256SUMS"):
			b, _ := os.ReadFile(other)
			fmt.Fprintf(w, "%s  dc-agent_linux_amd64\n", hexSum(b))
		case strings.HasSuffix(r.URL.Path, "/dc-agent_linux_amd64"):
			http.ServeFile(w, r, other)
		default:
			http.StripPrefix("/tampered-sums", files).ServeHTTP(w, r)
		}
	})
	// The release as built, signed by a key nobody trusts.
	_, stranger, _ := ed25519.GenerateKey(nil)
	mux.HandleFunc("/wrong-sig/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/SHA256SUMS.sig") {
			sums, err := os.ReadFile(filepath.Join(dist, strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/wrong-sig/"), ".sig")))
			if err != nil {
				http.NotFound(w, r)
				return
			}
			_, _ = w.Write(ed25519.Sign(stranger, sums))
			return
		}
		http.StripPrefix("/wrong-sig", files).ServeHTTP(w, r)
	})
	// The release as built, without its signature.
	mux.HandleFunc("/unsigned/", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/SHA256SUMS.sig") {
			http.NotFound(w, r)
			return
		}
		http.StripPrefix("/unsigned", files).ServeHTTP(w, r)
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

type run struct {
	stdout, stderr string
	code           int
}

// shell runs script the way `curl … | sh` does: the script on stdin.
func shell(t *testing.T, sh string, script []byte, env []string, args ...string) run {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sh, append([]string{"-s", "--"}, args...)...)
	cmd.Stdin = bytes.NewReader(script)
	return runCmd(t, cmd, env)
}

// runCmd runs cmd with env added to this process's environment.
func runCmd(t *testing.T, cmd *exec.Cmd, env []string) run {
	t.Helper()
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := run{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	return r
}

func installScript(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "scripts/install.sh"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// binVersion runs a binary's --version.
func binVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	return string(out)
}

func mustNotExist(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); err == nil {
		t.Fatalf("%s exists", p)
	}
}

// onlyFiles fails if the bin directory holds anything but the listed names.
func onlyFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("%s holds %v, want %v", dir, got, names)
	}
}

func TestReleaseLayout(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	latest, _ := os.ReadFile(filepath.Join(dist, "latest/VERSION"))
	if strings.TrimSpace(string(latest)) != v2 {
		t.Fatalf("latest/VERSION = %q, want %s", latest, v2)
	}
	sums, err := os.ReadFile(filepath.Join(dist, v1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dc-agent_linux_amd64", "dc-agent_linux_arm64", "install.sh", "dc-agent_1.0.0-1_amd64.deb",
		"dc-agent_1.0.0-1_arm64.deb", "dc-agent-1.0.0-1.x86_64.rpm", "dc-agent-1.0.0-1.aarch64.rpm"} {
		want := fileSum(t, filepath.Join(dist, v1, name))
		if !strings.Contains(string(sums), want+"  "+name+"\n") {
			t.Errorf("SHA256SUMS lacks %s %s:\n%s", want, name, sums)
		}
	}
	// Stripped, static, stamped.
	bin := filepath.Join(dist, v1, "dc-agent_linux_amd64")
	if v := binVersion(t, bin); !strings.Contains(v, "dc-agent "+v1+" (commit 0123456789abcdef") {
		t.Fatalf("--version: %s", v)
	}
	if out, _ := exec.Command("file", bin).Output(); len(out) > 0 && (!strings.Contains(string(out), "statically linked") || !strings.Contains(string(out), "stripped") || strings.Contains(string(out), "not stripped")) {
		t.Errorf("binary is not static and stripped: %s", out)
	}
	st, _ := os.Stat(bin)
	if st.ModTime().Unix() != 1700000000 {
		t.Errorf("binary mtime %v, want SOURCE_DATE_EPOCH", st.ModTime())
	}
}

func TestReleaseIsReproducible(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	// A second build from scratch (one arch keeps it quick) must give the
	// same bytes for every file it makes.
	again := t.TempDir()
	if err := buildRelease(repoRoot(t), again, v1, "ARCHES=amd64"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(again, v1, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(filepath.Join(dist, v1, "SHA256SUMS"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 4 { // binary, install.sh, deb, rpm
		t.Fatalf("second build made %d files:\n%s", len(lines), b)
	}
	for _, line := range lines {
		if !strings.Contains(string(first), line+"\n") {
			t.Errorf("not reproduced: %s\nfirst build:\n%s", line, first)
		}
	}
}

func TestInstallScript(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	script := installScript(t)
	for _, sh := range []string{"dash", "bash"} {
		t.Run(sh, func(t *testing.T) {
			t.Parallel()
			shPath := testutil.RequireBinary(t, sh)
			prefix := t.TempDir()
			bin := filepath.Join(prefix, "usr/local/bin/dc-agent")
			env := []string{"DC_AGENT_BASE_URL=" + srv.URL + "/rel/", "DC_AGENT_PREFIX=" + prefix}

			// Fresh install of a pinned version.
			r := shell(t, shPath, script, append(env, "DC_AGENT_VERSION="+v1))
			if r.code != 0 {
				t.Fatalf("fresh install: exit %d\n%s", r.code, r.stderr)
			}
			if fileSum(t, bin) != fileSum(t, filepath.Join(dist, v1, "dc-agent_linux_amd64")) {
				t.Fatal("installed binary differs from the release")
			}
			if st, _ := os.Stat(bin); st.Mode().Perm() != 0o755 {
				t.Fatalf("mode %v", st.Mode())
			}
			if !strings.Contains(binVersion(t, bin), v1) {
				t.Fatal("wrong version installed")
			}
			if last := lastLine(r.stdout); last != "Next: sudo "+bin {
				t.Fatalf("last line %q, want the next command", last)
			}
			onlyFiles(t, filepath.Dir(bin), "dc-agent")

			// Re-run: nothing changes, not even the file's inode.
			st1, _ := os.Stat(bin)
			r = shell(t, shPath, script, append(env, "DC_AGENT_VERSION="+v1))
			st2, _ := os.Stat(bin)
			if r.code != 0 || !strings.Contains(r.stderr, "already installed") {
				t.Fatalf("re-run: exit %d\n%s", r.code, r.stderr)
			}
			if !os.SameFile(st1, st2) || !st1.ModTime().Equal(st2.ModTime()) {
				t.Fatal("re-run replaced the unchanged binary")
			}

			// Upgrade to the latest release in place.
			r = shell(t, shPath, script, env)
			if r.code != 0 {
				t.Fatalf("upgrade: exit %d\n%s", r.code, r.stderr)
			}
			if !strings.Contains(binVersion(t, bin), v2) {
				t.Fatalf("upgrade did not install %s", v2)
			}
			onlyFiles(t, filepath.Dir(bin), "dc-agent")

			// --uninstall removes it; a second one has nothing to do.
			r = shell(t, shPath, script, env, "--uninstall")
			if r.code != 0 {
				t.Fatalf("--uninstall: exit %d\n%s", r.code, r.stderr)
			}
			mustNotExist(t, bin)
			r = shell(t, shPath, script, env, "--uninstall")
			if r.code != 0 || !strings.Contains(r.stderr, "not installed") {
				t.Fatalf("second --uninstall: exit %d\n%s", r.code, r.stderr)
			}
		})
	}
}

func TestInstallScriptRefusals(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	script := installScript(t)
	for _, sh := range []string{"dash", "bash"} {
		t.Run(sh, func(t *testing.T) {
			t.Parallel()
			// A server per shell: the request counts below are its own.
			srv := serveRelease(t, dist)
			shPath := testutil.RequireBinary(t, sh)
			refuse := func(name string, want string, env []string, args ...string) {
				t.Helper()
				prefix := t.TempDir()
				r := shell(t, shPath, script, append(env, "DC_AGENT_PREFIX="+prefix), args...)
				if r.code == 0 {
					t.Errorf("%s: exit 0\n%s", name, r.stderr)
				}
				if !strings.Contains(r.stderr, want) {
					t.Errorf("%s: stderr lacks %q:\n%s", name, want, r.stderr)
				}
				if entries, _ := os.ReadDir(prefix); len(entries) != 0 {
					t.Errorf("%s: something was installed: %v", name, entries)
				}
			}
			base := "DC_AGENT_BASE_URL=" + srv.URL + "/rel"
			refuse("checksum mismatch", "checksum mismatch", []string{"DC_AGENT_BASE_URL=" + srv.URL + "/tampered", "DC_AGENT_VERSION=" + v2})
			refuse("binary that does not run", "does not run on this machine", []string{base, "DC_AGENT_VERSION=" + vBroken})
			refuse("missing version", "cannot download SHA256SUMS", []string{base, "DC_AGENT_VERSION=v9.9.9"})
			refuse("path as version", "is not a release version", []string{base, "DC_AGENT_VERSION=../../etc"})
			refuse("plain http elsewhere", "must be an https:// URL", []string{"DC_AGENT_BASE_URL=http://example.net/rel"})
			refuse("unknown argument", "unknown argument", []string{base}, "--frobnicate")

			// Platforms: uname is shimmed on PATH; nothing is downloaded.
			for _, c := range []struct{ s, m, want string }{
				{"Linux", "mips64", "this machine is mips64"},
				{"Linux", "armv7l", "linux amd64 (x86_64) and arm64 (aarch64)"},
				{"Darwin", "arm64", "dc-agent runs on Linux; this is Darwin"},
			} {
				shim := t.TempDir()
				testutil.WriteFile(t, filepath.Join(shim, "uname"), "#!/bin/sh\ncase \"$1\" in -s) echo "+c.s+";; -m) echo "+c.m+";; esac\n", 0o755)
				before := srv.count()
				refuse(c.s+"/"+c.m, c.want, []string{base, "PATH=" + shim + ":" + os.Getenv("PATH")})
				if srv.count() != before {
					t.Errorf("%s/%s: the refused platform still downloaded something", c.s, c.m)
				}
			}
		})
	}
}

// TestInstallScriptNeverPrompts runs the installer as an unprivileged user
// without a prefix: it needs root for /usr/local/bin, may not ask for a
// password (stdin is the script), so it stops and says how to run it.
func TestInstallScriptNeverPrompts(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	setpriv := testutil.RequireBinary(t, "setpriv")
	if os.Geteuid() != 0 {
		testutil.Unavailable(t, "switching to an unprivileged user needs root")
	}
	before, _ := os.ReadFile("/usr/local/bin/dc-agent")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", testutil.RequireBinary(t, "dash"), "-s")
	cmd.Stdin = bytes.NewReader(installScript(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/tmp", "DC_AGENT_BASE_URL=" + srv.URL + "/rel"}
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil {
		t.Fatalf("unprivileged install: err=%v ctx=%v\n%s", err, ctx.Err(), out)
	}
	if !strings.Contains(string(out), "needs root; run: curl -fsSL <this script's URL> | sudo sh") {
		t.Fatalf("no clear refusal:\n%s", out)
	}
	if after, _ := os.ReadFile("/usr/local/bin/dc-agent"); !bytes.Equal(before, after) {
		t.Fatal("/usr/local/bin/dc-agent changed")
	}
}

func TestInstallScriptWithWget(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	testutil.RequireBinary(t, "wget")
	// A PATH with wget and the basic tools, but no curl and no openssl.
	shim := toolShim(t, "wget")
	prefix := t.TempDir()
	r := shell(t, testutil.RequireBinary(t, "dash"), releasedInstallScript(t, dist), []string{"PATH=" + shim, "DC_AGENT_BASE_URL=" + srv.URL + "/rel", "DC_AGENT_PREFIX=" + prefix})
	if r.code != 0 {
		t.Fatalf("install with wget: exit %d\n%s", r.code, r.stderr)
	}
	// Without openssl the signature cannot be checked, and it says so.
	if !strings.Contains(r.stderr, "openssl is not installed, so only the SHA-256 checksum is checked, not the release's signature") {
		t.Fatalf("no word about the unchecked signature:\n%s", r.stderr)
	}
	if !strings.Contains(binVersion(t, filepath.Join(prefix, "usr/local/bin/dc-agent")), v2) {
		t.Fatal("wget install did not install the latest")
	}
}

// TestTruncatedInstallScriptRunsNothing cuts the script at every line (and
// inside lines) and pipes the piece into the shell, as a dropped download
// would: no request may reach the server and nothing may be installed.
func TestTruncatedInstallScriptRunsNothing(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	script := installScript(t)
	lastLineStart := bytes.LastIndex(bytes.TrimRight(script, "\n"), []byte("\n")) + 1
	if !bytes.HasPrefix(script[lastLineStart:], []byte("main ")) {
		t.Fatalf("the script's last line is not the main call: %q", script[lastLineStart:])
	}
	// Every line end of the last 60 lines (main and the install steps it
	// calls), every fourth before, and a cut inside every tenth line.
	var ends []int
	for i, c := range script[:lastLineStart] {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	var cuts []int
	for k, n := range ends {
		if k%4 == 0 || k >= len(ends)-60 {
			cuts = append(cuts, n)
		}
		if k%10 == 5 && n > 10 {
			cuts = append(cuts, n-7)
		}
	}
	for _, sh := range []string{"dash", "bash"} {
		shPath := testutil.RequireBinary(t, sh)
		prefix := t.TempDir()
		env := []string{"DC_AGENT_BASE_URL=" + srv.URL + "/rel", "DC_AGENT_PREFIX=" + prefix}
		before := srv.count()
		for _, n := range cuts {
			r := shell(t, shPath, script[:n], env)
			if strings.Contains(r.stdout, "Next:") || strings.Contains(r.stderr, "downloading") {
				t.Fatalf("%s: the script cut at byte %d ran its body:\n%s%s", sh, n, r.stdout, r.stderr)
			}
		}
		if srv.count() != before {
			t.Fatalf("%s: truncated scripts made %d requests", sh, srv.count()-before)
		}
		if entries, _ := os.ReadDir(prefix); len(entries) != 0 {
			t.Fatalf("%s: a truncated script installed %v", sh, entries)
		}
	}
	t.Logf("%d cut points per shell", len(cuts))
}

// TestUpgradeCommand upgrades an installed release with its own
// `dc-agent upgrade` from the local server: check, upgrade with the
// previous binary kept, a checksum mismatch refused, and a release that
// does not run rolled back.
func TestUpgradeCommand(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	prefix := t.TempDir()
	bin := filepath.Join(prefix, "usr/local/bin/dc-agent")
	r := shell(t, testutil.RequireBinary(t, "dash"), installScript(t), []string{"DC_AGENT_BASE_URL=" + srv.URL + "/rel", "DC_AGENT_PREFIX=" + prefix, "DC_AGENT_VERSION=" + v1})
	if r.code != 0 {
		t.Fatalf("install: %s", r.stderr)
	}
	noConfig := filepath.Join(prefix, "none.toml")
	upgrade := func(base string, args ...string) run {
		t.Helper()
		return runCmd(t, exec.Command(bin, append([]string{"--config", noConfig, "upgrade", "--no-restart", "--release-url", base}, args...)...), nil)
	}
	rel := srv.URL + "/rel"

	r = upgrade(rel, "--check")
	if r.code != 0 || !strings.Contains(r.stdout, v2+" is available") {
		t.Fatalf("--check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(binVersion(t, bin), v1) {
		t.Fatal("--check changed the binary")
	}

	r = upgrade(srv.URL+"/tampered", "--version", v2)
	if r.code == 0 || !strings.Contains(r.stderr, "checksum mismatch") {
		t.Fatalf("tampered: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(binVersion(t, bin), v1) {
		t.Fatal("a tampered binary was installed")
	}

	r = upgrade(rel)
	if r.code != 0 || !strings.Contains(r.stdout, "Upgraded to dc-agent "+v2) {
		t.Fatalf("upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(binVersion(t, bin), v2) || !strings.Contains(binVersion(t, bin+".previous"), v1) {
		t.Fatal("after upgrade: want the new binary and the old one kept as .previous")
	}
	r = upgrade(rel)
	if r.code != 0 || !strings.Contains(r.stdout, "up to date ("+v2+")") {
		t.Fatalf("second upgrade: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	r = upgrade(rel, "--version", vBroken)
	if r.code == 0 || !strings.Contains(r.stderr, "rolled back") {
		t.Fatalf("broken release: exit %d\n%s", r.code, r.stderr)
	}
	if !strings.Contains(binVersion(t, bin), v2) {
		t.Fatal("the broken release was not rolled back")
	}
	onlyFiles(t, filepath.Dir(bin), "dc-agent", "dc-agent.previous")
}

// TestDebPackage lists the deb, unpacks it into a test root with dpkg -x and
// checks what a host would get.
func TestDebPackage(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	dpkgDeb := testutil.RequireBinary(t, "dpkg-deb")
	dpkg := testutil.RequireBinary(t, "dpkg")
	deb := filepath.Join(dist, v1, "dc-agent_1.0.0-1_amd64.deb")
	out, err := exec.Command(dpkgDeb, "--contents", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg-deb --contents: %v\n%s", err, out)
	}
	listing := string(out)
	t.Logf("deb contents:\n%s", listing)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/dc-agent", "./usr/lib/systemd/system/dc-agent.service",
		"./usr/lib/sysusers.d/dc-agent.conf", "./usr/lib/tmpfiles.d/dc-agent.conf",
		"./usr/share/dc-agent/dc-agent.toml.example", "./etc/dc-agent/",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("deb listing lacks %q", want)
		}
	}
	info, err := exec.Command(dpkgDeb, "--info", deb).CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Package: dc-agent", "Version: 1.0.0-1", "Architecture: amd64", "postinst", "prerm", "postrm"} {
		if !strings.Contains(string(info), want) {
			t.Errorf("deb info lacks %q:\n%s", want, info)
		}
	}

	root := t.TempDir()
	if out, err := exec.Command(dpkg, "-x", deb, root).CombinedOutput(); err != nil {
		t.Fatalf("dpkg -x: %v\n%s", err, out)
	}
	if v := binVersion(t, filepath.Join(root, "usr/bin/dc-agent")); !strings.Contains(v, v1) {
		t.Fatalf("packaged binary: %s", v)
	}
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/dc-agent.service"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := RenderUnit(UnitParams{Binary: "/usr/bin/dc-agent", ConfigPath: DefaultConfig, System: true, GraceSeconds: 300})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(unit, want) {
		t.Fatalf("packaged unit differs from the rendered template:\n%s", unit)
	}
	// (TestSystemdAnalyzeVerify verifies that rendering; only the binary
	// path differs, and it does not exist on this host.)
	if b, _ := os.ReadFile(filepath.Join(root, "usr/lib/sysusers.d/dc-agent.conf")); !bytes.Equal(b, SysusersConf()) {
		t.Error("packaged sysusers.d config differs")
	}
	if st, err := os.Stat(filepath.Join(root, "etc/dc-agent")); err != nil || st.Mode().Perm() != 0o750 {
		t.Errorf("/etc/dc-agent: %v", err)
	}
}

func TestRpmPackage(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	rpm := testutil.RequireBinary(t, "rpm")
	pkg := filepath.Join(dist, v1, "dc-agent-1.0.0-1.x86_64.rpm")
	out, err := exec.Command(rpm, "-qlp", "--dbpath", t.TempDir(), pkg).CombinedOutput()
	if err != nil {
		t.Fatalf("rpm -qlp: %v\n%s", err, out)
	}
	for _, want := range []string{"/usr/bin/dc-agent\n", "/usr/lib/systemd/system/dc-agent.service\n", "/usr/lib/sysusers.d/dc-agent.conf\n", "/etc/dc-agent\n"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rpm lacks %q:\n%s", want, out)
		}
	}
	info, err := exec.Command(rpm, "-qip", "--dbpath", t.TempDir(), pkg).CombinedOutput()
	if err != nil || !strings.Contains(string(info), "Version     : 1.0.0") || !strings.Contains(string(info), "Architecture: x86_64") {
		t.Fatalf("rpm -qip: %v\n%s", err, info)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// TestUpgradeRestartsServiceWhenIdle installs a release with install.sh,
// runs it as the unit `dc-agent service install --user` renders under a
// real systemd --user, and upgrades it with `dc-agent upgrade` while a
// provision is in flight: the binary is swapped at once, the restart waits
// until the provision is done, and the service then runs the new version.
// install.sh re-runs restart the service only while it runs, and a broken
// release is rolled back without touching the running service.
func TestUpgradeRestartsServiceWhenIdle(t *testing.T) {
	t.Parallel()
	dist := releaseTree(t)
	srv := serveRelease(t, dist)
	// One short root for everything: unix socket paths are limited.
	root := testutil.ShortDir(t)
	dash := testutil.RequireBinary(t, "dash")
	script := installScript(t)
	bin := filepath.Join(root, "usr/local/bin/dc-agent")
	m := testutil.StartUserManager(t, root)
	instEnv := append([]string{"DC_AGENT_BASE_URL=" + srv.URL + "/rel", "DC_AGENT_PREFIX=" + root, "DC_AGENT_SYSTEMCTL=systemctl --user"},
		m.Vars...)
	if r := shell(t, dash, script, append(instEnv, "DC_AGENT_VERSION="+v1)); r.code != 0 {
		t.Fatalf("install.sh: %s", r.stderr)
	}

	api := apitest.Start(t, apitest.WithNextHeartbeat(1))
	prov := api.NewProvider("Upgrade Test Hosting")
	key := api.NewAgent(prov)
	etc := filepath.Join(root, "etc/dc-agent")
	if err := identity.SaveAgentKey(filepath.Join(etc, "agent.key"), key, false); err != nil {
		t.Fatal(err)
	}
	// A provision waits for the file gate once the file hold exists: the
	// test decides when the provision in flight ends.
	hold, gate := filepath.Join(root, "backend/hold"), filepath.Join(root, "backend/gate")
	backend := testutil.WriteFile(t, filepath.Join(root, "backend/backend.sh"), `#!/bin/sh
in=$(cat)
case $in in
*'"action":"provision"'*) if [ -e `+hold+` ]; then while [ ! -e `+gate+` ]; do sleep 0.05; done; fi
	touch `+filepath.Join(root, "backend/provisioned")+`
	echo '{"success":true,"instance":{"external_id":"inst-1","ip_address":"192.0.2.10","ssh_port":22}}' ;;
*'"action":"health_check"'*) echo '{"success":true,"health":{"status":"healthy","uptime_seconds":5}}' ;;
*) echo '{"success":true}' ;;
esac
`, 0o755)
	socket := filepath.Join(root, "run/dc-agent/status.sock")
	cfgPath := testutil.AgentTOML{Endpoint: api.URL, ProviderPubkey: prov.Pubkey, AgentKey: filepath.Join(etc, "agent.key"),
		StateDir: filepath.Join(root, "var/lib/dc-agent"), StatusSocket: socket,
		Agent: fmt.Sprintf(`release_url = %q
# TimeoutStopSec = 35 s. What waits for the provision here is the upgrade,
# not the stop; and systemd --user on this cgroup-v1 host sometimes stays in
# deactivating (final-sigkill) after the agent exited until TimeoutStopSec.
shutdown_grace_seconds = 5`, srv.URL+"/rel"),
		Rest: testutil.ScriptProvisionerTOML(backend, []string{"provision", "terminate", "health_check"}, "timeout_seconds = 60"),
	}.Write(t, filepath.Join(etc, "dc-agent.toml"))

	cli := func(args ...string) run {
		t.Helper()
		return runCmd(t, exec.Command(bin, append([]string{"--config", cfgPath}, args...)...), m.Vars)
	}
	running := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := status.NewClient(socket).State(ctx)
		if err != nil {
			t.Fatalf("status socket: %v", err)
		}
		return st.Version
	}
	const unit = "dc-agent.service"
	// A release binary: production timing (it has no test flags).
	if r := cli("service", "install", "--user", "--binary", bin); r.code != 0 {
		t.Fatalf("service install: %s%s", r.stdout, r.stderr)
	}
	if v := running(); v != v1 {
		t.Fatalf("the service runs %q, want %s", v, v1)
	}

	// A provision in flight when the upgrade starts: held until the upgrade
	// says it waits for it, whatever the machine's load.
	testutil.WriteFile(t, hold, "", 0o644)
	id := api.CreateContract(prov, apitest.ContractSpec{})
	testutil.Eventually(t, 20*time.Second, "the contract provisioning", func() bool { return api.Contract(id).Status == dcapi.StatusProvisioning })
	pid := m.Show(t, unit, "MainPID")["MainPID"]
	up := exec.Command(bin, "--config", cfgPath, "upgrade", "--user")
	up.Env = m.Env
	var upOut bytes.Buffer
	upErr := &testutil.SyncBuffer{}
	up.Stdout, up.Stderr = &upOut, upErr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	upDone := make(chan error, 1)
	go func() { upDone <- up.Wait() }()
	testutil.Eventually(t, 30*time.Second, "the upgrade waiting for the provision", func() bool {
		return strings.Contains(upErr.String(), "waiting for 1 provision(s) in flight before restarting")
	})
	// The binary is already swapped; the service still runs the old one.
	if !strings.Contains(binVersion(t, bin), v2) || m.Show(t, unit, "MainPID")["MainPID"] != pid || running() != v1 {
		t.Fatal("while waiting: want the new binary installed and the old process still running")
	}
	testutil.WriteFile(t, gate, "", 0o644)
	err := <-upDone
	r := run{stdout: upOut.String(), stderr: upErr.String()}
	if err != nil || !strings.Contains(r.stdout, "Upgraded to dc-agent "+v2+"; the service runs it now") {
		t.Fatalf("upgrade: %v\n%s%s", err, r.stdout, r.stderr)
	}
	// Finished before the restart (a hard stop would have killed it), and
	// reported by the old or the new process (outbox).
	if _, err := os.Stat(filepath.Join(root, "backend/provisioned")); err != nil {
		t.Fatal("the provision in flight did not finish before the restart")
	}
	testutil.Eventually(t, 20*time.Second, "the contract reported provisioned", func() bool {
		st := api.Contract(id).Status
		return st == dcapi.StatusProvisioned || st == dcapi.StatusActive
	})
	if v := running(); v != v2 {
		t.Fatalf("after upgrade the service runs %q, want %s", v, v2)
	}
	p := m.Show(t, unit, "MainPID", "NRestarts", "ActiveState")
	if p["MainPID"] == pid || p["NRestarts"] != "0" || p["ActiveState"] != "active" {
		t.Fatalf("after upgrade: %v (pid was %s)", p, pid)
	}

	// A release that does not run: rolled back, the service untouched.
	pid = p["MainPID"]
	r = cli("upgrade", "--user", "--version", vBroken)
	if r.code == 0 || !strings.Contains(r.stderr, "rolled back") {
		t.Fatalf("broken upgrade: exit %d\n%s", r.code, r.stderr)
	}
	if m.Show(t, unit, "MainPID")["MainPID"] != pid || running() != v2 || !strings.Contains(binVersion(t, bin), v2) {
		t.Fatal("the broken release disturbed the running service or the binary")
	}

	// A release that runs but does not start as a service: the failed
	// restart puts the previous binary back and starts it.
	r = cli("upgrade", "--user", "--version", vNoStart)
	if r.code == 0 || !strings.Contains(r.stderr, "rolled back") || !strings.Contains(r.stderr, "failed to start") {
		t.Fatalf("upgrade to a release that does not start: exit %d\n%s", r.code, r.stderr)
	}
	t.Logf("upgrade to %s, as a person sees it:\n%s", vNoStart, r.stderr)
	m.WaitFor(t, unit, 30*time.Second, "the previous version running again", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running"
	})
	if v := running(); v != v2 || !strings.Contains(binVersion(t, bin), v2) {
		t.Fatalf("after the rollback the service runs %q", v)
	}
	pid = m.Show(t, unit, "MainPID")["MainPID"]

	// install.sh re-run while the service runs: binary replaced, service
	// restarted into it.
	if r := shell(t, dash, script, append(instEnv, "DC_AGENT_VERSION="+v1)); r.code != 0 || !strings.Contains(r.stderr, "restarting the running dc-agent service") {
		t.Fatalf("install.sh with the service running: exit %d\n%s", r.code, r.stderr)
	}
	m.WaitFor(t, unit, 30*time.Second, "running again", func(p map[string]string) bool {
		return p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != pid
	})
	if v := running(); v != v1 {
		t.Fatalf("after install.sh the service runs %q, want %s", v, v1)
	}
	// ... and while it is stopped: binary replaced, service left stopped.
	if _, err := m.Systemctl("stop", unit); err != nil {
		t.Fatal(err)
	}
	if r := shell(t, dash, script, instEnv); r.code != 0 || strings.Contains(r.stderr, "restarting") {
		t.Fatalf("install.sh with the service stopped: exit %d\n%s", r.code, r.stderr)
	}
	if p := m.Show(t, unit, "ActiveState"); p["ActiveState"] != "inactive" {
		t.Fatalf("install.sh started a stopped service: %v", p)
	}
	if !strings.Contains(binVersion(t, bin), v2) {
		t.Fatal("install.sh did not upgrade the binary")
	}
}
