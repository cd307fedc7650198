package upgrade

import (
	"context"
	"crypto/ed25519"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/releasesig"
)

// Finding 6 of issue 15: updates were trusted through HTTPS alone. A
// release's SHA256SUMS must carry the signature of a key built into the
// binary: a tampered SHA256SUMS (even with binaries that match it), a
// signature by another key, or no signature installs nothing.
func TestUpgradeRefusesUnsignedOrTamperedRelease(t *testing.T) {
	_, otherKey, _ := ed25519.GenerateKey(nil)
	evil := fakeBinary("v1.1.0") + "# evil\n"
	for _, tc := range []struct {
		name   string
		tamper func(files map[string]string)
		keys   []ed25519.PublicKey // nil: the test key
		want   string
	}{
		{"tampered SHA256SUMS", func(f map[string]string) {
			// Binary and sums agree, but the sums are not what was signed.
			sig := string(ed25519.Sign(releaseKey, []byte(f["SHA256SUMS"])))
			f["dc-agent_linux_amd64"] = evil
			f["SHA256SUMS"] = sum(evil) + "  dc-agent_linux_amd64\n"
			f[releasesig.SigName] = sig
		}, nil, "is not signed by a dc-agent release key"},
		{"signed by another key", func(f map[string]string) {
			f["dc-agent_linux_amd64"] = evil
			f["SHA256SUMS"] = sum(evil) + "  dc-agent_linux_amd64\n"
			f[releasesig.SigName] = string(ed25519.Sign(otherKey, []byte(f["SHA256SUMS"])))
		}, nil, "is not signed by a dc-agent release key"},
		{"signature cut short", func(f map[string]string) {
			f[releasesig.SigName] = string(ed25519.Sign(releaseKey, []byte(f["SHA256SUMS"])))[:40]
		}, nil, "signature is 40 bytes"},
		{"no signature", func(f map[string]string) {
			f[releasesig.SigName] = "" // served as empty
		}, nil, "not signed"},
		{"no keys built in", nil, []ed25519.PublicKey{}, "no release keys are built into this dc-agent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &release{latest: "v1.1.0"}
			r.add("v1.1.0", fakeBinary("v1.1.0"))
			if tc.tamper != nil {
				tc.tamper(r.files["v1.1.0"])
			}
			src := serve(t, r)
			if tc.keys != nil {
				src.Keys = tc.keys
			}
			bin := installed(t, "v1.0.0")
			_, err := Run(context.Background(), Options{Source: src, Current: "v1.0.0", Binary: bin, Arch: "amd64"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if read(t, bin) != fakeBinary("v1.0.0") {
				t.Fatal("the binary was replaced")
			}
			if _, err := os.Stat(bin + ".previous"); err == nil {
				t.Fatal("a .previous appeared although nothing was installed")
			}
		})
	}
	// The missing-file case: a release without SHA256SUMS.sig at all.
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/"+releasesig.SigName) {
			http.NotFound(w, req)
			return
		}
		r.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	src, _ := NewSource(srv.URL + "/rel")
	src.Keys = []ed25519.PublicKey{releaseKey.Public().(ed25519.PublicKey)}
	if _, err := src.Checksums(context.Background(), "v1.1.0"); err == nil || !strings.Contains(err.Error(), "refusing an unsigned release") {
		t.Fatalf("missing signature: %v", err)
	}
}

// Finding 6 of issue 15: a download followed a redirect from https to
// plain http. Redirects go to https only; https to https (a release host
// handing off to its CDN) is followed.
func TestUpgradeRefusesRedirectToHTTP(t *testing.T) {
	r := &release{latest: "v1.1.0"}
	r.add("v1.1.0", fakeBinary("v1.1.0"))
	plain := httptest.NewServer(r)
	t.Cleanup(plain.Close)
	cdn := httptest.NewTLSServer(r)
	t.Cleanup(cdn.Close)
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		target := cdn.URL
		if strings.HasPrefix(req.URL.Path, "/down/") {
			target = plain.URL
		}
		http.Redirect(w, req, target+"/rel/"+strings.SplitN(req.URL.Path, "/", 3)[2], http.StatusFound)
	}))
	t.Cleanup(front.Close)
	// One client trusting both TLS servers' certificates.
	hc := front.Client()
	hc.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(cdn.Certificate())

	for _, tc := range []struct {
		path string
		ok   bool
	}{{"/down", false}, {"/cdn", true}} {
		src, err := NewSource(front.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		src.HTTP = hc
		src.Keys = []ed25519.PublicKey{releaseKey.Public().(ed25519.PublicKey)}
		bin := installed(t, "v1.0.0")
		_, err = Run(context.Background(), Options{Source: src, Current: "v1.0.0", Binary: bin, Arch: "amd64"})
		switch {
		case tc.ok && err != nil:
			t.Fatalf("https to https: %v", err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), "it leaves https")):
			t.Fatalf("https to http: err = %v", err)
		case !tc.ok && read(t, bin) != fakeBinary("v1.0.0"):
			t.Fatal("installed through a redirect to http")
		}
	}
}
