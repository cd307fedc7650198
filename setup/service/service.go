// Package service installs, removes and inspects the dc-agent systemd
// service: it renders the unit from packaging/, creates the dc-agent system
// user, gives the config and state directories their owners and modes, and
// drives systemctl (daemon-reload, enable, start) until the unit is active.
//
// Every step is idempotent and reports whether it changed something, so
// the TUI wizard and `dc-agent service install` can show progress and a
// re-run with the same inputs changes nothing. With Options.Root the files
// are written under a prefix and systemctl and user creation are skipped
// (packaging, tests); with Options.User the unit goes to the calling user's
// `systemd --user` manager (tests, development).
package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/packaging"
)

// Options describe the desired service. Zero values mean the defaults.
type Options struct {
	// Name is the unit name without ".service" (default dc-agent).
	Name string
	// Binary is the dc-agent executable the unit runs (default: the
	// running executable).
	Binary string
	// ConfigPath is dc-agent.toml as the service sees it (default
	// /etc/dc-agent/dc-agent.toml). Under Root it is read from Root.
	ConfigPath string
	// RunAs is the service account (default dc-agent).
	RunAs string
	// Root writes everything under this prefix and skips systemctl and
	// user creation.
	Root string
	// User installs into the calling user's `systemd --user` manager
	// instead of the system manager, with the unit variant that runs
	// without User= and the sandbox (tests and development only).
	User bool
	// Watchdog is WatchdogSec= (default 60s).
	Watchdog time.Duration
	// Env are extra KEY=VALUE pairs for the unit's Environment= (not for
	// secrets: unit files are world-readable).
	Env []string
	// RunArgs are extra arguments of `dc-agent run` in ExecStart=.
	RunArgs []string
	// NoStart installs and enables without starting.
	NoStart bool
	// Timeout bounds waiting for the unit to become active (default 90s)
	// and for it to stop on uninstall (default: TimeoutStopSec).
	Timeout time.Duration
	// Purge makes Uninstall also remove the config (with the keys), the
	// state directory and the system user.
	Purge bool
	// Progress receives each step's outcome (may be nil).
	Progress func(Event)

	// Tools; empty means found in PATH.
	Systemctl, Journalctl, Useradd, Userdel string
	// userDB is the prefix of the user database that useradd/userdel and
	// the account lookup use ("" = the host); tests point it at a temp dir.
	userDB string
	// pollInterval is how often the wait polls systemd (default 100ms).
	pollInterval time.Duration
}

// Event is the outcome of one step.
type Event struct {
	// Step names what was checked or done ("unit file", "enable").
	Step string
	// Changed is true when the step modified the system.
	Changed bool
	// Detail is a line for people.
	Detail string
}

func (o *Options) emit(step string, changed bool, format string, args ...any) {
	if o.Progress != nil {
		o.Progress(Event{Step: step, Changed: changed, Detail: fmt.Sprintf(format, args...)})
	}
}

// withDefaults fills in defaults and checks the combination.
func (o Options) withDefaults() (Options, error) {
	if o.Name == "" {
		o.Name = packaging.DefaultUnitName
	}
	if o.RunAs == "" {
		o.RunAs = packaging.DefaultUser
	}
	if o.ConfigPath == "" {
		o.ConfigPath = config.DefaultPath
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return o, fmt.Errorf("find the dc-agent executable: %w; pass --binary", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return o, fmt.Errorf("find the dc-agent executable: %w; pass --binary", err)
		}
		o.Binary = exe
	}
	if o.Timeout == 0 {
		o.Timeout = 90 * time.Second
	}
	if o.pollInterval == 0 {
		o.pollInterval = 100 * time.Millisecond
	}
	for _, t := range []struct {
		dst  *string
		name string
	}{{&o.Systemctl, "systemctl"}, {&o.Journalctl, "journalctl"}, {&o.Useradd, "useradd"}, {&o.Userdel, "userdel"}} {
		if *t.dst == "" {
			*t.dst = t.name
		}
	}
	if o.User && o.Root != "" {
		return o, errors.New("--user and --root do not go together: --user installs into your own systemd --user manager, --root writes files for packaging")
	}
	if o.Root != "" {
		if !filepath.IsAbs(o.Root) {
			abs, err := filepath.Abs(o.Root)
			if err != nil {
				return o, err
			}
			o.Root = abs
		}
	}
	return o, nil
}

// needRoot refuses to change the system service without root.
func (o Options) needRoot(what string) error {
	if !o.User && o.Root == "" && os.Geteuid() != 0 {
		return fmt.Errorf("%s the system service needs root: run it with sudo (or use --root DIR to only write the files)", what)
	}
	return nil
}

// systemd returns the manager this install talks to.
func (o Options) systemd() systemd {
	return systemd{user: o.User, systemctl: o.Systemctl, journalctl: o.Journalctl}
}

func (o Options) unitName() string { return o.Name + ".service" }

// hostPath maps a path as the service sees it to the file to write.
func (o Options) hostPath(p string) string {
	if o.Root == "" {
		return p
	}
	return filepath.Join(o.Root, p)
}

// unitDir is where unit files go.
func (o Options) unitDir() (string, error) {
	if !o.User {
		return o.hostPath("/etc/systemd/system"), nil
	}
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "systemd", "user"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the systemd --user unit directory: %w", err)
	}
	return filepath.Join(home, ".config", "systemd", "user"), nil
}

// paths are the files one install manages.
type paths struct {
	unit, upgradeService, upgradeTimer, upgradePath string
}

func (o Options) paths() (paths, error) {
	dir, err := o.unitDir()
	if err != nil {
		return paths{}, err
	}
	return paths{
		unit:           filepath.Join(dir, o.unitName()),
		upgradeService: filepath.Join(dir, o.Name+"-upgrade.service"),
		upgradeTimer:   filepath.Join(dir, o.Name+"-upgrade.timer"),
		upgradePath:    filepath.Join(dir, o.Name+"-upgrade.path"),
	}, nil
}

// agentSettings are the parts of dc-agent.toml that shape the unit.
type agentSettings struct {
	exists        bool
	graceSeconds  int
	stateDir      string
	statusSocket  string
	autoUpdate    bool
	inlineSecrets []string
	gateway       *config.GatewayConfig
}

// loadSettings reads the config if present; a missing config yields the
// defaults, an invalid one is an error (the service would not start).
func (o Options) loadSettings() (agentSettings, error) {
	s := agentSettings{
		graceSeconds: config.DefaultShutdownGraceSeconds,
		stateDir:     config.DefaultStateDir,
		statusSocket: config.DefaultStatusSocket,
	}
	path := o.hostPath(o.ConfigPath)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	cfg, err := config.Load(path)
	if err != nil {
		return s, fmt.Errorf("the service would not start with this config: %w", err)
	}
	s.exists = true
	s.graceSeconds = cfg.Agent.ShutdownGraceSeconds
	s.stateDir = cfg.Agent.StateDir
	s.statusSocket = cfg.Agent.StatusSocket
	s.autoUpdate = cfg.Agent.AutoUpdate
	s.inlineSecrets = cfg.InlineSecrets()
	s.gateway = cfg.Gateway
	return s, nil
}

// unitParams turns options and config into template inputs.
func (o Options) unitParams(s agentSettings) packaging.UnitParams {
	p := packaging.UnitParams{
		Name: o.Name, Binary: o.Binary, ConfigPath: o.ConfigPath, System: !o.User,
		User: o.RunAs, Watchdog: o.Watchdog, GraceSeconds: s.graceSeconds, Environment: o.Env, RunArgs: o.RunArgs,
		StateDir: s.stateDir,
	}
	// The sandbox makes everything read-only except the unit's own state
	// and runtime directories; a state_dir or socket elsewhere needs its
	// own ReadWritePaths=.
	if s.stateDir != config.DefaultStateDir {
		p.ReadWritePaths = append(p.ReadWritePaths, s.stateDir)
	}
	if d := filepath.Dir(s.statusSocket); d != filepath.Dir(config.DefaultStatusSocket) && d != s.stateDir {
		p.ReadWritePaths = append(p.ReadWritePaths, d)
	}
	if g := s.gateway; g != nil {
		// nftables, the Caddy site files and the port allocations.
		p.Gateway = true
		p.ReadWritePaths = append(p.ReadWritePaths, g.CaddySitesDir)
		if d := filepath.Dir(g.PortAllocationsPath); d != s.stateDir && d != config.DefaultStateDir {
			p.ReadWritePaths = append(p.ReadWritePaths, d)
		}
	}
	return p
}
