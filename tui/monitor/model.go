package monitor

import (
	"context"
	"os"
	"time"

	"github.com/charmbracelet/bubbles/spinner"
	"github.com/charmbracelet/bubbles/viewport"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/doctor"
)

// screen is what the monitor shows.
type screen int

const (
	screenMain screen = iota
	screenLogs
	screenDoctor
)

// Model is the monitor's bubbletea model. Create it with New; it is used by
// pointer (Update returns the same *Model).
type Model struct {
	o          Options
	cfgProblem string
	st         styles

	ctx    context.Context
	cancel context.CancelFunc
	// stream carries the socket watcher's messages (see watch).
	stream  chan tea.Msg
	started bool

	width, height int
	plain         bool // line mode (TERM=dumb): no padding, no key line
	screen        screen
	now           time.Time

	// The local agent, from the status socket.
	state        *status.State
	stateErr     error
	stateAt      time.Time // when state or stateErr last arrived
	stateBusy    bool
	connected    bool // the event stream is open
	streamErr    error
	reconnectIn  time.Duration
	events       []status.Event
	results      []status.Event // provisioned, failed, terminated: newest last
	agentChanged bool           // a different agent process answered after a reconnect

	// The Decent Cloud API.
	apiStatus *dcapi.AgentStatus
	apiErr    error
	health    *dcapi.HealthSummary
	healthErr error
	apiAt     time.Time
	apiBusy   bool
	apiAgain  bool // ask again when the answer in flight arrives

	// The log view.
	logs        viewport.Model
	logLines    []string
	logNote     string // why the view shows what it shows
	logsLoading bool

	// The doctor view.
	doc        viewport.Model
	spin       spinner.Model
	docBusy    bool
	docReport  *doctor.Report
	docStarted time.Time
	docTook    time.Duration
}

// Messages.
type (
	tickMsg  time.Time
	stateMsg struct {
		state status.State
		err   error
	}
	eventMsg    struct{ ev status.Event }
	streamUpMsg struct{ newAgent bool }
	// streamDownMsg: the socket does not answer or the stream ended; the
	// watcher retries after retryIn.
	streamDownMsg struct {
		err     error
		retryIn time.Duration
	}
	apiMsg struct {
		status    dcapi.AgentStatus
		statusErr error
		health    dcapi.HealthSummary
		healthErr error
	}
	logsMsg struct {
		lines []string
		err   error
	}
	doctorMsg struct {
		report doctor.Report
		took   time.Duration
	}
	// fromStream wraps what the watcher sends, so Update knows to wait for
	// the next one.
	fromStream struct{ msg tea.Msg }
)

// New returns the monitor for o. Its Init starts watching the socket and
// asks the API; Close (or quitting) stops the watcher.
func New(o Options) *Model {
	o, problem := o.withDefaults()
	ctx, cancel := context.WithCancel(context.Background())
	m := &Model{
		o: o, cfgProblem: problem, st: newStyles(o.Renderer),
		ctx: ctx, cancel: cancel, stream: make(chan tea.Msg, 64),
		width: 80, height: 24, now: o.Now(),
		logs: viewport.New(80, 20), doc: viewport.New(80, 20),
		spin: spinner.New(spinner.WithSpinner(spinner.Line)),
	}
	return m
}

// Close stops watching the socket. The service is not touched.
func (m *Model) Close() { m.cancel() }

// Init implements tea.Model.
func (m *Model) Init() tea.Cmd {
	cmds := []tea.Cmd{m.fetchAPI(), m.waitStream()}
	if !m.started {
		m.started = true
		go m.watch()
	}
	if m.o.Tick > 0 {
		cmds = append(cmds, m.tick())
	}
	return tea.Batch(cmds...)
}

func (m *Model) tick() tea.Cmd {
	return tea.Tick(m.o.Tick, func(t time.Time) tea.Msg { return tickMsg(t) })
}

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.resizeViews()
		return m, nil
	case tea.KeyMsg:
		return m.key(msg)
	case fromStream:
		_, cmd := m.Update(msg.msg)
		return m, tea.Batch(cmd, m.waitStream())
	case tickMsg:
		m.now = m.o.Now()
		var cmds []tea.Cmd
		if !m.stateBusy && m.now.Sub(m.stateAt) >= m.o.StateEvery {
			cmds = append(cmds, m.fetchState())
		}
		if m.o.API != nil && !m.apiBusy && m.now.Sub(m.apiAt) >= m.o.APIEvery {
			cmds = append(cmds, m.fetchAPI())
		}
		return m, tea.Batch(append(cmds, m.tick())...)
	case stateMsg:
		m.stateBusy = false
		if msg.err != nil && m.ctx.Err() != nil {
			// The monitor is closing: the fetch was cancelled by us,
			// which says nothing about the agent.
			return m, nil
		}
		m.stateAt = m.o.Now()
		if msg.err != nil {
			m.stateErr = msg.err
			return m, nil
		}
		st := cleanState(msg.state)
		m.state, m.stateErr = &st, nil
		return m, nil
	case eventMsg:
		m.addEvent(msg.ev)
		// The event changed something: refresh the numbers (coalesced).
		var cmds []tea.Cmd
		if !m.stateBusy {
			cmds = append(cmds, m.fetchState())
		}
		// A heartbeat the API accepted changes what the API says: ask it
		// now rather than at the next period (again after an answer in
		// flight, which may predate the heartbeat).
		if m.o.API != nil && (msg.ev.Kind == status.EventHeartbeat || msg.ev.Kind == status.EventReady) {
			if m.apiBusy {
				m.apiAgain = true
			} else {
				cmds = append(cmds, m.fetchAPI())
			}
		}
		return m, tea.Batch(cmds...)
	case streamUpMsg:
		m.connected, m.streamErr, m.reconnectIn = true, nil, 0
		if msg.newAgent && len(m.events) > 0 {
			m.agentChanged = true
		}
		return m, nil
	case streamDownMsg:
		m.connected, m.streamErr, m.reconnectIn = false, msg.err, msg.retryIn
		return m, nil
	case apiMsg:
		m.apiBusy = false
		if m.ctx.Err() != nil {
			return m, nil // closing: a cancelled request says nothing
		}
		m.apiAt = m.o.Now()
		var again tea.Cmd
		if m.apiAgain {
			m.apiAgain = false
			again = m.fetchAPI()
		}
		m.apiErr, m.healthErr = msg.statusErr, msg.healthErr
		if msg.statusErr == nil {
			s := cleanAgentStatus(msg.status)
			m.apiStatus = &s
		}
		if msg.healthErr == nil {
			h := msg.health
			m.health = &h
		}
		return m, again
	case logsMsg:
		m.logsLoading = false
		m.setLogs(msg.lines, msg.err)
		return m, nil
	case doctorMsg:
		m.docBusy = false
		r := cleanReport(msg.report)
		m.docReport, m.docTook = &r, msg.took
		m.doc.SetContent(m.doctorText())
		m.doc.GotoTop()
		return m, nil
	case spinner.TickMsg:
		if !m.docBusy {
			return m, nil
		}
		var cmd tea.Cmd
		m.spin, cmd = m.spin.Update(msg)
		return m, cmd
	}
	return m, nil
}

func (m *Model) key(k tea.KeyMsg) (tea.Model, tea.Cmd) {
	if k.Type == tea.KeyCtrlC {
		m.Close()
		return m, tea.Quit
	}
	switch m.screen {
	case screenLogs, screenDoctor:
		switch k.String() {
		case "esc", "q", "backspace", "left", "h":
			m.screen = screenMain
			return m, nil
		case "r":
			if m.screen == screenLogs {
				return m, m.loadLogs()
			}
			return m, m.runDoctor()
		case "d":
			return m, m.runDoctor()
		case "l":
			return m, m.loadLogs()
		}
		var cmd tea.Cmd
		if m.screen == screenLogs {
			m.logs, cmd = m.logs.Update(k)
		} else {
			m.doc, cmd = m.doc.Update(k)
		}
		return m, cmd
	}
	switch k.String() {
	case "q":
		m.Close()
		return m, tea.Quit
	case "r":
		cmds := []tea.Cmd{}
		if !m.stateBusy {
			cmds = append(cmds, m.fetchState())
		}
		if m.o.API != nil && !m.apiBusy {
			cmds = append(cmds, m.fetchAPI())
		}
		m.now = m.o.Now()
		return m, tea.Batch(cmds...)
	case "l":
		return m, m.loadLogs()
	case "d":
		return m, m.runDoctor()
	}
	return m, nil
}

// addEvent keeps the history bounded and the results apart.
func (m *Model) addEvent(ev status.Event) {
	ev = cleanEvent(ev)
	m.events = append(m.events, ev)
	if len(m.events) > maxEvents {
		m.events = append(m.events[:0:0], m.events[len(m.events)-maxEvents:]...)
	}
	switch ev.Kind {
	case status.EventProvisioned, status.EventProvisionFailed, status.EventTerminated, status.EventReportDropped:
		m.results = append(m.results, ev)
		if len(m.results) > 20 {
			m.results = m.results[len(m.results)-20:]
		}
	}
	if m.screen == screenLogs && m.logNote != "" && len(m.logLines) == 0 {
		m.logs.SetContent(m.eventLogText())
	}
}

func (m *Model) resizeViews() {
	h := max(m.height-4, 1) // title, rule, rule, key line
	w := max(m.width, 1)
	m.logs.Width, m.logs.Height = w, h
	m.doc.Width, m.doc.Height = w, h
	if m.docReport != nil {
		m.doc.SetContent(m.doctorText())
	}
	if m.screen == screenLogs {
		m.logs.SetContent(m.logsText())
	}
}

// fetchState reads the socket's state once.
func (m *Model) fetchState() tea.Cmd {
	m.stateBusy = true
	src, ctx := m.o.Status, m.ctx
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		st, err := src.State(cctx)
		return stateMsg{state: st, err: err}
	}
}

// fetchAPI asks the API for agent-status and the health summary.
func (m *Model) fetchAPI() tea.Cmd {
	api := m.o.API
	if api == nil {
		return nil
	}
	m.apiBusy = true
	ctx, days := m.ctx, m.o.HealthDays
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		var out apiMsg
		out.status, out.statusErr = api.AgentStatus(cctx)
		out.health, out.healthErr = api.HealthSummary(cctx, days)
		return out
	}
}

func (m *Model) loadLogs() tea.Cmd {
	m.screen = screenLogs
	m.logsLoading = true
	m.resizeViews()
	m.logs.SetContent("loading the log…")
	logs, ctx := m.o.Logs, m.ctx
	return func() tea.Msg {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		lines, err := logs(cctx, logLines)
		return logsMsg{lines: lines, err: err}
	}
}

func (m *Model) setLogs(lines []string, err error) {
	m.logLines, m.logNote = nil, ""
	switch {
	case err != nil:
		m.logNote = "service log unavailable (" + err.Error() + "); showing the agent's events from the status socket"
	case len(lines) == 0:
		m.logNote = "the journal has no lines for " + m.o.Unit + ".service"
		if os.Geteuid() != 0 {
			m.logNote += " that you may read (root or the systemd-journal group may)"
		}
		m.logNote += "; showing the agent's events from the status socket"
	default:
		m.logLines = lines
	}
	m.logs.SetContent(m.logsText())
	m.logs.GotoBottom()
}

func (m *Model) runDoctor() tea.Cmd {
	m.screen = screenDoctor
	m.resizeViews()
	if m.docBusy {
		return nil
	}
	m.docBusy = true
	m.docStarted = m.o.Now()
	run, ctx, now := m.o.Doctor, m.ctx, m.o.Now
	return tea.Batch(m.spin.Tick, func() tea.Msg {
		start := now()
		r := run(ctx)
		return doctorMsg{report: r, took: now().Sub(start)}
	})
}

// waitStream delivers the watcher's next message.
func (m *Model) waitStream() tea.Cmd {
	ch, ctx := m.stream, m.ctx
	return func() tea.Msg {
		select {
		case msg := <-ch:
			return fromStream{msg}
		case <-ctx.Done():
			return nil
		}
	}
}

// watch follows the socket's event stream until Close, reconnecting with
// backoff while the agent is away (stopped, restarting, not installed).
func (m *Model) watch() {
	ctx, src := m.ctx, m.o.Status
	send := func(msg tea.Msg) bool {
		select {
		case m.stream <- msg:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var since uint64
	var agentID string
	backoff := m.o.ReconnectMin
	for ctx.Err() == nil {
		cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		st, err := src.State(cctx)
		cancel()
		if err == nil {
			id := st.StartedAt.String() + "/" + itoa(st.PID)
			newAgent := agentID != "" && id != agentID
			if id != agentID {
				since = 0 // a new process numbers its events from 1 again
				agentID = id
			}
			if !send(stateMsg{state: st}) || !send(streamUpMsg{newAgent: newAgent}) {
				return
			}
			backoff = m.o.ReconnectMin
			err = src.Events(ctx, since, func(ev status.Event) error {
				since = ev.Seq
				if !send(eventMsg{ev}) {
					return ctx.Err()
				}
				return nil
			})
		} else if !send(stateMsg{err: err}) {
			return
		}
		if ctx.Err() != nil {
			return
		}
		if !send(streamDownMsg{err: err, retryIn: backoff}) {
			return
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, m.o.ReconnectMax)
	}
}
