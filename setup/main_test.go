package setup

import (
	"fmt"
	"os"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
)

// hostSim is the pve-host-sim binary built once for this package's tests.
var hostSim string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "setup-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	hostSim, err = pvehost.Build(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
