// Command pve-host-sim is the simulated command line of a Proxmox VE node:
// qm, pveum, pvesh, pvesm, pveversion and virt-customize in one binary
// (internal/sim/pvecli), acting on the simulated cluster in $PVE_SIM_STATE.
//
//	pve-host-sim install DIR      # symlink every tool into DIR
//	pve-host-sim qm list          # or call it through a symlink named qm
//
// Put DIR on the PATH of an SSH session and `dc-agent setup proxmox` can
// set up the "node" over real SSH.
package main

import (
	"fmt"
	"os"

	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "install" {
		self, err := os.Executable()
		if err == nil {
			err = pvecli.Install(os.Args[2], self)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "pve-host-sim:", err)
			os.Exit(1)
		}
		return
	}
	os.Exit(pvecli.Main(os.Args, pvecli.Env{
		Stdout: os.Stdout, Stderr: os.Stderr, Stdin: os.Stdin,
		StateDir: os.Getenv(pvecli.EnvState), Node: os.Getenv(pvecli.EnvNode),
	}))
}
