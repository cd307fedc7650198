package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup/upgrade"
)

// ServeOptions are what `dc-agent run` passes in.
type ServeOptions struct {
	ConfigPath string
	LogFormat  string // "text" (default) or "json"
	LogLevel   string // "debug", "info" (default), "warn", "error"
	Stderr     io.Writer
	Registry   *provisioners.Registry
	Version    string
	// Hooks adjusts the agent's Options before it starts: the test
	// binary's shorter Timing, crash points and hung clock (cmd/dc-agent,
	// built with -tags testhooks). nil in production.
	Hooks func(*Options) error
}

// NewLogger builds the agent's logger. Under systemd (JOURNAL_STREAM set)
// text lines carry no timestamp: the journal adds its own.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	switch strings.ToLower(level) {
	case "", "info":
		lvl = slog.LevelInfo
	case "debug":
		lvl = slog.LevelDebug
	case "warn", "warning":
		lvl = slog.LevelWarn
	case "error":
		lvl = slog.LevelError
	default:
		return nil, fmt.Errorf("log level %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "", "text":
		if os.Getenv("JOURNAL_STREAM") != "" {
			opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
				if len(groups) == 0 && a.Key == slog.TimeKey {
					return slog.Attr{}
				}
				return a
			}
		}
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("log format %q is not text or json", format)
	}
}

// Serve runs the agent in the foreground until SIGTERM/SIGINT (or ctx
// ends): SIGHUP reloads the config, a second SIGTERM stops at once.
func Serve(ctx context.Context, o ServeOptions) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	log, err := NewLogger(o.Stderr, o.LogFormat, o.LogLevel)
	if err != nil {
		return &ConfigError{err}
	}
	cfg, err := config.Load(o.ConfigPath)
	if err != nil {
		return &ConfigError{err}
	}
	for _, w := range cfg.Warnings {
		log.Warn("config: " + w)
	}
	var notifier Notifier
	if os.Getenv("NOTIFY_SOCKET") != "" {
		notifier = SystemdNotifier{}
	}
	opts := Options{Registry: o.Registry, Logger: log, Version: o.Version, Notifier: notifier}
	// The agent runs unprivileged: it leaves the requested version in its
	// state directory for the root upgrade job (dc-agent upgrade --auto),
	// which installs it, verified, and restarts the service when idle.
	opts.Upgrade = func(_ context.Context, version string) error {
		return upgrade.WriteRequest(cfg.Agent.StateDir, version)
	}
	if o.Hooks != nil {
		if err := o.Hooks(&opts); err != nil {
			return &ConfigError{err}
		}
	}
	a, err := New(cfg, opts)
	if err != nil {
		return err
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	stopping := false
	for {
		select {
		case err := <-done:
			return err
		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				a.notify("RELOADING=1\n" + daemon.SdNotifyMonotonicUsec())
				if ncfg, err := config.Load(o.ConfigPath); err != nil {
					log.Error("reload refused; keeping the running configuration", "err", err)
				} else if err := a.Reload(ncfg); err != nil {
					log.Error("reload refused; keeping the running configuration", "err", err)
				} else {
					for _, w := range ncfg.Warnings {
						log.Warn("config: " + w)
					}
				}
				a.notify("READY=1")
			case !stopping:
				stopping = true
				log.Info("stop requested; finishing in-flight provisions (send the signal again to stop now)", "signal", sig.String())
				stop()
			default:
				a.HardStop()
			}
		}
	}
}
