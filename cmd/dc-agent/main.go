// Command dc-agent is the Decent Cloud provider agent: it provisions paid
// contracts on the provider's infrastructure and keeps the provider online.
//
// This package only parses flags and environment and calls into the
// packages that do the work.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// run executes the CLI and maps errors to exit codes (see exitCodesHelp).
func run(args []string) int {
	root := newRootCmd()
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "error:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	if isUsageError(err) {
		return exitUsage
	}
	return exitFailure
}
