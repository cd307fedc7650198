// Package upgrade replaces the installed dc-agent binary with a release:
// it reads the release layout (docs/release.md) that `make release` writes
// and install.sh reads, checks SHA256SUMS against its Ed25519 signature
// (SHA256SUMS.sig, by a key built into this binary) and the download
// against SHA256SUMS, swaps the binary atomically keeping the previous one,
// rolls back if the new binary does not run, and restarts the service only
// when no provision is in flight.
package upgrade

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/internal/releasesig"
	"github.com/decent-stuff/dc-agent/internal/safeurl"
)

// The release layout under a base URL B:
//
//	B/latest/VERSION           one line: the newest version
//	B/<version>/SHA256SUMS     sha256sum output for every file of the release
//	B/<version>/SHA256SUMS.sig Ed25519 signature of SHA256SUMS (64 bytes)
//	B/<version>/dc-agent_linux_<arch>
//	B/<version>/install.sh, packages, VERSION
//
// A GitHub releases URL (https://github.com/OWNER/REPO/releases) maps to
// GitHub's own paths: B/latest/download/VERSION and B/download/<version>/<file>.

// Limits on what a release server may send.
const (
	maxVersionBytes   = 256
	maxChecksumsBytes = 1 << 20
	maxSigBytes       = 1 << 10
	maxBinaryBytes    = 512 << 20
)

// Source is a release location and the keys its releases must be signed
// with.
type Source struct {
	// Base is the release base URL (agent.release_url).
	Base string
	// Keys are the release keys a SHA256SUMS must be signed by (the ones
	// built into the binary: buildinfo.ReleaseKeys). None: every
	// download is refused.
	Keys []ed25519.PublicKey
	// HTTP is the client (default: one with a 10-minute timeout). Its
	// redirects are always held to safeurl.NoDowngrade.
	HTTP *http.Client
}

// NewSource checks base and returns a Source for it. Plain http is only
// accepted for loopback addresses.
func NewSource(base string) (Source, error) {
	base = strings.TrimRight(strings.TrimSpace(base), "/")
	u, err := url.Parse(base)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return Source{}, fmt.Errorf("release URL %q is not an http(s) URL; set agent.release_url to e.g. https://github.com/decent-stuff/dc-agent/releases", base)
	}
	if err := safeurl.Check(u); err != nil {
		return Source{}, fmt.Errorf("release URL %q uses plain http; use https (http is only accepted for a loopback address)", base)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Source{}, fmt.Errorf("release URL %q must not have a query or fragment", base)
	}
	return Source{Base: base}, nil
}

func (s Source) github() bool {
	u, err := url.Parse(s.Base)
	return err == nil && u.Host == "github.com" && strings.HasSuffix(u.Path, "/releases") && strings.Count(u.Path, "/") == 3
}

// LatestURL is where the newest version is named.
func (s Source) LatestURL() string {
	if s.github() {
		return s.Base + "/latest/download/VERSION"
	}
	return s.Base + "/latest/VERSION"
}

// AssetURL is where a file of a release lives.
func (s Source) AssetURL(version, name string) string {
	if s.github() {
		return s.Base + "/download/" + url.PathEscape(version) + "/" + url.PathEscape(name)
	}
	return s.Base + "/" + url.PathEscape(version) + "/" + url.PathEscape(name)
}

// client follows a redirect only to https (or loopback http from a
// loopback server), never from https to http.
func (s Source) client() *http.Client {
	c := http.Client{Timeout: 10 * time.Minute}
	if s.HTTP != nil {
		c = *s.HTTP
	}
	c.CheckRedirect = safeurl.NoDowngrade
	return &c
}

// get fetches url and returns the open body; non-200 is an error.
func (s Source) get(ctx context.Context, url string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("download %s: not found (404): no such release or file", url)
		}
		return nil, fmt.Errorf("download %s: %s", url, resp.Status)
	}
	return resp.Body, nil
}

// readSmall fetches a small file, refusing more than limit bytes.
func (s Source) readSmall(ctx context.Context, url string, limit int64) ([]byte, error) {
	body, err := s.get(ctx, url)
	if err != nil {
		return nil, err
	}
	defer body.Close()
	b, err := io.ReadAll(io.LimitReader(body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("download %s: larger than %d bytes; is this a release server?", url, limit)
	}
	return b, nil
}

// Latest returns the newest released version.
func (s Source) Latest(ctx context.Context) (string, error) {
	b, err := s.readSmall(ctx, s.LatestURL(), maxVersionBytes)
	if err != nil {
		return "", fmt.Errorf("find the latest release: %w", err)
	}
	v, _, _ := strings.Cut(string(b), "\n")
	v = strings.TrimSpace(v)
	if err := ValidVersion(v); err != nil {
		return "", fmt.Errorf("%s names %w", s.LatestURL(), err)
	}
	return v, nil
}

// Checksums returns the release's SHA256SUMS as file name → hex digest,
// once its signature checks out against s.Keys.
func (s Source) Checksums(ctx context.Context, version string) (map[string]string, error) {
	if len(s.Keys) == 0 {
		return nil, releasesig.ErrNoKeys
	}
	b, err := s.readSmall(ctx, s.AssetURL(version, "SHA256SUMS"), maxChecksumsBytes)
	if err != nil {
		return nil, err
	}
	sig, err := s.readSmall(ctx, s.AssetURL(version, releasesig.SigName), maxSigBytes)
	if err != nil {
		return nil, fmt.Errorf("the release's signature: %w; refusing an unsigned release", err)
	}
	if err := releasesig.Verify(s.Keys, b, sig); err != nil {
		return nil, fmt.Errorf("SHA256SUMS of %s is %w; it was changed or made by someone else, nothing was installed", version, err)
	}
	sums, err := ParseChecksums(b)
	if err != nil {
		return nil, fmt.Errorf("SHA256SUMS of %s: %w", version, err)
	}
	return sums, nil
}

// ParseChecksums parses sha256sum output ("<64 hex>  <name>", a '*' before
// the name for binary mode). A malformed line or a name listed twice with
// different digests is an error.
func ParseChecksums(data []byte) (map[string]string, error) {
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 64*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		sum, name, ok := strings.Cut(line, " ")
		if !ok || len(sum) != 64 {
			return nil, fmt.Errorf("line %d is not \"<sha256>  <file>\"", n)
		}
		if _, err := hex.DecodeString(sum); err != nil {
			return nil, fmt.Errorf("line %d: %q is not a hex SHA-256", n, sum)
		}
		name = strings.TrimPrefix(strings.TrimPrefix(name, " "), "*")
		if name == "" || strings.ContainsAny(name, "/\\\x00") {
			return nil, fmt.Errorf("line %d: bad file name %q", n, name)
		}
		sum = strings.ToLower(sum)
		if old, dup := sums[name]; dup && old != sum {
			return nil, fmt.Errorf("line %d: %s is listed twice with different checksums", n, name)
		}
		sums[name] = sum
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(sums) == 0 {
		return nil, fmt.Errorf("no checksums in it")
	}
	return sums, nil
}

// ValidVersion accepts release version strings: 1..64 of letters, digits
// and . _ + -, starting with a letter or digit (so never a path).
func ValidVersion(v string) error {
	if v == "" || len(v) > 64 {
		return fmt.Errorf("version %q: want 1 to 64 characters, e.g. v1.4.0", v)
	}
	for i, c := range v {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i > 0 {
			ok = ok || c == '.' || c == '_' || c == '+' || c == '-'
		}
		if !ok {
			return fmt.Errorf("version %q: only letters, digits and . _ + - are allowed, e.g. v1.4.0", v)
		}
	}
	return nil
}

// AssetName is the release file of the binary for arch.
func AssetName(arch string) (string, error) {
	switch arch {
	case "amd64", "arm64":
		return "dc-agent_linux_" + arch, nil
	}
	return "", fmt.Errorf("dc-agent is released for linux amd64 and arm64, not %s", arch)
}

// semver is a parsed vMAJOR.MINOR.PATCH[-pre].
type semver struct {
	n   [3]int
	pre string
}

func parseSemver(v string) (semver, bool) {
	v = strings.TrimPrefix(v, "v")
	core, pre, _ := strings.Cut(v, "-")
	core, _, _ = strings.Cut(core, "+")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return semver{}, false
	}
	var s semver
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return semver{}, false
		}
		s.n[i] = n
	}
	s.pre = pre
	return s, true
}

// Newer reports whether version a is newer than b. Versions that are not
// semantic versions (a development build) are never "newer" than
// anything; they only differ.
func Newer(a, b string) bool {
	sa, okA := parseSemver(a)
	sb, okB := parseSemver(b)
	if !okA {
		return false
	}
	if !okB {
		// A development build: any release is an upgrade.
		return true
	}
	for i := range sa.n {
		if sa.n[i] != sb.n[i] {
			return sa.n[i] > sb.n[i]
		}
	}
	switch {
	case sa.pre == sb.pre:
		return false
	case sa.pre == "":
		return true // 1.2.3 > 1.2.3-rc.1
	case sb.pre == "":
		return false
	}
	return sa.pre > sb.pre
}
