package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
)

// tmuxTerm drives the real binary in a tmux pane of its own server, one
// key per send-keys, and keeps a capture of every screen it reaches.
type tmuxTerm struct {
	t         *testing.T
	bin, sock string
	artifacts string
	shots     int
}

// newTmuxTerm is a tmuxTerm on a tmux server of its own (socket in a
// ShortDir), keeping screens in artifacts.
func newTmuxTerm(t *testing.T, artifacts string) *tmuxTerm {
	t.Helper()
	return &tmuxTerm{t: t, bin: testutil.RequireBinary(t, "tmux"), sock: filepath.Join(testutil.ShortDir(t), "tmux"), artifacts: artifacts}
}

// session runs shell in a new 80x24 session named w, its tmux server
// killed at the end of the test.
func (x *tmuxTerm) session(shell string) {
	x.t.Helper()
	x.tmux("-f", "/dev/null", "new-session", "-d", "-s", "w", "-x", "80", "-y", "24", "sh", "-c", shell)
	sock := x.sock
	x.t.Cleanup(func() { _ = exec.Command(x.bin, "-S", sock, "kill-server").Run() })
}

// cleanEnv is the start of a command line running a program with only
// PATH, HOME=home, LANG=C.UTF-8 and vars in its environment.
func cleanEnv(home string, vars ...string) []string {
	return append([]string{"env", "-i", "PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8"}, vars...)
}

func (x *tmuxTerm) tmux(args ...string) string {
	x.t.Helper()
	out, err := exec.Command(x.bin, append([]string{"-S", x.sock}, args...)...).CombinedOutput()
	if err != nil {
		x.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// key sends one key (tmux key name: Enter, Tab, C-u, y).
func (x *tmuxTerm) key(k string) { x.t.Helper(); x.tmux("send-keys", "-t", "w", k) }

// typeText types s, one key per send-keys.
func (x *tmuxTerm) typeText(s string) {
	x.t.Helper()
	for _, r := range s {
		x.tmux("send-keys", "-t", "w", "-l", string(r))
	}
}

// paste pastes s the way a terminal does (bracketed when asked for).
func (x *tmuxTerm) paste(s string) {
	x.t.Helper()
	x.tmux("set-buffer", "--", s)
	x.tmux("paste-buffer", "-p", "-t", "w")
}

func (x *tmuxTerm) capture() string { x.t.Helper(); return x.tmux("capture-pane", "-p", "-t", "w") }

// waitFor waits until the pane shows every one of want, and returns it.
func (x *tmuxTerm) waitFor(timeout time.Duration, want ...string) string {
	x.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		screen := x.capture()
		ok := true
		for _, w := range want {
			if !strings.Contains(screen, w) {
				ok = false
			}
		}
		if ok {
			return screen
		}
		if time.Now().After(deadline) {
			x.snap("timeout")
			x.t.Fatalf("the screen never showed %q; it shows:\n%s", want, screen)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// snap keeps the current screen as an artifact.
func (x *tmuxTerm) snap(name string) {
	x.shots++
	x.t.Logf("%s: screen %s", time.Now().Format("15:04:05.000"), name)
	p := filepath.Join(x.artifacts, fmt.Sprintf("%02d-%s.txt", x.shots, name))
	if err := os.WriteFile(p, []byte(x.capture()), 0o644); err != nil {
		x.t.Error(err)
	}
}

// TestWizardEndToEndInTmux walks the whole wizard with the real binary in a
// real terminal (tmux, 80x24): a simulated Proxmox host over real sshd, a
// real dc-api, a delegation signed by `dc-agent delegation sign` in another
// process, the service installed into a test root, and the summary
// showing the agent online once the service's agent runs. Then the same
// answers given to --no-tui as flags write the identical config.
func TestWizardEndToEndInTmux(t *testing.T) {
	t.Parallel()
	x := newTmuxTerm(t, artifactDir(t, "wizard"))
	testutil.RequireBinary(t, "sshd")
	w := startNodeWorld(t, "9.1.1")
	h, papi, images, srv, prov, mainKey := w.host, w.pveAPI, w.images, w.api, w.prov, w.mainKey

	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	root := filepath.Join(dir, "root")
	sockDir := testutil.ShortDir(t)
	// The provider's own settings the wizard must keep: the status socket
	// (short, out of the long temp dir).
	initial := fmt.Sprintf("[agent]\nstatus_socket = %q\n", filepath.Join(sockDir, "s.sock"))
	testutil.WriteFile(t, cfg, initial, 0o600)

	// Settings that are not wizard questions come as flags, as a provider
	// with a local image mirror would pass them.
	notAsked := []string{"--proxmox-api-url", papi.URL, "--image-mirror", images.URL, "--image-dir", filepath.Join(h.Dir, "images"),
		"--state-dir", filepath.Join(dir, "state"), "--expires", "365d", "--label", "e2e"}
	home := t.TempDir() // no SSH keys, no agent: the wizard is told which key
	cmdline := append(cleanEnv(home, "TERM=xterm-256color", "NO_COLOR=1"), dcAgent, "--config", cfg, "--service-root", root)
	cmdline = append(cmdline, notAsked...)
	exitFile := x.start(cmdline, filepath.Join(dir, "exit"))

	x.waitFor(10*time.Second, "1/11 Welcome", "Prerequisites", "will be written", "enter start")
	x.snap("welcome")
	x.key("Enter")

	x.waitFor(5*time.Second, "2/11 Decent Cloud API", "(•) setup token", "Setup token")
	x.key("C-u")
	x.typeText(srv.URL)
	x.key("Tab")
	x.key("Right") // the other method: an offline-signed delegation
	x.waitFor(5*time.Second, "(•) signed delegation", "Provider key")
	x.key("Tab")
	x.typeText(prov.Pubkey[:10])
	x.waitFor(5*time.Second, "must be 64 hex") // checked as typed
	x.snap("api-invalid")
	x.typeText(prov.Pubkey[10:])
	x.waitFor(5*time.Second, prov.Pubkey[50:])
	x.snap("api")
	x.key("Enter")

	x.proxmoxHost(h)
	x.snap("host")
	x.key("Enter")

	x.waitFor(10*time.Second, h.HostKeyFingerprint(), "ssh-keygen -lf", "pin and connect")
	x.snap("host-key")
	x.key("y")

	x.waitFor(30*time.Second, "5/11 Node and choices", "Storage for templates", "ubuntu-24.04", "set up the node")
	x.snap("discovery")
	x.key("Enter")
	x.waitFor(10*time.Second, "5/11 Gateway", "Use the gateway", "private subnet") // vmbr0 is private: offered, declined
	x.snap("gateway")
	x.key("Enter")

	x.waitFor(90*time.Second, "6/11 Setting up the node", "The node is ready")
	x.snap("progress")
	x.key("Enter")

	screen := x.waitFor(5*time.Second, "7/11 Delegation request", "dcdr1:", "dc-agent delegation sign --identity")
	x.snap("request")
	if !strings.Contains(screen, "e2e") || !strings.Contains(screen, prov.Pubkey) {
		t.Errorf("the request screen does not show the fields:\n%s", screen)
	}
	reqData, err := os.ReadFile(filepath.Join(dir, "dc-agent.delegation-request"))
	if err != nil {
		t.Fatal(err)
	}
	request := strings.TrimSpace(string(reqData))
	if !strings.Contains(strings.ReplaceAll(strings.ReplaceAll(screen, "\n", ""), " ", ""), request) {
		t.Errorf("the screen's code is not the saved request %s:\n%s", request, screen)
	}
	// The provider signs on "another machine".
	signed := runAgent(t, runOpts{}, "delegation", "sign", "--identity", mainKey, "--yes", request)
	if signed.code != 0 {
		t.Fatalf("sign: %s", signed)
	}
	code := strings.TrimSpace(signed.stdout)
	x.key("Enter")

	x.waitFor(5*time.Second, "8/11 Signed delegation")
	x.typeText("dcds1:oops")
	x.waitFor(5*time.Second, "Not a signed delegation", "Fix:")
	x.snap("paste-malformed")
	x.key("C-u")
	x.paste(code)
	x.waitFor(5*time.Second, "Valid:", "for this agent")
	x.snap("paste-valid")
	x.key("Enter")

	x.waitFor(30*time.Second, "9/11 Register", "accepts this agent")
	x.snap("register")
	x.key("Enter")

	x.waitFor(30*time.Second, "10/11 Service", "Installing the service · done", "systemctl was not run")
	x.snap("service")
	if _, err := os.Stat(filepath.Join(root, "etc/systemd/system/dc-agent.service")); err != nil {
		t.Errorf("no unit in the test root: %v", err)
	}
	x.key("Enter")

	x.waitFor(10*time.Second, "11/11 Done", "dc-agent is set up")
	x.snap("summary")
	// The installed service starts its agent (here by hand: --root skips
	// systemctl), and the summary sees it come online through the API.
	agent := exec.Command(dcAgent, "run", "-c", cfg, "--time-scale", "0.02")
	agent.Env = []string{"HOME=" + home, "PATH=" + os.Getenv("PATH")}
	var agentOut bytes.Buffer
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	agentDone := make(chan struct{})
	go func() { _ = agent.Wait(); close(agentDone) }()
	stopAgent := func() {
		_ = agent.Process.Kill()
		<-agentDone
	}
	defer stopAgent()
	x.waitFor(30*time.Second, "online", "last heartbeat")
	x.snap("summary-online")
	x.key("Enter")
	x.waitFor(20*time.Second, "dc-agent monitor", "ONLINE", "the API sees the provider online", "q quit")
	x.snap("monitor")
	x.key("q")
	x.waitExit(exitFile, 0)
	x.waitFor(5*time.Second, "dc-agent is set up and its service is installed")
	if st := srv.AgentStatus(prov); !st.Online {
		t.Errorf("the API does not show the agent online: %+v", st)
	}
	stopAgent()

	// --no-tui from flags alone, from the same starting config: the same
	// bytes.
	wizardConfig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	testutil.WriteFile(t, cfg, initial, 0o600)
	args := []string{"--no-tui", "--config", cfg, "--host", h.Host, "--port", strconv.Itoa(h.Port), "--user", h.User,
		"--identity-file", h.ClientKeyFile, "--host-key-fingerprint", h.HostKeyFingerprint(),
		"--provider-pubkey", prov.Pubkey, "--api-endpoint", srv.URL, "--delegation", code, "--service-root", root}
	r := runSetup(t, dcAgent, nil, append(args, notAsked...)...)
	if r.code != 0 {
		t.Fatalf("--no-tui: %d\n%s\n%s", r.code, r.out, r.err)
	}
	noTUIConfig, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(wizardConfig, noTUIConfig) {
		t.Errorf("the wizard and --no-tui wrote different configs:\nwizard:\n%s\n--no-tui:\n%s", wizardConfig, noTUIConfig)
	}
	if !strings.Contains(r.out, "Service installed") {
		t.Errorf("--no-tui did not install the service:\n%s\n%s", r.out, r.err)
	}
	// Re-running dc-agent on the configured host goes straight to the
	// monitor.
	x.tmux("new-session", "-d", "-s", "again", "-x", "80", "-y", "24", strings.Join(quoteAll(cmdline[:len(cmdline)-len(notAsked)]), " ")+"; sleep 600")
	deadline := time.Now().Add(60 * time.Second)
	for {
		screen := x.tmux("capture-pane", "-p", "-t", "again")
		if strings.Contains(screen, "dc-agent monitor") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a re-run did not open the monitor:\n%s", screen)
		}
		time.Sleep(30 * time.Millisecond)
	}
	t.Logf("screens kept in %s", x.artifacts)
}

// artifactDir is where the screens of a tmux test are kept
// ($DC_TEST_ARTIFACTS/name).
func artifactDir(t *testing.T, name string) string {
	t.Helper()
	artifacts := os.Getenv("DC_TEST_ARTIFACTS")
	if artifacts == "" {
		artifacts = filepath.Join(os.TempDir(), "dc-agent-artifacts")
	}
	artifacts = filepath.Join(artifacts, name)
	if err := os.MkdirAll(artifacts, 0o755); err != nil {
		t.Fatal(err)
	}
	return artifacts
}

// proxmoxHost keeps Proxmox on the backend screen and types the node's
// SSH answers on the host screen (not submitted).
func (x *tmuxTerm) proxmoxHost(h *pvehost.Host) {
	x.t.Helper()
	x.waitFor(5*time.Second, "3/11 Backend", "(•) Proxmox VE", "DigitalOcean", "Vultr")
	x.key("Enter")
	x.waitFor(5*time.Second, "4/11 Proxmox host", "SSH key")
	x.typeText(h.Host)
	x.key("Tab")
	x.key("C-u")
	x.typeText(strconv.Itoa(h.Port))
	x.key("Tab")
	x.key("C-u")
	x.typeText(h.User)
	x.key("Tab")
	x.typeText(h.ClientKeyFile)
}

// start runs cmdline in an 80x24 pane of its own tmux server; its exit
// code appears in exitFile at once (written aside, then renamed: a read
// never sees the file empty).
func (x *tmuxTerm) start(cmdline []string, exitFile string) string {
	x.t.Helper()
	shell := strings.Join(quoteAll(cmdline), " ") + "; echo $? > " + exitFile + ".tmp; mv " + exitFile + ".tmp " + exitFile + "; sleep 600"
	x.session(shell)
	return exitFile
}

// waitExit waits for the program in the pane to exit with code.
func (x *tmuxTerm) waitExit(exitFile string, code int) {
	x.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(exitFile); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(code) {
			return
		} else if err == nil {
			x.t.Fatalf("the wizard exited with %s", b)
		}
		if time.Now().After(deadline) {
			x.t.Fatalf("the wizard did not exit:\n%s", x.capture())
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// TestWizardSetupTokenInTmux walks the wizard with a setup token against
// dc-api's live profile, in a real terminal: the token is pasted on the
// API screen; one already used by another agent fails the node plan's
// registration step, esc goes back to the API screen with the reason and
// the fix, a fresh token registers the agent in the pool, and the wizard
// goes from the node straight to the service: no delegation request, no
// paste, no signing.
func TestWizardSetupTokenInTmux(t *testing.T) {
	t.Parallel()
	x := newTmuxTerm(t, artifactDir(t, "wizard-setup-token"))
	testutil.RequireBinary(t, "sshd")
	w := startNodeWorld(t, "9.1.1", apitest.WithProfile(apiserver.ProfileLive))
	h, srv, prov := w.host, w.api, w.prov
	pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
	used, fresh := srv.SetupToken(pool, time.Hour), srv.SetupToken(pool, time.Hour)
	if r := runAgent(t, runOpts{env: []string{"DC_AGENT_SETUP_TOKEN=" + tokenFile(t, used)}}, "--config", filepath.Join(t.TempDir(), "other.toml"),
		"register", "--api-endpoint", srv.URL); r.code != 0 {
		t.Fatalf("another agent takes the first token: %s", r)
	}

	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	root := filepath.Join(dir, "root")
	cmdline := append(cleanEnv(t.TempDir(), "TERM=xterm-256color", "NO_COLOR=1"),
		dcAgent, "--config", cfg, "--service-root", root, "--proxmox-api-url", w.pveAPI.URL, "--image-mirror", w.images.URL,
		"--image-dir", filepath.Join(h.Dir, "images"), "--state-dir", filepath.Join(dir, "state"))
	exitFile := x.start(cmdline, filepath.Join(dir, "exit"))

	x.waitFor(10*time.Second, "1/11 Welcome", "registers it with a setup token", "enter start")
	x.key("Enter")
	x.waitFor(5*time.Second, "2/11 Decent Cloud API", "(•) setup token", "Agents > your pool > Add Agent")
	x.key("C-u")
	x.typeText(srv.URL)
	x.key("Tab")
	x.key("Tab")
	x.typeText(prov.Pubkey)
	x.waitFor(5*time.Second, "this is a 64-hex key, not a setup token") // checked as typed
	x.key("C-u")
	x.paste(used)
	x.waitFor(5*time.Second, strings.Repeat("*", len(used)))
	x.snap("api-token")
	if strings.Contains(x.capture(), used) {
		t.Error("the token is shown")
	}
	x.key("Enter")

	x.proxmoxHost(h)
	x.key("Enter")
	x.waitFor(10*time.Second, h.HostKeyFingerprint(), "pin and connect")
	x.key("y")
	x.waitFor(30*time.Second, "5/11 Node and choices", "set up the node")
	x.key("Enter")
	x.waitFor(10*time.Second, "5/11 Gateway", "Use the gateway")
	x.key("Enter")

	// The used token: the registration step fails, with the fix.
	x.waitFor(60*time.Second, "6/11 Setting up the node", "failed", "already used", "Fix: make a new setup token")
	x.snap("token-used")
	x.key("Escape")
	x.waitFor(5*time.Second, "2/11 Decent Cloud API", "already used", "Fix: make a new setup token")
	x.snap("api-token-used")
	x.paste(fresh)
	x.waitFor(5*time.Second, strings.Repeat("*", len(fresh)))
	x.key("Enter")

	x.waitFor(90*time.Second, "6/11 Setting up the node", "The node is ready", "The agent is registered", "registered agent")
	x.snap("progress")
	x.key("Enter")
	x.waitFor(30*time.Second, "10/11 Service", "Installing the service · done")
	x.snap("service")
	x.key("Enter")
	x.waitFor(10*time.Second, "11/11 Done", "dc-agent is set up", "eu-proxmox ("+pool.PoolID+", europe)", "provider "+prov.Pubkey[:8])
	x.snap("summary")
	x.key("q")
	x.waitExit(exitFile, 0)

	for _, shot := range mustGlob(t, filepath.Join(x.artifacts, "*.txt")) {
		b, _ := os.ReadFile(shot)
		if strings.Contains(string(b), "Delegation request") || strings.Contains(string(b), "dcdr1:") || strings.Contains(string(b), fresh) {
			t.Errorf("%s shows offline signing or the token:\n%s", shot, b)
		}
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.ProviderPubkey != prov.Pubkey || c.API.PoolID != pool.PoolID || c.API.PoolName != "eu-proxmox" {
		t.Fatalf("config [api]: %+v", c.API)
	}
	key, err := c.LoadAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	if d := srv.Delegation(prov, identity.PublicHex(key)); d == nil || d.PoolID == nil || *d.PoolID != pool.PoolID {
		t.Fatalf("the API holds %+v", d)
	}
	t.Logf("screens kept in %s", x.artifacts)
}

func mustGlob(t *testing.T, pattern string) []string {
	t.Helper()
	m, err := filepath.Glob(pattern)
	if err != nil || len(m) == 0 {
		t.Fatalf("no files %s: %v", pattern, err)
	}
	return m
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return out
}

// TestBareWithoutTerminal: no terminal and no --no-tui says how to go on
// (exit 2) and never reads stdin; --no-tui without answers names the flag.
func TestBareWithoutTerminal(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dc-agent.toml")
	// stdin is a pipe that never ends: a read would hang, not see EOF.
	bare := runSetup(t, dcAgent, nil, "--config", cfg)
	if bare.code != exitUsage || !strings.Contains(bare.err, "only on a terminal") || !strings.Contains(bare.err, "dc-agent --no-tui --host") {
		t.Fatalf("bare dc-agent without a terminal: %d\n%s\n%s", bare.code, bare.out, bare.err)
	}
	r := runAgent(t, runOpts{}, "--config", cfg, "--no-tui")
	if r.code != exitUsage || !strings.Contains(r.stderr, "--host is required") || !strings.Contains(r.stderr, "DC_AGENT_HOST") {
		t.Fatalf("--no-tui without answers: %s", r)
	}
	r = runAgent(t, runOpts{env: []string{"DC_AGENT_NO_TUI=1", "DC_AGENT_HOST=127.0.0.1"}}, "--config", cfg)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--setup-token is required") {
		t.Fatalf("DC_AGENT_NO_TUI with a host only: %s", r)
	}
	if _, err := os.Stat(cfg); !os.IsNotExist(err) {
		t.Fatal("a refused run wrote a config")
	}
}

// TestWizardNoColor: with NO_COLOR the wizard draws no colors (meaning is
// in marks and words); without it, it does.
func TestWizardNoColor(t *testing.T) {
	t.Parallel()
	for _, noColor := range []bool{true, false} {
		x := newTmuxTerm(t, t.TempDir())
		env := cleanEnv(t.TempDir(), "TERM=xterm-256color")
		if noColor {
			env = append(env, "NO_COLOR=1")
		}
		cmdline := append(env, dcAgent, "--config", filepath.Join(t.TempDir(), "dc-agent.toml"), "--service-root", t.TempDir())
		x.session(strings.Join(quoteAll(cmdline), " ") + "; sleep 600")
		x.waitFor(10*time.Second, "1/11 Welcome", "enter start")
		styled := x.tmux("capture-pane", "-p", "-e", "-t", "w")
		// SGR foreground colors: 30-37, 90-97, 38;5;N, 38;2;R;G;B.
		colored := false
		for _, c := range []string{"\x1b[3", "\x1b[9", ";3", ";9"} {
			if strings.Contains(styled, c) {
				colored = true
			}
		}
		if colored == noColor {
			t.Errorf("NO_COLOR=%v: colors drawn: %v\n%q", noColor, colored, styled)
		}
	}
}
