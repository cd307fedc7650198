package wizard

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup"
)

// discoveryScreen shows what the node has and takes the choices: storage,
// bridge, templates. Nothing has been changed on the node yet.
type discoveryScreen struct {
	section int // 0 storage, 1 bridge, 2 templates
	cursor  [3]int
	storage int // chosen index, -1 none
	bridge  int
	tmpl    []bool
	err     string
}

func newDiscoveryScreen(d *setup.Discovery, a setup.ProxmoxAnswers, o Options, old *config.ProxmoxConfig) discoveryScreen {
	s := discoveryScreen{storage: -1, bridge: -1, tmpl: make([]bool, len(setup.Images))}
	want := o.Storage
	if want == "" {
		want, _ = d.PreferredStorage(old)
	}
	for i, st := range d.Storages {
		if st.ID == want {
			s.storage = i
		}
	}
	want = o.Bridge
	if want == "" {
		want, _ = d.PreferredBridge(old)
	}
	for i, b := range d.Bridges {
		if b.Name == want {
			s.bridge = i
		}
	}
	for i, img := range setup.Images {
		for _, t := range a.Templates {
			if t == img.Name {
				s.tmpl[i] = true
			}
		}
	}
	s.cursor = [3]int{max(s.storage, 0), max(s.bridge, 0), 0}
	return s
}

func (s *discoveryScreen) sectionLen(d *setup.Discovery, i int) int {
	switch i {
	case 0:
		return len(d.Storages)
	case 1:
		return len(d.Bridges)
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

// choose applies the choices to the answers, or says what is missing.
func (m *Model) choose() error {
	s, d := &m.discScr, m.disc
	switch {
	case len(d.Storages) == 0:
		return fmt.Errorf("node %s has no storage that can hold VM disks; add one (content: images) and press r to look again", d.Node)
	case len(d.Bridges) == 0:
		return fmt.Errorf("node %s has no network bridge; create one (e.g. vmbr0) and press r to look again", d.Node)
	case s.storage < 0:
		return fmt.Errorf("choose the storage (↑/↓, space)")
	case s.bridge < 0:
		return fmt.Errorf("choose the bridge (↑/↓, space)")
	case len(s.templates()) == 0:
		return fmt.Errorf("choose at least one template (space)")
	}
	m.answers.Storage = d.Storages[s.storage].ID
	m.answers.Bridge = d.Bridges[s.bridge].Name
	m.answers.Templates = s.templates()
	return nil
}

func (m *Model) updateDiscovery(msg tea.Msg) tea.Cmd {
	s, d := &m.discScr, m.disc
	k, ok := msg.(tea.KeyMsg)
	if !ok {
		return nil
	}
	n := s.sectionLen(d, s.section)
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
			s.cursor[s.section] = max(s.sectionLen(d, s.section)-1, 0)
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
		s.err = ""
	case "r":
		m.hostScr.state = hostEdit
		m.screen = scrHost
		return m.connectCmd()
	case "esc":
		m.hostScr.state = hostEdit
		return m.goTo(scrHost)
	case "enter":
		if err := m.choose(); err != nil {
			s.err = err.Error()
			return nil
		}
		return m.startNodePlan()
	}
	return nil
}

func (m *Model) viewDiscovery() string {
	s, d := &m.discScr, m.disc
	var b strings.Builder
	vc := "no (templates get the guest agent on first boot)"
	if d.VirtCustomize {
		vc = "yes"
	}
	fmt.Fprintf(&b, "Node %s · Proxmox VE %s · virt-customize: %s\n", m.st.key.Render(clean(d.Node)), clean(d.Version.Version), vc)
	head := func(i int, t string) {
		if s.section == i {
			b.WriteString(m.st.sel.Render("▸ "+t) + "\n")
		} else {
			b.WriteString("  " + t + "\n")
		}
	}
	row := func(sec, i int, chosen bool, radio bool, text string) {
		cur := "   "
		if s.section == sec && s.cursor[sec] == i {
			cur = m.st.sel.Render("  >")
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
		b.WriteString(m.st.bad.Render("    "+markBad+" none can hold VM disks") + "\n")
	}
	for i, st := range d.Storages {
		row(0, i, s.storage == i, true, fmt.Sprintf("%-12s %-9s %5d GiB free", clean(st.ID), clean(st.Type), st.Avail>>30))
	}
	head(1, "Bridge for VM networks")
	if len(d.Bridges) == 0 {
		b.WriteString(m.st.bad.Render("    "+markBad+" no bridge") + "\n")
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
		row(2, i, s.tmpl[i], false, fmt.Sprintf("%-13s %-26s %s", img.Name, img.Title, m.st.dim.Render(note)))
	}
	b.WriteString("\n")
	if s.err != "" {
		b.WriteString(m.st.bad.Render(markBad+" ") + s.err + "\n")
	} else {
		st, br := "?", "?"
		if s.storage >= 0 && s.storage < len(d.Storages) {
			st = clean(d.Storages[s.storage].ID)
		}
		if s.bridge >= 0 && s.bridge < len(d.Bridges) {
			br = clean(d.Bridges[s.bridge].Name)
		}
		fmt.Fprintf(&b, "Enter changes the node: templates %s on %s, bridge %s; pool %s, user %s, role %s and its API token.\n",
			strings.Join(s.templates(), ", "), st, br, setup.PVEPool, setup.PVEUser, setup.PVERole)
	}
	return m.frame(b.String(), keyHelp("tab", "next list", "↑/↓", "move", "space", "choose", "enter", "set up the node", "esc", "back"))
}
