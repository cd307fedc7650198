package monitor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// JournalLogs reads unit's log with journalctl. Where there is no journal
// (no systemd, no permission) the error says so and the monitor falls back
// to the agent's own events.
func JournalLogs(unit string) LogSource {
	return func(ctx context.Context, n int) ([]string, error) {
		path, err := exec.LookPath("journalctl")
		if err != nil {
			return nil, errors.New("journalctl not found on this host")
		}
		cmd := exec.CommandContext(ctx, path, "-u", unit+".service", "-n", strconv.Itoa(n), "--no-pager", "-o", "short-iso", "-q")
		cmd.Env = append(cmd.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			msg := oneLine(stderr.String())
			if msg == "" {
				msg = err.Error()
			}
			return nil, fmt.Errorf("journalctl: %s", msg)
		}
		var lines []string
		for _, l := range strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n") {
			// journalctl's ways of saying there is nothing.
			if l == "" || l == "-- No entries --" || strings.HasPrefix(l, "No journal files were found") {
				continue
			}
			lines = append(lines, l)
		}
		return lines, nil
	}
}
