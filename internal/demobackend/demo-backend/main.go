// Command demo-backend is the demo machine pool as a small stand-alone
// program (tests and benchmarks build it once and point the script
// provisioner's wrapper at it). DC_DEMO_BACKEND names the pool directory.
package main

import (
	"fmt"
	"os"

	"github.com/decent-stuff/dc-agent/internal/demobackend"
)

func main() {
	demobackend.MaybeRun()
	fmt.Fprintln(os.Stderr, "demo-backend: set", demobackend.EnvVar, "to the pool directory (it speaks the script provisioner protocol on stdin/stdout)")
	os.Exit(2)
}
