package service

import (
	"context"
	"fmt"
	"os"
	"strings"
)

// State is what systemd says about the unit.
type State struct {
	Unit string `json:"unit"`
	// UnitFile is the unit file path ("" when not installed).
	UnitFile string `json:"unit_file"`
	// Installed is true when the unit file exists.
	Installed bool `json:"installed"`
	// LoadState, ActiveState, SubState, UnitFileState and Result are
	// systemd's own words (e.g. loaded, active, running, enabled, success).
	LoadState     string `json:"load_state,omitempty"`
	ActiveState   string `json:"active_state,omitempty"`
	SubState      string `json:"sub_state,omitempty"`
	UnitFileState string `json:"unit_file_state,omitempty"`
	Result        string `json:"result,omitempty"`
	// StatusText is the agent's STATUS= line.
	StatusText string `json:"status_text,omitempty"`
	MainPID    int    `json:"main_pid,omitempty"`
	// NRestarts counts automatic restarts (crashes, watchdog).
	NRestarts int `json:"restarts"`
	// Since is when the unit last became active (systemd's format).
	Since string `json:"since,omitempty"`
	// Journal holds the last log lines when the unit is not running.
	Journal []string `json:"journal,omitempty"`
}

// Running reports active (running).
func (s State) Running() bool { return s.ActiveState == "active" && s.SubState == "running" }

func stateFrom(props map[string]string) State {
	return State{
		LoadState: props["LoadState"], ActiveState: props["ActiveState"], SubState: props["SubState"],
		UnitFileState: props["UnitFileState"], Result: props["Result"], StatusText: props["StatusText"],
		MainPID: atoi(props["MainPID"]), NRestarts: atoi(props["NRestarts"]), Since: props["ActiveEnterTimestamp"],
	}
}

// String is the one-line summary `dc-agent service status` prints.
func (s State) String() string {
	if !s.Installed {
		return fmt.Sprintf("%s is not installed (run: sudo dc-agent service install)", s.Unit)
	}
	if s.ActiveState == "" {
		return fmt.Sprintf("%s is installed at %s", s.Unit, s.UnitFile)
	}
	line := fmt.Sprintf("%s: %s (%s), %s", s.Unit, s.ActiveState, s.SubState, orDash(s.UnitFileState))
	if s.Running() {
		line += fmt.Sprintf(", pid %d since %s", s.MainPID, s.Since)
	}
	if s.NRestarts > 0 {
		line += fmt.Sprintf(", %d automatic restarts", s.NRestarts)
	}
	if s.StatusText != "" {
		line += "\n  status: " + s.StatusText
	}
	if len(s.Journal) > 0 {
		line += "\n  last log lines:\n    " + strings.Join(s.Journal, "\n    ")
	}
	return line
}

// Status reports the unit's state; with Root only whether the unit file
// is there.
func Status(ctx context.Context, o Options) (State, error) {
	o, err := o.withDefaults()
	if err != nil {
		return State{}, err
	}
	p, err := o.paths()
	if err != nil {
		return State{}, err
	}
	st := State{Unit: o.unitName()}
	if _, err := os.Stat(p.unit); err == nil {
		st.Installed, st.UnitFile = true, p.unit
	}
	if o.Root != "" {
		return st, nil
	}
	sd := o.systemd()
	props, err := sd.show(ctx, o.unitName())
	if err != nil {
		return st, err
	}
	s := stateFrom(props)
	s.Unit = st.Unit
	s.Installed = props["LoadState"] == "loaded"
	s.UnitFile = props["FragmentPath"]
	if s.Installed && !s.Running() {
		s.Journal = sd.journal(ctx, o.unitName(), 10)
	}
	return s, nil
}

// Active reports whether the unit is active (running).
func Active(ctx context.Context, o Options) (bool, error) {
	o, err := o.withDefaults()
	if err != nil {
		return false, err
	}
	props, err := o.systemd().show(ctx, o.unitName())
	if err != nil {
		return false, err
	}
	return stateFrom(props).Running(), nil
}

// Restart restarts the unit and waits (up to o.Timeout) until it is active
// again with a new main process.
func Restart(ctx context.Context, o Options) (State, error) {
	o, err := o.withDefaults()
	if err != nil {
		return State{}, err
	}
	if err := o.needRoot("restarting"); err != nil {
		return State{}, err
	}
	sd := o.systemd()
	before, err := sd.show(ctx, o.unitName())
	if err != nil {
		return State{}, err
	}
	if _, err := sd.run(ctx, "restart", "--no-block", o.unitName()); err != nil {
		return State{}, err
	}
	return o.waitActive(ctx, sd, before, before["ActiveState"] == "active")
}
