package setup

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The gateway's Caddy on the node: the acmedns DNS module its wildcard
// certificate needs (Debian's caddy lacks it), and caddy.service loading
// the acme-dns credentials (a systemd drop-in), enabled, and restarted
// when something it reads changed.

// acmeDNSPackage is the Caddy plugin that adds acmeDNSModule.
const (
	acmeDNSPackage = "github.com/caddy-dns/acmedns"
	acmeDNSModule  = "dns.providers.acmedns"
)

// acmeDNSFix is how to put the module in place by hand.
const acmeDNSFix = "run `caddy add-package " + acmeDNSPackage + "` on the node, or install a Caddy built with it " +
	"(https://caddyserver.com/download?package=github.com%2Fcaddy-dns%2Facmedns, over /usr/bin/caddy; docs/gateway.md), then re-run"

// hasCaddyModule reports whether `caddy list-modules` output lists id
// (one module id a line, plus summary lines).
func hasCaddyModule(out []byte, id string) bool {
	for line := range strings.Lines(string(out)) {
		if strings.TrimSpace(line) == id {
			return true
		}
	}
	return false
}

// addAcmeDNS adds the acmedns module to the node's Caddy unless it has
// it; true when it added it.
func addAcmeDNS(ctx context.Context, h *Host, r *Reporter) (bool, error) {
	list := func() (bool, error) {
		res, err := h.Run(ctx, r, Cmd{Args: []string{"caddy", "list-modules"}, Quiet: true})
		if err != nil {
			return false, WithFix(fmt.Errorf("list Caddy's modules: %w", err), "check that `caddy list-modules` works on the node, then re-run")
		}
		return hasCaddyModule(res.Stdout, acmeDNSModule), nil
	}
	if ok, err := list(); err != nil || ok {
		return false, err
	}
	r.Notef("this Caddy lacks the %s module (the wildcard certificate's DNS challenge): adding it", acmeDNSModule)
	if _, err := h.Run(ctx, r, Cmd{Args: []string{"caddy", "add-package", acmeDNSPackage}, Timeout: 10 * time.Minute}); err != nil {
		return false, WithFix(fmt.Errorf("add the acmedns module to Caddy: %w", err), acmeDNSFix)
	}
	ok, err := list()
	if err != nil {
		return false, err
	}
	if !ok {
		return false, Fixf(acmeDNSFix, "Caddy still lacks the %s module after `caddy add-package %s`", acmeDNSModule, acmeDNSPackage)
	}
	return true, nil
}

// caddyDropInName is the drop-in file setup writes for caddy.service.
const caddyDropInName = "dc-gateway.conf"

// caddyDropIn is where caddy.service's drop-in goes, given the unit's
// file: /etc/systemd/system/caddy.service.d when the unit is a package's
// (under /lib, /usr or /run, where local changes do not belong), else
// beside the unit file (a unit installed by hand in /etc/systemd/system
// gives the same directory).
func caddyDropIn(unitFile string) string {
	dir := filepath.Dir(unitFile)
	for _, vendor := range []string{"/lib/", "/usr/", "/run/"} {
		if strings.HasPrefix(unitFile, vendor) {
			dir = "/etc/systemd/system"
		}
	}
	return filepath.Join(dir, filepath.Base(unitFile)+".d", caddyDropInName)
}

// caddyService makes caddy.service load envFile (a drop-in), enables it,
// and restarts it when restartFor or the marker file names what changed
// (starts
// it when it is not running); then it must be active.
func caddyService(ctx context.Context, h *Host, r *Reporter, envFile, marker string, restartFor []string) error {
	const unit = "caddy.service"
	journal := "see why with `journalctl -u caddy -n 50` on the node (a Caddyfile error, ports 80/443 taken, missing credentials), fix it, then re-run"
	// What an earlier run changed and did not restart Caddy for.
	pending, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", `[ -e "$1" ] || exit 3; cat -- "$1"`, "sh", marker}, Quiet: true, OK: []int{3}})
	if err != nil {
		return err
	}
	for line := range strings.Lines(string(pending.Stdout)) {
		if what := strings.TrimSpace(line); what != "" && !slices.Contains(restartFor, what) {
			restartFor = append(restartFor, what)
		}
	}
	res, err := h.Run(ctx, r, Cmd{Args: []string{"systemctl", "show", "-P", "FragmentPath", unit}, Quiet: true})
	if err != nil {
		return WithFix(fmt.Errorf("find Caddy's systemd unit: %w", err), "the node needs systemd (systemctl), as Proxmox VE has")
	}
	unitFile := strings.TrimSpace(string(res.Stdout))
	if unitFile == "" {
		return Fixf("install Debian's caddy package (apt-get install caddy), or a caddy.service (caddyserver.com/docs/running#linux-service), then re-run",
			"the node has no %s", unit)
	}
	dropIn := caddyDropIn(unitFile)
	body := "# Written by dc-agent setup: Caddy reads the gateway's acme-dns credentials ({$ACME_DNS_*} in the Caddyfile).\n[Service]\nEnvironmentFile=" + envFile + "\n"
	var did []string
	changed, err := writeRemoteFile(ctx, h, r, dropIn, []byte(body), "0644", false)
	if err != nil {
		return err
	}
	if changed {
		if _, err := h.Run(ctx, r, Cmd{Args: []string{"systemctl", "daemon-reload"}}); err != nil {
			return err
		}
		did = append(did, "wrote "+dropIn)
		restartFor = append(restartFor, "unit drop-in")
	}
	res, err = h.Run(ctx, r, Cmd{Args: []string{"systemctl", "is-enabled", unit}, Quiet: true, OK: []int{1}})
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(res.Stdout)) != "enabled" {
		if _, err := h.Run(ctx, r, Cmd{Args: []string{"systemctl", "enable", unit}}); err != nil {
			return err
		}
		did = append(did, "enabled "+unit)
	}
	active := func() (bool, error) {
		res, err := h.Run(ctx, r, Cmd{Args: []string{"systemctl", "is-active", unit}, Quiet: true, OK: []int{1, 2, 3, 4}})
		return err == nil && res.ExitCode == 0, err
	}
	on, err := active()
	if err != nil {
		return err
	}
	verb := ""
	switch {
	case len(restartFor) > 0:
		verb = "restart"
	case !on:
		verb = "start"
	}
	if verb != "" {
		if _, err := h.Run(ctx, r, Cmd{Args: []string{"systemctl", verb, unit}, Timeout: 2 * time.Minute}); err != nil {
			return WithFix(fmt.Errorf("%s Caddy: %w", verb, err), journal)
		}
		if on, err = active(); err != nil {
			return err
		}
		if !on {
			return Fixf(journal, "Caddy is not running after `systemctl %s %s`", verb, unit)
		}
		if verb == "restart" {
			if _, err := h.Run(ctx, r, Cmd{Args: []string{"rm", "-f", marker}, Quiet: true}); err != nil {
				return err
			}
			did = append(did, "restarted Caddy (new "+strings.Join(restartFor, ", ")+")")
		} else {
			did = append(did, "started Caddy")
		}
	}
	if len(did) == 0 {
		r.Skip("Caddy runs with %s (%s), enabled", envFile, dropIn)
		return nil
	}
	r.Changed("%s", strings.Join(did, "; "))
	return nil
}
