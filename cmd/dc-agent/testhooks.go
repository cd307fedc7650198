//go:build testhooks

// The test suite's dc-agent (internal/testutil.BuildBinary builds with
// -tags testhooks): `dc-agent run` gains hidden flags that shorten every
// duration, SIGKILL the agent at a named step of a provision, and hang
// every loop on SIGUSR2. A release binary is built without the tag and has
// none of them.

package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/decent-stuff/dc-agent/agent"
	"github.com/decent-stuff/dc-agent/config"
)

func init() { testFlags = addTestFlags }

func addTestFlags(f *pflag.FlagSet) func(*agent.Options) error {
	var timeScale float64
	var crashAt string
	var hang bool
	f.Float64Var(&timeScale, "time-scale", 0, "multiply every interval and backend wait (test binary only)")
	f.StringVar(&crashAt, "crash-at", "", "SIGKILL itself at this provisioning step, or its N-th pass with step:N (test binary only)")
	f.BoolVar(&hang, "debug-hang-on-sigusr2", false, "let SIGUSR2 hang every loop, to test the systemd watchdog (test binary only)")
	for _, name := range []string{"time-scale", "crash-at", "debug-hang-on-sigusr2"} {
		_ = f.MarkHidden(name)
	}
	return func(o *agent.Options) error {
		if timeScale < 0 {
			return fmt.Errorf("--time-scale %v: must be positive", timeScale)
		}
		if timeScale > 0 {
			o.Timing = func(cfg *config.Config) agent.Timing { return agent.TimingFromConfig(cfg).Scaled(timeScale) }
		}
		crash, err := agent.ParseCrashAt(crashAt)
		if err != nil {
			return err
		}
		if crash != nil {
			o.Faults = &agent.Faults{Crash: crash}
		}
		if hang {
			clock := &agent.HangClock{Clock: agent.RealClock{}}
			o.Clock = clock
			log := o.Logger
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGUSR2)
			go func() {
				<-sig
				clock.Hang()
				log.Warn("SIGUSR2 (--debug-hang-on-sigusr2): every loop now hangs at its next wait")
			}()
		}
		return nil
	}
}
