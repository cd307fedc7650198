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
	see("enter start")
	tm.Send(key("enter"))
	see("Decent Cloud API")
	tm.Send(key("enter"))
	see("Proxmox host")
	tm.Send(key("enter"))
	see("pin and connect")
	tm.Send(key("y"))
	see("Node and choices")
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
