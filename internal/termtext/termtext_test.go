package termtext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClean(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"plain ü漢字", "plain ü漢字"},
		{"\x1b[2Jred\a", "?[2Jred?"},
		{"tab\there", "tab    here"},
		{"csi \u009b31m", "csi ?31m"},
		{"cr\r\nlf", "cr??lf"},
		{string([]byte{'a', 0xff, 'b'}), "a\uFFFDb"},
	} {
		if got := Clean(c.in); got != c.want {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := strings.Repeat("x", MaxLen-1) + "漢漢"
	got := Clean(long)
	if !utf8.ValidString(got) || !strings.HasSuffix(got, "x…") || len(got) > MaxLen+len("…") {
		t.Fatalf("a long text is not cut at a character: %q", got[len(got)-10:])
	}
}

// FuzzClean: whatever comes in, nothing that drives a terminal goes out,
// the result is valid UTF-8 and bounded.
func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "plain", "\x1b]0;title\a", "\u009b31m", "tab\there\r\n", string([]byte{0xff, 0xfe, 0x1b}), strings.Repeat("漢", 2000)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := Clean(s)
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8: %q", got)
		}
		for _, r := range got {
			if r < 0x20 || r >= 0x7f && r < 0xa0 {
				t.Fatalf("control character %U in %q", r, got)
			}
		}
		if len(got) > 4*(MaxLen+1) {
			t.Fatalf("%d bytes", len(got))
		}
	})
}
