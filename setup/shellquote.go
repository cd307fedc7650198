package setup

import (
	"errors"
	"fmt"
	"strings"
)

// Quote returns s as one POSIX shell word: unchanged when it is made only of
// characters no shell treats specially, otherwise wrapped in single quotes
// (inside which nothing is special); a single quote inside becomes the four
// characters quote, backslash, quote, quote. The result
// is safe for sh, dash and bash, which is what sshd runs a command with.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	if isPlainWord(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// isPlainWord reports whether s needs no quoting: letters, digits and
// _ @ % + = : , . / - only. A leading '-' is fine (it is an option, not
// shell syntax); '~' and '#' are excluded because a shell expands or
// comments on them at the start of a word.
func isPlainWord(s string) bool {
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("_@%+=:,./-", r):
		default:
			return false
		}
	}
	return true
}

// ErrNUL is returned for an argument that contains a NUL byte: no shell
// can pass one through, so the command would silently differ from argv.
var ErrNUL = errors.New("argument contains a NUL byte")

// Join quotes each argument and joins them with spaces into one command line
// that a POSIX shell splits back into exactly args. This is the only way
// remote commands are built: nothing is interpolated into a shell string raw.
func Join(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("empty command")
	}
	q := make([]string, len(args))
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 {
			return "", fmt.Errorf("argument %d of %s: %w", i, Quote(args[0]), ErrNUL)
		}
		q[i] = Quote(a)
	}
	return strings.Join(q, " "), nil
}
