// Package wizard is the setup wizard `dc-agent` opens on a fresh host, and
// its accessible twin (line prompts, accessible.go).
//
// The wizard asks; setup.Flow does. The flow runs in its own goroutine and
// owns the order, the checks and what is already done; the wizard is its
// UI: each question the flow asks arrives as a message and opens the
// screen that answers it, each plan event arrives as a message and is
// drawn, so Update stays fast and View renders from state only. Screens
// share one small interface held by the root model and talk back only by
// messages (an answer, go to another screen, quit).
package wizard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/setup"
)

// Options configure the wizard.
type Options struct {
	// Flow is the prefill (the flags and DC_AGENT_* variables of --no-tui,
	// so both start from the same answers); Flow.Answers.ConfigPath is
	// required.
	Flow setup.FlowOptions
	// Monitor opens the live monitor after the summary (nil: the summary
	// says how to open it).
	Monitor func() tea.Model
	// StatusEvery is how often the summary asks the API whether the agent
	// is online (0: 2s; negative: never).
	StatusEvery time.Duration
	// Context bounds all work (nil: Background).
	Context context.Context
}

type screenID int

const (
	scrWelcome screenID = iota
	scrAPI
	scrBackend
	scrCloud
	scrHost
	scrDiscovery
	scrGateway
	scrProgress
	scrRequest
	scrPaste
	scrRegister
	scrGatewaySetup
	scrService
	scrSummary
	scrMonitor
	numScreens = scrMonitor
)

var screenTitles = [...]string{"Welcome", "Decent Cloud API", "Backend", "Cloud account", "Proxmox host", "Node and choices", "Gateway", "Setting up the node",
	"Delegation request", "Signed delegation", "Register", "Setting up the gateway", "Service", "Done", "Monitor"}

// screen is one page of the wizard. It gets the flow's questions and
// events, and keys, as messages; it answers by messages only.
type screen interface {
	update(msg tea.Msg) tea.Cmd
	// view renders the body and the key help for a body of w×h cells.
	view(w, h int) (body, keys string)
	// focus is called when the screen is shown.
	focus() tea.Cmd
}

// Messages from screens to the root model.
type (
	// answerMsg answers the question the flow asked.
	answerMsg struct {
		v   any
		err error
	}
	goMsg      struct{ to screenID }
	quitMsg    struct{}
	monitorMsg struct{}
	// stoppingMsg tells a screen running a plan that Ctrl-C stops it.
	stoppingMsg struct{}
)

func answer(v any, err error) tea.Cmd {
	return func() tea.Msg { return answerMsg{v: v, err: err} }
}

func send(msg tea.Msg) tea.Cmd { return func() tea.Msg { return msg } }

// env is what every screen reads: the context, the clock, the options.
type env struct {
	ctx context.Context
	now func() time.Time
	o   *Options
	// method is how the agent registers (the API screen's answer).
	method setup.RegistrationMethod
	// backend is the backend screen's answer (config.TypeProxmox before).
	backend string
	// gateway: the gateway is set up (its progress screen counts).
	gateway bool
}

// title is how a screen or plan titled t is named on the chosen backend:
// a cloud backend sets up the agent, not a node.
func (e *env) title(t string) string {
	if e.backend != config.TypeProxmox {
		return strings.Replace(t, "the node", "the agent", 1)
	}
	return t
}

// Model is the wizard's root model.
type Model struct {
	o      Options
	env    *env
	flow   *setup.Flow
	br     *bridge
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the flow's goroutine ended
	// goneOnce closes br.gone: the model no longer listens.
	goneOnce sync.Once

	width, height int
	screen        screenID
	screens       [numScreens]screen
	summary       *summaryScreen
	monitor       tea.Model

	pending  chan<- answerMsg // the open question's reply
	running  bool             // a plan runs
	started  bool             // the flow runs (Init)
	stopping bool
	quitting bool
	finished bool
	fatal    error
	hint     string
}

// New returns the wizard for o.
func New(o Options) *Model {
	if o.Flow.Now == nil {
		o.Flow.Now = time.Now
	}
	if o.StatusEvery == 0 {
		o.StatusEvery = 2 * time.Second
	}
	ctx := o.Context
	if ctx == nil {
		ctx = context.Background()
	}
	m := &Model{o: o, width: 80, height: 24, done: make(chan struct{})}
	m.ctx, m.cancel = context.WithCancel(ctx)
	m.br = &bridge{msgs: make(chan tea.Msg), gone: make(chan struct{})}
	m.flow = setup.NewFlow(o.Flow, m.br)
	m.br.flow = m.flow
	m.env = &env{ctx: m.ctx, now: o.Flow.Now, o: &m.o, backend: cmp.Or(o.Flow.Backend, config.TypeProxmox)}
	m.summary = &summaryScreen{env: m.env}
	m.screens = [numScreens]screen{
		scrWelcome:      &welcomeScreen{env: m.env},
		scrAPI:          newAPIScreen(m.env),
		scrBackend:      &backendScreen{env: m.env},
		scrCloud:        newCloudScreen(m.env),
		scrHost:         newHostScreen(m.env),
		scrDiscovery:    &discoveryScreen{env: m.env},
		scrGateway:      newGatewayScreen(m.env),
		scrProgress:     newProgressScreen(m.env, "Setting up the node", nodeDone),
		scrRequest:      &requestScreen{},
		scrPaste:        newPasteScreen(m.env),
		scrRegister:     newProgressScreen(m.env, "Registering the agent", registerDone),
		scrGatewaySetup: newProgressScreen(m.env, "Setting up the gateway", gatewayDone),
		scrService:      newProgressScreen(m.env, "Installing the service", serviceDone),
		scrSummary:      m.summary,
	}
	m.resize()
	return m
}

// Init starts the flow.
func (m *Model) Init() tea.Cmd {
	m.started = true
	go func() {
		defer close(m.done)
		err := m.flow.Run(m.ctx)
		m.br.send(flowDoneMsg{err: err, stage: m.flow.Stage(), summary: m.flow.Summary(), hint: m.flow.Hint()})
	}()
	return m.listen()
}

// listen waits for the flow's next message.
func (m *Model) listen() tea.Cmd {
	if !m.started {
		return nil
	}
	ch, gone := m.br.msgs, m.br.gone
	return func() tea.Msg {
		select {
		case msg := <-ch:
			return msg
		case <-gone:
			return nil
		}
	}
}

// Hint is what to tell the provider after the wizard ends: what to
// re-run, or what was done.
func (m *Model) Hint() string {
	if m.hint == "" {
		return m.flow.Hint() // ended from outside (SIGTERM)
	}
	return m.hint
}

// Finished reports whether the wizard walked to its end.
func (m *Model) Finished() bool { return m.finished }

// Close stops the flow (and waits for it to close the SSH connection) and
// the embedded monitor; the service is not touched.
func (m *Model) Close() {
	if c, ok := m.monitor.(interface{ Close() }); ok {
		c.Close()
	}
	m.stop()
	if m.started {
		<-m.done
	}
}

// stop cancels the flow and stops listening to it.
func (m *Model) stop() {
	m.cancel()
	m.goneOnce.Do(func() { close(m.br.gone) })
}

// Screen names the current screen (tests, artifacts).
func (m *Model) Screen() string { return screenTitles[m.screen] }

func (m *Model) show(s screenID) tea.Cmd {
	m.screen = s
	if s == scrMonitor {
		return nil
	}
	return m.screens[s].focus()
}

func (m *Model) resize() tea.Cmd {
	var cmds []tea.Cmd
	size := tea.WindowSizeMsg{Width: m.width, Height: m.height}
	for _, s := range m.screens {
		cmds = append(cmds, s.update(size))
	}
	return tea.Batch(cmds...)
}

// Update routes messages: the flow's to the screen that shows them, the
// screens' to the flow, window size and Ctrl-C here, the rest to the
// current screen.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		if m.screen == scrMonitor && m.monitor != nil {
			var cmd tea.Cmd
			m.monitor, cmd = m.monitor.Update(msg)
			return m, cmd
		}
		return m, m.resize()
	case tea.KeyMsg:
		if msg.Type == tea.KeyCtrlC && m.screen != scrMonitor {
			return m, m.interrupt()
		}
		if m.fatal != nil {
			if k := msg.String(); k == "q" || k == "esc" || k == "enter" {
				return m, m.quit()
			}
			return m, nil
		}
	case askMsg:
		return m, tea.Batch(m.ask(msg), m.listen())
	case startedMsg:
		m.running = true
		m.env.gateway = m.env.gateway || msg.phase == setup.PhaseGateway
		s := phaseScreen[msg.phase]
		return m, tea.Batch(m.show(s), m.screens[s].update(msg), m.listen())
	case eventMsg:
		return m, tea.Batch(m.screens[phaseScreen[msg.ev.Phase]].update(msg), m.listen())
	case flowDoneMsg:
		return m, m.flowDone(msg)
	case answerMsg:
		if m.pending != nil {
			m.pending <- msg
			m.pending = nil
		}
		return m, nil
	case goMsg:
		return m, m.show(msg.to)
	case quitMsg:
		return m, m.quit()
	case monitorMsg:
		return m, m.openMonitor()
	}
	if m.screen == scrMonitor {
		var cmd tea.Cmd
		if m.monitor != nil {
			m.monitor, cmd = m.monitor.Update(msg)
		}
		return m, cmd
	}
	return m, m.screens[m.screen].update(msg)
}

var phaseScreen = map[setup.Phase]screenID{
	setup.PhaseConnect: scrHost, setup.PhaseNode: scrProgress, setup.PhaseRegister: scrRegister, setup.PhaseService: scrService,
	setup.PhaseGateway: scrGatewaySetup,
}

// ask opens the screen for the flow's question and hands it the question.
func (m *Model) ask(a askMsg) tea.Cmd {
	m.pending = a.reply
	var s screenID
	switch q := a.q.(type) {
	case prereqQ:
		s = scrWelcome
	case setup.APIQuestion:
		s = scrAPI
	case setup.BackendQuestion:
		s = scrBackend
	case setup.CloudQuestion:
		s = scrCloud
	case setup.SSHQuestion, setup.HostKeyQuestion, passwordQ:
		s = scrHost
	case setup.ChoiceQuestion:
		s = scrDiscovery
	case setup.GatewayQuestion:
		s = scrGateway
	case setup.DelegationQuestion:
		s = scrRequest
		if m.screens[scrPaste].(*pasteScreen).code == q.Code {
			s = scrPaste // asked again (back from a failed registration)
		}
		return tea.Batch(m.screens[scrRequest].update(q), m.screens[scrPaste].update(q), m.show(s))
	case endedQ:
		m.running = false
		if m.stopping {
			return m.quit()
		}
		return m.screens[phaseScreen[q.phase]].update(q)
	}
	return tea.Batch(m.show(s), m.screens[s].update(a.q))
}

// flowDone shows the summary after a flow that went all the way, the
// error of one that failed, or quits.
func (m *Model) flowDone(d flowDoneMsg) tea.Cmd {
	m.running = false
	m.hint = d.hint
	switch {
	case m.stopping || m.quitting || errors.Is(d.err, context.Canceled):
		return m.quit()
	case d.err != nil:
		m.fatal = d.err
		return nil
	case d.stage < setup.StageInstalled:
		return m.quit()
	}
	m.finished = true
	return tea.Batch(m.show(scrSummary), m.summary.start(d.summary))
}

func (m *Model) openMonitor() tea.Cmd {
	if m.o.Monitor == nil {
		return m.quit()
	}
	m.monitor = m.o.Monitor()
	m.screen = scrMonitor
	w, h := m.width, m.height
	return tea.Batch(m.monitor.Init(), func() tea.Msg { return tea.WindowSizeMsg{Width: w, Height: h} })
}

// View renders the current screen in its frame.
func (m *Model) View() string {
	switch {
	case m.quitting:
		return ""
	case m.screen == scrMonitor:
		if m.monitor != nil {
			return m.monitor.View()
		}
		return ""
	case m.fatal != nil:
		body := st.bad.Render(markBad+" ") + clean(m.fatal.Error()) + "\n"
		if fix := setup.FixOf(m.fatal); fix != "" {
			body += st.key.Render("Fix: ") + clean(fix) + "\n"
		}
		return frame(m.env.title(screenTitles[m.screen]), m.position(), body, keyHelp("q", "quit (it says how to go on)"), m.width, m.height)
	}
	body, keys := m.screens[m.screen].view(m.width, m.height-3)
	return frame(m.env.title(screenTitles[m.screen]), m.position(), body, keys, m.width, m.height)
}

// position is "n/total" of the current screen on the path the provider
// walks: the backend question only where the flow asks it, a cloud
// account instead of the Proxmox host and node, the gateway question as a
// part of the node's choices, its setup only when chosen.
func (m *Model) position() string {
	n, pos := 0, 0
	for s := range numScreens {
		switch {
		case s == scrBackend && !m.flow.AsksBackend():
			continue
		case s == scrCloud && m.env.backend == config.TypeProxmox:
			continue
		case (s == scrHost || s == scrDiscovery) && m.env.backend != config.TypeProxmox:
			continue
		case s == scrGateway:
			// A part of the node's choices.
			if m.screen == scrGateway {
				pos = n
			}
			continue
		case s == scrGatewaySetup && !m.env.gateway:
			continue
		}
		n++
		if s == m.screen {
			pos = n
		}
	}
	return fmt.Sprintf("%d/%d", pos, n)
}

// interrupt handles Ctrl-C: a running plan is stopped first (between
// steps or inside the remote command; every step is idempotent), then the
// wizard quits with what to re-run.
func (m *Model) interrupt() tea.Cmd {
	if m.running && !m.stopping {
		m.stopping = true
		m.cancel()
		return m.screens[m.screen].update(stoppingMsg{})
	}
	return m.quit()
}

func (m *Model) quit() tea.Cmd {
	m.stop()
	if m.hint == "" {
		m.hint = m.flow.Hint()
	}
	m.quitting = true
	return tea.Quit
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

// The bridge is the wizard as the flow's UI: each call becomes a message
// to the model (read by listen), and a question waits for the screen's
// answer or the end of the flow's context (Ctrl-C). Nothing is dropped
// while the model listens, and nothing waits once it quit.

type (
	askMsg struct {
		q     any
		reply chan<- answerMsg
	}
	startedMsg struct {
		phase setup.Phase
		steps []setup.Step
		// ans are the answers the plan runs with.
		ans setup.ProxmoxAnswers
	}
	eventMsg    struct{ ev setup.Event }
	flowDoneMsg struct {
		err     error
		stage   setup.Stage
		summary setup.Summary
		hint    string
	}

	prereqQ   struct{ checks []setup.Check }
	passwordQ struct{ user, host string }
	endedQ    struct {
		phase setup.Phase
		err   error
	}
)

type bridge struct {
	msgs chan tea.Msg
	gone chan struct{} // closed when the model quit
	flow *setup.Flow
}

func (b *bridge) send(msg tea.Msg) bool {
	select {
	case b.msgs <- msg:
		return true
	case <-b.gone:
		return false
	}
}

func askFor[T any](ctx context.Context, b *bridge, q any) (T, error) {
	var zero T
	reply := make(chan answerMsg, 1)
	if !b.send(askMsg{q: q, reply: reply}) {
		return zero, context.Canceled
	}
	select {
	case a := <-reply:
		v, _ := a.v.(T)
		return v, a.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (b *bridge) Prerequisites(ctx context.Context, checks []setup.Check) (bool, error) {
	return askFor[bool](ctx, b, prereqQ{checks})
}

func (b *bridge) API(ctx context.Context, q setup.APIQuestion) (setup.APIAnswer, error) {
	return askFor[setup.APIAnswer](ctx, b, q)
}

func (b *bridge) Backend(ctx context.Context, q setup.BackendQuestion) (string, error) {
	return askFor[string](ctx, b, q)
}

func (b *bridge) Cloud(ctx context.Context, q setup.CloudQuestion) (setup.CloudChoice, error) {
	return askFor[setup.CloudChoice](ctx, b, q)
}

func (b *bridge) SSH(ctx context.Context, q setup.SSHQuestion) (setup.SSHAnswer, error) {
	return askFor[setup.SSHAnswer](ctx, b, q)
}

func (b *bridge) Password(ctx context.Context, user, host string) (string, error) {
	return askFor[string](ctx, b, passwordQ{user, host})
}

func (b *bridge) ConfirmHostKey(ctx context.Context, q setup.HostKeyQuestion) (bool, error) {
	return askFor[bool](ctx, b, q)
}

func (b *bridge) Choose(ctx context.Context, q setup.ChoiceQuestion) (setup.Choices, error) {
	return askFor[setup.Choices](ctx, b, q)
}

func (b *bridge) Gateway(ctx context.Context, q setup.GatewayQuestion) (setup.GatewayAnswer, error) {
	return askFor[setup.GatewayAnswer](ctx, b, q)
}

func (b *bridge) Delegate(ctx context.Context, q setup.DelegationQuestion) (string, error) {
	return askFor[string](ctx, b, q)
}

func (b *bridge) Started(phase setup.Phase, steps []setup.Step) {
	b.send(startedMsg{phase, steps, b.flow.Summary().Answers})
}

func (b *bridge) Event(e setup.Event) { b.send(eventMsg{e}) }

func (b *bridge) Ended(ctx context.Context, phase setup.Phase, err error) (bool, error) {
	return askFor[bool](ctx, b, endedQ{phase, err})
}
