package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestServeProcess runs `dc-api serve` as its own process, as an operator
// does: it listens where --listen says, logs JSON, serves the API and the
// dashboard while operator commands change the database next to it, and
// stops cleanly (exit 0) on SIGTERM.
func TestServeProcess(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "dc-api.db")
	cmd := exec.Command(os.Args[0], "--db", dsn, "serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--log-level", "debug", "--shutdown-grace", "2s")
	cmd.Env = append(os.Environ(), "DC_API_TEST_AS_CLI=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	type logLine struct {
		Level, Msg, Addr, Path string
		Status                 int
	}
	lines := make(chan logLine, 1000)
	var bad []string
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l logLine
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				bad = append(bad, sc.Text())
				continue
			}
			lines <- l
		}
	}()
	go func() {
		exited <- cmd.Wait()
		close(exited)
	}()
	var addr string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("dc-api serve ended before listening; non-JSON output: %q", bad)
			}
			if l.Msg == "dc-api listening" {
				addr = l.Addr
			}
		case <-time.After(30 * time.Second):
			t.Fatal("dc-api serve did not log where it listens")
		}
	}

	prov, _ := identity.GenerateKey()
	provHex := identity.PublicHex(prov)
	mustCLI(t, "--db", dsn, "provider", "add", provHex, "--name", "Serve Hosting")
	cid := strings.TrimSpace(mustCLI(t, "--db", dsn, "contract", "create", "--provider", provHex, "--ssh-pubkey", sshKey(t)))

	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, page := get("/"); code != 200 || !strings.Contains(page, "Serve Hosting") || !strings.Contains(page, cid[:8]) {
		t.Fatalf("dashboard: %d, provider or contract missing:\n%.2000s", code, page)
	}
	code, body := get(dcapi.APIPrefix + "/providers/" + provHex + "/agent-status")
	var env dcapi.Envelope[dcapi.AgentStatus]
	if err := json.Unmarshal([]byte(body), &env); code != 200 || err != nil || !env.Success || env.Data.Online {
		t.Fatalf("agent-status: %d %s", code, body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("dc-api serve exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dc-api serve did not stop on SIGTERM")
	}
	var stopped, logged bool
	for l := range lines {
		stopped = stopped || l.Msg == "dc-api stopped"
		logged = logged || l.Msg == "request" && l.Path == "/" && l.Status == 200
	}
	if !stopped || !logged || len(bad) > 0 {
		t.Fatalf("log: stopped=%v, dashboard request logged=%v, non-JSON lines %q", stopped, logged, bad)
	}

	// A port that cannot be had is a clear error, exit 1.
	_, errs, code := cliProcess(t, "--db", dsn, "serve", "--listen", "127.0.0.1:99999")
	if code != 1 || !strings.Contains(errs, "listen on 127.0.0.1:99999") {
		t.Fatalf("bad --listen: exit %d, %s", code, errs)
	}
}
