package dcapi

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"16 GB": 16384, "16GB": 16384, "16 gb": 16384, "512MB": 512, "512 MiB": 512, "1 TB": 1 << 20,
		"1.5 GiB": 1536, "100": 102400, " 2 t ": 2 << 20, "0 GB": 0, "1 PB": 1 << 30, "0.5": 512,
	} {
		got, err := ParseSizeMB(in)
		if err != nil || got != want {
			t.Errorf("ParseSizeMB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]string{
		"": "empty", "GB": "does not start with a number", "-1 GB": "does not start with a number",
		"16 KB": `unknown unit "KB"; use MB, GB or TB`, "1.2.3 GB": "does not start with a number",
		"99999999999999999 PB": "too large", "1e3 GB": "unknown unit",
	} {
		if _, err := ParseSizeMB(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSizeMB(%q): %v, want %q", in, err, want)
		}
	}
	for in, want := range map[string]int64{"1 GB": 1, "1025 MB": 2, "1 TB": 1024, "0": 0} {
		if got, err := ParseSizeGB(in); err != nil || got != want {
			t.Errorf("ParseSizeGB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}
