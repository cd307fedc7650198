// Package monitor is the live status screen of a running dc-agent service:
// whether the provider is online (as the Decent Cloud API and the local
// agent each see it), the provisioner, contracts and provisions in flight,
// recent results, uptime, the log, and doctor on a key. It reads the
// agent's status socket and the API's public endpoints only; it never runs
// the agent loop and quitting it never stops the service.
//
// New returns the bubbletea model (the wizard embeds it after setup); Run
// opens it full-screen on a terminal.
package monitor

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/doctor"
	"github.com/decent-stuff/dc-agent/identity"
)

// API is what the monitor asks the Decent Cloud API. Both endpoints are
// public; *dcapi.Client satisfies it.
type API interface {
	AgentStatus(ctx context.Context) (dcapi.AgentStatus, error)
	HealthSummary(ctx context.Context, days int) (dcapi.HealthSummary, error)
}

// StatusSource is the agent's status socket; *status.Client satisfies it.
type StatusSource interface {
	State(ctx context.Context) (status.State, error)
	Events(ctx context.Context, since uint64, fn func(status.Event) error) error
}

// LogSource returns the service's last n log lines. An error means the log
// cannot be read here; the monitor then shows the agent's events instead
// and says why.
type LogSource func(ctx context.Context, n int) ([]string, error)

// DoctorFunc runs the doctor checks.
type DoctorFunc func(ctx context.Context) doctor.Report

// Options configure the monitor. Every field has a working default.
type Options struct {
	// ConfigPath is dc-agent.toml (default config.DefaultPath). It names
	// the status socket and the API endpoint and provider.
	ConfigPath string
	// Config is the loaded config; nil: loaded from ConfigPath. A config
	// that does not load is shown as a problem, not an error: the socket
	// may still answer.
	Config *config.Config
	// StatusSocket overrides the config's agent.status_socket.
	StatusSocket string
	// Status reads the socket (default: status.NewClient(StatusSocket)).
	Status StatusSource
	// API answers agent-status and health-summary (default: a client for
	// the config's endpoint and provider). Nil with no usable config: the
	// API part of the screen says why.
	API API
	// Logs reads the service's log (default: journalctl for Unit).
	Logs LogSource
	// Doctor runs the checks (default: doctor.Run with --verify-api).
	Doctor DoctorFunc
	// Unit is the systemd unit named in hints (default dc-agent).
	Unit string
	// Now is the clock (tests freeze it).
	Now func() time.Time
	// Tick is how often ages are redrawn and due refreshes start
	// (default 1s); negative: never (tests drive the model with messages).
	Tick time.Duration
	// StateEvery and APIEvery are the refresh periods of the socket's
	// state (default 10s: every event already triggers a refresh, so this
	// only catches what changes without one) and of the API (default 30s).
	StateEvery, APIEvery time.Duration
	// ReconnectMin and ReconnectMax bound the backoff of reconnecting to
	// the socket when the agent is gone (default 250ms … 5s).
	ReconnectMin, ReconnectMax time.Duration
	// HealthDays is the uptime period (default 30).
	HealthDays int
	// Renderer styles the screen (default: one for Output, which honours
	// NO_COLOR and TERM=dumb). Tests pass one with a fixed color profile.
	Renderer *lipgloss.Renderer
	// Plain makes Run print lines instead of drawing a screen (default:
	// when TERM=dumb, which cannot place the cursor).
	Plain bool
	// Input and Output are the terminal for Run (default stdin/stdout).
	Input  io.Reader
	Output io.Writer
}

// Defaults.
const (
	DefaultTick         = time.Second
	DefaultStateEvery   = 10 * time.Second
	DefaultAPIEvery     = 30 * time.Second
	DefaultReconnectMin = 250 * time.Millisecond
	DefaultReconnectMax = 5 * time.Second
	DefaultHealthDays   = 30
	// maxEvents bounds the event history kept in memory.
	maxEvents = 500
	// logLines is how many journal lines the log view asks for.
	logLines = 500
)

// withDefaults fills every unset option. Problems loading the config come
// back as a message for the screen.
func (o Options) withDefaults() (Options, string) {
	var cfgProblem string
	if o.ConfigPath == "" {
		o.ConfigPath = config.DefaultPath
	}
	if o.Config == nil {
		cfg, err := config.Load(o.ConfigPath)
		if err != nil {
			cfgProblem = err.Error()
		} else {
			o.Config = cfg
		}
	}
	if o.StatusSocket == "" {
		o.StatusSocket = config.DefaultStatusSocket
		if o.Config != nil && o.Config.Agent.StatusSocket != "" {
			o.StatusSocket = o.Config.Agent.StatusSocket
		}
	}
	if o.Status == nil {
		o.Status = status.NewClient(o.StatusSocket)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.API == nil && o.Config != nil {
		if c, err := publicClient(o.Config, o.Now); err == nil {
			o.API = c
		} else if cfgProblem == "" {
			cfgProblem = err.Error()
		}
	}
	if o.Unit == "" {
		o.Unit = "dc-agent"
	}
	if o.Logs == nil {
		o.Logs = JournalLogs(o.Unit)
	}
	if o.Doctor == nil {
		path := o.ConfigPath
		o.Doctor = func(ctx context.Context) doctor.Report {
			return doctor.Run(ctx, doctor.Options{ConfigPath: path, VerifyAPI: true})
		}
	}
	if o.Tick == 0 {
		o.Tick = DefaultTick
	}
	if o.StateEvery <= 0 {
		o.StateEvery = DefaultStateEvery
	}
	if o.APIEvery <= 0 {
		o.APIEvery = DefaultAPIEvery
	}
	if o.ReconnectMin <= 0 {
		o.ReconnectMin = DefaultReconnectMin
	}
	if o.ReconnectMax < o.ReconnectMin {
		o.ReconnectMax = max(DefaultReconnectMax, o.ReconnectMin)
	}
	if o.HealthDays <= 0 {
		o.HealthDays = DefaultHealthDays
	}
	if o.Input == nil {
		o.Input = os.Stdin
	}
	if o.Output == nil {
		o.Output = os.Stdout
	}
	if o.Renderer == nil {
		o.Renderer = lipgloss.NewRenderer(o.Output)
	}
	return o, cfgProblem
}

// publicClient is an API client for the config's endpoint and provider.
func publicClient(cfg *config.Config, now func() time.Time) (*dcapi.Client, error) {
	c, err := PublicClient(cfg.API.Endpoint, cfg.API.ProviderPubkey, now)
	if err != nil {
		return nil, fmt.Errorf("API client from %s: %w", cfg.Path, err)
	}
	return c, nil
}

// PublicClient is an API client for endpoint and provider's public
// endpoints (agent-status, health-summary). It signs with a throwaway key:
// the monitor and dc-agent status never need (or read) the agent's secret
// key, and run as any user who may read the socket.
func PublicClient(endpoint, provider string, now func() time.Time) (*dcapi.Client, error) {
	key, err := identity.GenerateKey()
	if err != nil {
		return nil, err
	}
	return dcapi.New(endpoint, provider, ed25519.PrivateKey(key),
		dcapi.WithUserAgent("dc-agent-monitor"), dcapi.WithClock(now), dcapi.WithTimeout(10*time.Second))
}

// runFPS caps the frame rate: a status screen needs no 60 fps, and fewer
// renderer wake-ups keep it idle.
const runFPS = 30

// Run opens the monitor on the terminal and returns when the user quits
// or ctx ends. The service keeps running either way.
func Run(ctx context.Context, o Options) error {
	m := New(o)
	defer m.Close()
	if o.Plain || os.Getenv("TERM") == "dumb" {
		return runPlain(ctx, m)
	}
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithAltScreen(),
		tea.WithInput(m.o.Input), tea.WithOutput(m.o.Output),
		tea.WithFPS(runFPS))
	_, err := p.Run()
	if errors.Is(err, tea.ErrInterrupted) || (errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil) {
		return nil // SIGINT or the caller's cancel: a normal way to leave
	}
	return err
}
