package main

import (
	"strings"
	"testing"
)

// Without a terminal the monitor says what to use instead, and fails.
func TestMonitorWithoutTerminalPointsToStatus(t *testing.T) {
	for _, args := range [][]string{{"monitor"}, {"--no-tui", "monitor"}} {
		r := runAgent(t, runOpts{}, args...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "use 'dc-agent status'") || !strings.Contains(r.stderr, "needs a terminal") {
			t.Errorf("dc-agent %s:\n%s", strings.Join(args, " "), r)
		}
	}
}
