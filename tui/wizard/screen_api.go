package wizard

import (
	"cmp"
	"errors"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

// apiScreen asks where the Decent Cloud API is and how the agent
// registers there: a setup token from the dashboard (first), or an
// offline-signed delegation for the provider key.
type apiScreen struct {
	form
	env     *env
	methods []setup.RegistrationMethod
	kept    *setup.Pool
	// given: a setup token came with the question (flag or variable);
	// an empty field keeps it.
	given string
	err   error
}

// The API screen's fields.
const (
	apiEndpoint = iota
	apiMethod
	apiToken
	apiProvider
)

func newAPIScreen(e *env) *apiScreen {
	a := &apiScreen{env: e}
	a.form = form{fields: []field{
		newField("API endpoint", "", "https://api.decent-cloud.org", "the Decent Cloud API (keep the default unless you run your own)", setup.CheckEndpoint),
		newChoice("Register with", "←/→ or space: how the API learns this agent's key", "setup token", "signed delegation"),
		newField("Setup token", "", "apt_…", "one-time, from the dashboard: Agents > your pool > Add Agent", func(s string) error {
			if s == "" && (a.kept != nil || a.given != "") {
				return nil
			}
			return setup.CheckSetupToken(s)
		}),
		newField("Provider key", "", "64 hex characters", "your provider public key, from the Decent Cloud dashboard",
			func(s string) error {
				if s == "" {
					return errors.New("required: your provider public key (64 hex) from the Decent Cloud dashboard")
				}
				_, err := identity.NormalizePublicKeyHex(s)
				return err
			}),
	}}
	a.fields[apiToken].input.EchoMode = textinput.EchoPassword
	a.fields[apiToken].input.EchoCharacter = '*'
	a.methods = []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}
	a.showMethod()
	return a
}

func (a *apiScreen) method() setup.RegistrationMethod { return a.methods[a.fields[apiMethod].choice] }

// showMethod shows the field the chosen method needs (and the choice,
// where there is one).
func (a *apiScreen) showMethod() {
	a.fields[apiMethod].hidden = len(a.methods) < 2
	a.fields[apiToken].hidden = a.method() != setup.MethodSetupToken
	a.fields[apiProvider].hidden = a.method() != setup.MethodDelegation
}

func (a *apiScreen) focus() tea.Cmd { return a.focusCmd() }

func (a *apiScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.APIQuestion:
		a.methods, a.kept, a.given, a.err = msg.Methods, msg.Kept, msg.Answer.SetupToken, msg.Err
		if len(a.methods) == 0 {
			a.methods = []setup.RegistrationMethod{setup.MethodSetupToken, setup.MethodDelegation}
		}
		m := &a.fields[apiMethod]
		m.options, m.choice = nil, 0
		for i, meth := range a.methods {
			m.options = append(m.options, methodLabel(meth))
			if meth == msg.Answer.Method {
				m.choice = i
			}
		}
		a.fields[apiEndpoint].input.SetValue(msg.Answer.Endpoint)
		a.fields[apiToken].input.SetValue("")
		a.fields[apiToken].input.Placeholder = "apt_…"
		switch {
		case a.given != "":
			a.fields[apiToken].input.Placeholder = "(the token given; or paste another)"
		case a.kept != nil:
			a.fields[apiToken].input.Placeholder = "(empty: keep pool " + a.kept.String() + ")"
		}
		a.fields[apiProvider].input.SetValue(msg.Answer.Provider)
		a.showMethod()
		a.form.focus, a.form.tried = apiEndpoint, false
		var ae *setup.AnswerError
		if errors.As(msg.Err, &ae) {
			switch ae.Field {
			case "api-endpoint":
				a.form.focus = apiEndpoint
			case "setup-token":
				a.form.focus = apiToken
			case "provider-pubkey":
				a.form.focus = apiProvider
			}
		}
		a.focusCmd()
	case tea.WindowSizeMsg:
		a.layout(msg.Width)
	case tea.KeyMsg:
		if msg.String() == "esc" {
			return answer(nil, setup.ErrBack)
		}
	}
	cmd, submit := a.form.update(msg)
	a.showMethod()
	if submit {
		a.env.method = a.method()
		ans := setup.APIAnswer{Endpoint: a.fields[apiEndpoint].value(), Method: a.method()}
		if ans.Method == setup.MethodSetupToken {
			ans.SetupToken = cmp.Or(a.fields[apiToken].value(), a.given)
		} else {
			ans.Provider, _ = identity.NormalizePublicKeyHex(a.fields[apiProvider].value())
		}
		return answer(ans, nil)
	}
	return cmd
}

// methodLabel is how the method choice shows a registration method.
func methodLabel(m setup.RegistrationMethod) string {
	if m == setup.MethodSetupToken {
		return "setup token"
	}
	return "signed delegation"
}

func (a *apiScreen) view(int, int) (string, string) {
	var b strings.Builder
	b.WriteString("Which Decent Cloud API does this agent talk to, and how does it register there?\n\n")
	b.WriteString(a.form.view())
	if a.err != nil {
		b.WriteString("\n" + errorLines(a.err))
	}
	if a.method() == setup.MethodSetupToken {
		b.WriteString("\nA setup token registers this agent in one of your agent pools. Make one on\n")
		b.WriteString(setup.TokenSource + ".\n")
		b.WriteString("The API then tells the agent your provider and pool: nothing to sign offline.\n")
	} else {
		b.WriteString("\nThe provider key is public: it names your provider account. The key that signs\n")
		b.WriteString("for it stays on your offline machine; this host gets its own agent key.\n")
	}
	return b.String(), keyHelp("tab", "next field", "←/→", "method", "enter", "continue", "esc", "back", "ctrl+c", "quit")
}

// errorLines shows an error from the flow and its fix.
func errorLines(err error) string {
	s := st.bad.Render(markBad+" ") + clean(err.Error()) + "\n"
	if fix := setup.FixOf(err); fix != "" {
		s += "Fix: " + clean(fix) + "\n"
	}
	return s
}
