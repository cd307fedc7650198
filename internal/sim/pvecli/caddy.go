package pvecli

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// The node's Caddy and systemd, as far as the gateway's setup uses them:
// `caddy version|list-modules|add-package`, and `systemctl daemon-reload|
// enable|is-enabled|start|restart|is-active|show -P FragmentPath` for
// caddy.service, the one unit the simulated node has (Debian's caddy
// package installed; the unit disabled and inactive until enabled and
// started). What they change is kept in the node state (pve.Node).

// caddyPackages are the plugin packages the simulated download service
// builds, with the module each adds.
var caddyPackages = map[string]string{"github.com/caddy-dns/acmedns": "dns.providers.acmedns"}

// caddyStandard are the simulated Caddy's standard modules (a few of the
// real ones; the gateway's setup only looks for its plugin).
var caddyStandard = []string{
	"admin.api.load", "admin.api.metrics", "caddy.listeners.proxy_protocol", "caddy.storage.file_system",
	"http", "http.handlers.file_server", "http.handlers.reverse_proxy", "layer4", "tls", "tls.issuance.acme",
	"tls.issuance.zerossl",
}

// exitCaddy is caddy's exit status for a failed command (ExitCodeFailedStartup).
const exitCaddy = 1

func (c *cli) caddy(argv []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(c.env.Stderr, "Error: "+format+"\n", a...)
		return exitCaddy
	}
	if len(argv) == 0 {
		return fail("a command is required (simulated: version, list-modules, add-package)")
	}
	switch argv[0] {
	case "version":
		c.out("v2.6.2\n")
		return 0
	case "list-modules":
		var extra []string
		_ = c.node(func(n *pve.Node) error {
			for _, p := range n.CaddyPackages {
				extra = append(extra, caddyPackages[p])
			}
			return nil
		})
		slices.Sort(extra)
		for _, m := range caddyStandard {
			c.out("%s\n", m)
		}
		c.out("\n  Standard modules: %d\n", len(caddyStandard))
		if len(extra) > 0 {
			c.out("\n")
			for _, m := range extra {
				c.out("%s\n", m)
			}
		}
		c.out("\n  Non-standard modules: %d\n", len(extra))
		c.out("\n  Unknown modules: 0\n")
		return 0
	case "add-package":
		if len(argv) < 2 {
			return fail("at least one package must be specified")
		}
		pkgs := argv[1:]
		for _, p := range pkgs {
			if _, ok := caddyPackages[p]; !ok {
				return fail("download failed: HTTP 400: %s is not a registered Caddy module package path", p)
			}
		}
		err := c.node(func(n *pve.Node) error {
			for _, p := range pkgs {
				if slices.Contains(n.CaddyPackages, p) {
					return fmt.Errorf("package is already added")
				}
			}
			n.CaddyPackages = append(n.CaddyPackages, pkgs...)
			return nil
		})
		if err != nil {
			return fail("%v", err)
		}
		for _, line := range []string{"this executable will be replaced", "requesting build", "build acquired; backing up current executable",
			"downloaded binary", "replacing current executable", "cleaning up backup binary", "done"} {
			fmt.Fprintf(c.env.Stderr, "INFO\t%s\t{\"path\": \"/usr/bin/caddy\"}\n", line)
		}
		return 0
	}
	return fail("unknown command %q (simulated: version, list-modules, add-package)", argv[0])
}

// simUnits are the units the simulated node has.
var simUnits = []string{"caddy.service"}

func unitName(s string) string {
	if strings.Contains(s, ".") {
		return s
	}
	return s + ".service"
}

func (c *cli) systemctl(argv []string) int {
	bad := func() int {
		fmt.Fprintf(c.env.Stderr, "systemctl (simulated): only daemon-reload, enable, is-enabled, start, restart, is-active and show -P FragmentPath of one unit are simulated, not %q\n", strings.Join(argv, " "))
		return 1
	}
	if len(argv) == 1 && argv[0] == "daemon-reload" {
		_ = c.node(func(n *pve.Node) error { n.DaemonReloads++; return nil })
		return 0
	}
	if len(argv) == 4 && argv[0] == "show" && argv[1] == "-P" && argv[2] == "FragmentPath" {
		if u := unitName(argv[3]); slices.Contains(simUnits, u) {
			c.out("%s\n", c.unitFile(u))
		} else {
			c.out("\n")
		}
		return 0
	}
	if len(argv) != 2 {
		return bad()
	}
	u := unitName(argv[1])
	known := slices.Contains(simUnits, u)
	var unit pve.Unit
	update := func(fn func(*pve.Unit)) {
		if !known {
			return
		}
		_ = c.node(func(n *pve.Node) error {
			if n.Units == nil {
				n.Units = map[string]*pve.Unit{}
			}
			if n.Units[u] == nil {
				n.Units[u] = &pve.Unit{}
			}
			fn(n.Units[u])
			unit = *n.Units[u]
			return nil
		})
	}
	update(func(*pve.Unit) {})
	switch argv[0] {
	case "is-active":
		if known && unit.Active {
			c.out("active\n")
			return 0
		}
		c.out("inactive\n")
		return 3
	case "is-enabled":
		if !known {
			fmt.Fprintf(c.env.Stderr, "Failed to get unit file state for %s: No such file or directory\n", u)
			return 1
		}
		if unit.Enabled {
			c.out("enabled\n")
			return 0
		}
		c.out("disabled\n")
		return 1
	case "enable":
		if !known {
			fmt.Fprintf(c.env.Stderr, "Failed to enable unit: Unit file %s does not exist.\n", u)
			return 1
		}
		if !unit.Enabled {
			fmt.Fprintf(c.env.Stderr, "Created symlink /etc/systemd/system/multi-user.target.wants/%s → %s.\n", u, c.unitFile(u))
		}
		update(func(x *pve.Unit) { x.Enabled = true })
		return 0
	case "start", "restart":
		if !known {
			fmt.Fprintf(c.env.Stderr, "Failed to %s %s: Unit %s not found.\n", argv[0], u, u)
			return 5
		}
		update(func(x *pve.Unit) {
			if argv[0] == "restart" {
				x.Restarts++
			} else if !x.Active {
				x.Starts++
			}
			x.Active = true
		})
		return 0
	}
	return bad()
}

// unitFile is where the simulated node keeps a unit's file: in the state
// directory, so what setup writes beside it (drop-ins) stays in the test's
// temporary directory.
func (c *cli) unitFile(u string) string {
	return filepath.Join(c.env.StateDir, "systemd", "system", u)
}
