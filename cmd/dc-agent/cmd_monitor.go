package main

import (
	"errors"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/tui/monitor"
)

func newMonitorCmd(g *globals) *cobra.Command {
	var socket string
	var apiEvery time.Duration
	cmd := &cobra.Command{
		Use:   "monitor",
		Short: "Watch the running agent live in the terminal (quitting never stops the service)",
		Long: `Open the live status monitor: online or offline (as the Decent Cloud API and
the local agent each see it), last heartbeat, every agent of the provider
(when the API lists them: dc-api does, the live API does not), provisioner,
active contracts, provisions in flight with their current step, recent
results, uptime and the agent's events as they happen. Keys: r refresh, l logs, d doctor, q quit.
Quitting closes only the monitor; the service keeps running.

It needs a terminal; in scripts use: dc-agent status (or dc-agent status --follow).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.noTUI || !stdinIsTerminal() || !term.IsTerminal(int(os.Stdout.Fd())) {
				return errors.New("the monitor needs a terminal; use 'dc-agent status' (or 'dc-agent status --follow' to stream events) instead")
			}
			o := monitor.Options{ConfigPath: g.configPath, StatusSocket: socket, APIEvery: apiEvery}
			return monitor.Run(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&apiEvery, "api-every", monitor.DefaultAPIEvery, "how often to ask the Decent Cloud API for the provider's status and uptime")
	bindEnv(f)
	// The same variable as dc-agent status.
	f.StringVar(&socket, "socket", envDefault("STATUS_SOCKET", ""), "status socket (default: agent.status_socket from the config, else "+config.DefaultStatusSocket+"; env DC_AGENT_STATUS_SOCKET)")
	return cmd
}
