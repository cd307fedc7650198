package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// dcAgent is the real dc-agent binary, built once by TestMain; tests in this
// package run it as a user would (exit codes, stdout/stderr, files).
var dcAgent string

func TestMain(m *testing.M) {
	testutil.RunWithBinaries(m, testutil.Binary{Pkg: ".", Name: "dc-agent", Path: &dcAgent})
}

// result is one run of the binary.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// runOpts changes how runAgent runs the binary.
type runOpts struct {
	stdin string
	env   []string
}

// runAgent runs dc-agent with args in a clean environment: no DC_AGENT_*
// variables from the caller, HOME in a temp dir, stdin not a terminal.
func runAgent(t *testing.T, o runOpts, args ...string) result {
	t.Helper()
	cmd := exec.Command(dcAgent, args...)
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8", "TERM=dumb", "NO_COLOR=1"}
	cmd.Env = append(env, o.env...)
	cmd.Stdin = strings.NewReader(o.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("dc-agent %v did not finish within a minute", args)
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("dc-agent %v: %v", args, err)
	}
	return r
}
