package main

import (
	"errors"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners/all"
)

func newRunCmd(g *globals) *cobra.Command {
	var logFormat, logLevel string
	var hooks func(*agent.Options) error
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the agent in the foreground (the systemd service's ExecStart)",
		Long: `Run the agent in the foreground: provision paid contracts, heartbeat, report
health, terminate ended contracts. Logs go to stderr (journald picks them up).

Signals: SIGTERM/SIGINT stop taking contracts and let in-flight provisions
finish for up to agent.shutdown_grace_seconds (a second signal stops at once;
unfinished work resumes at the next start). SIGHUP reloads the config.
Under systemd (Type=notify) it reports READY=1, a live STATUS= line and feeds
the watchdog. See the live state with: dc-agent status`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := agent.Serve(cmd.Context(), agent.ServeOptions{
				ConfigPath: g.configPath, LogFormat: logFormat, LogLevel: logLevel, Stderr: cmd.ErrOrStderr(),
				Registry: all.Registry(), Version: buildinfo.Version, Hooks: hooks,
			})
			var ce *agent.ConfigError
			switch {
			case errors.As(err, &ce):
				return withExit(exitConfig, err)
			case dcapi.IsAuth(err):
				// Stopped while a loop waited for a fixed delegation.
				return withExit(exitAuth, err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&logFormat, "log-format", envDefault("LOG_FORMAT", "text"), "log format: text or json (env DC_AGENT_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", envDefault("LOG_LEVEL", "info"), "log level: debug, info, warn, error (env DC_AGENT_LOG_LEVEL)")
	if testFlags != nil {
		hooks = testFlags(f)
	}
	return cmd
}

// testFlags adds the test suite's flags to `dc-agent run` and returns what
// they do to the agent. It is nil unless the binary is built with -tags
// testhooks (testhooks.go): production binaries have no such flags.
var testFlags func(*pflag.FlagSet) func(*agent.Options) error
