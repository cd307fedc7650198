package monitor

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/charmbracelet/x/ansi"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/doctor"
	"github.com/decent-stuff/dc-agent/internal/termtext"
)

// View implements tea.Model: the screen, never taller or wider than the
// terminal.
func (m *Model) View() string {
	switch m.screen {
	case screenLogs:
		return m.logsView()
	case screenDoctor:
		return m.doctorView()
	}
	return m.mainView()
}

func (m *Model) mainView() string {
	w, h := max(m.width, 20), max(m.height, 5)
	s := m.st
	head := m.titleLine("dc-agent monitor", w)
	keys := s.key.Render("r") + " refresh  " + s.key.Render("l") + " logs  " + s.key.Render("d") + " doctor  " +
		s.key.Render("q") + " quit " + s.dim.Render("(the service keeps running)")

	var body []string
	add := func(lines ...string) { body = append(body, lines...) }
	// Status lines and problems wrap (their fixes must be readable whole);
	// work, results and events are one line each.
	wrap := func(lines ...string) {
		for _, l := range lines {
			add(hang(l, w, 12)...)
		}
	}
	wrap(m.verdictLines()...)
	wrap(m.agentLines()...)
	if m.cfgProblem != "" {
		wrap(s.warn.Render("Config      ") + oneLine(m.cfgProblem))
	}
	add(m.workLines()...)
	add(m.gatewayLines()...)
	wrap(m.problemLines()...)
	add(m.resultLines()...)

	avail := h - 3 // title, rule, key line
	if len(body) > avail {
		body = body[:avail]
	}
	if room := avail - len(body) - 2; room > 0 {
		add("", s.label.Render("Events")+m.streamNote())
		evs := m.events
		if len(evs) > room {
			evs = evs[len(evs)-room:]
		}
		if len(evs) == 0 {
			add(s.dim.Render("  none yet"))
		}
		for _, ev := range evs {
			add("  " + m.eventLine(ev))
		}
	}
	out := make([]string, 0, h)
	out = append(out, head, s.dim.Render(strings.Repeat("─", w)))
	for _, l := range body {
		out = append(out, ansi.Truncate(l, w, "…"))
	}
	if m.plain {
		return strings.Join(out, "\n")
	}
	for len(out) < h-1 {
		out = append(out, "")
	}
	out = append(out, ansi.Truncate(keys, w, "…"))
	return strings.Join(out, "\n")
}

// titleLine puts name and the provider on the left, the time on the right.
func (m *Model) titleLine(name string, w int) string {
	left := m.st.title.Render(name)
	if p := m.provider(); p != "" {
		left += m.st.dim.Render("  provider " + abbrev(p))
	}
	right := m.now.Format("15:04:05")
	gap := w - ansi.StringWidth(left) - len(right)
	if gap < 1 {
		return ansi.Truncate(left, w, "…")
	}
	return left + strings.Repeat(" ", gap) + right
}

func (m *Model) provider() string {
	if m.state != nil && m.state.Provider != "" {
		return m.state.Provider
	}
	if m.o.Config != nil {
		return m.o.Config.API.ProviderPubkey
	}
	return ""
}

// verdictLines say online or offline, and which source said what.
func (m *Model) verdictLines() []string {
	s := m.st
	var verdict string
	switch {
	case m.apiStatus != nil && m.apiErr == nil && m.apiStatus.Online:
		verdict = s.ok.Render("ONLINE") + "   the API sees the provider online"
	case m.apiStatus != nil && m.apiErr == nil:
		verdict = s.bad.Render("OFFLINE") + "  the API has had no heartbeat in the last 5 minutes"
	case m.state != nil && m.stateErr == nil && m.state.Online:
		verdict = s.ok.Render("ONLINE") + "   per the local agent (its last heartbeat was accepted)"
	case m.state != nil && m.stateErr == nil:
		verdict = s.bad.Render("OFFLINE") + "  per the local agent (no heartbeat accepted recently)"
	case m.stateErr != nil && (m.o.API == nil || m.apiErr != nil):
		verdict = s.bad.Render("OFFLINE") + "  the agent is not answering"
	default:
		verdict = s.dim.Render("checking…")
	}
	return []string{s.label.Render("Status      ") + verdict}
}

// agentLines: what the API says, what the local agent says, then the
// provisioner and the counts.
func (m *Model) agentLines() []string {
	s := m.st
	var out []string

	// The API's view.
	api := s.label.Render("  API       ")
	switch {
	case m.o.API == nil:
		api += s.dim.Render("not asked (no usable config)")
	case m.apiErr != nil:
		api += s.warn.Render("unreachable: ") + oneLine(m.apiErr.Error())
	case m.apiStatus == nil:
		api += s.dim.Render("asking…")
	default:
		a := m.apiStatus
		word := s.ok.Render("online")
		if !a.Online {
			word = s.bad.Render("offline")
		}
		api += word
		if a.LastHeartbeatNs != nil {
			api += ", last heartbeat " + m.ago(time.Unix(0, *a.LastHeartbeatNs))
		} else {
			api += ", never a heartbeat"
		}
		if a.Version != nil && *a.Version != "" {
			api += ", " + version(*a.Version)
		}
		api += fmt.Sprintf(", %d active", a.ActiveContracts)
	}
	out = append(out, api)
	if m.apiStatus != nil && m.apiErr == nil && len(m.apiStatus.Agents) > 0 {
		self := ""
		if m.state != nil {
			self = m.state.AgentPubkey
		}
		out = append(out, s.label.Render("  agents    ")+"of this provider: "+strings.Join(ProviderAgents(m.apiStatus.Agents, self, m.now), "; "))
	}

	// The local agent's view.
	local := s.label.Render("  local     ")
	switch {
	case m.stateErr != nil:
		local += m.notRunning(m.stateErr)
	case m.state == nil:
		local += s.dim.Render("connecting to " + m.o.StatusSocket + "…")
	default:
		st := m.state
		local += s.ok.Render(st.Phase)
		if !st.StartedAt.IsZero() {
			local += " " + age(m.now.Sub(st.StartedAt))
		}
		local += fmt.Sprintf(", pid %d", st.PID)
		if st.Version != "" {
			local += ", " + version(st.Version)
		}
		if st.LastHeartbeat != nil {
			local += ", heartbeat accepted " + m.ago(*st.LastHeartbeat)
		} else {
			local += ", " + s.warn.Render("no heartbeat accepted yet")
		}
	}
	out = append(out, local)
	if m.stateErr == nil && m.state != nil && !m.connected && m.streamErr != nil {
		out = append(out, s.dim.Render("            event stream lost; reconnecting"))
	}
	if m.agentChanged {
		out = append(out, s.dim.Render("            the agent restarted while you watched (new process)"))
	}

	if m.state != nil && m.stateErr == nil {
		st := m.state
		for _, p := range st.Provisioners {
			line := s.label.Render("Provisioner ") + p.Type
			if p.Default && len(st.Provisioners) > 1 {
				line += " (default)"
			}
			line += fmt.Sprintf(", %d/%d in flight", p.InFlight, p.MaxConcurrent)
			if len(p.Features) > 0 {
				line += s.dim.Render(", can: " + strings.Join(p.Features, " "))
			}
			out = append(out, line)
		}
		c := st.Counts
		out = append(out,
			s.label.Render("Contracts   ")+fmt.Sprintf("%d active, %d provisioning, %d queued, %d reports pending", c.Active, c.Provisioning, c.Queued, c.Outbox),
			s.label.Render("Since start ")+fmt.Sprintf("%d provisioned, %d failed, %d terminated, %d health checks", c.Provisioned, c.Failed, c.Terminated, c.HealthChecks))
		if p := st.Pool; p != nil {
			name := p.ID
			if p.Name != "" && p.Name != p.ID {
				name = p.Name + " (" + p.ID + ")"
			}
			out = append(out, s.label.Render("Pool        ")+name)
		}
		if u := st.Upgrade; u != nil {
			line := s.label.Render("Upgrade     ") + s.warn.Render(version(u.Version)) + " requested by the API"
			switch u.State {
			case status.UpgradeStarted:
				line += ": upgrading"
			case status.UpgradeFailed:
				line += ": " + s.bad.Render("could not start")
			}
			if u.Note != "" {
				line += " — " + u.Note
			}
			out = append(out, line)
		}
		if len(st.Ending) > 0 {
			next := st.Ending[0]
			line := s.label.Render("Next end    ") + abbrevID(next.ContractID)
			if next.EndsAt != nil {
				line += " ends " + next.EndsAt.Local().Format("2006-01-02 15:04") + " (in " + age(next.EndsAt.Sub(m.now)) + ")"
			}
			if len(st.Ending) > 1 {
				line += s.dim.Render(fmt.Sprintf("; %d more live", len(st.Ending)-1))
			}
			out = append(out, line)
		}
		for _, p := range st.Paused {
			out = append(out, s.warn.Render("Paused      ")+abbrevID(p.ContractID)+" "+p.ExternalID+" stopped "+m.ago(p.Since)+": "+oneLine(p.Reason)+
				s.dim.Render(" (kept; started when the contract resumes)"))
		}
	}
	out = append(out, m.uptimeLine())
	return out
}

func (m *Model) uptimeLine() string {
	s := m.st
	line := s.label.Render(fmt.Sprintf("Uptime %-4s ", strconv.Itoa(m.o.HealthDays)+"d"))
	switch {
	case m.o.API == nil:
		return line + s.dim.Render("unknown (the API is not configured)")
	case m.healthErr != nil && m.apiErr != nil && m.healthErr.Error() == m.apiErr.Error():
		return line + s.warn.Render("unknown") + " (the API is unreachable)"
	case m.healthErr != nil:
		return line + s.warn.Render("unknown: ") + oneLine(m.healthErr.Error())
	case m.health == nil:
		return line + s.dim.Render("asking…")
	}
	h := m.health
	if h.TotalChecks == 0 {
		return line + "no health checks reported yet"
	}
	line += fmt.Sprintf("%.1f%% healthy (%d of %d checks, %d contracts", h.UptimePercent, h.HealthyChecks, h.TotalChecks, h.ContractsMonitored)
	if h.AvgLatencyMs != nil {
		line += fmt.Sprintf(", avg %.0f ms", *h.AvgLatencyMs)
	}
	return line + ")"
}

// notRunning explains a socket that does not answer and how to fix it.
func (m *Model) notRunning(err error) string {
	s := m.st
	retry := ""
	if m.reconnectIn > 0 {
		retry = s.dim.Render(fmt.Sprintf(" (next try in %s)", m.reconnectIn.Round(time.Millisecond)))
	}
	if errors.Is(err, status.ErrNotRunning) {
		return s.bad.Render("agent not running") + " — start it with: sudo systemctl start " + m.o.Unit + retry
	}
	return s.bad.Render("no answer: ") + oneLine(err.Error()) + retry
}

func (m *Model) workLines() []string {
	if m.state == nil || m.stateErr != nil || len(m.state.Work) == 0 {
		return nil
	}
	s := m.st
	out := []string{"", s.label.Render(fmt.Sprintf("In flight (%d)", len(m.state.Work)))}
	for i, w := range m.state.Work {
		if i == 5 {
			out = append(out, s.dim.Render(fmt.Sprintf("  … and %d more", len(m.state.Work)-5)))
			break
		}
		step := w.Step
		if w.Detail != "" {
			step += ": " + w.Detail
		}
		if w.Resumed {
			step += " (resumed)"
		}
		out = append(out, "  "+pad(abbrevID(w.ContractID), 15)+pad(w.Provisioner, 9)+pad(ansi.Truncate(step, 30, "…"), 31)+age(m.now.Sub(w.StartedAt)))
	}
	return out
}

// gatewayLines lists the VMs reached through the gateway: name and SSH.
func (m *Model) gatewayLines() []string {
	if m.state == nil || m.stateErr != nil || len(m.state.Gateways) == 0 {
		return nil
	}
	s := m.st
	gws := m.state.Gateways
	out := []string{"", s.label.Render(fmt.Sprintf("Gateway (%d)", len(gws)))}
	for i, g := range gws {
		if i == 5 {
			out = append(out, s.dim.Render(fmt.Sprintf("  … and %d more (dc-agent status)", len(gws)-5)))
			break
		}
		name := g.Subdomain
		if name == "" {
			name = "—"
		}
		line := "  " + pad(abbrevID(g.ContractID), 15) + pad(ansi.Truncate(name, 44, "…"), 45) + fmt.Sprintf("ssh -p %d %s", g.SSHPort, g.PublicIP)
		if g.State != "active" {
			line += s.warn.Render(" (" + g.State + ")")
		}
		out = append(out, line)
	}
	return out
}

// problemLines: what a human must fix (with the fix), then loops that are
// retrying or stopped and not already explained by a problem.
func (m *Model) problemLines() []string {
	if m.state == nil || m.stateErr != nil {
		return nil
	}
	s := m.st
	var out []string
	explained := map[string]bool{}
	for _, p := range m.state.Problems {
		out = append(out, "  ! "+p.Message)
		if p.Fix != "" {
			out = append(out, "    fix: "+p.Fix)
		}
		if p.Loop != "" {
			explained[p.Loop] = true
		}
	}
	for _, l := range m.state.Loops {
		if l.State == status.LoopRunning || l.State == "" || explained[l.Name] {
			continue
		}
		word := l.State
		if l.State == status.LoopBackoff {
			word = "retrying (backoff)"
		}
		line := fmt.Sprintf("  ! %s loop %s", l.Name, word)
		if l.Failures > 0 {
			line += fmt.Sprintf(" after %d failures", l.Failures)
		}
		if l.LastError != "" {
			line += ": " + l.LastError
		}
		if l.NextAttempt != nil {
			if d := l.NextAttempt.Sub(m.now); d > 0 {
				line += "; next try in " + age(d)
			}
		}
		out = append(out, line)
	}
	if len(out) == 0 {
		return nil
	}
	return append([]string{"", s.bad.Render("Problems")}, out...)
}

func (m *Model) resultLines() []string {
	if len(m.results) == 0 {
		return nil
	}
	out := []string{"", m.st.label.Render("Recent results")}
	rs := m.results
	if len(rs) > 3 {
		rs = rs[len(rs)-3:]
	}
	for _, ev := range rs {
		out = append(out, "  "+m.eventLine(ev))
	}
	return out
}

func (m *Model) streamNote() string {
	switch {
	case m.connected:
		return m.st.dim.Render(" (live from the status socket)")
	case m.streamErr != nil || m.stateErr != nil:
		return m.st.dim.Render(" (stream down; reconnecting)")
	}
	return ""
}

// eventLine is one event as a log line.
func (m *Model) eventLine(ev status.Event) string {
	s := m.st
	var b strings.Builder
	b.WriteString(ev.Time.In(m.now.Location()).Format("15:04:05"))
	lvl := fmt.Sprintf(" %-5s", ev.Level)
	switch ev.Level {
	case status.LevelError:
		lvl = s.bad.Render(lvl)
	case status.LevelWarn:
		lvl = s.warn.Render(lvl)
	}
	b.WriteString(lvl)
	if ev.ContractID != "" {
		b.WriteString(" " + abbrevID(ev.ContractID))
	}
	b.WriteString(" " + oneLine(ev.Message))
	return b.String()
}

func (m *Model) logsView() string {
	w, h := max(m.width, 20), max(m.height, 5)
	s := m.st
	title := "dc-agent log"
	switch {
	case m.logsLoading:
	case len(m.logLines) > 0:
		title += s.dim.Render("  journalctl -u " + m.o.Unit + " (last " + strconv.Itoa(logLines) + " lines)")
	default:
		title += s.dim.Render("  events from the status socket")
	}
	out := []string{m.titleLine(title, w), s.dim.Render(strings.Repeat("─", w))}
	if m.logNote != "" {
		// The note takes a line of the viewport's room.
		out = append(out, ansi.Truncate(s.warn.Render(m.logNote), w, "…"))
		m.logs.Height = max(h-5, 1)
	} else {
		m.logs.Height = max(h-4, 1)
	}
	out = append(out, m.logs.View())
	out = append(out, s.dim.Render(strings.Repeat("─", w)))
	keys := fmt.Sprintf("%s scroll  %s reload  %s back  %s quit  %3.0f%%",
		s.key.Render("↑/↓ pgup/pgdn"), s.key.Render("r"), s.key.Render("esc"), s.key.Render("ctrl-c"), m.logs.ScrollPercent()*100)
	out = append(out, ansi.Truncate(keys, w, "…"))
	return strings.Join(out, "\n")
}

// logsText is the log view's content, wrapped to the width.
func (m *Model) logsText() string {
	if len(m.logLines) > 0 {
		lines := make([]string, len(m.logLines))
		for i, l := range m.logLines {
			lines[i] = clean(l)
		}
		return wrapIndentN(strings.Join(lines, "\n"), max(m.logs.Width, 1), 4)
	}
	return m.eventLogText()
}

func (m *Model) eventLogText() string {
	if len(m.events) == 0 {
		return "no events received from the agent yet"
	}
	lines := make([]string, len(m.events))
	for i, ev := range m.events {
		lines[i] = m.eventLine(ev)
	}
	return wrapIndentN(strings.Join(lines, "\n"), max(m.logs.Width, 1), 4)
}

func (m *Model) doctorView() string {
	w, h := max(m.width, 20), max(m.height, 5)
	s := m.st
	out := []string{m.titleLine("dc-agent doctor", w), s.dim.Render(strings.Repeat("─", w))}
	if m.docBusy {
		out = append(out, m.spin.View()+" running the checks (config, key, delegation, backend, API)… "+
			s.dim.Render(age(m.o.Now().Sub(m.docStarted))))
		for len(out) < h-1 {
			out = append(out, "")
		}
	} else {
		m.doc.Height = max(h-4, 1)
		out = append(out, m.doc.View(), s.dim.Render(strings.Repeat("─", w)))
	}
	keys := fmt.Sprintf("%s scroll  %s run again  %s back  %s quit", s.key.Render("↑/↓"), s.key.Render("r"), s.key.Render("esc"), s.key.Render("ctrl-c"))
	out = append(out, ansi.Truncate(keys, w, "…"))
	return strings.Join(out, "\n")
}

// doctorText is the doctor report as lines, wrapped to the width.
func (m *Model) doctorText() string {
	if m.docReport == nil {
		return ""
	}
	s := m.st
	r := m.docReport
	var lines []string
	for _, f := range r.Findings {
		word := strings.ToUpper(string(f.Status))
		switch f.Status {
		case doctor.OK:
			word = s.ok.Render(fmt.Sprintf("%-4s", word))
		case doctor.Fail:
			word = s.bad.Render(fmt.Sprintf("%-4s", word))
		case doctor.Warn:
			word = s.warn.Render(fmt.Sprintf("%-4s", word))
		default:
			word = s.dim.Render(fmt.Sprintf("%-4s", word))
		}
		lines = append(lines, fmt.Sprintf("%s  %-11s %s", word, f.Check, f.Message))
		if f.Fix != "" && (f.Status == doctor.Fail || f.Status == doctor.Warn) {
			lines = append(lines, "      fix: "+f.Fix)
		}
	}
	fails, warns := r.Count(doctor.Fail), r.Count(doctor.Warn)
	lines = append(lines, "")
	switch {
	case fails > 0:
		lines = append(lines, s.bad.Render(fmt.Sprintf("%d failed, %d warning(s)", fails, warns))+": fix the failures above, then run the checks again")
	case warns > 0:
		lines = append(lines, s.warn.Render(fmt.Sprintf("all checks passed with %d warning(s)", warns)))
	default:
		lines = append(lines, s.ok.Render("all checks passed"))
	}
	lines = append(lines, s.dim.Render("took "+m.docTook.Round(time.Millisecond).String()+"; the same checks: dc-agent doctor --verify-api"))
	// Continuations sit under the message column.
	return wrapIndentN(strings.Join(lines, "\n"), max(m.doc.Width, 1), 18)
}

// hang wraps l to w columns. Continuation lines are indented by indent,
// or under the text of an indented line ("      fix: " lines continue
// under the fix).
func hang(l string, w, indent int) []string {
	if ansi.StringWidth(l) <= w || w <= indent+10 {
		return []string{l}
	}
	body := strings.TrimLeft(l, " ")
	lead := len(l) - len(body)
	cont := max(indent, lead)
	switch {
	case strings.HasPrefix(body, "fix: "):
		cont = lead + len("fix: ")
	case strings.HasPrefix(body, "! "):
		cont = lead + len("! ")
	}
	first := wordWrap(body, w-lead)
	out := []string{strings.Repeat(" ", lead) + first[0]}
	rest := strings.Join(first[1:], " ")
	for _, p := range wordWrap(rest, w-cont) {
		out = append(out, strings.Repeat(" ", cont)+p)
	}
	return out
}

// wordWrap breaks s at spaces only (commands with hyphens and paths stay
// whole for copying); a word longer than w is cut.
func wordWrap(s string, w int) []string {
	var out []string
	var line string
	lw, started := 0, false // a line may start with zero-width styling
	for _, word := range strings.Split(s, " ") {
		ww := ansi.StringWidth(word)
		if started && lw+1+ww <= w {
			line, lw = line+" "+word, lw+1+ww
			continue
		}
		if started {
			out = append(out, line)
		}
		for ww > w {
			out = append(out, ansi.Truncate(word, w, ""))
			word = ansi.TruncateLeft(word, w, "")
			ww = ansi.StringWidth(word)
		}
		line, lw, started = word, ww, true
	}
	return append(out, line)
}

// wrapIndentN wraps each line of text to w (see hang).
func wrapIndentN(text string, w, indent int) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		out = append(out, hang(l, w, indent)...)
	}
	return strings.Join(out, "\n")
}

// ago is a time as "12s ago" from the monitor's clock.
func (m *Model) ago(t time.Time) string {
	d := m.now.Sub(t)
	if d < 0 {
		return "just now"
	}
	return age(d) + " ago"
}

// age is a short duration: 12s, 3m04s, 1h02m, 2d03h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd%02dh", int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour))
}

// abbrev shortens a 64-hex key to its ends.
func abbrev(k string) string {
	if len(k) > 16 && utf8.ValidString(k) && len(k) == utf8.RuneCountInString(k) {
		return k[:8] + "…" + k[len(k)-4:]
	}
	return ansi.Truncate(k, 16, "…")
}

// abbrevID shortens a contract id.
func abbrevID(id string) string {
	if ansi.StringWidth(id) > 12 {
		return ansi.Truncate(id, 12, "") + "…"
	}
	return id
}

// oneLine keeps an error or message on one screen line, with nothing in
// it that the terminal would take as a command.
func oneLine(s string) string {
	return strings.Join(strings.Fields(clean(s)), " ")
}

// clean makes outside text (event messages, backend errors, journal lines)
// safe to draw.
func clean(s string) string { return termtext.Clean(s) }

// version is "v1.2.3" for a release, the word itself for "dev" builds.
func version(v string) string {
	if v != "" && v[0] >= '0' && v[0] <= '9' {
		return "v" + v
	}
	return v
}

// pad fills s with spaces to n columns (by display width, not bytes).
func pad(s string, n int) string {
	if w := ansi.StringWidth(s); w < n {
		return s + strings.Repeat(" ", n-w)
	}
	return s + " "
}

func itoa(n int) string { return strconv.Itoa(n) }
