package wizard

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
)

type hostState int

const (
	hostEdit hostState = iota
	hostScanning
	hostConfirm
	hostConnecting
)

type hostKeyMsg struct {
	info setup.HostKeyInfo
	err  error
}

// connResult is filled by the connect plan's steps (in its goroutine) and
// read after its done message.
type connResult struct {
	host *setup.Host
	disc *setup.Discovery
}

// hostScreen asks for the node and how to log in, shows the host key to
// confirm, then connects and discovers.
type hostScreen struct {
	form
	state   hostState
	info    setup.HostKeyInfo
	scanErr error
	conn    progressScreen
	res     *connResult
}

func newHostScreen(o SSHAnswers) hostScreen {
	port := ""
	if o.Port != 0 {
		port = strconv.Itoa(o.Port)
	}
	key := o.IdentityFile
	if key == "" && o.PasswordFile == "" && os.Getenv("SSH_AUTH_SOCK") == "" {
		if keys := setup.DefaultIdentityFiles(); len(keys) > 0 {
			key = keys[0]
		}
	}
	pw := ""
	if o.PasswordFile != "" {
		pw = "file:" + o.PasswordFile
	}
	h := hostScreen{form: form{fields: []field{
		newField("Host", o.Host, "pve.example.com or 192.0.2.10", "the Proxmox VE node's SSH name or address", func(s string) error {
			if s == "" {
				return errors.New("required: the node's name or address")
			}
			if strings.ContainsAny(s, " \t\r\n'\"`$;&|<>\\") {
				return fmt.Errorf("%q is not a host name or address", s)
			}
			return nil
		}),
		newField("SSH port", port, "22", "", func(s string) error {
			if s == "" {
				return nil
			}
			if n, err := strconv.Atoi(s); err != nil || n < 1 || n > 65535 {
				return errors.New("a port number, 1 to 65535")
			}
			return nil
		}),
		newField("User", o.User, "root", "root, or a user allowed to run qm and pveum", nil),
		newField("SSH key", key, "~/.ssh/id_ed25519 (empty: ssh-agent)", "an OpenSSH private key file; empty uses ssh-agent or the password", func(s string) error {
			if s == "" {
				return nil
			}
			if st, err := os.Stat(expandHome(s)); err != nil || st.IsDir() {
				return fmt.Errorf("no key file at %s", s)
			}
			return nil
		}),
		newField("Password", pw, "(only without a key)", "the SSH password, if the node takes no key", nil),
	}},
		conn: newProgressScreen("Connecting")}
	h.fields[4].input.EchoMode = textinput.EchoPassword
	h.fields[4].input.EchoCharacter = '*'
	return h
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if h, err := os.UserHomeDir(); err == nil {
			return h + "/" + rest
		}
	}
	return p
}

func (h *hostScreen) host() string { return h.fields[0].value() }
func (h *hostScreen) port() int {
	n, err := strconv.Atoi(h.fields[1].value())
	if err != nil || n == 0 {
		return 22
	}
	return n
}
func (h *hostScreen) user() string {
	if u := h.fields[2].value(); u != "" {
		return u
	}
	return "root"
}

// prepareAnswers rebuilds the answers for the chosen host from the
// prefill, exactly as --no-tui does: prefill, FillDefaults, then the
// wizard's own answers.
func (m *Model) prepareAnswers() {
	a := m.o.Answers
	a.APIEndpoint = m.api.endpoint()
	a.ProviderPubkey = m.api.provider()
	a.Now = m.now
	a.FillDefaults(m.existing, m.hostScr.host())
	m.answers = a
}

func (m *Model) scanCmd() tea.Cmd {
	host, port, pins := m.hostScr.host(), m.hostScr.port(), setup.HostKeyStore{Path: m.answers.PinsPath()}
	ctx := m.ctx
	return func() tea.Msg {
		info, err := setup.ScanHostKey(ctx, host, port, pins)
		return hostKeyMsg{info: info, err: err}
	}
}

// sshOptions builds the connection options from the answers.
func (m *Model) sshOptions() (setup.SSHOptions, error) {
	h := &m.hostScr
	o := setup.SSHOptions{Host: h.host(), Port: h.port(), User: h.user(), HostKeyFingerprint: h.info.Fingerprint,
		Pins: setup.HostKeyStore{Path: m.answers.PinsPath()}}
	key, pw := h.fields[3].value(), h.fields[4].input.Value()
	switch {
	case strings.HasPrefix(pw, "file:"):
		s, err := identity.ReadSecretFile(strings.TrimPrefix(pw, "file:"))
		if err != nil {
			return o, setup.WithFix(err, "check the password file (0600), or type the password")
		}
		o.Password = s
	case pw != "":
		o.Password = pw
	case key != "":
		o.IdentityFile = expandHome(key)
	case os.Getenv("SSH_AUTH_SOCK") != "":
		o.UseAgent = true
	default:
		return o, setup.Fixf("enter an SSH key file or the password", "no way to log in: no key, no ssh-agent, no password")
	}
	return o, nil
}

func (m *Model) connectCmd() tea.Cmd {
	opts, err := m.sshOptions()
	if err != nil {
		m.hostScr.state, m.hostScr.scanErr = hostEdit, err
		return nil
	}
	m.sshOpts = opts
	m.Close()
	res := &connResult{}
	m.hostScr.res = res
	node := m.o.Node
	plan := &setup.Plan{Steps: []setup.Step{
		{ID: "connect", Title: fmt.Sprintf("Connect to %s@%s", opts.User, opts.Host), Run: func(ctx context.Context, r *setup.Reporter) error {
			h, err := setup.Connect(ctx, opts)
			if err != nil {
				var ch *setup.HostKeyChangedError
				if errors.As(err, &ch) {
					return setup.WithFix(err, ch.Fix())
				}
				return err
			}
			res.host = h
			if h.NewlyPinned {
				r.Changed("logged in; pinned host key %s", h.Fingerprint)
			} else {
				r.Summarize("logged in; host key %s", h.Fingerprint)
			}
			return nil
		}},
		{ID: "discover", Title: "Discover the node", Run: func(ctx context.Context, r *setup.Reporter) error {
			d, err := setup.Discover(ctx, res.host, r, node)
			if err != nil {
				return err
			}
			res.disc = d
			r.Summarize("node %s, Proxmox VE %s", d.Node, d.Version.Version)
			return nil
		}},
	}}
	m.hostScr.state = hostConnecting
	m.gen++
	return m.hostScr.conn.start(m.ctx, m.gen, plan, m.now)
}

// discovered shows what discovery found and asks for the choices.
func (m *Model) discovered(d *setup.Discovery) tea.Cmd {
	m.disc = d
	m.discScr = newDiscoveryScreen(d, m.answers, m.o, m.oldPx)
	m.hostScr.state = hostEdit
	return m.goTo(scrDiscovery)
}

func (m *Model) updateHost(msg tea.Msg) tea.Cmd {
	h := &m.hostScr
	switch msg := msg.(type) {
	case hostKeyMsg:
		if h.state != hostScanning {
			return nil
		}
		if msg.err != nil {
			h.state, h.scanErr = hostEdit, msg.err
			return nil
		}
		h.info, h.state = msg.info, hostConfirm
		return nil
	case planEventMsg, planDoneMsg, tickMsg:
		cmd, finished := h.conn.update(msg, m.now)
		if finished {
			if m.hostScr.res != nil && m.hostScr.res.host != nil {
				m.host = m.hostScr.res.host
				if m.stage < stagePinned {
					m.stage = stagePinned
				}
			}
			if m.stopping {
				return m.quit()
			}
			if h.conn.err == nil {
				return m.discovered(h.res.disc)
			}
			// The failure stays on screen with its fix; esc edits.
		}
		return cmd
	case tea.KeyMsg:
		switch h.state {
		case hostEdit:
			if msg.String() == "esc" {
				return m.goTo(scrAPI)
			}
			cmd, submit := h.update(msg)
			if submit {
				h.scanErr = nil
				m.prepareAnswers()
				h.state = hostScanning
				return m.scanCmd()
			}
			return cmd
		case hostConfirm:
			switch msg.String() {
			case "y", "Y":
				if h.info.Changed {
					return nil
				}
				return m.connectCmd()
			case "n", "N", "esc":
				h.state = hostEdit
			}
		case hostConnecting:
			if h.conn.running {
				_, _ = h.conn.update(msg, m.now)
				return nil
			}
			switch msg.String() {
			case "r":
				return m.connectCmd()
			case "esc", "enter":
				h.state = hostEdit
			default:
				_, _ = h.conn.update(msg, m.now)
			}
		}
	}
	return nil
}

func (m *Model) viewHost() string {
	h := &m.hostScr
	var b strings.Builder
	switch h.state {
	case hostEdit, hostScanning:
		b.WriteString("Which Proxmox VE node should this agent drive, and how does it log in over SSH?\n\n")
		b.WriteString(h.view(m, m.width))
		if h.state == hostScanning {
			b.WriteString("\n" + spin(m.now()) + " reading the host key of " + h.host() + "…\n")
		}
		if h.scanErr != nil {
			b.WriteString("\n" + m.st.bad.Render(markBad+" ") + h.scanErr.Error() + "\n")
			if fix := setup.FixOf(h.scanErr); fix != "" {
				b.WriteString("Fix: " + fix + "\n")
			}
		}
		b.WriteString("\nThe wizard logs in once to set the node up; the agent itself uses the API token\nit creates, never SSH.\n")
		return m.frame(b.String(), keyHelp("tab", "next field", "enter", "connect", "esc", "back", "ctrl+c", "quit"))
	case hostConfirm:
		i := h.info
		switch {
		case i.Changed:
			b.WriteString(m.st.bad.Render("HOST KEY CHANGED") + fmt.Sprintf(" for %s: it now presents %s key\n    %s\n", i.Addr, i.Type, i.Fingerprint))
			b.WriteString("but a different key is pinned in " + m.answers.PinsPath() + ".\n")
			b.WriteString("Someone may be intercepting the connection, or the node was reinstalled.\n\n")
			b.WriteString("Fix: check the key on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub);\nonly if it matches, delete its line from " + m.answers.PinsPath() + " and try again.\n")
			return m.frame(b.String(), keyHelp("esc", "back", "ctrl+c", "quit"))
		case i.Pinned:
			b.WriteString(fmt.Sprintf("%s presents %s key\n    %s\n", i.Addr, i.Type, i.Fingerprint))
			b.WriteString(m.st.ok.Render(markOK+" ") + "this is the key pinned in " + m.answers.PinsPath() + "\n")
			return m.frame(b.String(), keyHelp("y", "connect", "n", "back", "ctrl+c", "quit"))
		}
		b.WriteString(fmt.Sprintf("%s presents this %s host key:\n\n    %s\n\n", i.Addr, i.Type, m.st.code.Render(i.Fingerprint)))
		b.WriteString("Check it on the node (its console, or a session you trust):\n")
		b.WriteString("    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n\n")
		b.WriteString("If it is the same, it is pinned in " + m.answers.PinsPath() + "\nand checked on every later connection.\n")
		return m.frame(b.String(), keyHelp("y", "it matches: pin and connect", "n", "back", "ctrl+c", "quit"))
	}
	b.WriteString(h.conn.view(m, m.width, m.height-3))
	keys := h.conn.keys("continue")
	if !h.conn.running && h.conn.err != nil {
		keys = keyHelp("r", "retry", "esc", "edit the answers", "o", "output", "ctrl+c", "quit")
	}
	return m.frame(b.String(), keys)
}
