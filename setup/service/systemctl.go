package service

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
)

// systemd drives one service manager through systemctl and journalctl:
// the system manager, or with user set the calling user's `systemd --user`.
type systemd struct {
	user       bool
	systemctl  string
	journalctl string
}

func (s systemd) scope() []string {
	if s.user {
		return []string{"--user"}
	}
	return nil
}

// run executes systemctl with args and returns its trimmed stdout. A
// failure carries systemctl's own message.
func (s systemd) run(ctx context.Context, args ...string) (string, error) {
	full := append(s.scope(), args...)
	cmd := exec.CommandContext(ctx, s.systemctl, full...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(cmd.Environ(), "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	err := cmd.Run()
	out := strings.TrimSpace(stdout.String())
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = out
		}
		return out, fmt.Errorf("systemctl %s: %w: %s", strings.Join(full, " "), err, msg)
	}
	return out, nil
}

// unitProps are the properties Status and the install wait read.
var unitProps = []string{
	"LoadState", "ActiveState", "SubState", "UnitFileState", "Result", "StatusText",
	"MainPID", "NRestarts", "ExecMainStatus", "ActiveEnterTimestamp", "FragmentPath",
}

// show reads unit properties; an unknown unit is LoadState=not-found, not
// an error.
func (s systemd) show(ctx context.Context, unit string) (map[string]string, error) {
	args := []string{"show"}
	for _, p := range unitProps {
		args = append(args, "-p", p)
	}
	out, err := s.run(ctx, append(args, "--", unit)...)
	if err != nil {
		return nil, err
	}
	return parseShow(out), nil
}

// parseShow parses `systemctl show` output (KEY=VALUE lines).
func parseShow(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// journal returns the last n log lines of unit, or a line saying why
// there are none.
func (s systemd) journal(ctx context.Context, unit string, n int) []string {
	args := append(s.scope(), "-u", unit, "-n", strconv.Itoa(n), "--no-pager", "-o", "short-iso")
	out, err := exec.CommandContext(ctx, s.journalctl, args...).CombinedOutput()
	text := strings.TrimSpace(string(out))
	if err != nil && text == "" {
		text = fmt.Sprintf("(journalctl failed: %v)", err)
	}
	var lines []string
	for _, l := range strings.Split(text, "\n") {
		// journalctl's way of saying there is nothing.
		if l == "" || l == "-- No entries --" || strings.HasPrefix(l, "No journal files were found") {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}
