package cloudkit

import (
	"fmt"
	"slices"
	"strings"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Need is what an offering asks of a machine type (DigitalOcean size,
// Vultr plan).
type Need struct {
	Cores  int
	MemMB  int64
	DiskGB int64
}

// NeedOf is what req asks for (at least one core).
func NeedOf(req provisioners.Request) Need {
	return Need{Cores: max(req.CPUCores, 1), MemMB: req.MemoryMB, DiskGB: req.StorageGB}
}

func (n Need) String() string {
	return fmt.Sprintf("%d vCPUs, %d MB memory, %d GB disk", n.Cores, n.MemMB, n.DiskGB)
}

// Fits reports whether a machine type with these cores, memory (MB) and
// disk (GB) meets n.
func (n Need) Fits(cores int, memMB, diskGB int64) bool {
	return cores >= n.Cores && memMB >= n.MemMB && diskGB >= n.DiskGB
}

// Pick returns the least by cmp of the machine types that fit and are
// available (can be created where wanted, now). If none is, ok is false
// and unavailable names, as name gives them, the types that fit but are
// not available: a capacity problem (retryable), where an empty list means
// that nothing fits at all (permanent).
func Pick[T any](types []T, fits, available func(T) bool, cmp func(a, b T) int, name func(T) string) (best T, unavailable []string, ok bool) {
	var fit []T
	for _, t := range types {
		switch {
		case !fits(t):
		case available(t):
			fit = append(fit, t)
		default:
			unavailable = append(unavailable, name(t))
		}
	}
	if len(fit) == 0 {
		return best, unavailable, false
	}
	return slices.MinFunc(fit, cmp), nil, true
}

// Named returns the machine type called want (as name gives the names);
// if there is none, ok is false and valid lists every type's name, sorted,
// for the error.
func Named[T any](types []T, name func(T) string, want string) (t T, valid string, ok bool) {
	names := make([]string, 0, len(types))
	for _, t := range types {
		if name(t) == want {
			return t, "", true
		}
		names = append(names, name(t))
	}
	slices.Sort(names)
	return t, strings.Join(names, ", "), false
}
