package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup/service"
)

func newServiceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Install, remove and inspect the dc-agent systemd service",
		Long: `Manage the dc-agent systemd service (a Type=notify unit running
'dc-agent run' as the dc-agent system user, sandboxed, restarted by its
watchdog if the agent loop hangs).

  service install    render the unit, create the user, enable and start it
  service uninstall  stop and remove it (config and keys stay unless --purge)
  service status     show whether it runs and its live status line

--root DIR writes the files under DIR and skips systemctl and user creation
(packaging). --user uses your own 'systemd --user' manager with an
unsandboxed variant of the unit (tests and development).`,
	}
	cmd.AddCommand(newServiceInstallCmd(g), newServiceUninstallCmd(g), newServiceStatusCmd(g))
	return cmd
}

// serviceFlags are the flags every service subcommand shares.
type serviceFlags struct {
	root string
	user bool
	name string
}

func (f *serviceFlags) bind(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.root, "root", "", "write under this directory instead of / and skip systemctl and user creation (packaging)")
	cmd.Flags().BoolVar(&f.user, "user", false, "use your own systemd --user manager and the unsandboxed unit variant (tests, development)")
	cmd.Flags().StringVar(&f.name, "name", "", "unit name (default dc-agent)")
	_ = cmd.Flags().MarkHidden("name")
}

func (f *serviceFlags) options(g *globals, cmd *cobra.Command) service.Options {
	return service.Options{
		Name: f.name, Root: f.root, User: f.user, ConfigPath: g.configPath,
		Progress: printEvent(cmd.ErrOrStderr()),
	}
}

// printEvent prints each step: "changed" for what was modified, "ok" for
// what already matched.
func printEvent(w io.Writer) func(service.Event) {
	return func(e service.Event) {
		mark := "ok     "
		if e.Changed {
			mark = "changed"
		}
		fmt.Fprintf(w, "  %s  %-17s %s\n", mark, e.Step, e.Detail)
	}
}

// signalContext is cancelled by Ctrl-C or SIGTERM.
func signalContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
}

// serviceError maps a config problem to exit 3.
func serviceError(err error) error {
	var le *config.LoadError
	if errors.As(err, &le) {
		return withExit(exitConfig, err)
	}
	return err
}

func newServiceInstallCmd(g *globals) *cobra.Command {
	var f serviceFlags
	var o service.Options
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install (or update) and start the systemd service",
		Long: `Render the dc-agent unit, create the dc-agent system user, give the config
and state directories their owners and modes (secrets 0600), run
daemon-reload, enable and start the service, and wait until it is active. If
it does not start, the unit's state and last log lines say why.

Re-running with the same inputs changes nothing; with new inputs (flags, or
agent.shutdown_grace_seconds / auto_update in the config) it updates the unit
and restarts the service once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext(cmd)
			defer cancel()
			opts := f.options(g, cmd)
			opts.Binary, opts.RunAs, opts.Watchdog, opts.Env, opts.RunArgs = o.Binary, o.RunAs, o.Watchdog, o.Env, o.RunArgs
			opts.NoStart, opts.Timeout = o.NoStart, o.Timeout
			res, err := service.Install(ctx, opts)
			if err != nil {
				return serviceError(err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			w := cmd.OutOrStdout()
			switch {
			case f.root != "" && res.Changed:
				fmt.Fprintf(w, "Wrote %s\n", res.UnitPath)
			case f.root != "":
				fmt.Fprintf(w, "Unchanged: %s\n", res.UnitPath)
			case opts.NoStart:
				fmt.Fprintf(w, "Installed %s (not started)\n", res.UnitPath)
			default:
				verb := "Installed"
				if !res.Changed {
					verb = "Already installed, nothing changed:"
				}
				fmt.Fprintf(w, "%s %s: active (running)\n  status: %s\n", verb, res.UnitPath, res.State.StatusText)
				fmt.Fprintln(w, "Watch it with: dc-agent   (or: systemctl status dc-agent)")
			}
			return nil
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&o.Binary, "binary", "", "dc-agent executable the unit runs (default: this executable)")
	cmd.Flags().StringVar(&o.RunAs, "run-as", "", "service account (default dc-agent)")
	cmd.Flags().DurationVar(&o.Watchdog, "watchdog", 0, "WatchdogSec: restart the agent when its loop is stuck this long (default 60s)")
	cmd.Flags().StringArrayVar(&o.Env, "env", nil, "KEY=VALUE for the unit's environment, repeatable (not for secrets: unit files are world-readable)")
	cmd.Flags().StringArrayVar(&o.RunArgs, "run-arg", nil, "extra argument for 'dc-agent run' in the unit (e.g. --run-arg=--log-format=json), repeatable")
	cmd.Flags().BoolVar(&o.NoStart, "no-start", false, "install and enable, but do not start")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", 90*time.Second, "how long to wait for the service to become active")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

func newServiceUninstallCmd(g *globals) *cobra.Command {
	var f serviceFlags
	var purge bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop, disable and remove the systemd service (keeps config and keys unless --purge)",
		Long: `Stop the service (gracefully: in-flight provisions finish first), disable
it and remove the unit files. The config directory with the agent key and the
state directory stay, so reinstalling picks up where it left off; --purge
removes them and the dc-agent system user too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext(cmd)
			defer cancel()
			opts := f.options(g, cmd)
			opts.Purge = purge
			changed, err := service.Uninstall(ctx, opts)
			if err != nil {
				return serviceError(err)
			}
			if changed {
				fmt.Fprintln(cmd.OutOrStdout(), "Removed the dc-agent service")
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "The dc-agent service was not installed; nothing changed")
			}
			return nil
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the config, the agent key, the state directory and the system user")
	return cmd
}

func newServiceStatusCmd(g *globals) *cobra.Command {
	var f serviceFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the service is installed and running, with its status line",
		Long: `Show the service's state as systemd sees it, with the agent's live STATUS
line, and the last log lines when it is not running. Exit 0 when it is active
(running), 1 otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := signalContext(cmd)
			defer cancel()
			opts := f.options(g, cmd)
			opts.Progress = nil
			st, err := service.Status(ctx, opts)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), st); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), st.String())
			}
			if f.root == "" && !st.Running() {
				return withExit(exitFailure, nil)
			}
			if f.root != "" && !st.Installed {
				return withExit(exitFailure, nil)
			}
			return nil
		},
	}
	f.bind(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
