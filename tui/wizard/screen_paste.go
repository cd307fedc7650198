package wizard

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

// pasteScreen takes the signed delegation and checks it on every change:
// malformed, for another agent, from another provider, expired — each
// explained with its fix before anything is sent anywhere.
type pasteScreen struct {
	env   *env
	input textinput.Model
	code  string // the request this paste answers
	check func(string) (identity.SignedDelegation, []string, error)
	ok    bool
	lines []string
}

func newPasteScreen(e *env) *pasteScreen {
	ti := textinput.New()
	ti.Prompt = "> "
	ti.Placeholder = "dcds1:…"
	ti.CharLimit = 8192
	ti.Cursor.SetMode(cursor.CursorStatic)
	return &pasteScreen{env: e, input: ti}
}

func (p *pasteScreen) focus() tea.Cmd { return p.input.Focus() }

var reasonTitles = map[string]string{
	"malformed":      "Not a signed delegation",
	"wrong-agent":    "For another agent",
	"wrong-provider": "Wrong provider",
	"expired":        "Expired",
}

// recheck validates what is pasted so far.
func (p *pasteScreen) recheck() {
	p.ok, p.lines = false, nil
	v := strings.TrimSpace(p.input.Value())
	if v == "" || p.check == nil {
		return
	}
	sd, warns, err := p.check(v)
	if err != nil {
		title := "Not usable"
		var ae *setup.AcceptError
		if errors.As(err, &ae) {
			if t, ok := reasonTitles[ae.Reason]; ok {
				title = t
			}
		}
		p.lines = append(p.lines, st.bad.Render(markBad+" "+title+": ")+clean(err.Error()))
		if fix := setup.FixOf(err); fix != "" {
			p.lines = append(p.lines, "Fix: "+clean(fix))
		}
		return
	}
	exp := "never expires"
	if sd.ExpiresAtNs != nil {
		exp = "expires " + sd.ExpiresAt().UTC().Format(time.RFC3339)
	}
	p.lines = append(p.lines, st.ok.Render(markOK+" Valid: ")+fmt.Sprintf("signed by provider %s for this agent; %s; %s",
		short(sd.ProviderPubkey), strings.Join(sd.Permissions, ", "), exp))
	for _, w := range warns {
		p.lines = append(p.lines, st.warn.Render(markWarn+" ")+w)
	}
	p.ok = true
}

func (p *pasteScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.DelegationQuestion:
		if msg.Code != p.code {
			p.input.SetValue("")
		}
		p.code, p.check = msg.Code, msg.Check
		p.recheck()
		return nil
	case tea.WindowSizeMsg:
		p.input.Width = max(10, msg.Width-4)
		return nil
	case tea.KeyMsg:
		switch msg.String() {
		case "esc":
			return send(goMsg{scrRequest})
		case "enter":
			if p.ok {
				return answer(strings.TrimSpace(p.input.Value()), nil)
			}
			return nil
		}
	}
	var cmd tea.Cmd
	p.input, cmd = p.input.Update(msg)
	p.recheck()
	return cmd
}

func (p *pasteScreen) view(int, int) (string, string) {
	var b strings.Builder
	b.WriteString("Paste the signed delegation that dc-agent delegation sign printed (dcds1:…).\n")
	b.WriteString("It is checked as you paste; nothing is sent until you press enter.\n\n")
	b.WriteString(p.input.View() + "\n\n")
	for _, l := range p.lines {
		b.WriteString(l + "\n")
	}
	if len(p.lines) == 0 {
		b.WriteString(st.dim.Render("To register later instead: ctrl+c, then dc-agent register --delegation 'dcds1:…'") + "\n")
	}
	return b.String(), keyHelp("enter", "register", "esc", "back to the request", "ctrl+c", "stop here")
}
