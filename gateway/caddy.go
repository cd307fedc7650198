package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/decent-stuff/dc-agent/identity"
)

// Caddy routes are site files: <caddy_sites_dir>/<slug>.caddy, one handle
// block per VM, imported by the wildcard site of the Caddyfile
// (`*.<dc_id>.<gw_prefix>.<domain> { tls …; import <dir>/*.caddy }`, as the
// Rust agent's setup writes it, dc-agent/src/setup/gateway.rs). After a
// change the Caddyfile is posted to Caddy's admin API (POST /load,
// text/caddyfile), which is what `caddy reload` does; Caddy adapts it in
// its own process, so {$ENV} placeholders (the acme-dns secrets) resolve
// there and never pass through the agent.
//
// Why files and not routes added through the admin API: the files are
// what existing gateways already have (caddy_sites_dir), a route survives
// a Caddy restart or a reboot without the agent (routes added through the
// API are lost when Debian's unit restarts Caddy from the Caddyfile), and
// a person can read them. The cost is that a change reloads the whole
// config; bench/gateway.sh measures it with 500 VMs.

// siteFileRe is a file the gateway owns in the sites directory.
var siteFileRe = regexp.MustCompile(`^[a-z0-9]{6}\.caddy$`)

// site is one VM's route.
type site struct {
	Slug, Subdomain, ContractID string
	InternalIP                  string
	Base, Count                 int
}

func siteFile(s site) []byte {
	// Every value was checked (slug, DNS name, contract hex, IPv4), so
	// nothing here can close the block or start a directive.
	return fmt.Appendf(nil, `# Written by dc-agent for contract %s; the agent rewrites or removes it.
# TCP/UDP ports %d-%d: nftables table ip %s (nft list table ip %s)

@%s host %s
handle @%s {
	reverse_proxy %s:80
}
`, s.ContractID, s.Base, s.Base+s.Count-1, TableName, TableName, s.Slug, s.Subdomain, s.Slug, s.InternalIP)
}

type caddySites struct {
	log       *slog.Logger
	dir       string
	caddyfile string
	admin     string // host:port or unix//path
	hc        *http.Client
}

func newCaddySites(log *slog.Logger, dir, caddyfile, admin string) *caddySites {
	tr := &http.Transport{Proxy: nil}
	base := "http://" + admin
	if p, ok := strings.CutPrefix(admin, "unix/"); ok {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", p)
		}
		base = "http://localhost"
	}
	return &caddySites{log: log, dir: dir, caddyfile: caddyfile, admin: base, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// sync makes the directory hold exactly the sites' files (other files are
// left alone) and reloads Caddy when something changed, or when reload is
// set. It returns how many files changed.
func (c *caddySites) sync(ctx context.Context, sites []site, reload bool) (int, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return 0, fmt.Errorf("caddy sites directory: %w (set gateway.caddy_sites_dir to the directory the Caddyfile imports)", err)
	}
	want := map[string][]byte{}
	for _, s := range sites {
		want[s.Slug+".caddy"] = siteFile(s)
	}
	des, err := os.ReadDir(c.dir)
	if err != nil {
		return 0, fmt.Errorf("caddy sites directory: %w", err)
	}
	changed := 0
	for _, de := range des {
		name := de.Name()
		if !siteFileRe.MatchString(name) || de.IsDir() {
			continue
		}
		p := filepath.Join(c.dir, name)
		content, ok := want[name]
		if !ok {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return changed, fmt.Errorf("remove caddy route: %w", err)
			}
			changed++
			continue
		}
		if cur, err := os.ReadFile(p); err == nil && bytes.Equal(cur, content) {
			delete(want, name)
		}
	}
	for name, content := range want {
		// 0644: Caddy (its own user) reads it; nothing in it is secret.
		if err := identity.WriteFileAtomic(filepath.Join(c.dir, name), content, 0o644); err != nil {
			return changed, fmt.Errorf("write caddy route: %w", err)
		}
		changed++
	}
	if changed > 0 || reload {
		if err := c.reload(ctx); err != nil {
			return changed, err
		}
	}
	return changed, nil
}

// put writes one VM's route and reloads Caddy (also when the file was
// already there: a crash may have come between the write and the reload).
func (c *caddySites) put(ctx context.Context, s site) error {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return fmt.Errorf("caddy sites directory: %w (set gateway.caddy_sites_dir to the directory the Caddyfile imports)", err)
	}
	p := filepath.Join(c.dir, s.Slug+".caddy")
	if cur, err := os.ReadFile(p); err != nil || !bytes.Equal(cur, siteFile(s)) {
		if err := identity.WriteFileAtomic(p, siteFile(s), 0o644); err != nil {
			return fmt.Errorf("write caddy route: %w", err)
		}
	}
	return c.reload(ctx)
}

// drop removes one VM's route and reloads Caddy.
func (c *caddySites) drop(ctx context.Context, slug string) error {
	if err := os.Remove(filepath.Join(c.dir, slug+".caddy")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove caddy route: %w", err)
	}
	return c.reload(ctx)
}

// reload posts the Caddyfile to the admin API.
func (c *caddySites) reload(ctx context.Context) error {
	cf, err := os.ReadFile(c.caddyfile)
	if err != nil {
		return fmt.Errorf("read the Caddyfile for a reload: %w (set gateway.caddyfile to the file Caddy runs with)", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.admin+"/load", bytes.NewReader(cf))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := c.hc.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
		// Caddy is not running: it holds no routes, and reads the files
		// when it starts. `dc-agent doctor` reports it.
		c.log.Warn("gateway: Caddy's admin API does not answer; the routes load when Caddy starts", "admin", c.admin, "err", err)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reload Caddy through its admin API %s: %w (is Caddy running? systemctl status caddy; gateway.caddy_admin must match the Caddyfile's admin option)", c.admin, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("Caddy refused the reload (%s): %s", resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}

// importsDir reports whether a Caddyfile imports the sites directory
// (`import <dir>/*.caddy`), without which the routes are never loaded.
// ImportsSites reports whether a Caddyfile imports dir/*.caddy, the
// per-VM site files.
func ImportsSites(caddyfile []byte, dir string) bool { return importsDir(caddyfile, dir) }

func importsDir(caddyfile []byte, dir string) bool {
	want := filepath.Join(dir, "*.caddy")
	for _, line := range strings.Split(string(caddyfile), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "import" && filepath.Clean(strings.Trim(f[1], `"`)) == want {
			return true
		}
	}
	return false
}
