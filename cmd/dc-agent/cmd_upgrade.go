package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/internal/releasesig"
	"github.com/decent-stuff/dc-agent/setup/service"
	"github.com/decent-stuff/dc-agent/setup/upgrade"
)

func newUpgradeCmd(g *globals) *cobra.Command {
	var (
		check, auto, user, noRestart, force, asJSON bool
		version, releaseURL, binary                 string
		idleWait                                    time.Duration
	)
	cmd := &cobra.Command{
		Use:   "upgrade",
		Short: "Install a newer dc-agent release (signature- and checksum-verified, rolled back if it does not run)",
		Long: `Download a dc-agent release from agent.release_url (default: the GitHub
releases), check the release's SHA256SUMS against its signature by a release
key built into this binary and the download against SHA256SUMS (redirects are
followed to https only), and replace this binary atomically, keeping the old
one as <binary>.previous. If the new binary
does not run (--version), the old one is put back. Then the service is
restarted into the new version, but only once no provision is in flight (it
waits up to --idle-wait, asking the agent's status socket); if the new version
does not start, the old one is put back and started.

--check only says whether a newer release exists. --auto is what the
dc-agent-upgrade.timer (daily) and dc-agent-upgrade.path (when the agent
passes on a version the API asks for) run: it does nothing unless
agent.auto_update = true, and never downgrades.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext(cmd)
			defer cancel()
			ew := cmd.ErrOrStderr()
			// The upgrade works without a config (before setup); a broken
			// one only costs its settings.
			var cfg *config.Config
			cfgErr := fmt.Errorf("%s does not exist", g.configPath)
			if _, err := os.Stat(g.configPath); err == nil {
				cfgErr = nil
				if os.Geteuid() == 0 {
					// Root acts on these settings: only if nobody else could have written them.
					if err := upgrade.CheckRootOwned(g.configPath); err != nil {
						cfgErr = fmt.Errorf("not using the settings in %s as root: %v; make it root's with: sudo dc-agent service install (root:dc-agent 0640)", g.configPath, err)
					}
				}
				if cfgErr == nil {
					cfg, cfgErr = config.Load(g.configPath)
				}
				if cfgErr != nil {
					fmt.Fprintf(ew, "warning: %v; using the default release URL and status socket\n", cfgErr)
				}
			}
			if auto {
				switch {
				case cfgErr != nil:
					fmt.Fprintf(ew, "auto-update: cannot read %s (%v); doing nothing\n", g.configPath, cfgErr)
					return nil
				case !cfg.Agent.AutoUpdate:
					fmt.Fprintln(ew, "auto-update is off (agent.auto_update = false); nothing to do")
					return nil
				}
				// The version the API asked the running agent for (its
				// heartbeat's upgradeToVersion), if any: installed only if
				// newer, and a signed release like any other.
				if req, ok, err := upgrade.TakeRequest(cfg.Agent.StateDir); err != nil {
					fmt.Fprintf(ew, "warning: %v\n", err)
				} else if ok && version == "" {
					fmt.Fprintf(ew, "the API asked for dc-agent %s\n", req)
					version = req
				}
			}
			socket := config.DefaultStatusSocket
			if cfg != nil {
				socket = cfg.Agent.StatusSocket
				if releaseURL == "" {
					releaseURL = cfg.Agent.ReleaseURL
				}
			}
			if releaseURL == "" {
				releaseURL = config.DefaultReleaseURL
			}
			src, err := upgrade.NewSource(releaseURL)
			if err != nil {
				return withExit(exitConfig, err)
			}
			if src.Keys, err = releasesig.ParseKeys(buildinfo.ReleaseKeys); err != nil {
				return fmt.Errorf("the release keys built into this binary: %w", err)
			}
			if binary == "" {
				exe, err := os.Executable()
				if err == nil {
					exe, err = filepath.EvalSymlinks(exe)
				}
				if err != nil {
					return fmt.Errorf("find this binary: %w; pass --binary", err)
				}
				binary = exe
			}
			if !check && !force && strings.HasPrefix(binary, "/usr/bin/") {
				return fmt.Errorf("%s comes from the deb/rpm package: upgrade it with your package manager (or pass --force)", binary)
			}
			o := upgrade.Options{
				Source: src, Version: version, Current: buildinfo.Version, Binary: binary,
				Check: check, OnlyNewer: auto, IdleWait: idleWait,
				Progress: func(s string) { fmt.Fprintln(ew, s) },
			}
			if !noRestart {
				o.Service = upgrade.SystemdService{
					Unit:   service.Options{User: user, Binary: binary, ConfigPath: g.configPath},
					Socket: socket,
				}
			}
			res, err := upgrade.Run(ctx, o)
			if asJSON {
				if jerr := printJSON(cmd.OutOrStdout(), res); jerr != nil {
					return jerr
				}
			}
			if err != nil {
				return err
			}
			if asJSON {
				return nil
			}
			w := cmd.OutOrStdout()
			switch {
			case check && res.Available:
				fmt.Fprintf(w, "dc-agent %s is available (installed: %s). Install it with: sudo dc-agent upgrade\n", res.Target, res.Current)
			case check || !res.Installed && !res.Restarted:
				fmt.Fprintf(w, "dc-agent is up to date (%s)\n", res.Current)
			case res.RestartPending != "":
				fmt.Fprintf(w, "Installed dc-agent %s; the service restarts into it later: %s\n", res.Target, res.RestartPending)
			case res.Restarted:
				fmt.Fprintf(w, "Upgraded to dc-agent %s; the service runs it now\n", res.Target)
			default:
				fmt.Fprintf(w, "Upgraded to dc-agent %s\n", res.Target)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&check, "check", false, "only say whether a newer release is available")
	f.StringVar(&version, "version", "", "install this version (e.g. v1.4.0; default: the latest)")
	f.StringVar(&releaseURL, "release-url", envDefault("RELEASE_URL", ""), "release location (default: agent.release_url; env DC_AGENT_RELEASE_URL)")
	f.StringVar(&binary, "binary", "", "the installed dc-agent to replace (default: this executable)")
	f.BoolVar(&auto, "auto", false, "auto-update mode (the timer): only when agent.auto_update = true, never a downgrade")
	f.BoolVar(&noRestart, "no-restart", false, "replace the binary but leave the running service alone")
	f.DurationVar(&idleWait, "idle-wait", 10*time.Minute, "how long to wait for in-flight provisions before restarting")
	f.BoolVar(&user, "user", false, "the service runs under your systemd --user manager (tests, development)")
	f.BoolVar(&force, "force", false, "replace a package-managed /usr/bin/dc-agent anyway")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}
