package wizard

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// TestWizardFlowStopsAPlanOnCtrlC runs the wizard with its real flow
// against the simulated node over real sshd: the answers come prefilled,
// the node plan hangs in the disk import, and Ctrl-C stops it there (the
// remote command ends with the session), quits, and says what to re-run.
func TestWizardFlowStopsAPlanOnCtrlC(t *testing.T) {
	h, images := startNode(t, "9.1.1")
	h.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"qm set", "import-from"}, Action: "hang", Count: 1}}})
	dir := t.TempDir()
	m := New(Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: filepath.Join(dir, "dc-agent.toml"), StateDir: filepath.Join(dir, "state"),
			APIEndpoint: "http://127.0.0.1:9", ProviderPubkey: providerHex, ImageMirror: images.URL, ImageDir: filepath.Join(h.Dir, "images")},
		SSH:     setup.SSHAnswer{Host: h.Host, Port: h.Port, User: h.User, IdentityFile: h.ClientKeyFile},
		Service: &service.Options{Root: filepath.Join(dir, "root")},
	}, StatusEvery: -1})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(80, 24))
	see := func(want string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte(want)) },
			teatest.WithDuration(60*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	}
	toNodeChoices(tm, func(w string) { t.Helper(); see(w) })
	tm.Send(key("enter"))
	see("Use the gateway") // the node's bridge is private: no gateway
	tm.Send(key("enter"))
	hung := filepath.Join(h.StateDir, pvecli.HungFile)
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(hung); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the disk import never started")
		}
	}
	tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(60*time.Second)).(*Model)
	fm.Close() // waits for the flow: the SSH session is gone
	if !strings.Contains(fm.Hint(), "Stopped during the node setup") || fm.Finished() {
		t.Fatalf("hint %q", fm.Hint())
	}
	h.View(t, func(st *pve.State) {
		for _, id := range st.VMIDs() {
			if st.VMs[id].IsTemplate() {
				t.Errorf("a step after the interrupted one ran: template %d", id)
			}
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "dc-agent.toml")); err == nil {
		t.Error("the config was written by a stopped plan")
	}
}

// TestWizardSetsUpTheGateway walks the screens with the real flow against
// the simulated node (private vmbr0) and dc-api's live profile: the
// Gateway screen comes prefilled with the node's public address, "yes"
// and a dc_id set it up at the paths the config names, the gateway's
// progress screen counts in the position, and the config gets [gateway].
func TestWizardSetsUpTheGateway(t *testing.T) {
	h, images := startNode(t, "9.1.1")
	srv := apitest.Start(t, apitest.WithProfile("live"), apitest.WithPublicURL("https://api.example.org"))
	pool := srv.NewPool(srv.NewProvider("Acme"), "eu-proxmox", "europe", "proxmox")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	caddyfile, sites := filepath.Join(dir, "caddy", "Caddyfile"), filepath.Join(dir, "caddy", "sites")
	if err := os.WriteFile(cfg, []byte("[gateway]\ncaddyfile = \""+caddyfile+"\"\ncaddy_sites_dir = \""+sites+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := New(Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), APIEndpoint: srv.URL, ImageMirror: images.URL,
			ImageDir: filepath.Join(h.Dir, "images"), GatewaySysctlFile: filepath.Join(dir, "sysctl.d", "99-dc-gateway.conf")},
		SSH:        setup.SSHAnswer{Host: h.Host, Port: h.Port, User: h.User, IdentityFile: h.ClientKeyFile},
		SetupToken: srv.SetupToken(pool, time.Hour),
		Service:    &service.Options{Root: filepath.Join(dir, "root")},
	}, StatusEvery: -1})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(100, 30))
	see := func(want ...string) {
		t.Helper()
		teatest.WaitFor(t, tm.Output(), func(b []byte) bool {
			for _, w := range want {
				if !bytes.Contains(b, []byte(w)) {
					return false
				}
			}
			return true
		}, teatest.WithDuration(90*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	}
	toNodeChoices(tm, func(w string) { t.Helper(); see(w) })
	tm.Send(key("enter"))
	// A part of the node's choices (4); yes shows dc_id and the public
	// IPv4, prefilled.
	see("4/10 Gateway", "private subnet (10.99.0.0/24", "(•) no")
	tm.Send(key(" "))
	see("(•) yes", "203.0.113.10")
	tm.Send(key("tab"))
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("dc-tea")})
	tm.Send(key("enter"))
	see("The node is ready")
	tm.Send(key("enter"))
	see("9/11 Setting up the gateway", "registered dc_id dc-tea", "The gateway is set up") // counted once chosen
	tm.Send(key("enter"))
	see("Installing the service · done")
	tm.Send(key("enter"))
	see("dc-agent is set up")
	tm.Send(key("q"))
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(60*time.Second)).(*Model)
	fm.Close()
	if !fm.Finished() {
		t.Fatalf("hint %q", fm.Hint())
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Gateway; g == nil || g.DCID != "dc-tea" || g.PublicIP != "203.0.113.10" || g.Caddyfile != caddyfile {
		t.Fatalf("[gateway] %+v", c.Gateway)
	}
	if _, err := os.Stat(sites); err != nil {
		t.Fatal(err)
	}
}

// toNodeChoices takes a wizard whose answers come prefilled from the
// welcome screen to "Node and choices": start, the API and the host as
// given, the node's host key pinned.
func toNodeChoices(tm *teatest.TestModel, see func(string)) {
	for _, step := range []struct{ screen, key string }{
		{"enter start", "enter"}, {"Decent Cloud API", "enter"}, {"Proxmox host", "enter"}, {"pin and connect", "y"},
	} {
		see(step.screen)
		tm.Send(key(step.key))
	}
	see("Node and choices")
}
