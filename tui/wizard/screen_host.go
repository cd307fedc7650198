package wizard

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/setup"
)

type hostState int

const (
	hostEdit       hostState = iota
	hostWaiting              // answered; the flow reads the host key
	hostConfirm              // a new host key to confirm
	hostChanged              // the host key changed: nothing to accept
	hostConnecting           // logging in and discovering
)

// keyFileMsg is the result of looking for the SSH key file.
type keyFileMsg struct {
	path string
	err  error
}

// hostScreen asks for the node and how to log in, shows a new host key to
// confirm, then shows the flow logging in and discovering.
type hostScreen struct {
	form
	env   *env
	state hostState
	err   error
	info  setup.HostKeyInfo
	pins  string
	conn  *progressScreen
	// keyPath is the key file last looked for, keyErr what was found.
	keyPath string
	keyErr  error
}

func newHostScreen(e *env) *hostScreen {
	h := &hostScreen{env: e, conn: newProgressScreen(e, "Connecting", nil)}
	h.form = form{fields: []field{
		newField("Host", "", "pve.example.com or 192.0.2.10", "the Proxmox VE node's SSH name or address", func(s string) error {
			if err := setup.CheckHost(s); err != nil && s != "" {
				return fmt.Errorf("%q is %v", s, err)
			} else if err != nil {
				return err
			}
			return nil
		}),
		newField("SSH port", "", "22", "", func(s string) error { _, err := setup.ParsePort(s); return err }),
		newField("User", "", "root", "root, or a user allowed to run qm and pveum", nil),
		newField("SSH key", "", "~/.ssh/id_ed25519 (empty: ssh-agent)", "an OpenSSH private key file; empty uses ssh-agent or the password", func(s string) error {
			if s != "" && s == h.keyPath {
				return h.keyErr
			}
			return nil
		}),
		newField("Password", "", "(only without a key)", "the SSH password, if the node takes no key", nil),
	}}
	h.fields[4].input.EchoMode = textinput.EchoPassword
	h.fields[4].input.EchoCharacter = '*'
	return h
}

// checkKeyFile looks for the key file off the UI thread.
func checkKeyFile(p string) tea.Cmd {
	return func() tea.Msg { return keyFileMsg{path: p, err: setup.CheckKeyFile(p)} }
}

func (h *hostScreen) focus() tea.Cmd { return h.focusCmd() }

func (h *hostScreen) answer() setup.SSHAnswer {
	port, _ := setup.ParsePort(h.fields[1].value())
	a := setup.SSHAnswer{Host: h.fields[0].value(), Port: port, User: h.fields[2].value(), IdentityFile: h.fields[3].value()}
	pw := h.fields[4].input.Value()
	if f, ok := strings.CutPrefix(pw, "file:"); ok {
		a.PasswordFile = f
	} else {
		a.Password = pw
	}
	return a
}

func (h *hostScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.SSHQuestion:
		a := msg.Answer
		port := ""
		if a.Port != 0 {
			port = strconv.Itoa(a.Port)
		}
		pw := a.Password
		if a.PasswordFile != "" {
			pw = "file:" + a.PasswordFile
		}
		for i, v := range []string{a.Host, port, a.User, a.IdentityFile, pw} {
			h.fields[i].input.SetValue(v)
		}
		h.state, h.err = hostEdit, msg.Err
		h.form.focus = 0
		var ae *setup.AnswerError
		if errors.As(msg.Err, &ae) {
			h.form.focus = max(slices.Index([]string{"host", "port", "user", "identity-file", "password-file"}, ae.Field), 0)
		}
		h.focusCmd()
		var ch *setup.HostKeyChangedError
		if errors.As(msg.Err, &ch) {
			h.state, h.info, h.pins = hostChanged, setup.HostKeyInfo{Addr: ch.Addr, Type: ch.Type, Fingerprint: ch.Got, Changed: true}, ch.File
		}
		return checkKeyFile(a.IdentityFile)
	case setup.HostKeyQuestion:
		h.state, h.info, h.pins = hostConfirm, msg.Info, msg.PinsPath
		return nil
	case passwordQ:
		return answer("", setup.Fixf("enter an SSH key file or the password", "no way to log in: no key, no ssh-agent, no password"))
	case keyFileMsg:
		h.keyPath, h.keyErr = msg.path, msg.err
		return nil
	case startedMsg, eventMsg, tickMsg:
		if _, ok := msg.(startedMsg); ok {
			h.state = hostConnecting
		}
		return h.conn.update(msg)
	case endedQ:
		h.conn.update(msg)
		if msg.err == nil {
			return answer(false, nil) // on to the choices
		}
		return nil // the failure stays on screen with its fix
	case tea.WindowSizeMsg:
		h.layout(msg.Width)
		return nil
	case tea.KeyMsg:
		return h.key(msg)
	}
	return nil
}

func (h *hostScreen) key(k tea.KeyMsg) tea.Cmd {
	switch h.state {
	case hostEdit:
		if k.String() == "esc" {
			return answer(nil, setup.ErrBack)
		}
		before := h.fields[3].value()
		cmd, submit := h.form.update(k)
		if submit {
			h.state, h.err = hostWaiting, nil
			return answer(h.answer(), nil)
		}
		if v := h.fields[3].value(); v != before {
			return tea.Batch(cmd, checkKeyFile(v))
		}
		return cmd
	case hostConfirm:
		switch k.String() {
		case "y", "Y":
			h.state = hostWaiting
			return answer(true, nil)
		case "n", "N", "esc":
			return answer(false, setup.ErrBack)
		}
	case hostChanged:
		if k.String() == "esc" {
			h.state = hostEdit
		}
	case hostConnecting:
		if h.conn.running {
			return h.conn.update(k)
		}
		switch k.String() {
		case "r":
			return answer(true, nil)
		case "esc", "enter":
			return answer(false, setup.ErrBack)
		default:
			return h.conn.update(k)
		}
	}
	return nil
}

func (h *hostScreen) view(w, bh int) (string, string) {
	var b strings.Builder
	switch h.state {
	case hostEdit, hostWaiting:
		b.WriteString("Which Proxmox VE node should this agent drive, and how does it log in over SSH?\n\n")
		b.WriteString(h.form.view())
		if h.state == hostWaiting {
			b.WriteString("\n" + spin(h.env.now()) + " reading the host key of " + h.fields[0].value() + "…\n")
		}
		if h.err != nil {
			b.WriteString("\n" + errorLines(h.err))
		}
		b.WriteString("\nThe wizard logs in once to set the node up; the agent itself uses the API token\nit creates, never SSH.\n")
		return b.String(), keyHelp("tab", "next field", "enter", "connect", "esc", "back", "ctrl+c", "quit")
	case hostChanged:
		i := h.info
		b.WriteString(st.bad.Render("HOST KEY CHANGED") + fmt.Sprintf(" for %s: it now presents %s key\n    %s\n", i.Addr, i.Type, i.Fingerprint))
		b.WriteString("but a different key is pinned in " + h.pins + ".\n")
		b.WriteString("Someone may be intercepting the connection, or the node was reinstalled.\n\n")
		b.WriteString("Fix: check the key on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub);\nonly if it matches, delete its line from " + h.pins + " and try again.\n")
		return b.String(), keyHelp("esc", "back", "ctrl+c", "quit")
	case hostConfirm:
		i := h.info
		fmt.Fprintf(&b, "%s presents this %s host key:\n\n    %s\n\n", i.Addr, i.Type, st.code.Render(i.Fingerprint))
		b.WriteString("Check it on the node (its console, or a session you trust):\n")
		b.WriteString("    ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n\n")
		b.WriteString("If it is the same, it is pinned in " + h.pins + "\nand checked on every later connection.\n")
		return b.String(), keyHelp("y", "it matches: pin and connect", "n", "back", "ctrl+c", "quit")
	}
	b.WriteString(h.conn.plan(w, bh))
	keys := h.conn.keys("continue")
	if !h.conn.running && h.conn.err != nil {
		keys = keyHelp("r", "retry", "esc", "edit the answers", "o", "output", "ctrl+c", "quit")
	}
	return b.String(), keys
}
