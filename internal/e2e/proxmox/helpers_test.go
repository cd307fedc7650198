// Package proxmoxe2e runs the real dc-agent binary against the reference
// API server and the simulated Proxmox VE node (internal/sim): provisioning,
// a crash after the VM was made, and every fault of the simulator.
package proxmoxe2e

import (
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// dcAgent is the real dc-agent binary, built once by TestMain.
var dcAgent string

func TestMain(m *testing.M) {
	testutil.RunWithBinaries(m, testutil.Binary{Pkg: "github.com/decent-stuff/dc-agent/cmd/dc-agent", Name: "dc-agent", Path: &dcAgent})
}

// instantTiming finishes every simulated task at its first poll.
func instantTiming() *pve.Timing { return &pve.Timing{} }
