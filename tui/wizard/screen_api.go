package wizard

import (
	"errors"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// apiScreen asks where the Decent Cloud API is and whose agent this is.
type apiScreen struct{ form }

func newAPIScreen(endpoint, provider string) apiScreen {
	return apiScreen{form{fields: []field{
		newField("API endpoint", endpoint, "https://api.decent-cloud.org", "the Decent Cloud API (keep the default unless you run your own)",
			func(s string) error {
				if s == "" {
					return errors.New("required")
				}
				_, err := dcapi.ParseEndpoint(s)
				return err
			}),
		newField("Provider key", provider, "64 hex characters", "your provider public key, from the Decent Cloud dashboard",
			func(s string) error {
				if s == "" {
					return errors.New("required: your provider public key (64 hex) from the Decent Cloud dashboard")
				}
				_, err := identity.NormalizePublicKeyHex(s)
				return err
			}),
	}}}
}

func (a *apiScreen) endpoint() string { return a.fields[0].value() }

func (a *apiScreen) provider() string {
	p, _ := identity.NormalizePublicKeyHex(a.fields[1].value())
	return p
}

func (m *Model) updateAPI(msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok && k.String() == "esc" {
		return m.goTo(scrWelcome)
	}
	cmd, submit := m.api.update(msg)
	if submit {
		return m.goTo(scrHost)
	}
	return cmd
}

func (m *Model) viewAPI() string {
	var b strings.Builder
	b.WriteString("Which Decent Cloud API does this agent talk to, and for which provider?\n\n")
	b.WriteString(m.api.view(m, m.width))
	b.WriteString("\nThe provider key is public: it names your provider account. The key that signs\n")
	b.WriteString("for it stays on your offline machine; this host gets its own agent key.\n")
	return m.frame(b.String(), keyHelp("tab", "next field", "enter", "continue", "esc", "back", "ctrl+c", "quit"))
}
