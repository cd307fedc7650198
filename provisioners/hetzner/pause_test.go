package hetzner

import (
	"context"
	"strconv"
	"strings"
	"testing"
)

// Pause powers the server off and keeps it; Resume powers it on; both are
// idempotent; a server dc-agent did not create is refused.
func TestPauseResume(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	req := f.request(1)
	req.RequesterSSHPubkey = sshKey(t)
	inst, err := f.p.Provision(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	status := func() string {
		s := f.sim.Servers()
		if len(s) != 1 {
			t.Fatalf("%d servers", len(s))
		}
		return string(s[0].Status)
	}
	for range 2 {
		if err := f.p.Pause(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		if s := status(); s != "off" {
			t.Fatalf("after pause: %s", s)
		}
	}
	for range 2 {
		if err := f.p.Resume(ctx, inst.ExternalID); err != nil {
			t.Fatal(err)
		}
		if s := status(); s != "running" {
			t.Fatalf("after resume: %s", s)
		}
	}
	id := f.sim.AddServer("providers-db", nil)
	if err := f.p.Pause(ctx, strconv.FormatInt(id, 10)); err == nil || !strings.Contains(err.Error(), "refusing to power off") {
		t.Fatalf("foreign server: %v", err)
	}
}
