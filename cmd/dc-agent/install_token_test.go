package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestInstallScriptSetupToken: `curl … | DC_AGENT_SETUP_TOKEN=… sh` and
// `sh install.sh --token file:PATH` (scripts/install.sh as it is in the
// tree, under dash) install this build of dc-agent and hand
// the token on to the scripted setup (no terminal here) in a 0600 file:
// the node is set up and the agent registered in the pool on dc-api's
// live profile. No process ever has the token in its arguments (every
// process's command line is read while the installer runs), and the
// installer's own token file is gone afterwards.
func TestInstallScriptSetupToken(t *testing.T) {
	t.Parallel()
	srv := serveDevRelease(t)
	w := startNodeWorld(t, "9.1.1", apitest.WithProfile(apiserver.ProfileLive))
	h, papi, images, api, prov := w.host, w.pveAPI, w.images, w.api, w.prov
	pool := api.NewPool(prov, "eu-proxmox", "europe", "proxmox")

	for _, via := range []string{"environment", "--token file:"} {
		t.Run(via, func(t *testing.T) {
			prefix, dir, tmp := t.TempDir(), t.TempDir(), t.TempDir()
			cfg := filepath.Join(dir, "dc-agent.toml")
			tok := api.SetupToken(pool, time.Hour)
			env := []string{"DC_AGENT_BASE_URL=" + srv.URL, "DC_AGENT_PREFIX=" + prefix, "TMPDIR=" + tmp,
				"DC_AGENT_CONFIG=" + cfg, "DC_AGENT_HOST=" + h.Host, "DC_AGENT_PORT=" + strconv.Itoa(h.Port), "DC_AGENT_USER=" + h.User,
				"DC_AGENT_IDENTITY_FILE=" + h.ClientKeyFile, "DC_AGENT_HOST_KEY_FINGERPRINT=" + h.HostKeyFingerprint(),
				"DC_AGENT_API_ENDPOINT=" + api.URL, "DC_AGENT_PROXMOX_API_URL=" + papi.URL, "DC_AGENT_IMAGE_MIRROR=" + images.URL,
				"DC_AGENT_IMAGE_DIR=" + filepath.Join(h.Dir, "images"), "DC_AGENT_STATE_DIR=" + filepath.Join(dir, "state"),
				"DC_AGENT_SERVICE_ROOT=" + filepath.Join(dir, "root")}
			var args []string
			if via == "environment" {
				env = append(env, "DC_AGENT_SETUP_TOKEN="+tok)
			} else {
				f := filepath.Join(t.TempDir(), "token")
				testutil.WriteFile(t, f, tok+"\n", 0o600)
				args = []string{"--token", "file:" + f}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, testutil.RequireBinary(t, "dash"), append([]string{"-s", "--"}, args...)...)
			script, err := os.ReadFile("../../scripts/install.sh")
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stdin = bytes.NewReader(script)
			cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			seen := watchArgv(tok)
			err = cmd.Wait()
			if argv := seen(); argv != "" {
				t.Errorf("a process had the token in its arguments: %q", argv)
			}
			if err != nil {
				t.Fatalf("install.sh: %v\n%s", err, out.String())
			}
			text := out.String()
			for _, want := range []string{"installed dc-agent " + devVersion, "no terminal: setting up with dc-agent --no-tui",
				"Register with the setup token", "in pool eu-proxmox", "Service installed"} {
				if !strings.Contains(text, want) {
					t.Errorf("the output lacks %q:\n%s", want, text)
				}
			}
			if strings.Contains(text, tok) {
				t.Error("the token was printed")
			}
			c, err := config.Load(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if c.API.PoolID != pool.PoolID || c.API.ProviderPubkey != prov.Pubkey {
				t.Fatalf("config [api] %+v", c.API)
			}
			key, err := c.LoadAgentKey()
			if err != nil {
				t.Fatal(err)
			}
			if d := api.Delegation(prov, identity.PublicHex(key)); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
				t.Fatalf("the API holds %+v", d)
			}
			if left, _ := os.ReadDir(tmp); len(left) != 0 {
				t.Errorf("the installer left %v in TMPDIR", left)
			}
		})
	}
}

// watchArgv reads every process's command line until the returned
// function is called, and returns the first one that held needle.
func watchArgv(needle string) func() string {
	var (
		mu    sync.Mutex
		found string
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
			for _, p := range procs {
				b, err := os.ReadFile(p)
				if err == nil && bytes.Contains(b, []byte(needle)) {
					mu.Lock()
					if found == "" {
						found = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
					}
					mu.Unlock()
				}
			}
			time.Sleep(5 * time.Millisecond) // a sweep every 5 ms, not a busy loop
		}
	}()
	return func() string {
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		return found
	}
}

// devVersion is the version the development release serves.
const devVersion = "v0.0.0-test"

// serveDevRelease serves a release of this build of dc-agent in the
// layout install.sh reads (<base>/latest/VERSION, <base>/<version>/…),
// checksummed but unsigned, as a tree install.sh made outside `make
// release` accepts (it carries no release keys, and says so).
func serveDevRelease(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	bin, err := os.ReadFile(dcAgent)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bin)
	testutil.WriteFile(t, filepath.Join(dir, "latest", "VERSION"), devVersion+"\n", 0o644)
	testutil.WriteFile(t, filepath.Join(dir, devVersion, "dc-agent_linux_"+runtime.GOARCH), string(bin), 0o755)
	testutil.WriteFile(t, filepath.Join(dir, devVersion, "SHA256SUMS"), hex.EncodeToString(sum[:])+"  dc-agent_linux_"+runtime.GOARCH+"\n", 0o644)
	srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
	t.Cleanup(srv.Close)
	return srv
}
