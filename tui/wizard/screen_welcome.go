package wizard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/sys/unix"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup"
)

// Check is one prerequisite: OK, a warning (go on, but know this), or a
// failure that blocks the wizard until fixed.
type Check struct {
	Name string
	OK   bool
	Warn bool
	Text string
	Fix  string
}

type prereqMsg struct{ checks []Check }

type welcomeScreen struct {
	checks  []Check
	checked bool
}

func newWelcome() welcomeScreen { return welcomeScreen{} }

// checkPrereqs looks at this machine: can the config be written, is
// there an old one, can the service be installed, how SSH will log in.
func (m *Model) checkPrereqs() tea.Cmd {
	o, existing, loadErr := m.o, m.existing, m.loadErr
	return func() tea.Msg {
		if o.Prereqs != nil {
			return prereqMsg{checks: o.Prereqs()}
		}
		return prereqMsg{checks: Prereqs(o, existing, loadErr)}
	}
}

// Prereqs are the welcome screen's checks.
func Prereqs(o Options, existing *config.Config, loadErr error) []Check {
	var cs []Check
	cfg := o.Answers.ConfigPath
	switch {
	case loadErr != nil:
		cs = append(cs, Check{Name: "config", Text: fmt.Sprintf("%s: %v", cfg, loadErr),
			Fix: "fix or move the file away, or pass --config with another path"})
	case existing != nil && existing.API.ProviderPubkey != "":
		cs = append(cs, Check{Name: "config", OK: true, Text: cfg + " exists: its answers are prefilled, and steps already done are skipped"})
	default:
		cs = append(cs, Check{Name: "config", OK: true, Text: cfg + " will be written"})
	}
	if dir, err := writableDir(filepath.Dir(cfg)); err != nil {
		cs = append(cs, Check{Name: "permissions", Text: fmt.Sprintf("cannot write %s: %v", dir, err),
			Fix: "run as root (sudo dc-agent), or pass --config with a path you can write"})
	}
	switch {
	case o.Service.Root != "":
		cs = append(cs, Check{Name: "service", OK: true, Text: "the service files go under " + o.Service.Root + " (no systemctl)"})
	case o.Service.User:
		cs = append(cs, Check{Name: "service", OK: true, Text: "the service goes into your systemd --user manager"})
	default:
		if _, err := exec.LookPath("systemctl"); err != nil {
			cs = append(cs, Check{Name: "service", Warn: true, Text: "systemctl not found: the service cannot be installed on this machine",
				Fix: "run dc-agent on a systemd host, or run 'dc-agent run' yourself after the setup"})
		} else if os.Geteuid() != 0 {
			cs = append(cs, Check{Name: "service", Warn: true, Text: "not root: installing the service will fail", Fix: "run sudo dc-agent"})
		} else {
			cs = append(cs, Check{Name: "service", OK: true, Text: "systemd found: the dc-agent service will be installed and started"})
		}
	}
	switch {
	case o.SSH.IdentityFile != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH key " + o.SSH.IdentityFile})
	case o.SSH.PasswordFile != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH password from " + o.SSH.PasswordFile})
	case os.Getenv("SSH_AUTH_SOCK") != "":
		cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH keys from ssh-agent"})
	default:
		if keys := setup.DefaultIdentityFiles(); len(keys) > 0 {
			cs = append(cs, Check{Name: "ssh", OK: true, Text: "SSH key " + keys[0]})
		} else {
			cs = append(cs, Check{Name: "ssh", OK: true, Warn: true, Text: "no SSH key found: you will log in to the node with a password"})
		}
	}
	return cs
}

// writableDir checks that dir (or its nearest existing parent, where it
// would be created) can be written.
func writableDir(dir string) (string, error) {
	for d := dir; ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if errors.Is(err, fs.ErrNotExist) && d != filepath.Dir(d) {
			continue
		}
		if err != nil {
			return d, err
		}
		if !st.IsDir() {
			return d, errors.New("not a directory")
		}
		if err := unix.Access(d, unix.W_OK); err != nil {
			return d, errors.New("permission denied")
		}
		return d, nil
	}
}

func (w *welcomeScreen) blocked() bool {
	for _, c := range w.checks {
		if !c.OK && !c.Warn {
			return true
		}
	}
	return false
}

func (m *Model) updateWelcome(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case prereqMsg:
		m.welcome.checks, m.welcome.checked = msg.checks, true
	case tea.KeyMsg:
		switch msg.String() {
		case "enter":
			if m.welcome.checked && !m.welcome.blocked() {
				return m.goTo(scrAPI)
			}
		case "r":
			return m.checkPrereqs()
		case "q", "esc":
			return m.quit()
		}
	}
	return nil
}

func (m *Model) viewWelcome() string {
	var b strings.Builder
	b.WriteString("This wizard makes this machine the Decent Cloud agent of a Proxmox VE node:\n")
	b.WriteString("  1. it logs in to the node over SSH and looks at what is there\n")
	b.WriteString("  2. builds cloud-init templates and a least-privilege API token on it\n")
	b.WriteString("  3. creates the agent key, which you delegate offline with your provider key\n")
	b.WriteString("  4. registers the agent, then installs and starts the dc-agent service\n")
	b.WriteString("Each step checks first and changes only what differs: stop and re-run any time.\n\n")
	b.WriteString(m.st.key.Render("Prerequisites") + "\n")
	if !m.welcome.checked {
		b.WriteString("  " + spin(m.now()) + " checking…\n")
	}
	for _, c := range m.welcome.checks {
		mark := m.st.ok.Render(markOK)
		switch {
		case c.Warn:
			mark = m.st.warn.Render(markWarn)
		case !c.OK:
			mark = m.st.bad.Render(markBad)
		}
		b.WriteString("  " + mark + " " + c.Text + "\n")
		if c.Fix != "" && !c.OK || c.Warn && c.Fix != "" {
			b.WriteString("      fix: " + c.Fix + "\n")
		}
	}
	keys := keyHelp("enter", "start", "q", "quit")
	if m.welcome.blocked() {
		keys = keyHelp("r", "check again", "q", "quit")
	}
	return m.frame(b.String(), keys)
}
