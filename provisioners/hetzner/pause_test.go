package hetzner

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners/internal/cloudkit/cloudkittest"
)

// Pause powers the server off and keeps it; Resume powers it on; both are
// idempotent; a server dc-agent did not create is refused.
func TestPauseResume(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	status := func() string {
		s := f.sim.Servers()
		if len(s) != 1 {
			t.Fatalf("%d servers", len(s))
		}
		return string(s[0].Status)
	}
	cloudkittest.PauseResume(t, f.p, f.request(1), status, "off", "running", nil)
	id := f.sim.AddServer("providers-db", nil)
	if err := f.p.Pause(ctx, strconv.FormatInt(id, 10)); err == nil || !strings.Contains(err.Error(), "refusing to power off") {
		t.Fatalf("foreign server: %v", err)
	}
}
