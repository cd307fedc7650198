package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/tui/monitor"
)

func newStatusCmd(g *globals) *cobra.Command {
	var asJSON, follow bool
	var socket string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the running agent's live state (from its status socket)",
		Long: `Show what the running agent is doing: online or not, active contracts,
provisions in flight, loops and any problem with the command that fixes it,
then every agent of the provider when the API lists them (dc-api does; the
live Decent Cloud API gives one status per provider, so nothing is shown;
--json: providerAgents).
--follow streams events as they happen. Reads the status socket named by
agent.status_socket (default /run/dc-agent/status.sock).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if socket == "" {
				socket = config.DefaultStatusSocket
				if cfg, err := config.Load(g.configPath); err == nil {
					socket = cfg.Agent.StatusSocket
				}
			}
			c := status.NewClient(socket)
			ctx := cmd.Context()
			if follow {
				return followEvents(ctx, c, cmd.OutOrStdout(), cmd.ErrOrStderr(), asJSON)
			}
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			st, err := c.State(ctx)
			if err != nil {
				return err
			}
			agents := providerAgents(ctx, cmd.ErrOrStderr(), st)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), struct {
					status.State
					ProviderAgents []dcapi.ProviderAgent `json:"providerAgents,omitempty"`
				}{st, agents})
			}
			printState(cmd.OutOrStdout(), st)
			printProviderAgents(cmd.OutOrStdout(), st, agents)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON (with --follow: one event per line)")
	f.BoolVarP(&follow, "follow", "f", false, "stream events until interrupted")
	f.StringVar(&socket, "socket", envDefault("STATUS_SOCKET", ""), "status socket (default: agent.status_socket from the config; env DC_AGENT_STATUS_SOCKET)")
	f.DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for the agent")
	return cmd
}

// followEvents prints events until the agent closes the stream. With
// asJSON stdout carries events only (one JSON object a line); the notice
// about the end of the stream goes to errW.
func followEvents(ctx context.Context, c *status.Client, w, errW io.Writer, asJSON bool) error {
	err := c.Events(ctx, 0, func(ev status.Event) error {
		if asJSON {
			return printJSONLine(w, ev)
		}
		fmt.Fprintln(w, formatEvent(ev))
		return nil
	})
	if errors.Is(err, io.EOF) {
		notice := w
		if asJSON {
			notice = errW
		}
		fmt.Fprintln(notice, "(the agent closed the stream: it stopped or restarted)")
		return nil
	}
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func formatEvent(ev status.Event) string {
	var b strings.Builder
	b.WriteString(ev.Time.Local().Format("15:04:05"))
	fmt.Fprintf(&b, " %-5s", ev.Level)
	if ev.ContractID != "" {
		b.WriteString(" " + shortID(ev.ContractID))
	}
	b.WriteString(" " + ev.Message)
	return b.String()
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12] + "…"
	}
	return id
}

func printState(w io.Writer, st status.State) {
	fmt.Fprintln(w, st.Line)
	fmt.Fprintf(w, "\ndc-agent %s, pid %d, %s since %s\n", st.Version, st.PID, st.Phase, st.StartedAt.Local().Format(time.RFC3339))
	fmt.Fprintf(w, "API       %s\nprovider  %s\nagent key %s\n", st.Endpoint, st.Provider, st.AgentPubkey)
	if st.Pool != nil {
		fmt.Fprintf(w, "pool      %s\n", poolText(st.Pool))
	}
	if u := st.Upgrade; u != nil {
		fmt.Fprintf(w, "upgrade   %s\n", upgradeText(u))
	}
	fmt.Fprintf(w, "contracts %d active, %d provisioning, %d queued, %d reports pending; since start: %d provisioned, %d failed, %d terminated, %d health checks\n",
		st.Counts.Active, st.Counts.Provisioning, st.Counts.Queued, st.Counts.Outbox, st.Counts.Provisioned, st.Counts.Failed, st.Counts.Terminated, st.Counts.HealthChecks)
	fmt.Fprintln(w, "\nloops:")
	for _, l := range st.Loops {
		line := fmt.Sprintf("  %-10s %-8s", l.Name, l.State)
		if l.LastSuccess != nil {
			line += " last ok " + st.Now.Sub(*l.LastSuccess).Round(time.Second).String() + " ago"
		}
		if l.LastError != "" {
			line += "; last error: " + l.LastError
		}
		if l.NextAttempt != nil {
			line += fmt.Sprintf("; retry in %s", l.NextAttempt.Sub(st.Now).Round(100*time.Millisecond))
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintln(w, "\nprovisioners:")
	for _, p := range st.Provisioners {
		def := ""
		if p.Default {
			def = " (default)"
		}
		fmt.Fprintf(w, "  %s%s: %d/%d in flight; can: %s\n", p.Type, def, p.InFlight, p.MaxConcurrent, strings.Join(p.Features, ", "))
	}
	if len(st.Work) > 0 {
		fmt.Fprintln(w, "\nwork:")
		for _, wk := range st.Work {
			detail := ""
			if wk.Detail != "" {
				detail = " (" + wk.Detail + ")"
			}
			resumed := ""
			if wk.Resumed {
				resumed = " [resumed]"
			}
			fmt.Fprintf(w, "  %s %-8s %s%s for %s%s\n", shortID(wk.ContractID), wk.Provisioner, wk.Step, detail, st.Now.Sub(wk.StartedAt).Round(time.Second), resumed)
		}
	}
	if len(st.Gateways) > 0 {
		fmt.Fprintln(w, "\ngateway:")
		for _, g := range st.Gateways {
			fmt.Fprintf(w, "  %s %s  ssh -p %d %s  ports %d-%d → %s (%s)\n", shortID(g.ContractID), orDash(g.Subdomain), g.SSHPort, g.PublicIP, g.PortStart, g.PortEnd, orDash(g.InternalIP), g.State)
		}
	}
	if len(st.Ending) > 0 {
		fmt.Fprintln(w, "\ncontracts (ends):")
		for _, c := range st.Ending {
			fmt.Fprintf(w, "  %s %-20s %s\n", shortID(c.ContractID), c.ExternalID, endsText(c.EndsAt, st.Now))
		}
	}
	if len(st.Paused) > 0 {
		fmt.Fprintln(w, "\npaused (stopped, kept; started again when the contract resumes):")
		for _, p := range st.Paused {
			fmt.Fprintf(w, "  %s %-20s since %s: %s\n", shortID(p.ContractID), p.ExternalID, p.Since.Local().Format(time.RFC3339), p.Reason)
		}
	}
	if len(st.Problems) > 0 {
		fmt.Fprintln(w, "\nproblems:")
		for _, p := range st.Problems {
			fmt.Fprintf(w, "  ! %s\n", p.Message)
			if p.Fix != "" {
				fmt.Fprintf(w, "    fix: %s\n", p.Fix)
			}
		}
	}
}

// providerAgents asks the API's public agent-status for the provider's
// agents. The live API gives no list: nil. An API that does not answer is
// a note on errW (the socket's state is the agent's own view either way).
func providerAgents(ctx context.Context, errW io.Writer, st status.State) []dcapi.ProviderAgent {
	c, err := monitor.PublicClient(st.Endpoint, st.Provider, time.Now)
	var as dcapi.AgentStatus
	if err == nil {
		as, err = c.AgentStatus(ctx)
	}
	if err != nil {
		fmt.Fprintf(errW, "note: the provider's agents were not read from the API: %v\n", err)
		return nil
	}
	return as.Agents
}

// printProviderAgents prints the provider's agents, this agent marked.
func printProviderAgents(w io.Writer, st status.State, agents []dcapi.ProviderAgent) {
	lines := monitor.ProviderAgents(agents, st.AgentPubkey, time.Now())
	if len(lines) == 0 {
		return
	}
	fmt.Fprintln(w, "\nagents of this provider:")
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
}

// poolText is "name (id)" or the id.
func poolText(p *status.Pool) string {
	if p.Name != "" && p.Name != p.ID {
		return p.Name + " (" + p.ID + ")"
	}
	return p.ID
}

// upgradeText says what became of a requested upgrade.
func upgradeText(u *status.Upgrade) string {
	s := "the API asks for " + u.Version
	switch u.State {
	case status.UpgradeStarted:
		s += ": upgrading"
	case status.UpgradeFailed:
		s += ": could not start"
	}
	if u.Note != "" {
		s += " — " + u.Note
	}
	return s
}

// endsText is when a contract ends, relative to now.
func endsText(t *time.Time, now time.Time) string {
	if t == nil {
		return "end not known"
	}
	d := t.Sub(now)
	switch {
	case d < 0:
		return "ended " + t.Local().Format("2006-01-02 15:04")
	case d < 48*time.Hour:
		return "ends " + t.Local().Format("2006-01-02 15:04") + " (in " + d.Round(time.Minute).String() + ")"
	}
	return fmt.Sprintf("ends %s (in %d days)", t.Local().Format("2006-01-02"), int(d.Hours()/24))
}

// printJSONLine writes v as one compact JSON line (NDJSON).
func printJSONLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "%s\n", b)
	return err
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}
