package upgrade

import (
	"context"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// SystemdService is the agent running as a systemd unit, asked about its
// work through its status socket.
type SystemdService struct {
	// Unit selects the unit (system or --user manager, name).
	Unit service.Options
	// Socket is the agent's status socket (agent.status_socket).
	Socket string
}

// Active reports whether the unit is active (running).
func (s SystemdService) Active(ctx context.Context) (bool, error) { return service.Active(ctx, s.Unit) }

// Running asks the agent which version it runs and how many provisions it
// has in flight: contracts being locked, started or provisioned. Queued
// contracts and reports in the outbox survive a restart (journal, outbox),
// so they do not hold it back.
func (s SystemdService) Running(ctx context.Context) (string, int, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := status.NewClient(s.Socket).State(ctx)
	if err != nil {
		return "", 0, err
	}
	return st.Version, InFlight(st), nil
}

// InFlight counts the provisions a restart would interrupt.
func InFlight(st status.State) int {
	n := 0
	for _, w := range st.Work {
		switch w.Step {
		case status.StepQueued, status.StepReporting:
		default:
			n++
		}
	}
	return n
}

// Restart restarts the unit and waits until it is active again.
func (s SystemdService) Restart(ctx context.Context) error {
	_, err := service.Restart(ctx, s.Unit)
	return err
}
