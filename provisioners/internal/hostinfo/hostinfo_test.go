package hostinfo

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	cpu := "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763 64-Core Processor\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7763 64-Core Processor\n"
	if got := ParseCPUModel(cpu); got != "AMD EPYC 7763 64-Core Processor" {
		t.Errorf("model %q", got)
	}
	if got := ParseCPUModel("processor : 0\nHardware\t: BCM2835\n"); got != "BCM2835" {
		t.Errorf("ARM model %q", got)
	}
	if got := ParseCPUModel("processor : 0\nmodel name\t:   \n"); got != "" {
		t.Errorf("empty model %q", got)
	}
	mem := "MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   20480000 kB\n"
	if mb, ok := ParseMemAvailableMB(mem); !ok || mb != 20000 {
		t.Errorf("available %d %v", mb, ok)
	}
	for _, bad := range []string{"MemTotal: 1 kB\n", "MemAvailable: lots kB\n", "MemAvailable: -5 kB\n", "MemAvailable: 5 MB\n"} {
		if mb, ok := ParseMemAvailableMB(bad); ok {
			t.Errorf("%q parsed as %d", bad, mb)
		}
	}
	if total, avail, ok := DiskGB("/"); !ok || total <= 0 || avail < 0 || avail > total {
		t.Errorf("disk of /: %d %d %v", total, avail, ok)
	}
}

// FuzzParse feeds arbitrary /proc text: never a panic, a model that is
// printable, bounded UTF-8, never a negative memory size.
func FuzzParse(f *testing.F) {
	f.Add("model name\t: Intel(R) Xeon(R)\n", "MemAvailable:   1024 kB\n")
	f.Add("Hardware : x\x00\x1b[31m\n", "MemAvailable: 99999999999999999999 kB\n")
	f.Fuzz(func(t *testing.T, cpuinfo, meminfo string) {
		m := ParseCPUModel(cpuinfo)
		if len(m) > 128 || !utf8.ValidString(m) || strings.ContainsFunc(m, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("model %q", m)
		}
		if mb, ok := ParseMemAvailableMB(meminfo); ok && mb < 0 {
			t.Fatalf("negative memory %d", mb)
		}
	})
}
