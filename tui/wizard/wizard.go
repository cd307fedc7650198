// Package wizard is the setup wizard `dc-agent` opens on a fresh host: a
// small state machine over screens (welcome, API, Proxmox host, discovery,
// setup progress, delegation request, paste, register, service, summary),
// each its own model in its own file.
//
// The wizard asks; the setup package does. Every answer ends up in a
// setup.ProxmoxAnswers, the same struct `dc-agent setup proxmox --no-tui`
// fills from flags, and the work runs as setup plans in tea.Cmds that
// stream their events back as messages, so Update stays fast and View
// renders from state only.
package wizard

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// SSHAnswers say how to reach the Proxmox node.
type SSHAnswers struct {
	Host         string
	Port         int
	User         string
	IdentityFile string
	// PasswordFile holds the SSH password (read when connecting).
	PasswordFile string
}

// Options configure the wizard. Everything is a prefill: the flags and
// DC_AGENT_* variables of --no-tui, so both paths start from the same
// answers.
type Options struct {
	// Answers: ConfigPath is required; the rest is prefilled.
	Answers setup.ProxmoxAnswers
	SSH     SSHAnswers
	// Node, Storage and Bridge preselect discovery choices.
	Node, Storage, Bridge string
	// Request shapes the delegation request (Provider comes from Answers).
	Request setup.DelegationAnswers
	// Service installs the service (ConfigPath is set by the wizard).
	Service service.Options
	// Now is the clock for elapsed times and expiry checks (nil: time.Now).
	Now func() time.Time
	// Monitor opens the live monitor after the summary (nil: the summary
	// says how to open it).
	Monitor func() tea.Model
	// StatusEvery is how often the summary asks the API whether the agent
	// is online (0: 2s; negative: never).
	StatusEvery time.Duration
	// Context bounds all work (nil: Background).
	Context context.Context
	// Prereqs overrides the welcome screen's checks (tests: a fixed list).
	Prereqs func() []Check
}

type screenID int

const (
	scrWelcome screenID = iota
	scrAPI
	scrHost
	scrDiscovery
	scrProgress
	scrRequest
	scrPaste
	scrRegister
	scrService
	scrSummary
	scrMonitor
	numScreens = scrMonitor
)

var screenTitles = [...]string{"Welcome", "Decent Cloud API", "Proxmox host", "Node and choices", "Setting up the node",
	"Delegation request", "Signed delegation", "Register", "Service", "Done", "Monitor"}

// stage is how far the wizard got, for what to say on Ctrl-C.
type stage int

const (
	stageNothing    stage = iota // nothing changed yet
	stagePinned                  // host key pinned, nothing else
	stagePlan                    // the node plan is running or failed
	stageNodeReady               // node set up, config written
	stageRegistered              // delegation registered
	stageInstalled               // service installed
)

// Model is the wizard's root model.
type Model struct {
	o      Options
	now    func() time.Time
	ctx    context.Context
	width  int
	height int
	screen screenID
	st     styles

	existing *config.Config
	oldPx    *config.ProxmoxConfig
	loadErr  error

	// answers are rebuilt from the prefill whenever the host changes.
	answers setup.ProxmoxAnswers
	sshOpts setup.SSHOptions
	host    *setup.Host
	disc    *setup.Discovery
	run     *setup.ProxmoxRun
	key     *setup.KeyStatus
	request identity.Delegation
	reqCode string
	reqFile string
	signed  string
	svcRes  service.Result

	stage    stage
	stopping bool
	quitting bool
	hint     string
	finished bool
	gen      int

	// newPlan builds the node plan (tests replace it with their own steps).
	newPlan func() (*setup.ProxmoxRun, error)

	welcome  welcomeScreen
	api      apiScreen
	hostScr  hostScreen
	discScr  discoveryScreen
	progress progressScreen
	req      requestScreen
	paste    pasteScreen
	reg      progressScreen
	svc      progressScreen
	summary  summaryScreen
	monitor  tea.Model
}

// New returns the wizard for o.
func New(o Options) *Model {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Context == nil {
		o.Context = context.Background()
	}
	if o.StatusEvery == 0 {
		o.StatusEvery = 2 * time.Second
	}
	if o.SSH.User == "" {
		o.SSH.User = "root"
	}
	if o.SSH.Port == 0 {
		o.SSH.Port = 22
	}
	if o.Request.Expires == "" {
		o.Request.Expires = "never"
	}
	m := &Model{o: o, now: o.Now, ctx: o.Context, width: 80, height: 24, st: newStyles()}
	m.existing, _, m.loadErr = setup.LoadForUpdate(o.Answers.ConfigPath)
	if m.existing != nil {
		for _, p := range m.existing.AllProvisioners() {
			if p.Type == config.TypeProxmox && p.Proxmox != nil {
				m.oldPx = p.Proxmox
			}
		}
	}
	pre := o.Answers
	pre.FillDefaults(m.existing, "")
	m.welcome = newWelcome()
	m.api = newAPIScreen(pre.APIEndpoint, pre.ProviderPubkey)
	m.hostScr = newHostScreen(o.SSH)
	m.progress = newProgressScreen("Setting up the node")
	m.reg = newProgressScreen("Registering the agent")
	m.svc = newProgressScreen("Installing the service")
	m.newPlan = func() (*setup.ProxmoxRun, error) { return setup.NewProxmoxPlan(m.answers, m.host, m.disc) }
	m.layout()
	return m
}

// layout sizes the inputs to the terminal.
func (m *Model) layout() {
	m.api.layout(m.width)
	m.hostScr.layout(m.width)
	m.paste.input.Width = max(10, m.width-4)
}

// Init starts the prerequisite checks.
func (m *Model) Init() tea.Cmd {
	return m.checkPrereqs()
}

// Hint is what to tell the provider after the wizard ends: what to
// re-run, or what was done.
func (m *Model) Hint() string {
	if m.hint == "" {
		return m.resumeHint() // ended from outside (SIGTERM)
	}
	return m.hint
}

// Finished reports whether the wizard walked to its end.
func (m *Model) Finished() bool { return m.finished }

// Answers returns the answers the wizard collected so far (what it passed
// to setup.NewProxmoxPlan).
func (m *Model) Answers() setup.ProxmoxAnswers { return m.answers }

// Close releases the SSH connection and stops the embedded monitor (the
// service is not touched).
func (m *Model) Close() {
	if c, ok := m.monitor.(interface{ Close() }); ok {
		c.Close()
	}
	if m.host != nil {
		m.host.Close()
		m.host = nil
	}
}

// Screen names the current screen (tests, artifacts).
func (m *Model) Screen() string { return screenTitles[m.screen] }

func (m *Model) goTo(s screenID) tea.Cmd {
	m.screen = s
	switch s {
	case scrAPI:
		return m.api.focusCmd()
	case scrHost:
		return m.hostScr.focusCmd()
	case scrPaste:
		return m.paste.input.Focus()
	}
	return nil
}

// Update routes messages: window size and Ctrl-C here, the rest to the
// current screen.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.layout()
		if m.screen == scrMonitor && m.monitor != nil {
			var cmd tea.Cmd
			m.monitor, cmd = m.monitor.Update(msg)
			return m, cmd
		}
		return m, nil
	case tea.KeyMsg:
		if msg.Type == tea.KeyCtrlC && m.screen != scrMonitor {
			return m, m.interrupt()
		}
	}
	var cmd tea.Cmd
	switch m.screen {
	case scrWelcome:
		cmd = m.updateWelcome(msg)
	case scrAPI:
		cmd = m.updateAPI(msg)
	case scrHost:
		cmd = m.updateHost(msg)
	case scrDiscovery:
		cmd = m.updateDiscovery(msg)
	case scrProgress:
		cmd = m.updateProgress(msg)
	case scrRequest:
		cmd = m.updateRequest(msg)
	case scrPaste:
		cmd = m.updatePaste(msg)
	case scrRegister:
		cmd = m.updateRegister(msg)
	case scrService:
		cmd = m.updateService(msg)
	case scrSummary:
		cmd = m.updateSummary(msg)
	case scrMonitor:
		if m.monitor != nil {
			m.monitor, cmd = m.monitor.Update(msg)
		}
	}
	return m, cmd
}

// View renders the current screen.
func (m *Model) View() string {
	if m.quitting {
		return ""
	}
	switch m.screen {
	case scrWelcome:
		return m.viewWelcome()
	case scrAPI:
		return m.viewAPI()
	case scrHost:
		return m.viewHost()
	case scrDiscovery:
		return m.viewDiscovery()
	case scrProgress:
		return m.viewProgress()
	case scrRequest:
		return m.viewRequest()
	case scrPaste:
		return m.viewPaste()
	case scrRegister:
		return m.viewRegister()
	case scrService:
		return m.viewService()
	case scrSummary:
		return m.viewSummary()
	case scrMonitor:
		if m.monitor != nil {
			return m.monitor.View()
		}
	}
	return ""
}

// running reports whether a plan is running on the current screen.
func (m *Model) running() *progressScreen {
	for _, p := range []*progressScreen{&m.progress, &m.reg, &m.svc, &m.hostScr.conn} {
		if p.running {
			return p
		}
	}
	return nil
}

// interrupt handles Ctrl-C: running work is cancelled first (the plan
// stops between steps or inside the remote command, and every step is
// idempotent), then the wizard quits with what to re-run.
func (m *Model) interrupt() tea.Cmd {
	if p := m.running(); p != nil {
		if m.stopping { // a second Ctrl-C: do not wait any longer
			return m.quit()
		}
		m.stopping = true
		p.cancel()
		return nil
	}
	return m.quit()
}

func (m *Model) quit() tea.Cmd {
	if m.hint == "" {
		m.hint = m.resumeHint()
	}
	m.quitting = true
	return tea.Quit
}

// resumeHint says exactly what was done and what to run to go on.
func (m *Model) resumeHint() string {
	cfg := m.o.Answers.ConfigPath
	switch m.stage {
	case stageNothing:
		return "Stopped; nothing was changed. Run dc-agent again to set up."
	case stagePinned:
		return fmt.Sprintf("Stopped; nothing was changed on the node (its SSH host key is pinned in %s). Run dc-agent again to continue.", m.answers.PinsPath())
	case stagePlan:
		return "Stopped during the node setup. Every step checks first and changes only what differs, so nothing is left half-done:\n" +
			"run dc-agent again (or dc-agent setup proxmox with the same answers) to continue where it stopped."
	case stageNodeReady:
		var b strings.Builder
		fmt.Fprintf(&b, "The node is set up and the config is written (%s), but the agent is not registered yet.\n", cfg)
		if m.reqFile != "" {
			fmt.Fprintf(&b, "The delegation request is in %s. Sign it on the machine with your provider key:\n", m.reqFile)
		} else {
			b.WriteString("Sign the delegation request (dc-agent delegation request prints it) on the machine with your provider key:\n")
		}
		fmt.Fprintf(&b, "  %s\n", signCommand(m.reqCode))
		fmt.Fprintf(&b, "then here: dc-agent --config %s register --delegation 'dcds1:...'\n", cfg)
		fmt.Fprintf(&b, "and: dc-agent --config %s service install", cfg)
		return b.String()
	case stageRegistered:
		return fmt.Sprintf("The agent is registered, but the service is not installed. Finish with: dc-agent --config %s service install", cfg)
	}
	if m.finished {
		return fmt.Sprintf("dc-agent is set up and its service is installed. Watch it with: dc-agent --config %s   (or: dc-agent status)", cfg)
	}
	return fmt.Sprintf("The service is installed. Watch it with: dc-agent --config %s", cfg)
}

// signCommand is what the provider runs on the machine holding the main key.
func signCommand(code string) string {
	if code == "" {
		code = "dcdr1:..."
	}
	return "dc-agent delegation sign --identity ~/.dcc/identity/<name>/private.pem '" + code + "'"
}

// Run runs the wizard on the terminal and returns the final model (its
// Hint says what to do next).
func Run(o Options, progOpts ...tea.ProgramOption) (*Model, error) {
	m := New(o)
	defer m.Close()
	p := tea.NewProgram(m, append([]tea.ProgramOption{tea.WithAltScreen()}, progOpts...)...)
	_, err := p.Run()
	return m, err
}

// reqFilePath is where the delegation request is kept for the provider.
func reqFilePath(configPath string) string {
	return strings.TrimSuffix(configPath, ".toml") + ".delegation-request"
}

func writeRequestFile(path, code string) error {
	return os.WriteFile(path, []byte(code+"\n"), 0o600)
}
