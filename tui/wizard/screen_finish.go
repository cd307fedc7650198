package wizard

import (
	"context"
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// Register, service and summary: the last three screens.

func (m *Model) updateRegister(msg tea.Msg) tea.Cmd {
	return m.updatePlanScreen(msg, &m.reg, planKeys{
		retry: m.startRegister,
		back:  func() tea.Cmd { return m.goTo(scrPaste) },
		next:  m.startService,
	}, stageRegistered)
}

// planKeys are what a finished plan screen does on r (after a failure),
// esc (after a failure; nil: nothing) and enter (after success).
type planKeys struct {
	retry, back, next func() tea.Cmd
}

// updatePlanScreen drives a screen that runs one plan: keys go to the
// plan while it runs; when it ends the wizard reaches stage on success, or
// quits if Ctrl-C asked it to stop.
func (m *Model) updatePlanScreen(msg tea.Msg, p *progressScreen, keys planKeys, stage stage) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok {
		if p.running {
			p.update(k, m.now)
			return nil
		}
		switch {
		case k.String() == "r":
			if p.err != nil {
				return keys.retry()
			}
		case k.String() == "esc" && keys.back != nil:
			if p.err != nil {
				return keys.back()
			}
		case k.String() == "enter":
			if p.done {
				return keys.next()
			}
		default:
			p.update(k, m.now)
		}
		return nil
	}
	cmd, finished := p.update(msg, m.now)
	if finished {
		if m.stopping {
			return m.quit()
		}
		if p.err == nil {
			m.stage = stage
		}
	}
	return cmd
}

func (m *Model) viewRegister() string {
	p := &m.reg
	body := p.view(m, m.width, m.height-3)
	if p.done {
		body += fmt.Sprintf("\n%s The API at %s accepts this agent for your provider.\nNext: install and start the dc-agent service.\n", m.st.ok.Render(markOK), m.answers.APIEndpoint)
	}
	return m.frame(body, p.keys("install the service"))
}

// serviceOptions are the install options for this config.
func (m *Model) serviceOptions() service.Options {
	o := m.o.Service
	o.ConfigPath = m.answers.ConfigPath
	return o
}

func (m *Model) startService() tea.Cmd {
	opts := m.serviceOptions()
	res := &m.svcRes
	title := "Install and start the service"
	if opts.Root != "" {
		title = "Install the service files"
	}
	plan := &setup.Plan{Steps: []setup.Step{{ID: "service", Title: title, Run: func(ctx context.Context, r *setup.Reporter) error {
		o := opts
		o.Progress = func(e service.Event) {
			mark := "ok     "
			if e.Changed {
				mark = "changed"
			}
			r.Notef("%s %-17s %s", mark, e.Step, e.Detail)
		}
		got, err := service.Install(ctx, o)
		if err != nil {
			return setup.WithFix(err, "fix what it says, then press r (or later: dc-agent service install)")
		}
		*res = got
		switch {
		case o.Root != "":
			r.Changed("wrote %s", got.UnitPath)
		case got.Changed:
			r.Changed("%s: active (running)", got.UnitPath)
		default:
			r.Skip("%s: already installed and running", got.UnitPath)
		}
		return nil
	}}}}
	m.screen = scrService
	m.gen++
	return m.svc.start(m.ctx, m.gen, plan, m.now)
}

func (m *Model) updateService(msg tea.Msg) tea.Cmd {
	return m.updatePlanScreen(msg, &m.svc, planKeys{retry: m.startService, next: m.toSummary}, stageInstalled)
}

func (m *Model) viewService() string {
	p := &m.svc
	body := p.view(m, m.width, m.height-3)
	if p.done {
		body += fmt.Sprintf("\n%s %s\n", m.st.ok.Render(markOK), p.rows[0].text)
		if m.o.Service.Root != "" {
			body += "The files are written under " + m.o.Service.Root + "; systemctl was not run.\n"
		}
	}
	return m.frame(body, p.keys("finish"))
}

// agentStatusMsg is the API's view of the agent.
type agentStatusMsg struct {
	st  dcapi.AgentStatus
	err error
	at  time.Time
}

type summaryScreen struct {
	status  *agentStatusMsg
	polling bool
}

func (m *Model) toSummary() tea.Cmd {
	m.screen = scrSummary
	m.finished = true
	m.stage = stageInstalled
	m.hint = m.resumeHint()
	if m.o.StatusEvery < 0 {
		return nil
	}
	m.summary.polling = true
	return m.pollStatus(0)
}

// pollStatus asks the API whether the agent is online, after wait.
func (m *Model) pollStatus(wait time.Duration) tea.Cmd {
	if m.key == nil || m.key.Key == nil {
		return nil
	}
	a, key, ctx, now := m.answers, m.key.Key, m.ctx, m.now
	return func() tea.Msg {
		if wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
				return nil
			}
		}
		c, err := dcapi.New(a.APIEndpoint, a.ProviderPubkey, key, dcapi.WithUserAgent("dc-agent"))
		if err != nil {
			return agentStatusMsg{err: err, at: now()}
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		st, err := c.AgentStatus(cctx)
		return agentStatusMsg{st: st, err: err, at: now()}
	}
}

func (m *Model) updateSummary(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case agentStatusMsg:
		m.summary.status = &msg
		if m.summary.polling {
			return m.pollStatus(m.o.StatusEvery)
		}
	case tea.KeyMsg:
		switch msg.String() {
		case "enter", "m":
			if m.o.Monitor != nil {
				m.summary.polling = false
				m.monitor = m.o.Monitor()
				m.screen = scrMonitor
				w, h := m.width, m.height
				return tea.Batch(m.monitor.Init(), func() tea.Msg { return tea.WindowSizeMsg{Width: w, Height: h} })
			}
			return m.quit()
		case "q", "esc":
			return m.quit()
		}
	}
	return nil
}

func (m *Model) viewSummary() string {
	var b strings.Builder
	a := m.answers
	b.WriteString(m.st.ok.Render(markOK+" dc-agent is set up.") + "\n\n")
	row := func(k, v string) { fmt.Fprintf(&b, "  %-12s %s\n", k, v) }
	row("config", a.ConfigPath)
	if m.key != nil {
		row("agent key", m.key.Pubkey)
	}
	if m.disc != nil {
		row("node", fmt.Sprintf("%s (Proxmox VE %s) via %s", clean(m.disc.Node), clean(m.disc.Version.Version), a.ProxmoxAPIURL))
	}
	row("resources", fmt.Sprintf("storage %s, bridge %s", clean(a.Storage), clean(a.Bridge)))
	if m.run != nil && len(m.run.Result.Templates) > 0 {
		var ts []string
		for _, name := range a.Templates {
			if id, ok := m.run.Result.Templates[name]; ok {
				ts = append(ts, fmt.Sprintf("%s (VMID %d)", name, id))
			}
		}
		row("templates", strings.Join(ts, ", "))
	} else {
		row("templates", strings.Join(a.Templates, ", "))
	}
	row("API", a.APIEndpoint+" · provider "+short(a.ProviderPubkey))
	svc := m.svcRes.UnitPath
	if m.o.Service.Root == "" && svc != "" {
		svc += " (active)"
	}
	row("service", svc)
	st := m.summary.status
	switch {
	case st == nil:
		row("agent", spin(m.now())+" asking the API…")
	case st.err != nil:
		row("agent", m.st.warn.Render(markWarn+" ")+"the API did not answer: "+st.err.Error())
	case st.st.Online:
		hb := ""
		if st.st.LastHeartbeatNs != nil {
			ago := st.at.Sub(time.Unix(0, *st.st.LastHeartbeatNs))
			hb = ", last heartbeat just now"
			if ago >= time.Second {
				hb = fmt.Sprintf(", last heartbeat %s ago", ago.Round(time.Second))
			}
		}
		row("agent", m.st.ok.Render(markOK+" online")+hb)
	default:
		row("agent", spin(m.now())+" waiting for the agent's first heartbeat…")
	}
	b.WriteString("\nWatch it any time: dc-agent (the live monitor), or systemctl status dc-agent.\n")
	b.WriteString("Change the setup later with dc-agent setup proxmox: it changes only what differs.\n")
	keys := keyHelp("q", "quit (the service keeps running)")
	if m.o.Monitor != nil {
		keys = keyHelp("enter", "open the live monitor", "q", "quit (the service keeps running)")
	}
	return m.frame(b.String(), keys)
}
