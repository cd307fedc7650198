package manual

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// Tenant requests on a manual backend notify the provider and hand off;
// the agent's password proposal never leaves the agent.
func TestTenantRequestsHandedOff(t *testing.T) {
	wh := startWebhook(t)
	p := newManual(t, wh.url, provisioners.Deps{})
	if f := p.Features(); !f.ResetPassword || !f.RotateSSHKey {
		t.Fatalf("features %+v", f)
	}
	pw, err := p.(provisioners.PasswordResetter).ResetPassword(context.Background(), cid, "", "agent-proposal-123")
	if !errors.Is(err, provisioners.ErrHandedOff) || pw != "" {
		t.Fatalf("reset: %q %v", pw, err)
	}
	if err := p.(provisioners.KeyRotator).RotateSSHKey(context.Background(), cid, "", "ssh-ed25519 AAAA new"); !errors.Is(err, provisioners.ErrHandedOff) {
		t.Fatalf("rotate: %v", err)
	}
	bodies := wh.sent()
	if len(bodies) != 2 || strings.Contains(bodies[0], "agent-proposal-123") {
		t.Fatalf("notifications %q", bodies)
	}
	var n0, n1 Notification
	_ = json.Unmarshal([]byte(bodies[0]), &n0)
	_ = json.Unmarshal([]byte(bodies[1]), &n1)
	if n0.Event != EventPasswordResetRequested || n0.ContractID != cid || n1.Event != EventKeyRotationRequested || n1.RequesterSSHPubkey != "ssh-ed25519 AAAA new" {
		t.Fatalf("notifications %+v %+v", n0, n1)
	}
}
