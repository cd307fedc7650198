package dcapi

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSizeMB parses an offering size such as "16 GB", "512MB", "1 TB" or
// "1.5 GiB" into mebibytes. Units are 1024-based whatever their spelling
// (PROTOCOL.md §5: "1 TB" = 1024 GB). A bare number is taken as GB.
func ParseSizeMB(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("size is empty")
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || math.IsInf(v, 0) {
		return 0, fmt.Errorf("size %q does not start with a number", s)
	}
	var mult float64
	switch unit {
	case "M", "MB", "MIB":
		mult = 1
	case "", "G", "GB", "GIB":
		mult = 1024
	case "T", "TB", "TIB":
		mult = 1024 * 1024
	case "P", "PB", "PIB":
		mult = 1024 * 1024 * 1024
	default:
		return 0, fmt.Errorf("size %q has unknown unit %q; use MB, GB or TB", s, unit)
	}
	mb := v * mult
	if mb > float64(math.MaxInt64/2) {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(math.Round(mb)), nil
}

// ParseSizeGB parses a size and rounds it up to whole GiB.
func ParseSizeGB(s string) (int64, error) {
	mb, err := ParseSizeMB(s)
	if err != nil {
		return 0, err
	}
	return (mb + 1023) / 1024, nil
}
