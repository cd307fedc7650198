package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/internal/e2e/e2eutil"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// monitorBackend is a script provisioner backend that succeeds at every
// action.
const monitorBackend = `#!/bin/sh
cat >/dev/null
echo '{"success":true,"instance":{"external_id":"vm-101","ip_address":"10.0.0.7","ssh_port":22},"health":{"status":"healthy"},"instances":[]}'
`

// TestMonitorInTmux runs `dc-agent monitor` (the real binary) in a real
// terminal (tmux, 80x24) on a real `dc-agent run` and the reference
// dc-api: online from both sources, a provision seen live, resizes, the
// log and doctor views, the agent stopping and coming back, q leaving the
// service running; then NO_COLOR and TERM=dumb.
func TestMonitorInTmux(t *testing.T) {
	x := newTmuxTerm(t, artifactDir(t, "monitor"))
	env := e2eutil.NewEnv(t)
	srv, prov, keyPath, dir := env.API, env.Provider, env.KeyPath, env.Dir
	backend := filepath.Join(dir, "backend.sh")
	testutil.WriteFile(t, backend, monitorBackend, 0o755)
	sockDir := testutil.ShortDir(t)
	socket := filepath.Join(sockDir, "s.sock")
	cfg := filepath.Join(dir, "dc-agent.toml")
	testutil.AgentTOML{Endpoint: srv.URL, ProviderPubkey: prov.Pubkey, AgentKey: keyPath,
		StateDir: filepath.Join(dir, "state"), StatusSocket: socket,
		Rest: testutil.ScriptProvisionerTOML(backend, []string{"provision", "terminate", "health_check", "get_instance", "list"}, ""),
	}.Write(t, cfg)

	home := t.TempDir()
	startAgent := func() (stop func()) {
		cmd := exec.Command(dcAgent, "run", "-c", cfg, "--time-scale", "0.01")
		cmd.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		stop = func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		t.Cleanup(stop)
		return stop
	}
	stopAgent := startAgent()

	// open runs the monitor in a fresh 80x24 window named w with extra
	// environment; the shell notes its exit code in the returned file.
	// Each on its own tmux server: killing the last session ends a server
	// while it may still accept a new client ("server exited unexpectedly").
	open := func(name string, env ...string) string {
		x.sock = filepath.Join(testutil.ShortDir(t), "tmux")
		exitFile := filepath.Join(dir, name+".exit")
		cmdline := append(cleanEnv(home, env...), dcAgent, "monitor", "--config", cfg)
		shell := strings.Join(quoteAll(cmdline), " ") + "; echo $? > " + exitFile + "; sleep 600"
		x.session(shell)
		return exitFile
	}
	waitExit := func(exitFile string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			if b, err := os.ReadFile(exitFile); err == nil {
				if strings.TrimSpace(string(b)) != "0" {
					t.Fatalf("the monitor exited with %s", b)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the monitor did not exit on q:\n%s", x.capture())
			}
			time.Sleep(30 * time.Millisecond)
		}
	}

	exitFile := open("color", "TERM=xterm-256color")
	x.waitFor(60*time.Second, "dc-agent monitor", "ONLINE   the API sees the provider online", "heartbeat accepted", "live from the status socket", "q quit")
	x.snap("online")
	if colored := x.tmux("capture-pane", "-p", "-e", "-t", "w"); !strings.Contains(colored, "\x1b[") {
		t.Error("no colors on an xterm-256color terminal")
	}

	cid := srv.CreateContract(prov, apitest.ContractSpec{})
	x.waitFor(60*time.Second, "Recent results", cid[:12], "provisioned vm-101 (10.0.0.7)")
	x.snap("provisioned")

	// Resizes: smaller, larger, back; every frame fits, title on top and
	// keys at the bottom.
	for _, sz := range [][2]int{{60, 18}, {120, 40}, {80, 24}} {
		x.tmux("resize-window", "-t", "w", "-x", fmt.Sprint(sz[0]), "-y", fmt.Sprint(sz[1]))
		// Until the monitor redraws, tmux shows the old frame reflowed.
		var screen string
		laidOut := func() bool {
			screen = x.capture()
			lines := strings.Split(strings.TrimSuffix(screen, "\n"), "\n")
			return len(lines) == sz[1] && strings.HasPrefix(lines[0], "dc-agent monitor") &&
				strings.HasPrefix(lines[len(lines)-1], "r refresh") && strings.Contains(screen, "Status      ONLINE") &&
				strings.Contains(screen, "\n  local     running")
		}
		deadline := time.Now().Add(60 * time.Second)
		for !laidOut() {
			if time.Now().After(deadline) {
				t.Fatalf("at %dx%d the screen is not laid out:\n%s", sz[0], sz[1], screen)
			}
			time.Sleep(20 * time.Millisecond)
		}
		x.snap(fmt.Sprintf("resized-%dx%d", sz[0], sz[1]))
	}

	x.key("l")
	x.waitFor(60*time.Second, "dc-agent log", "esc back")
	x.snap("logs")
	x.key("Escape")
	x.waitFor(60*time.Second, "Status      ONLINE")
	x.key("d")
	x.waitFor(60*time.Second, "dc-agent doctor", "took ")
	x.snap("doctor")
	x.key("Escape")

	// The agent stops: the monitor says so and how to start it; it comes
	// back: the monitor follows the new process.
	stopAgent()
	x.waitFor(60*time.Second, "agent not running", "sudo systemctl start dc-agent")
	x.snap("agent-stopped")
	startAgent()
	x.waitFor(60*time.Second, "the agent restarted while you watched", "running")
	x.snap("agent-back")

	x.key("q")
	waitExit(exitFile)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := status.NewClient(socket).State(ctx); err != nil || st.Phase != status.PhaseRunning {
		t.Fatalf("after q the agent answers %q, %v; quitting the monitor must not stop it", st.Phase, err)
	}
	x.tmux("kill-session", "-t", "w")

	// NO_COLOR: the same screen in words, no colors.
	exitFile = open("nocolor", "TERM=xterm-256color", "NO_COLOR=1")
	x.waitFor(60*time.Second, "ONLINE   the API sees the provider online", "live from the status socket")
	if plain := x.tmux("capture-pane", "-p", "-e", "-t", "w"); strings.Contains(plain, "\x1b[3") || strings.Contains(plain, "\x1b[1m") {
		t.Errorf("colors or bold with NO_COLOR:\n%q", plain)
	}
	x.snap("no-color")
	x.key("q")
	waitExit(exitFile)
	x.tmux("kill-session", "-t", "w")

	// TERM=dumb: lines, answered line by line.
	exitFile = open("dumb", "TERM=dumb")
	x.waitFor(60*time.Second, "ONLINE   the API sees the provider online", "keys (then Enter)")
	x.snap("dumb")
	x.key("q")
	x.key("Enter")
	waitExit(exitFile)
}
