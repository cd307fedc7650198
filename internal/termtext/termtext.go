// Package termtext makes text from outside (remote command output, API
// messages and errors, journal lines) safe to draw on a terminal: the one
// sanitizer of the setup output, the wizard and the monitor.
package termtext

import (
	"strings"
	"unicode/utf8"
)

// MaxLen is how many bytes of one text are kept.
const MaxLen = 4096

// Clean returns s with nothing a terminal would take as a command: C0 and
// C1 control characters and DEL become a visible "?" (ESC starts escape
// sequences, CSI is U+009B), a tab becomes four spaces, invalid UTF-8
// becomes U+FFFD. A text longer than MaxLen bytes is cut at a character
// and ends in "…".
func Clean(s string) string {
	cut := false
	if len(s) > MaxLen {
		i := MaxLen
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s, cut = s[:i], true
	}
	if !cut && safe(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 3)
	for _, r := range s {
		switch {
		case r == '\t':
			b.WriteString("    ")
		case r < 0x20 || r >= 0x7f && r < 0xa0:
			b.WriteByte('?')
		default:
			b.WriteRune(r) // utf8.RuneError is written as U+FFFD
		}
	}
	if cut {
		b.WriteString("…")
	}
	return b.String()
}

func safe(s string) bool {
	for _, r := range s {
		if r < 0x20 || r >= 0x7f && r < 0xa0 || r == utf8.RuneError {
			return false
		}
	}
	return true
}
