package wizard

import (
	"fmt"
	"slices"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/setup"
)

// discoveryScreen shows what the node has and takes the choices: storage,
// bridge, templates. Nothing has been changed on the node yet.
type discoveryScreen struct {
	env     *env
	d       *setup.Discovery
	section int // 0 storage, 1 bridge, 2 templates
	cursor  [3]int
	storage int // chosen index, -1 none
	bridge  int
	tmpl    []bool
	err     error
}

func (s *discoveryScreen) focus() tea.Cmd { return nil }

// ask shows the flow's question: the node and the preselection.
func (s *discoveryScreen) ask(q setup.ChoiceQuestion) {
	d := q.Discovery
	*s = discoveryScreen{env: s.env, d: d, storage: -1, bridge: -1, tmpl: make([]bool, len(setup.Images)), err: q.Err}
	for i, st := range d.Storages {
		if st.ID == q.Choices.Storage {
			s.storage = i
		}
	}
	for i, b := range d.Bridges {
		if b.Name == q.Choices.Bridge {
			s.bridge = i
		}
	}
	for i, img := range setup.Images {
		s.tmpl[i] = slices.Contains(q.Choices.Templates, img.Name)
	}
	s.cursor = [3]int{max(s.storage, 0), max(s.bridge, 0), 0}
}

func (s *discoveryScreen) sectionLen(i int) int {
	switch i {
	case 0:
		return len(s.d.Storages)
	case 1:
		return len(s.d.Bridges)
	}
	return len(setup.Images)
}

func (s *discoveryScreen) templates() []string {
	var t []string
	for i, on := range s.tmpl {
		if on {
			t = append(t, setup.Images[i].Name)
		}
	}
	return t
}

// choices are the answer, or what is missing.
func (s *discoveryScreen) choices() (setup.Choices, error) {
	d := s.d
	switch {
	case len(d.Storages) == 0 || len(d.Bridges) == 0:
		return setup.Choices{}, s.err // the flow said what the node lacks
	case s.storage < 0:
		return setup.Choices{}, fmt.Errorf("choose the storage (↑/↓, space)")
	case s.bridge < 0:
		return setup.Choices{}, fmt.Errorf("choose the bridge (↑/↓, space)")
	case len(s.templates()) == 0:
		return setup.Choices{}, fmt.Errorf("choose at least one template (space)")
	}
	return setup.Choices{Storage: d.Storages[s.storage].ID, Bridge: d.Bridges[s.bridge].Name, Templates: s.templates()}, nil
}

func (s *discoveryScreen) update(msg tea.Msg) tea.Cmd {
	if q, ok := msg.(setup.ChoiceQuestion); ok {
		s.ask(q)
		return nil
	}
	k, ok := msg.(tea.KeyMsg)
	if !ok || s.d == nil {
		return nil
	}
	n := s.sectionLen(s.section)
	switch k.String() {
	case "tab":
		s.section = (s.section + 1) % 3
	case "shift+tab":
		s.section = (s.section + 2) % 3
	case "up", "k":
		if s.cursor[s.section] > 0 {
			s.cursor[s.section]--
		} else if s.section > 0 {
			s.section--
			s.cursor[s.section] = max(s.sectionLen(s.section)-1, 0)
		}
	case "down", "j":
		if s.cursor[s.section] < n-1 {
			s.cursor[s.section]++
		} else if s.section < 2 {
			s.section++
			s.cursor[s.section] = 0
		}
	case " ", "x":
		c := s.cursor[s.section]
		switch {
		case n == 0:
		case s.section == 0:
			s.storage = c
		case s.section == 1:
			s.bridge = c
		default:
			s.tmpl[c] = !s.tmpl[c]
		}
		s.err = nil
	case "r":
		return answer(setup.Choices{Rediscover: true}, nil)
	case "esc":
		return answer(nil, setup.ErrBack)
	case "enter":
		c, err := s.choices()
		if err != nil {
			s.err = err
			return nil
		}
		return answer(c, nil)
	}
	return nil
}

func (s *discoveryScreen) view(int, int) (string, string) {
	d := s.d
	if d == nil {
		return "", ""
	}
	var b strings.Builder
	vc := "no (templates get the guest agent on first boot)"
	if d.VirtCustomize {
		vc = "yes"
	}
	fmt.Fprintf(&b, "Node %s · Proxmox VE %s · virt-customize: %s\n", st.key.Render(clean(d.Node)), clean(d.Version.Version), vc)
	if len(d.AgentTokens) > 0 {
		b.WriteString(agentsBefore(d) + "\n")
	}
	head := func(i int, t string) {
		if s.section == i {
			b.WriteString(st.sel.Render("▸ "+t) + "\n")
		} else {
			b.WriteString("  " + t + "\n")
		}
	}
	row := func(sec, i int, chosen bool, radio bool, text string) {
		cur := "   "
		if s.section == sec && s.cursor[sec] == i {
			cur = st.sel.Render("  >")
		}
		box := "( )"
		if chosen {
			box = "(•)"
		}
		if !radio {
			box = "[ ]"
			if chosen {
				box = "[x]"
			}
		}
		b.WriteString(cur + " " + box + " " + text + "\n")
	}
	head(0, "Storage for templates and VM disks")
	if len(d.Storages) == 0 {
		b.WriteString(st.bad.Render("    "+markBad+" none can hold VM disks") + "\n")
	}
	for i, sto := range d.Storages {
		row(0, i, s.storage == i, true, fmt.Sprintf("%-12s %-9s %5d GiB free", clean(sto.ID), clean(sto.Type), sto.Avail>>30))
	}
	head(1, "Bridge for VM networks")
	if len(d.Bridges) == 0 {
		b.WriteString(st.bad.Render("    "+markBad+" no bridge") + "\n")
	}
	for i, br := range d.Bridges {
		row(1, i, s.bridge == i, true, fmt.Sprintf("%-12s %s", clean(br.Name), clean(br.CIDR)))
	}
	head(2, "Templates to build")
	for i, img := range setup.Images {
		note := fmt.Sprintf("~%d MB download", img.SizeMB)
		for _, vm := range d.VMs {
			if vm.Template && vm.HasTag(setup.TagOS(img.Name)) {
				note = fmt.Sprintf("exists (VMID %d): reused", vm.VMID)
				break
			}
		}
		row(2, i, s.tmpl[i], false, fmt.Sprintf("%-13s %-26s %s", img.Name, img.Title, st.dim.Render(note)))
	}
	b.WriteString("\n")
	if s.err != nil {
		b.WriteString(st.bad.Render(markBad+" ") + clean(s.err.Error()) + "\n")
		if fix := setup.FixOf(s.err); fix != "" {
			b.WriteString("Fix: " + clean(fix) + " (r looks again)\n")
		}
	} else {
		sto, br := "?", "?"
		if s.storage >= 0 && s.storage < len(d.Storages) {
			sto = clean(d.Storages[s.storage].ID)
		}
		if s.bridge >= 0 && s.bridge < len(d.Bridges) {
			br = clean(d.Bridges[s.bridge].Name)
		}
		fmt.Fprintf(&b, "Enter changes the node: templates %s on %s, bridge %s; pool %s, user %s, role %s and its API token.\n",
			strings.Join(s.templates(), ", "), sto, br, setup.PVEPool, setup.PVEUser, setup.PVERole)
	}
	return b.String(), keyHelp("tab", "next list", "↑/↓", "move", "space", "choose", "enter", "set up the node", "esc", "back")
}

// agentsBefore names the agents already set up on the node: each has its
// own API token, which setting up this agent leaves valid.
func agentsBefore(d *setup.Discovery) string {
	var names []string
	for _, t := range d.AgentTokens {
		names = append(names, clean(t.Name))
	}
	return fmt.Sprintf("Agents set up here before: token %s. This agent keeps or gets its\nown token; theirs stay valid.", strings.Join(names, ", "))
}
