package wizard

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	qrcode "github.com/skip2/go-qrcode"
)

// requestScreen shows the delegation request for the provider's offline
// machine: its fields, the dcdr1: code, the exact sign command, and a QR
// code of the code when the terminal has room for it.
type requestScreen struct {
	err error
}

func (m *Model) updateRequest(msg tea.Msg) tea.Cmd {
	if k, ok := msg.(tea.KeyMsg); ok {
		switch k.String() {
		case "enter", "p":
			if m.req.err == nil {
				return m.goTo(scrPaste)
			}
		case "q":
			return m.quit()
		}
	}
	return nil
}

func (m *Model) requestText() string {
	d := m.request
	w := m.width
	var b strings.Builder
	b.WriteString("Delegate this agent key with your provider key, on the machine that holds it:\n")
	exp := "never"
	if d.ExpiresAtNs != nil {
		exp = d.ExpiresAt().UTC().Format(time.RFC3339)
	}
	label := d.Label
	if label == "" {
		label = "(none)"
	}
	fmt.Fprintf(&b, "  agent key    %s\n  provider     %s\n  permissions  %s\n  expires      %s   label  %s\n",
		d.AgentPubkey, d.ProviderPubkey, strings.Join(d.Permissions, ", "), exp, label)
	if m.reqFile != "" {
		b.WriteString(m.st.key.Render("Request") + ", also in " + m.reqFile + "\n")
	} else {
		b.WriteString(m.st.key.Render("Request") + ":\n")
	}
	b.WriteString(m.st.code.Render(strings.TrimRight(hardWrap(m.reqCode, w, "  "), "\n")) + "\n")
	b.WriteString(m.st.key.Render("Sign it there with") + " (one line):\n")
	b.WriteString(m.st.code.Render(strings.TrimRight(hardWrap(signCommand(m.reqCode), w, "  "), "\n")) + "\n")
	return b.String()
}

func (m *Model) viewRequest() string {
	if m.req.err != nil {
		body := m.st.bad.Render(markBad+" ") + "cannot build the delegation request: " + m.req.err.Error() +
			"\nFix: correct the answer (--expires, --label, --permissions) and run dc-agent again; the node setup is kept.\n"
		return m.frame(body, keyHelp("q", "quit"))
	}
	body := m.requestText()
	used := len(wrapLines(body, m.width)) + 3
	if qr := renderQR(m.reqCode); qr != "" {
		qw, qh := qrSize(qr)
		switch {
		case m.height-used-1 >= qh && m.width >= qw:
			body += "\n" + qr
		case m.height-used >= 1:
			body += m.st.dim.Render(fmt.Sprintf("(a QR code of the request shows in a terminal of %dx%d or more)", max(m.width, qw), used+qh+1)) + "\n"
		}
	}
	return m.frame(body, keyHelp("enter", "paste the signed delegation", "q", "stop here (it says how to go on)"))
}

// renderQR draws the code as a QR code with half blocks: light modules
// are drawn, so on a dark terminal the dark modules are the background.
func renderQR(code string) string {
	q, err := qrcode.New(code, qrcode.Low)
	if err != nil {
		return ""
	}
	bm := q.Bitmap()
	var b strings.Builder
	for y := 0; y < len(bm); y += 2 {
		for x := range bm[y] {
			top := !bm[y][x]
			bot := y+1 < len(bm) && !bm[y+1][x]
			switch {
			case top && bot:
				b.WriteString("█")
			case top:
				b.WriteString("▀")
			case bot:
				b.WriteString("▄")
			default:
				b.WriteString(" ")
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func qrSize(qr string) (w, h int) {
	lines := strings.Split(strings.TrimRight(qr, "\n"), "\n")
	return len([]rune(lines[0])), len(lines)
}
