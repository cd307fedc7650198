package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
	// exitConfig: the config or a key file is missing or invalid.
	exitConfig = 3
	// exitAuth: the API refused the agent's delegation.
	exitAuth = 4
)

const exitCodesHelp = `Exit codes:
  0  success
  1  failure (the message says what failed and how to fix it)
  2  usage error (unknown flag, missing argument)
  3  configuration or key file problem
  4  the API refused the agent's key or delegation
  doctor: 0 all checks passed, 1 warnings, 2 failures`

// exitError carries a specific exit code. A nil err prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func withExit(code int, err error) error { return &exitError{code: code, err: err} }

// usageError marks flag/argument mistakes (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func isUsageError(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	msg := err.Error()
	return strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown command") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "flag needs an argument") ||
		strings.HasPrefix(msg, "invalid argument") || strings.HasPrefix(msg, "accepts ") ||
		strings.HasPrefix(msg, "required flag")
}

// globals are the persistent flags every command sees.
type globals struct {
	configPath string
	noTUI      bool
}

// envDefault returns $DC_AGENT_<NAME> or def.
func envDefault(name, def string) string {
	if v, ok := os.LookupEnv("DC_AGENT_" + name); ok && v != "" {
		return v
	}
	return def
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	f := &setupProxmoxFlags{}
	t := &tuiFlags{}
	root := &cobra.Command{
		Use:   "dc-agent",
		Short: "Decent Cloud provider agent: provisions paid contracts and keeps your provider online",
		Long: `dc-agent turns your machines into an automated Decent Cloud provider.

On a terminal, running dc-agent with no arguments opens the setup wizard on a
fresh host and the live status monitor on a configured one. Every wizard answer
is also a flag (and a DC_AGENT_* environment variable) for --no-tui use.

` + exitCodesHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDefault(cmd, g, f, t)
		},
	}
	root.SetVersionTemplate(buildinfo.String("dc-agent") + "\n")
	root.PersistentFlags().StringVarP(&g.configPath, "config", "c", envDefault("CONFIG", config.DefaultPath), "config file (env DC_AGENT_CONFIG)")
	root.PersistentFlags().BoolVar(&g.noTUI, "no-tui", envDefault("NO_TUI", "") != "", "never open the terminal UI; take every answer from flags and environment")
	t.bind(root) // before f.bind, which binds every flag to its DC_AGENT_* variable
	f.bind(root.Flags())
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usageError{err.Error() + "; see '" + cmd.CommandPath() + " --help' for the flags"}
	})

	root.AddCommand(
		newVersionCmd(),
		newInitCmd(g),
		newDelegationCmd(g),
		newCredentialsCmd(g),
		newServiceCmd(g),
		newRegisterCmd(g),
		newDoctorCmd(g),
		newUpgradeCmd(g),
		newRunCmd(g),
		newStatusCmd(g),
		newTestProvisionCmd(g),
		newSetupCmd(g),
		newMonitorCmd(g),
		newConfigCmd(g),
	)
	return root
}

// loadConfig loads the config named by --config, mapping problems to exit 3.
func (g *globals) loadConfig() (*config.Config, error) {
	cfg, err := config.Load(g.configPath)
	if err != nil {
		return nil, withExit(exitConfig, err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	return cfg, nil
}

// defaultKeyPath is the agent key beside the config file.
func (g *globals) defaultKeyPath() string {
	return filepath.Join(filepath.Dir(g.configPath), "agent.key")
}

// agentKeyPath picks the agent key: --key, else the config's, else beside
// the config file. A config that exists but does not load is an error (exit
// 3): guessing a path then could create or use the wrong key.
func (g *globals) agentKeyPath(flag string) (string, error) {
	if flag != "" {
		return flag, nil
	}
	cfg, err := g.optionalConfig()
	if err != nil {
		return "", err
	}
	if cfg != nil {
		if p := cfg.AgentKeyPath(); p != "" {
			return p, nil
		}
	}
	return g.defaultKeyPath(), nil
}

// optionalConfig loads the config if its file exists: nil without error
// when there is none yet (init and delegation request work before setup).
func (g *globals) optionalConfig() (*config.Config, error) {
	if _, err := os.Stat(g.configPath); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return g.loadConfig()
}
