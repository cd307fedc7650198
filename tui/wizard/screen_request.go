package wizard

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	qrcode "github.com/skip2/go-qrcode"

	"github.com/decent-stuff/dc-agent/setup"
)

// requestScreen shows the delegation request for the provider's offline
// machine: its fields, the dcdr1: code, the exact sign command, and a QR
// code of the code when the terminal has room for it.
type requestScreen struct {
	q setup.DelegationQuestion
}

func (r *requestScreen) focus() tea.Cmd { return nil }

func (r *requestScreen) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case setup.DelegationQuestion:
		r.q = msg
	case tea.KeyMsg:
		switch msg.String() {
		case "enter", "p":
			return send(goMsg{scrPaste})
		case "q":
			return send(quitMsg{})
		}
	}
	return nil
}

func (r *requestScreen) text(w int) string {
	d := r.q.Request
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
	if r.q.File != "" {
		b.WriteString(st.key.Render("Request") + ", also in " + r.q.File + "\n")
	} else {
		b.WriteString(st.key.Render("Request") + ":\n")
	}
	b.WriteString(st.code.Render(strings.TrimRight(hardWrap(r.q.Code, w, "  "), "\n")) + "\n")
	b.WriteString(st.key.Render("Sign it there with") + " (one line):\n")
	b.WriteString(st.code.Render(strings.TrimRight(hardWrap(setup.SignCommand(r.q.Code), w, "  "), "\n")) + "\n")
	return b.String()
}

func (r *requestScreen) view(w, h int) (string, string) {
	body := r.text(w)
	used := len(wrapLines(body, w))
	if qr := renderQR(r.q.Code); qr != "" {
		qw, qh := qrSize(qr)
		switch {
		case h-used-1 >= qh && w >= qw:
			body += "\n" + qr
		case h-used >= 1:
			body += st.dim.Render(fmt.Sprintf("(a QR code of the request shows in a terminal of %dx%d or more)", max(w, qw), used+qh+4)) + "\n"
		}
	}
	return body, keyHelp("enter", "paste the signed delegation", "q", "stop here (it says how to go on)")
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
