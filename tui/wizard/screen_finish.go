package wizard

import (
	"context"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/setup"
)

// agentStatusMsg is the API's view of the agent.
type agentStatusMsg struct {
	st  dcapi.AgentStatus
	err error
	at  time.Time
}

// summaryScreen says what was set up and watches the agent come online.
type summaryScreen struct {
	env     *env
	s       setup.Summary
	status  *agentStatusMsg
	polling bool
}

func (s *summaryScreen) focus() tea.Cmd { return nil }

// start shows what the flow established and starts asking the API.
func (s *summaryScreen) start(sum setup.Summary) tea.Cmd {
	s.s = sum
	if s.env.o.StatusEvery < 0 {
		return nil
	}
	s.polling = true
	return s.poll(0)
}

// poll asks the API whether the agent is online, after wait.
func (s *summaryScreen) poll(wait time.Duration) tea.Cmd {
	if s.s.Key == nil || s.s.Key.Key == nil {
		return nil
	}
	a, key, ctx, now := s.s.Answers, s.s.Key.Key, s.env.ctx, s.env.now
	return func() tea.Msg {
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		c, err := a.Client(key)
		if err != nil {
			return agentStatusMsg{err: err, at: now()}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := c.AgentStatus(cctx)
		return agentStatusMsg{st: st, err: err, at: now()}
	}
}

func (s *summaryScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case agentStatusMsg:
		s.status = &msg
		if s.polling {
			return s.poll(s.env.o.StatusEvery)
		}
	case tea.KeyMsg:
		switch msg.String() {
		case "enter", "m":
			s.polling = false
			return send(monitorMsg{})
		case "q", "esc":
			return send(quitMsg{})
		}
	}
	return nil
}

func (s *summaryScreen) view(int, int) (string, string) {
	var b strings.Builder
	a := s.s.Answers
	b.WriteString(st.ok.Render(markOK+" dc-agent is set up.") + "\n\n")
	row := func(k, v string) { fmt.Fprintf(&b, "  %-12s %s\n", k, v) }
	row("config", a.ConfigPath)
	if s.s.Key != nil {
		row("agent key", s.s.Key.Pubkey)
	}
	if d := s.s.Discovery; d != nil {
		row("node", fmt.Sprintf("%s (Proxmox VE %s) via %s", clean(d.Node), clean(d.Version.Version), a.ProxmoxAPIURL))
	}
	if c := s.s.Cloud; c != nil {
		row("backend", fmt.Sprintf("%s, default region %s; token in %s", setup.CloudNames[c.Type], clean(c.Region), c.TokenFile))
	} else {
		row("resources", fmt.Sprintf("storage %s, bridge %s", clean(a.Storage), clean(a.Bridge)))
	}
	switch {
	case s.s.Cloud != nil:
	case len(s.s.Templates) > 0:
		var ts []string
		for _, name := range a.Templates {
			if id, ok := s.s.Templates[name]; ok {
				ts = append(ts, fmt.Sprintf("%s (VMID %d)", name, id))
			}
		}
		row("templates", strings.Join(ts, ", "))
	default:
		row("templates", strings.Join(a.Templates, ", "))
	}
	row("API", a.APIEndpoint+" · provider "+short(a.ProviderPubkey))
	if a.Pool.ID != "" {
		row("pool", clean(a.Pool.String()))
	}
	svc := s.s.Service.UnitPath
	if o := s.env.o.Flow.Service; (o == nil || o.Root == "") && svc != "" {
		svc += " (active)"
	}
	row("service", svc)
	switch stat := s.status; {
	case stat == nil:
		row("agent", spin(s.env.now())+" asking the API…")
	case stat.err != nil && strings.Contains(strings.ToLower(stat.err.Error()), "no agent status"):
		// The live API knows no status before the first heartbeat.
		row("agent", spin(s.env.now())+" waiting for the agent's first heartbeat…")
	case stat.err != nil:
		row("agent", st.warn.Render(markWarn+" ")+"the API did not answer: "+clean(stat.err.Error()))
	case stat.st.Online:
		hb := ""
		if stat.st.LastHeartbeatNs != nil {
			ago := stat.at.Sub(time.Unix(0, *stat.st.LastHeartbeatNs))
			hb = ", last heartbeat just now"
			if ago >= time.Second {
				hb = fmt.Sprintf(", last heartbeat %s ago", ago.Round(time.Second))
			}
		}
		row("agent", st.ok.Render(markOK+" online")+hb)
	default:
		row("agent", spin(s.env.now())+" waiting for the agent's first heartbeat…")
	}
	b.WriteString("\nWatch it any time: dc-agent (the live monitor), or systemctl status dc-agent.\n")
	backend := config.TypeProxmox
	if s.s.Cloud != nil {
		backend = s.s.Cloud.Type
	}
	b.WriteString("Change the setup later with dc-agent setup " + backend + ": it changes only what differs.\n")
	keys := keyHelp("q", "quit (the service keeps running)")
	if s.env.o.Monitor != nil {
		keys = keyHelp("enter", "open the live monitor", "q", "quit (the service keeps running)")
	}
	return b.String(), keys
}
