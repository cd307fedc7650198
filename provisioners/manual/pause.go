package manual

import (
	"context"
	"fmt"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Webhook events of a paused contract.
const (
	EventPauseRequested  = "pause_requested"
	EventResumeRequested = "resume_requested"
)

// Pause implements provisioners.Pauser: it asks the provider to stop the
// instance of a paused contract (a payment dispute) by hand and keep it.
// The agent records it as paused once the provider was told.
func (p *Provisioner) Pause(ctx context.Context, externalID string) error {
	n := Notification{Event: EventPauseRequested, ExternalID: externalID,
		Text: fmt.Sprintf("Decent Cloud: stop instance %s by hand and keep it (do not delete it): its contract is paused during a payment dispute.", externalID)}
	p.log.Warn("instance needs stopping by hand (contract paused)", "external_id", externalID)
	return p.notify(ctx, n)
}

// Resume implements provisioners.Pauser: it asks the provider to start the
// instance again.
func (p *Provisioner) Resume(ctx context.Context, externalID string) error {
	n := Notification{Event: EventResumeRequested, ExternalID: externalID,
		Text: fmt.Sprintf("Decent Cloud: start instance %s again by hand: its contract is no longer paused.", externalID)}
	p.log.Warn("instance needs starting by hand (contract resumed)", "external_id", externalID)
	return p.notify(ctx, n)
}

var _ provisioners.Pauser = (*Provisioner)(nil)
