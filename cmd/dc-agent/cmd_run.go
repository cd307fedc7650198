package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/provisioners/all"
)

func newRunCmd(g *globals) *cobra.Command {
	var logFormat, logLevel, crashAt string
	var timeScale float64
	var hang bool
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
				Registry: all.Registry(), Version: buildinfo.Version, TimeScale: timeScale, CrashAt: crashAt, HangOnSIGUSR2: hang,
			})
			var ce *agent.ConfigError
			if errors.As(err, &ce) {
				return withExit(exitConfig, err)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&logFormat, "log-format", envDefault("LOG_FORMAT", "text"), "log format: text or json (env DC_AGENT_LOG_FORMAT)")
	f.StringVar(&logLevel, "log-level", envDefault("LOG_LEVEL", "info"), "log level: debug, info, warn, error (env DC_AGENT_LOG_LEVEL)")
	// For the test suite and benchmarks: shrink every interval, and crash
	// (SIGKILL) at a named step of provisioning.
	f.Float64Var(&timeScale, "time-scale", 0, "multiply every interval (testing only)")
	f.StringVar(&crashAt, "crash-at", "", "SIGKILL itself at this provisioning step (testing only)")
	f.BoolVar(&hang, "debug-hang-on-sigusr2", false, "let SIGUSR2 hang every loop, to test the systemd watchdog (testing only)")
	_ = f.MarkHidden("time-scale")
	_ = f.MarkHidden("debug-hang-on-sigusr2")
	_ = f.MarkHidden("crash-at")
	return cmd
}
