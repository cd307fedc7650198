package wizard

import (
	"fmt"
	"os"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/setup"
)

// The setup progress screen runs the node plan: the agent key, templates,
// pool, user, role, token, ACLs and their check, and the config.

func (m *Model) startNodePlan() tea.Cmd {
	run, err := m.newPlan()
	if err != nil {
		m.discScr.err = err.Error()
		return nil
	}
	m.run = run
	m.stage = stagePlan
	m.screen = scrProgress
	m.gen++
	return m.progress.start(m.ctx, m.gen, &run.Plan, m.now)
}

func (m *Model) updateProgress(msg tea.Msg) tea.Cmd {
	p := &m.progress
	switch msg := msg.(type) {
	case tea.KeyMsg:
		if p.running {
			p.update(msg, m.now)
			return nil
		}
		switch msg.String() {
		case "r":
			if p.err != nil {
				return m.startNodePlan()
			}
		case "esc":
			if p.err != nil {
				m.screen = scrDiscovery
			}
		case "enter":
			if p.done {
				return m.goTo(scrRequest)
			}
		default:
			p.update(msg, m.now)
		}
		return nil
	}
	cmd, finished := p.update(msg, m.now)
	if !finished {
		return cmd
	}
	if m.stopping {
		return m.quit()
	}
	if p.err == nil {
		m.nodeReady()
	}
	return nil
}

// nodeReady records the finished node plan and builds the delegation
// request for the agent key it made.
func (m *Model) nodeReady() {
	m.stage = stageNodeReady
	m.key = m.run.Key
	ra := m.o.Request
	ra.Provider = m.answers.ProviderPubkey
	d, code, err := setup.DelegationRequest(m.key.Pubkey, ra, m.now())
	m.req = requestScreen{err: err}
	if err != nil {
		return
	}
	m.request, m.reqCode = d, code
	m.reqFile = reqFilePath(m.answers.ConfigPath)
	if werr := writeRequestFile(m.reqFile, code); werr != nil {
		m.reqFile = ""
	}
	m.paste = newPasteScreen()
	m.layout()
}

func (m *Model) viewProgress() string {
	p := &m.progress
	body := p.view(m, m.width, m.height-3)
	if p.done {
		body += fmt.Sprintf("\n%s The node is ready and the config is written to %s.\nNext: the agent's delegation.\n", m.st.ok.Render(markOK), m.answers.ConfigPath)
	}
	return m.frame(body, p.keys("continue"))
}

// exists reports whether path exists (for the summary).
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
