package wizard

import (
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/setup"
)

// welcomeScreen says what the wizard will do and shows the prerequisite
// checks of this machine; a failed one blocks until fixed.
type welcomeScreen struct {
	env     *env
	checks  []setup.Check
	checked bool
}

func (w *welcomeScreen) focus() tea.Cmd { return nil }

func (w *welcomeScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case prereqQ:
		w.checks, w.checked = msg.checks, true
	case tea.KeyMsg:
		switch msg.String() {
		case "enter":
			if w.checked && !setup.Blocked(w.checks) {
				return answer(false, nil)
			}
		case "r":
			if w.checked {
				w.checked = false
				return answer(true, nil)
			}
		case "q", "esc":
			return send(quitMsg{})
		}
	}
	return nil
}

func (w *welcomeScreen) view(int, int) (string, string) {
	var b strings.Builder
	b.WriteString("This wizard makes this machine the Decent Cloud agent of a Proxmox VE node:\n")
	b.WriteString("  1. it logs in to the node over SSH and looks at what is there\n")
	b.WriteString("  2. builds cloud-init templates and a least-privilege API token on it\n")
	b.WriteString("  3. creates the agent key and registers it with a setup token from the\n")
	b.WriteString("     dashboard (or a delegation you sign offline with your provider key)\n")
	b.WriteString("  4. installs and starts the dc-agent service\n")
	b.WriteString("Each step checks first and changes only what differs: stop and re-run any time.\n\n")
	b.WriteString(st.key.Render("Prerequisites") + "\n")
	if !w.checked {
		b.WriteString("  " + spin(w.env.now()) + " checking…\n")
	}
	for _, c := range w.checks {
		mark := st.ok.Render(markOK)
		switch {
		case c.Warn:
			mark = st.warn.Render(markWarn)
		case !c.OK:
			mark = st.bad.Render(markBad)
		}
		b.WriteString("  " + mark + " " + c.Text + "\n")
		if c.Fix != "" && !c.OK || c.Warn && c.Fix != "" {
			b.WriteString("      fix: " + c.Fix + "\n")
		}
	}
	keys := keyHelp("enter", "start", "q", "quit")
	if setup.Blocked(w.checks) {
		keys = keyHelp("r", "check again", "q", "quit")
	}
	return b.String(), keys
}
