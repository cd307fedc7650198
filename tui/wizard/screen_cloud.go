package wizard

import (
	"fmt"
	"slices"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup"
)

// backendTitles describe the backends the wizard offers.
var backendTitles = map[string]string{
	config.TypeProxmox:      "Proxmox VE    your own nodes, set up over SSH",
	config.TypeDigitalOcean: "DigitalOcean  droplets in your account, from an API token",
	config.TypeVultr:        "Vultr         instances in your account, from an API token",
}

// backendScreen asks what the agent drives: Proxmox or a cloud account.
type backendScreen struct {
	env      *env
	backends []string
	cursor   int
}

func (s *backendScreen) focus() tea.Cmd { return nil }

func (s *backendScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.BackendQuestion:
		s.backends, s.cursor = msg.Backends, max(slices.Index(msg.Backends, msg.Answer), 0)
	case tea.KeyMsg:
		if len(s.backends) == 0 {
			return nil
		}
		switch msg.String() {
		case "up", "k":
			s.cursor = (s.cursor + len(s.backends) - 1) % len(s.backends)
		case "down", "j", "tab":
			s.cursor = (s.cursor + 1) % len(s.backends)
		case "enter", " ":
			s.env.backend = s.backends[s.cursor]
			return answer(s.backends[s.cursor], nil)
		case "esc":
			return answer("", setup.ErrBack)
		}
	}
	return nil
}

func (s *backendScreen) view(int, int) (string, string) {
	var b strings.Builder
	b.WriteString("What does this agent provision machines on?\n\n")
	for i, k := range s.backends {
		cur, box := "   ", "( )"
		if i == s.cursor {
			cur, box = st.sel.Render("  >"), st.sel.Render("(•)")
		}
		b.WriteString(cur + " " + box + " " + backendTitles[k] + "\n")
	}
	b.WriteString("\nA cloud backend needs no host to log in to: the agent creates servers with the\naccount's API token. Each choice is `dc-agent setup " + strings.Join(setup.Backends, "|") + "`\nwithout the wizard.\n")
	return b.String(), keyHelp("↑/↓", "move", "enter", "choose", "esc", "back", "ctrl+c", "quit")
}

// cloudScreen asks for a cloud account's API token file, then (once the
// flow checked the token) for the default region.
type cloudScreen struct {
	form
	env     *env
	typ     string
	cat     *provisioners.Catalog
	region  int // cursor in cat.Regions
	err     error
	waiting bool // answered; the flow checks the token
}

func newCloudScreen(e *env) *cloudScreen {
	return &cloudScreen{env: e, form: form{fields: []field{
		newField("Token file", "", "/root/do-token", "a file (chmod 600) holding the API token only", func(s string) error {
			if s == "" {
				return fmt.Errorf("enter the token file")
			}
			return nil
		}),
	}}}
}

func (s *cloudScreen) focus() tea.Cmd { return s.focusCmd() }

func (s *cloudScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.CloudQuestion:
		s.typ, s.cat, s.err, s.waiting = msg.Type, msg.Catalog, msg.Err, false
		s.fields[0].input.SetValue(msg.Answer.TokenFile)
		s.region = 0
		if s.cat != nil {
			s.region = max(slices.IndexFunc(s.cat.Regions, func(r provisioners.CatalogRegion) bool { return r.ID == msg.Answer.Region }), 0)
		}
		return s.focusCmd()
	case tea.WindowSizeMsg:
		s.layout(msg.Width)
	case tea.KeyMsg:
		if s.waiting {
			return nil
		}
		if msg.String() == "esc" {
			return answer(setup.CloudChoice{}, setup.ErrBack)
		}
		if s.cat == nil {
			cmd, submit := s.form.update(msg)
			if submit {
				s.waiting, s.err = true, nil
				return answer(setup.CloudChoice{TokenFile: s.fields[0].value()}, nil)
			}
			return cmd
		}
		n := len(s.cat.Regions)
		switch msg.String() {
		case "up", "k":
			s.region = max(s.region-1, 0)
		case "down", "j":
			s.region = min(s.region+1, n-1)
		case "enter":
			if n > 0 {
				s.waiting = true
				return answer(setup.CloudChoice{TokenFile: s.fields[0].value(), Region: s.cat.Regions[s.region].ID}, nil)
			}
		}
	}
	return nil
}

func (s *cloudScreen) view(_, h int) (string, string) {
	var b strings.Builder
	name := setup.CloudNames[s.typ]
	if s.cat == nil {
		fmt.Fprintf(&b, "The agent creates %s servers with an API token of your account\n", name)
		b.WriteString("(read and write). Put the token alone in a file only root reads (chmod 600);\n")
		b.WriteString("setup keeps it in a 0600 file beside the config, never in argv or a log.\n\n")
		b.WriteString(s.form.view())
		if s.waiting {
			b.WriteString("\n" + spin(s.env.now()) + " checking the token with the " + name + " API…\n")
		}
		if s.err != nil {
			b.WriteString("\n" + errorLines(s.err))
		}
		return b.String(), keyHelp("enter", "check the token", "esc", "back", "ctrl+c", "quit")
	}
	fmt.Fprintf(&b, "%s account %s: %d regions, %d sizes.\nDefault region for new servers (a contract may name another):\n\n",
		name, clean(s.cat.Account), len(s.cat.Regions), len(s.cat.Sizes))
	rows := max(h-8, 3)
	if s.err != nil {
		rows = max(rows-3, 3)
	}
	first := min(max(s.region-rows/2, 0), max(len(s.cat.Regions)-rows, 0))
	for i := first; i < len(s.cat.Regions) && i < first+rows; i++ {
		r := s.cat.Regions[i]
		cur, box := "   ", "( )"
		if i == s.region {
			cur, box = st.sel.Render("  >"), st.sel.Render("(•)")
		}
		fmt.Fprintf(&b, "%s %s %-8s %s\n", cur, box, clean(r.ID), clean(r.Name))
	}
	if s.err != nil {
		b.WriteString("\n" + errorLines(s.err))
	}
	return b.String(), keyHelp("↑/↓", "move", "enter", "write the config", "esc", "another token", "ctrl+c", "quit")
}
