package cloudkit

import (
	"fmt"

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
