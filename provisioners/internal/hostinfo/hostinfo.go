// Package hostinfo reads what a backend running on this machine can tell
// about it for the heartbeat's inventory: the CPU model (/proc/cpuinfo),
// the memory not in use (/proc/meminfo) and a filesystem's size. The live
// Rust agent reads the same files for its Docker inventory
// (dc-agent/src/provisioner/docker.rs parse_cpu_model, parse_mem_available_mb).
package hostinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ParseCPUModel returns the first "model name" of a /proc/cpuinfo (or,
// on ARM, its "Hardware" line), "" if there is none.
func ParseCPUModel(cpuinfo string) string {
	for _, key := range []string{"model name", "Hardware"} {
		sc := bufio.NewScanner(strings.NewReader(cpuinfo))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if ok && strings.TrimSpace(k) == key {
				if v = clean(v); v != "" {
					return v
				}
			}
		}
	}
	return ""
}

// ParseMemAvailableMB returns MemAvailable of a /proc/meminfo in MiB.
func ParseMemAvailableMB(meminfo string) (int64, bool) {
	sc := bufio.NewScanner(strings.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 || len(f) == 2 && f[1] != "kB" {
			return 0, false
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			return 0, false
		}
		return kb >> 10, true
	}
	return 0, false
}

// clean keeps a value printable and bounded: it goes into a heartbeat.
func clean(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, strings.TrimSpace(s))
	if len(s) > 128 {
		s = strings.ToValidUTF8(s[:128], "")
	}
	return s
}

// CPUModel is this machine's CPU model, "" if unknown.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	return ParseCPUModel(string(b))
}

// MemAvailableMB is this machine's available memory in MiB.
func MemAvailableMB() (int64, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	return ParseMemAvailableMB(string(b))
}

// DiskGB returns the size and the space available to unprivileged users
// of the filesystem holding path, in GiB.
func DiskGB(path string) (total, avail int64, ok bool) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return 0, 0, false
	}
	bs := uint64(st.Bsize)
	return int64(st.Blocks * bs >> 30), int64(st.Bavail * bs >> 30), true
}
