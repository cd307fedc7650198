package upgrade

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/releasesig"
)

// releaseKey signs the test releases; the Sources of serve trust it.
var releaseKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

// release serves a release tree over real HTTP: files[version][name]. A
// version's SHA256SUMS.sig, unless files sets one, is releaseKey's
// signature of its SHA256SUMS as served (the release as signed).
type release struct {
	latest string
	files  map[string]map[string]string
	mu     sync.Mutex
	hits   []string
}

func (r *release) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.hits = append(r.hits, req.URL.Path)
	r.mu.Unlock()
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/rel/"), "/")
	if len(parts) != 2 {
		http.NotFound(w, req)
		return
	}
	if parts[0] == "latest" && parts[1] == "VERSION" {
		fmt.Fprintln(w, r.latest)
		return
	}
	body, ok := r.files[parts[0]][parts[1]]
	if sums, signed := r.files[parts[0]]["SHA256SUMS"]; !ok && signed && parts[1] == releasesig.SigName {
		body, ok = string(ed25519.Sign(releaseKey, []byte(sums))), true
	}
	if !ok {
		http.NotFound(w, req)
		return
	}
	_, _ = w.Write([]byte(body))
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// fakeBinary is a stand-in dc-agent whose --version names version.
func fakeBinary(version string) string {
	return "#!/bin/sh\necho 'dc-agent " + version + " (commit x, go, linux/amd64)'\n"
}

// addRelease adds version with the given amd64 binary and a correct
// SHA256SUMS.
func (r *release) add(version, binary string) {
	if r.files == nil {
		r.files = map[string]map[string]string{}
	}
	r.files[version] = map[string]string{
		"dc-agent_linux_amd64": binary,
		"SHA256SUMS":           sum(binary) + "  dc-agent_linux_amd64\n" + sum("x") + "  install.sh\n",
	}
}

func serve(t *testing.T, r *release) Source {
	t.Helper()
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	src, err := NewSource(srv.URL + "/rel/")
	if err != nil {
		t.Fatal(err)
	}
	src.Keys = []ed25519.PublicKey{releaseKey.Public().(ed25519.PublicKey)}
	return src
}

// installed writes the "current" binary into a temp bin dir.
func installed(t *testing.T, version string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "dc-agent")
	if err := os.WriteFile(bin, []byte(fakeBinary(version)), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// noTemps fails if a download or rollback temp file was left behind.
func noTemps(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".dc-agent") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestUpgradeToLatestKeepsPrevious(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	bin := installed(t, "v1.0.0")
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Installed || res.Target != "v1.1.0" || res.Previous != bin+".previous" {
		t.Fatalf("result %+v", res)
	}
	if got := read(t, bin); got != fakeBinary("v1.1.0") {
		t.Fatalf("installed binary is %q", got)
	}
	if got := read(t, bin+".previous"); got != fakeBinary("v1.0.0") {
		t.Fatalf("previous binary is %q", got)
	}
	if st, _ := os.Stat(bin); st.Mode().Perm() != 0o755 {
		t.Fatalf("mode %v", st.Mode())
	}
	noTemps(t, filepath.Dir(bin))
}

func TestUpgradePinnedVersionAndCheck(t *testing.T) {
	r := &release{latest: "v2.0.0"}
	r.add("v1.5.0", fakeBinary("v1.5.0"))
	r.add("v2.0.0", fakeBinary("v2.0.0"))
	src := serve(t, r)
	bin := installed(t, "v1.0.0")

	res, err := Run(context.Background(), Options{Source: src, Current: "v1.0.0", Binary: bin, Arch: "amd64", Check: true})
	if err != nil || !res.Available || res.Target != "v2.0.0" || res.Installed {
		t.Fatalf("check: %+v %v", res, err)
	}
	if read(t, bin) != fakeBinary("v1.0.0") {
		t.Fatal("--check changed the binary")
	}
	res, err = Run(context.Background(), Options{Source: src, Current: "v1.0.0", Binary: bin, Arch: "amd64", Version: "v1.5.0"})
	if err != nil || !res.Installed || read(t, bin) != fakeBinary("v1.5.0") {
		t.Fatalf("pinned: %+v %v", res, err)
	}
	res, err = Run(context.Background(), Options{Source: src, Current: "v1.5.0", Binary: bin, Arch: "amd64", Version: "v1.5.0"})
	if err != nil || res.Installed || res.Available {
		t.Fatalf("same version: %+v %v", res, err)
	}
}

func TestAutoNeverDowngrades(t *testing.T) {
	r := &release{latest: "v1.0.0"}
	r.add("v1.0.0", fakeBinary("v1.0.0"))
	bin := installed(t, "v1.2.0")
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.2.0", Binary: bin, Arch: "amd64", OnlyNewer: true})
	if err != nil || res.Installed || res.Available {
		t.Fatalf("auto downgrade: %+v %v", res, err)
	}
}

func TestChecksumMismatchInstallsNothing(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	r.files["v1.1.0"]["dc-agent_linux_amd64"] = fakeBinary("v6.6.6") // tampered after signing the sums
	bin := installed(t, "v1.0.0")
	_, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64"})
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("err = %v", err)
	}
	if read(t, bin) != fakeBinary("v1.0.0") {
		t.Fatal("a binary with a bad checksum was installed")
	}
	if _, err := os.Stat(bin + ".previous"); err == nil {
		t.Fatal("a .previous appeared although nothing was installed")
	}
	noTemps(t, filepath.Dir(bin))
}

func TestMissingAssetIsRefused(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	r.files["v1.1.0"]["SHA256SUMS"] = sum("x") + "  install.sh\n"
	bin := installed(t, "v1.0.0")
	_, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64"})
	if err == nil || !strings.Contains(err.Error(), "lists no dc-agent_linux_amd64") {
		t.Fatalf("err = %v", err)
	}
}

func TestRollbackWhenNewBinaryDoesNotRun(t *testing.T) {
	for name, broken := range map[string]string{
		"exits non-zero": "#!/bin/sh\necho 'illegal instruction' >&2\nexit 132\n",
		"wrong version":  fakeBinary("v0.0.1"),
		"not a program":  "\x7fELF garbage",
	} {
		t.Run(name, func(t *testing.T) {
			r := &release{latest: "v1.1.0"}
			r.add("v1.1.0", broken)
			bin := installed(t, "v1.0.0")
			res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64"})
			if !errors.Is(err, ErrRolledBack) {
				t.Fatalf("err = %v, want a rollback", err)
			}
			if res.Installed {
				t.Fatal("result says installed after a rollback")
			}
			if read(t, bin) != fakeBinary("v1.0.0") {
				t.Fatal("the old binary was not restored")
			}
			noTemps(t, filepath.Dir(bin))
		})
	}
}

// svc is a stand-in for the running service: it counts restarts and
// reports the in-flight provisions it is told to.
type svc struct {
	active    bool
	version   string
	inFlight  []int // successive answers; the last repeats
	restarts  int
	failFirst bool // the first restart fails (the new version does not start)
	runErr    error
}

func (s *svc) Active(context.Context) (bool, error) { return s.active, nil }
func (s *svc) Running(context.Context) (string, int, error) {
	if s.runErr != nil {
		return "", 0, s.runErr
	}
	n := s.inFlight[0]
	if len(s.inFlight) > 1 {
		s.inFlight = s.inFlight[1:]
	}
	return s.version, n, nil
}
func (s *svc) Restart(context.Context) error {
	s.restarts++
	if s.failFirst && s.restarts == 1 {
		return errors.New("dc-agent.service failed to start")
	}
	return nil
}

func TestRestartWaitsForInFlightProvisions(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	bin := installed(t, "v1.0.0")
	s := &svc{active: true, version: "v1.0.0", inFlight: []int{2, 1, 0}}
	var lines []string
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64",
		Service: s, Poll: time.Millisecond, Progress: func(l string) { lines = append(lines, l) }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Restarted || s.restarts != 1 {
		t.Fatalf("restarted=%v restarts=%d", res.Restarted, s.restarts)
	}
	if len(s.inFlight) != 1 {
		t.Fatalf("restarted before the in-flight count reached 0 (left %v)", s.inFlight)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "waiting for 2 provision(s)") {
		t.Fatalf("no waiting message in %q", lines)
	}
}

func TestRestartLeftPendingWhileBusy(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	bin := installed(t, "v1.0.0")
	s := &svc{active: true, version: "v1.0.0", inFlight: []int{3}}
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64",
		Service: s, Poll: time.Millisecond, IdleWait: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if s.restarts != 0 || !res.Installed || !strings.Contains(res.RestartPending, "3 provision(s) still in flight") {
		t.Fatalf("restarts=%d result %+v", s.restarts, res)
	}
}

func TestRestartSkippedWhenAgentCannotBeAsked(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	bin := installed(t, "v1.0.0")
	s := &svc{active: true, runErr: errors.New("dc-agent is not running")}
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64", Service: s})
	if err != nil || s.restarts != 0 || res.RestartPending == "" {
		t.Fatalf("err=%v restarts=%d result %+v", err, s.restarts, res)
	}
}

func TestStaleServiceIsRestartedWhenBinaryIsCurrent(t *testing.T) {
	// The binary was upgraded earlier while provisions ran; a later run
	// finds it current and restarts the service that still runs the old one.
	r := &release{latest: "v1.1.0"}
	bin := installed(t, "v1.1.0")
	s := &svc{active: true, version: "v1.0.0", inFlight: []int{0}}
	res, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.1.0", Binary: bin, Arch: "amd64", Service: s})
	if err != nil || !res.Restarted || s.restarts != 1 {
		t.Fatalf("err=%v restarts=%d %+v", err, s.restarts, res)
	}
	s = &svc{active: true, version: "v1.1.0", inFlight: []int{0}}
	if _, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.1.0", Binary: bin, Arch: "amd64", Service: s}); err != nil || s.restarts != 0 {
		t.Fatalf("a service on the current version was restarted (%d): %v", s.restarts, err)
	}
}

func TestRollbackWhenNewVersionDoesNotStart(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	bin := installed(t, "v1.0.0")
	s := &svc{active: true, version: "v1.0.0", inFlight: []int{0}, failFirst: true}
	_, err := Run(context.Background(), Options{Source: serve(t, r), Current: "v1.0.0", Binary: bin, Arch: "amd64", Service: s})
	if !errors.Is(err, ErrRolledBack) {
		t.Fatalf("err = %v", err)
	}
	if read(t, bin) != fakeBinary("v1.0.0") || s.restarts != 2 {
		t.Fatalf("old binary restored=%v, restarts=%d (want 2: new, then old)", read(t, bin) == fakeBinary("v1.0.0"), s.restarts)
	}
}

func TestConcurrentUpgradesAreLocked(t *testing.T) {
	dir := t.TempDir()
	unlock, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDir(dir); err == nil || !strings.Contains(err.Error(), "another dc-agent upgrade") {
		t.Fatalf("second lock: %v", err)
	}
	unlock()
	unlock2, err := lockDir(dir)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	unlock2()
}

func TestSourceLayout(t *testing.T) {
	gh, err := NewSource("https://github.com/decent-stuff/dc-agent/releases/")
	if err != nil {
		t.Fatal(err)
	}
	if got := gh.LatestURL(); got != "https://github.com/decent-stuff/dc-agent/releases/latest/download/VERSION" {
		t.Errorf("github latest: %s", got)
	}
	if got := gh.AssetURL("v1.2.3", "SHA256SUMS"); got != "https://github.com/decent-stuff/dc-agent/releases/download/v1.2.3/SHA256SUMS" {
		t.Errorf("github asset: %s", got)
	}
	st, err := NewSource("https://dl.example.net/dc-agent")
	if err != nil {
		t.Fatal(err)
	}
	if got := st.LatestURL(); got != "https://dl.example.net/dc-agent/latest/VERSION" {
		t.Errorf("static latest: %s", got)
	}
	if got := st.AssetURL("v1.2.3", "dc-agent_linux_arm64"); got != "https://dl.example.net/dc-agent/v1.2.3/dc-agent_linux_arm64" {
		t.Errorf("static asset: %s", got)
	}
	for _, bad := range []string{"http://dl.example.net/x", "ftp://x/y", "not a url", "https://x/y?q=1", ""} {
		if _, err := NewSource(bad); err == nil {
			t.Errorf("NewSource(%q) accepted", bad)
		}
	}
	for _, ok := range []string{"http://127.0.0.1:8080/r", "http://localhost/r", "http://[::1]:9/r"} {
		if _, err := NewSource(ok); err != nil {
			t.Errorf("NewSource(%q): %v", ok, err)
		}
	}
}

func TestLatestRejectsBadPointer(t *testing.T) {
	for _, latest := range []string{"../../etc/passwd", "", strings.Repeat("9", 65), "v1 2"} {
		r := &release{latest: latest}
		if _, err := serve(t, r).Latest(context.Background()); err == nil {
			t.Errorf("latest %q accepted", latest)
		}
	}
}

func TestParseChecksums(t *testing.T) {
	a, b := sum("a"), sum("b")
	good := a + "  dc-agent_linux_amd64\n" + strings.ToUpper(b) + " *install.sh\r\n\n"
	m, err := ParseChecksums([]byte(good))
	if err != nil || m["dc-agent_linux_amd64"] != a || m["install.sh"] != b {
		t.Fatalf("%v %v", m, err)
	}
	for name, bad := range map[string]string{
		"empty":        "\n\n",
		"short sum":    "abc  file\n",
		"not hex":      strings.Repeat("z", 64) + "  file\n",
		"path":         a + "  ../evil\n",
		"conflict":     a + "  f\n" + b + "  f\n",
		"no file name": a + "  \n",
	} {
		if _, err := ParseChecksums([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestNewer(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"v1.2.0", "v1.1.9", true}, {"v1.10.0", "v1.9.0", true}, {"v1.2.3", "v1.2.3", false},
		{"v1.2.3", "v1.2.3-rc.1", true}, {"v1.2.3-rc.1", "v1.2.3", false}, {"v1.2.3-rc.2", "v1.2.3-rc.1", true},
		{"v1.0.0", "dev", true}, {"dev", "v1.0.0", false}, {"6c2617a", "dev", false}, {"v0.9.0", "v1.0.0", false},
	} {
		if got := Newer(c.a, c.b); got != c.want {
			t.Errorf("Newer(%s, %s) = %v", c.a, c.b, got)
		}
	}
}

func FuzzParseChecksums(f *testing.F) {
	f.Add([]byte(sum("a") + "  dc-agent_linux_amd64\n"))
	f.Add([]byte(sum("a") + " *x\r\n" + sum("b") + "  y\n"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseChecksums(data)
		if err != nil {
			return
		}
		for name, s := range m {
			if len(s) != 64 || strings.ContainsAny(name, "/\\\x00") || name == "" {
				t.Fatalf("accepted %q → %q", name, s)
			}
		}
	})
}

func FuzzValidVersion(f *testing.F) {
	for _, s := range []string{"v1.2.3", "6c2617a-dirty", "../x", "", "v1 2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		if ValidVersion(v) == nil && (strings.ContainsAny(v, "/\\ \n%?#") || strings.HasPrefix(v, ".") || v == "") {
			t.Fatalf("accepted %q", v)
		}
	})
}
