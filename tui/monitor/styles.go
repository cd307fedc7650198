package monitor

import "github.com/charmbracelet/lipgloss"

// styles are the monitor's looks. With NO_COLOR or TERM=dumb the renderer's
// profile is plain ASCII and every style renders its text unchanged, so
// meaning never rests on color alone (states are words: ONLINE, OFFLINE).
type styles struct {
	title, label, ok, bad, warn, dim, key lipgloss.Style
}

// The colors are the terminal's own basic ANSI ones (its theme makes them
// readable on its background). Adaptive colors would make lipgloss ask the
// terminal for its background, which can stall the first frame for seconds
// over a slow SSH link.
func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title: r.NewStyle().Bold(true),
		label: r.NewStyle().Bold(true),
		ok:    r.NewStyle().Foreground(lipgloss.Color("2")).Bold(true),
		bad:   r.NewStyle().Foreground(lipgloss.Color("1")).Bold(true),
		warn:  r.NewStyle().Foreground(lipgloss.Color("3")),
		dim:   r.NewStyle().Faint(true),
		key:   r.NewStyle().Bold(true),
	}
}
