package pvecli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// FaultsFile holds the injected host CLI failures, in the state dir.
const FaultsFile = "host-faults.json"

// HungFile is written while a command hangs (tests wait for it).
const HungFile = "host-hung"

// Faults are injected failures of the host tools.
type Faults struct {
	Rules []FaultRule `json:"rules"`
}

// FaultRule matches a command line (the tool name and its arguments
// joined by spaces) that contains every string of Match.
type FaultRule struct {
	Match []string `json:"match"`
	// Action is "fail" (print Message, exit 255) or "hang" (block until
	// the SSH session that ran it is gone, then exit 1 having changed
	// nothing).
	Action  string `json:"action"`
	Message string `json:"message,omitempty"`
	// Count is how often the rule fires (0: always).
	Count int `json:"count,omitempty"`
}

// MaxHang bounds a hang when nothing ends it.
var MaxHang = 2 * time.Minute

// WriteFaults replaces the fault rules of a state dir.
func WriteFaults(stateDir string, f Faults) error {
	return withFaultLock(stateDir, func() error { return saveFaults(stateDir, f) })
}

func saveFaults(dir string, f Faults) error {
	b, err := json.MarshalIndent(f, "", " ")
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, FaultsFile+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, FaultsFile))
}

func withFaultLock(dir string, fn func() error) error {
	f, err := os.OpenFile(filepath.Join(dir, "host-faults.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		return err
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN) //nolint:errcheck // close releases it
	return fn()
}

// takeFault returns the first rule matching line, consuming one count.
func takeFault(dir, line string) (*FaultRule, error) {
	var hit *FaultRule
	err := withFaultLock(dir, func() error {
		b, err := os.ReadFile(filepath.Join(dir, FaultsFile))
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		var f Faults
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("%s: %w", FaultsFile, err)
		}
		for i, r := range f.Rules {
			ok := len(r.Match) > 0
			for _, m := range r.Match {
				if !strings.Contains(line, m) {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
			rc := r
			hit = &rc
			if r.Count > 0 {
				f.Rules[i].Count--
				if f.Rules[i].Count == 0 {
					f.Rules = append(f.Rules[:i], f.Rules[i+1:]...)
				}
				return saveFaults(dir, f)
			}
			return nil
		}
		return nil
	})
	return hit, err
}

// injectFault applies a matching fault rule to this invocation.
func (c *cli) injectFault() (int, bool) {
	line := strings.Join(append([]string{c.tool}, c.argv...), " ")
	r, err := takeFault(c.env.StateDir, line)
	if err != nil {
		fmt.Fprintf(c.env.Stderr, "%s: %v\n", c.tool, err)
		return exitErr, true
	}
	if r == nil {
		return 0, false
	}
	switch r.Action {
	case "hang":
		_ = os.WriteFile(filepath.Join(c.env.StateDir, HungFile), []byte(line+"\n"), 0o600)
		fmt.Fprintf(c.env.Stdout, "%s: working...\n", c.tool)
		c.waitForHangup()
		_ = os.Remove(filepath.Join(c.env.StateDir, HungFile))
		return 1, true
	default:
		msg := r.Message
		if msg == "" {
			msg = "injected failure"
		}
		fmt.Fprintln(c.env.Stderr, msg)
		return exitErr, true
	}
}

// waitForHangup blocks until stdout's reader is gone (the SSH session
// ended: poll reports an error on the pipe) or MaxHang passed.
func (c *cli) waitForHangup() {
	f, ok := c.env.Stdout.(*os.File)
	deadline := time.Now().Add(MaxHang)
	for time.Now().Before(deadline) {
		if ok {
			fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: 0}}
			if n, err := unix.Poll(fds, 20); err == nil && n > 0 && fds[0].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) != 0 {
				return
			}
			if os.Getppid() == 1 {
				return
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
}
