package wizard

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/setup"
)

// pasteScreen takes the signed delegation and checks it on every change:
// malformed, for another agent, from another provider, expired — each
// explained with its fix before anything is sent anywhere.
type pasteScreen struct {
	input textinput.Model
}

func newPasteScreen() pasteScreen {
	ti := textinput.New()
	ti.Prompt = "> "
	ti.Placeholder = "dcds1:…"
	ti.CharLimit = 8192
	ti.Cursor.SetMode(cursor.CursorStatic)
	return pasteScreen{input: ti}
}

var reasonTitles = map[string]string{
	"malformed":      "Not a signed delegation",
	"wrong-agent":    "For another agent",
	"wrong-provider": "Wrong provider",
	"expired":        "Expired",
}

// check validates what is pasted so far.
func (m *Model) checkPasted() (ok bool, lines []string) {
	v := strings.TrimSpace(m.paste.input.Value())
	if v == "" {
		return false, nil
	}
	sd, warns, err := setup.AcceptDelegation(v, m.key.Pubkey, m.answers.ProviderPubkey, m.now())
	if err != nil {
		title := "Not usable"
		var ae *setup.AcceptError
		if errors.As(err, &ae) {
			if t, ok := reasonTitles[ae.Reason]; ok {
				title = t
			}
		}
		lines = append(lines, m.st.bad.Render(markBad+" "+title+": ")+clean(err.Error()))
		if fix := setup.FixOf(err); fix != "" {
			lines = append(lines, "Fix: "+clean(fix))
		}
		return false, lines
	}
	exp := "never expires"
	if sd.ExpiresAtNs != nil {
		exp = "expires " + sd.ExpiresAt().UTC().Format(time.RFC3339)
	}
	lines = append(lines, m.st.ok.Render(markOK+" Valid: ")+fmt.Sprintf("signed by provider %s for this agent; %s; %s",
		short(sd.ProviderPubkey), strings.Join(sd.Permissions, ", "), exp))
	for _, w := range warns {
		lines = append(lines, m.st.warn.Render(markWarn+" ")+w)
	}
	return true, lines
}

func (m *Model) updatePaste(msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch k.String() {
		case "esc":
			return m.goTo(scrRequest)
		case "enter":
			if ok, _ := m.checkPasted(); ok {
				return m.startRegister()
			}
			return nil
		}
	}
	var cmd tea.Cmd
	m.paste.input, cmd = m.paste.input.Update(msg)
	return cmd
}

func (m *Model) viewPaste() string {
	var b strings.Builder
	b.WriteString("Paste the signed delegation that dc-agent delegation sign printed (dcds1:…).\n")
	b.WriteString("It is checked as you paste; nothing is sent until you press enter.\n\n")
	b.WriteString(m.paste.input.View() + "\n\n")
	_, lines := m.checkPasted()
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	if len(lines) == 0 {
		b.WriteString(m.st.dim.Render("To register later instead: ctrl+c, then dc-agent register --delegation 'dcds1:…'") + "\n")
	}
	return m.frame(b.String(), keyHelp("enter", "register", "esc", "back to the request", "ctrl+c", "stop here"))
}

// startRegister registers the pasted delegation with the API (the same
// step as dc-agent register and setup proxmox --delegation).
func (m *Model) startRegister() tea.Cmd {
	m.signed = strings.TrimSpace(m.paste.input.Value())
	m.answers.Delegation = m.signed
	a := m.answers
	ua := a.UserAgent
	if ua == "" {
		ua = "dc-agent"
	}
	plan := &setup.Plan{Steps: []setup.Step{setup.RegisterStep(m.signed, m.key, a.ProviderPubkey, func(k ed25519.PrivateKey) (*dcapi.Client, error) {
		return dcapi.New(a.APIEndpoint, a.ProviderPubkey, k, dcapi.WithUserAgent(ua))
	}, m.now)}}
	m.screen = scrRegister
	m.gen++
	return m.reg.start(m.ctx, m.gen, plan, m.now)
}
