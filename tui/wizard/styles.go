package wizard

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// styles are the wizard's look. Meaning never rides on color alone: every
// state also has a mark (✓ ✗ ! ·) and words, so NO_COLOR loses nothing.
type styles struct {
	title, dim, ok, warn, bad, key, sel, code lipgloss.Style
}

var st = newStyles()

func newStyles() styles {
	return styles{
		title: lipgloss.NewStyle().Bold(true).Foreground(lipgloss.AdaptiveColor{Light: "#5A3FC0", Dark: "#B7A6FF"}),
		dim:   lipgloss.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "#666666", Dark: "#8A8A8A"}),
		ok:    lipgloss.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "#1B7F3B", Dark: "#5FD787"}),
		warn:  lipgloss.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "#9A6700", Dark: "#FFD75F"}),
		bad:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.AdaptiveColor{Light: "#C0392B", Dark: "#FF6B6B"}),
		key:   lipgloss.NewStyle().Bold(true),
		sel:   lipgloss.NewStyle().Bold(true),
		code:  lipgloss.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "#005F87", Dark: "#87D7FF"}),
	}
}

const (
	markOK   = "✓"
	markBad  = "✗"
	markWarn = "!"
	markTodo = "·"
	markSkip = "="
)

// frame lays a screen out: a title line, the body cut to the height, and
// the key help at the bottom. Lines never exceed the width.
func frame(title, pos, body, keys string, w, h int) string {
	if w < 20 {
		w = 20
	}
	if h < 6 {
		h = 6
	}
	head := st.title.Render("dc-agent setup") + st.dim.Render(" · "+pos+" ") + st.title.Render(title)
	lines := wrapLines(body, w)
	avail := h - 3
	if len(lines) > avail {
		lines = append(lines[:avail-1], st.dim.Render(fmt.Sprintf("… %d more lines: enlarge the terminal", len(lines)-avail+1)))
	}
	foot := st.dim.Render(ansi.Truncate(keys, w, "…"))
	var b strings.Builder
	b.WriteString(ansi.Truncate(head, w, "…"))
	b.WriteString("\n\n")
	for _, l := range lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for i := len(lines); i < avail; i++ {
		b.WriteByte('\n')
	}
	b.WriteString(foot)
	return b.String()
}

// wrapLines wraps every line of s to w cells (words first, then hard).
func wrapLines(s string, w int) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if ansi.StringWidth(l) <= w {
			out = append(out, l)
			continue
		}
		indent := len(l) - len(strings.TrimLeft(l, " "))
		if indent > w/2 {
			indent = 0
		}
		pad := strings.Repeat(" ", indent)
		for _, wl := range wordWrap(l[indent:], w-indent) {
			out = append(out, pad+wl)
		}
	}
	return out
}

// wordWrap breaks s at spaces only (paths and keys stay whole where they
// fit), and hard-breaks a word longer than the width.
func wordWrap(s string, w int) []string {
	var lines []string
	var cur string
	curW := 0
	for _, word := range strings.Split(s, " ") {
		ww := ansi.StringWidth(word)
		switch {
		case curW > 0 && curW+1+ww <= w:
			cur, curW = cur+" "+word, curW+1+ww
			continue
		case curW > 0:
			lines = append(lines, cur)
			cur, curW = "", 0
		}
		for ww > w {
			lines = append(lines, ansi.Truncate(word, w, ""))
			word = ansi.TruncateLeft(word, w, "")
			ww = ansi.StringWidth(word)
		}
		cur, curW = word, ww
	}
	return append(lines, cur)
}

// hardWrap breaks a long token (a code) into lines of w cells with an
// indent, so it can be read and copied line by line.
func hardWrap(s string, w int, indent string) string {
	n := w - len(indent)
	if n < 10 {
		n = 10
	}
	var b strings.Builder
	for len(s) > 0 {
		k := min(n, len(s))
		b.WriteString(indent + s[:k] + "\n")
		s = s[k:]
	}
	return b.String()
}

// keyHelp joins "key action" pairs for the footer.
func keyHelp(pairs ...string) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		parts = append(parts, pairs[i]+" "+pairs[i+1])
	}
	return strings.Join(parts, " · ")
}

// short shortens a long hex key for display: 1234abcd…cdef.
func short(k string) string {
	if len(k) <= 20 {
		return k
	}
	return k[:8] + "…" + k[len(k)-8:]
}
