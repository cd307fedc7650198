package wizard

import (
	"errors"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

// apiScreen asks where the Decent Cloud API is and whose agent this is.
type apiScreen struct {
	form
	err error
}

func newAPIScreen() *apiScreen {
	return &apiScreen{form: form{fields: []field{
		newField("API endpoint", "", "https://api.decent-cloud.org", "the Decent Cloud API (keep the default unless you run your own)", setup.CheckEndpoint),
		newField("Provider key", "", "64 hex characters", "your provider public key, from the Decent Cloud dashboard",
			func(s string) error {
				if s == "" {
					return errors.New("required: your provider public key (64 hex) from the Decent Cloud dashboard")
				}
				_, err := identity.NormalizePublicKeyHex(s)
				return err
			}),
	}}}
}

func (a *apiScreen) focus() tea.Cmd { return a.focusCmd() }

func (a *apiScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.APIQuestion:
		a.fields[0].input.SetValue(msg.Answer.Endpoint)
		a.fields[1].input.SetValue(msg.Answer.Provider)
		a.err = msg.Err
	case tea.WindowSizeMsg:
		a.layout(msg.Width)
	case tea.KeyMsg:
		if msg.String() == "esc" {
			return answer(nil, setup.ErrBack)
		}
	}
	cmd, submit := a.form.update(msg)
	if submit {
		p, _ := identity.NormalizePublicKeyHex(a.fields[1].value())
		return answer(setup.APIAnswer{Endpoint: a.fields[0].value(), Provider: p}, nil)
	}
	return cmd
}

func (a *apiScreen) view(int, int) (string, string) {
	var b strings.Builder
	b.WriteString("Which Decent Cloud API does this agent talk to, and for which provider?\n\n")
	b.WriteString(a.form.view())
	if a.err != nil {
		b.WriteString("\n" + errorLines(a.err))
	}
	b.WriteString("\nThe provider key is public: it names your provider account. The key that signs\n")
	b.WriteString("for it stays on your offline machine; this host gets its own agent key.\n")
	return b.String(), keyHelp("tab", "next field", "enter", "continue", "esc", "back", "ctrl+c", "quit")
}

// errorLines shows an error from the flow and its fix.
func errorLines(err error) string {
	s := st.bad.Render(markBad+" ") + clean(err.Error()) + "\n"
	if fix := setup.FixOf(err); fix != "" {
		s += "Fix: " + clean(fix) + "\n"
	}
	return s
}
