package hetzner

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

// A reset is Hetzner's reset_password action: its password is the one in
// force (the agent's proposal is not used). A failed action, a stopped
// server and a missing one are each one message for the tenant. Key
// rotations are not offered: the API takes keys at creation only.
func TestResetPassword(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	req, inst := cloudkittest.Provisioned(t, f.p, f.request(1))
	id, _ := strconv.ParseInt(inst.ExternalID, 10, 64)
	got, err := f.p.ResetPassword(ctx, req.ContractID, inst.ExternalID, "proposal-not-used")
	pw, resets := f.sim.RootPassword(id)
	if err != nil || got == "" || got == "proposal-not-used" || got != pw || resets != 1 {
		t.Fatalf("reset: %q %v; the server has %q after %d resets", got, err, pw, resets)
	}
	var _ provisioners.PasswordResetter = f.p
	if _, ok := any(f.p).(provisioners.KeyRotator); ok || f.p.Features().RotateSSHKey {
		t.Fatal("Hetzner offers key rotation, which its API cannot do")
	}

	f.sim.FailNextAction("reset_password", "action_failed", "the guest agent did not answer")
	if _, err := f.p.ResetPassword(ctx, req.ContractID, inst.ExternalID, "x"); err == nil || provisioners.RetryPossible(err) ||
		!strings.Contains(provisioners.TenantMessage(err), "the guest agent did not answer") {
		t.Fatalf("failed action: %v", err)
	}
	if pw2, resets := f.sim.RootPassword(id); pw2 != pw || resets != 1 {
		t.Fatal("a failed action changed the password")
	}
	if err := f.p.Terminate(ctx, inst.ExternalID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.p.ResetPassword(ctx, req.ContractID, inst.ExternalID, "x"); err == nil || provisioners.TenantMessage(err) != "the server of this contract no longer exists" {
		t.Fatalf("gone: %v", err)
	}
}
