// Package proxmoxe2e runs the real dc-agent binary against the reference
// API server and the simulated Proxmox VE node (internal/sim): provisioning,
// a crash after the VM was made, and every fault of the simulator.
package proxmoxe2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// dcAgent is the real dc-agent binary, built once by TestMain.
var dcAgent string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dc-agent-pve-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dcAgent, err = testutil.BuildBinary(dir, "github.com/decent-stuff/dc-agent/cmd/dc-agent", "dc-agent")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// instantTiming finishes every simulated task at its first poll.
func instantTiming() *pve.Timing { return &pve.Timing{} }
