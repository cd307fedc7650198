package wizard

import (
	"fmt"
	"strings"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/setup"
)

// gatewayScreen offers the gateway when the VMs' bridge is private: use
// it or not, and its dc_id and public_ip (prefilled by the flow).
type gatewayScreen struct {
	form
	env     *env
	q       setup.GatewayQuestion
	waiting bool // answered; the flow goes on
}

const (
	gwUse = iota
	gwDCID
	gwPublicIP
)

func newGatewayScreen(e *env) *gatewayScreen {
	return &gatewayScreen{env: e, form: form{fields: []field{
		newChoice("Use the gateway", "←/→ or space: no, or yes (Caddy and IPv4 forwarding on the node)", "no", "yes"),
		newField("dc_id", "", "dc-lk", "2-20 of a-z 0-9 -: the VMs' names <slug>.<dc_id>.gw.decent-cloud.org", setup.CheckGatewayDCID),
		newField("Public IPv4", "", "198.51.100.7", "what tenants connect to (behind 1:1 NAT: the NAT's address)", setup.CheckGatewayPublicIP),
	}}}
}

func (s *gatewayScreen) focus() tea.Cmd { return s.focusCmd() }

func (s *gatewayScreen) use() bool { return s.fields[gwUse].choice == 1 }

func (s *gatewayScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.GatewayQuestion:
		s.q, s.waiting, s.form.focus = msg, false, gwUse
		s.fields[gwUse].choice = 0
		if msg.Answer.Use {
			s.fields[gwUse].choice = 1
		}
		s.fields[gwDCID].input.SetValue(msg.Answer.DCID)
		s.fields[gwPublicIP].input.SetValue(msg.Answer.PublicIP)
		s.sync()
		return s.focusCmd()
	case tea.WindowSizeMsg:
		s.layout(msg.Width)
	case tea.KeyMsg:
		if s.waiting {
			return nil
		}
		if msg.String() == "esc" {
			return answer(setup.GatewayAnswer{}, setup.ErrBack)
		}
		cmd, submit := s.form.update(msg)
		s.sync()
		if submit {
			s.waiting = true
			a := setup.GatewayAnswer{Use: s.use()}
			if a.Use {
				a.DCID, a.PublicIP = s.fields[gwDCID].value(), s.fields[gwPublicIP].value()
			}
			s.env.gateway = a.Use
			return answer(a, nil)
		}
		return cmd
	}
	return nil
}

// sync shows dc_id and public_ip only when the gateway is used.
func (s *gatewayScreen) sync() {
	s.fields[gwDCID].hidden, s.fields[gwPublicIP].hidden = !s.use(), !s.use()
}

func (s *gatewayScreen) view(int, int) (string, string) {
	var b strings.Builder
	o := s.q.Offer
	fmt.Fprintf(&b, "The VMs' bridge %s has a private subnet (%s, the node is %s):\ntenants cannot reach those addresses.\n\n", o.Bridge, o.Subnet, o.HostIP)
	b.WriteString("A gateway forwards the node's public address to each VM: an SSH port and a\nblock of ports per VM, HTTPS by name (docs/gateway.md). Setup installs Caddy,\nits Caddyfile and IPv4 forwarding on the node and registers the dc_id.\n\n")
	if s.q.Elsewhere != "" {
		b.WriteString(st.warn.Render(markWarn+" ") + clean(s.q.Elsewhere) + ".\n\n")
	}
	b.WriteString(s.form.view())
	if s.q.Err != nil && !s.waiting {
		b.WriteString("\n" + errorLines(s.q.Err))
	}
	return b.String(), keyHelp("enter", "continue", "tab", "next field", "esc", "back", "ctrl+c", "quit")
}
