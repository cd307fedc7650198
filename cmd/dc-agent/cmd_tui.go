package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup/service"
	"github.com/decent-stuff/dc-agent/tui/monitor"
	"github.com/decent-stuff/dc-agent/tui/wizard"
)

// tuiFlags are the bare dc-agent's own flags beside the setup answers.
type tuiFlags struct {
	serviceRoot   string
	serviceUser   bool
	cloudEndpoint string
}

func (t *tuiFlags) bind(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&t.serviceRoot, "service-root", "", "install the service files under DIR and skip systemctl (packaging, tests)")
	fl.BoolVar(&t.serviceUser, "service-user", false, "install the service into your own systemd --user manager (development)")
	_ = fl.MarkHidden("service-user")
	fl.StringVar(&t.cloudEndpoint, "cloud-endpoint", "", "the DigitalOcean or Vultr API URL when the wizard sets up a cloud backend (default: the real one)")
}

func (t *tuiFlags) serviceOptions(g *globals) service.Options {
	return service.Options{ConfigPath: g.configPath, Root: t.serviceRoot, User: t.serviceUser}
}

// noTerminalHelp is what a bare dc-agent says where no one can answer.
const noTerminalHelp = `dc-agent opens its setup wizard only on a terminal, and there is none here.
  On a terminal:  dc-agent            (over SSH: ssh -t HOST dc-agent)
  Scripted:       dc-agent --no-tui --host NODE --setup-token file:PATH --host-key-fingerprint SHA256:...
                  (every answer is a flag and a DC_AGENT_* variable: dc-agent setup proxmox --help)`

func stdoutIsTerminal() bool { return term.IsTerminal(int(os.Stdout.Fd())) }

// runDefault is a bare dc-agent: with --no-tui the scripted setup; on a
// terminal the wizard on a fresh host and the monitor on a configured
// one; without a terminal, how to proceed (never a read from stdin).
func runDefault(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, t *tuiFlags) error {
	if g.noTUI {
		return runNoTUI(cmd, g, f, t)
	}
	if !stdinIsTerminal() || !stdoutIsTerminal() {
		return withExit(exitUsage, errors.New(noTerminalHelp))
	}
	if configured(cmd, g, t) {
		return openMonitor(cmd, g)
	}
	if os.Getenv("TERM") == "dumb" {
		// No cursor movement on a dumb terminal: the same questions as
		// plain line prompts, the same steps as progress lines.
		return runAccessible(cmd, g, f, t)
	}
	return runWizard(cmd, g, f, t)
}

// configured reports whether this host is set up: a config that names a
// provider, and the service installed.
func configured(cmd *cobra.Command, g *globals, t *tuiFlags) bool {
	cfg, err := config.Load(g.configPath)
	if err != nil || cfg.API.ProviderPubkey == "" {
		return false
	}
	st, err := service.Status(cmd.Context(), t.serviceOptions(g))
	return err == nil && st.Installed
}

// openMonitor opens the live monitor of the installed service.
func openMonitor(cmd *cobra.Command, g *globals) error {
	return monitor.Run(cmd.Context(), monitor.Options{ConfigPath: g.configPath})
}

// runNoTUI runs the same flow as the wizard from flags alone: the node
// setup, registration (with --setup-token, --delegation, or found done),
// the service.
func runNoTUI(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, t *tuiFlags) error {
	svc := t.serviceOptions(g)
	return runSetupProxmox(cmd, g, f, &svc)
}

// wizardOptions are the flags as the wizard's prefill.
func wizardOptions(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, t *tuiFlags) (wizard.Options, error) {
	if f.setupToken == "-" {
		return wizard.Options{}, usagef("--setup-token -: stdin is the wizard's terminal; pass file:PATH or %s, or paste the token into the wizard", envName("setup-token"))
	}
	if cmd.Flags().Changed("setup-token") {
		warnTokenInArgv(cmd, f.setupToken)
	}
	o, err := f.flowOptions(g, cmd.InOrStdin())
	if err != nil {
		return wizard.Options{}, err
	}
	svc := t.serviceOptions(g)
	o.Service = &svc
	o.Cloud.Endpoint = t.cloudEndpoint
	return wizard.Options{Flow: o, Monitor: func() tea.Model { return monitor.New(monitor.Options{ConfigPath: g.configPath}) }}, nil
}

// runWizard opens the setup wizard, prefilled from the flags.
func runWizard(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, t *tuiFlags) error {
	if os.Getenv("NO_COLOR") != "" {
		lipgloss.SetColorProfile(termenv.Ascii)
	}
	o, err := wizardOptions(cmd, g, f, t)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
	defer cancel()
	o.Context = ctx
	m, err := wizard.Run(o)
	if hint := m.Hint(); hint != "" {
		fmt.Fprintln(cmd.OutOrStdout(), hint)
	}
	if err != nil {
		return fmt.Errorf("the wizard stopped: %w", err)
	}
	if !m.Finished() {
		return withExit(exitFailure, nil)
	}
	return nil
}

// runAccessible is the wizard as line prompts (TERM=dumb).
func runAccessible(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, t *tuiFlags) error {
	o, err := wizardOptions(cmd, g, f, t)
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(cmd.Context(), syscall.SIGTERM)
	defer cancel()
	hint, err := wizard.RunAccessible(ctx, o, os.Stdin, cmd.OutOrStdout())
	if err != nil {
		fmt.Fprintln(cmd.OutOrStdout(), hint)
		return withFix(exitFailure, err)
	}
	fmt.Fprintln(cmd.OutOrStdout(), hint)
	return nil
}
