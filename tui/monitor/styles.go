package monitor

import "github.com/charmbracelet/lipgloss"

// styles are the monitor's looks. With NO_COLOR or TERM=dumb the renderer's
// profile is plain ASCII and every style renders its text unchanged, so
// meaning never rests on color alone (states are words: ONLINE, OFFLINE).
type styles struct {
	title, label, ok, bad, warn, dim, key lipgloss.Style
}

func newStyles(r *lipgloss.Renderer) styles {
	return styles{
		title: r.NewStyle().Bold(true),
		label: r.NewStyle().Bold(true),
		ok:    r.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "28", Dark: "42"}).Bold(true),
		bad:   r.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "160", Dark: "203"}).Bold(true),
		warn:  r.NewStyle().Foreground(lipgloss.AdaptiveColor{Light: "130", Dark: "214"}),
		dim:   r.NewStyle().Faint(true),
		key:   r.NewStyle().Bold(true),
	}
}
