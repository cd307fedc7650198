package manual

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// Tenant requests on a manual backend notify the provider and hand off;
// the agent's password proposal never leaves the agent.
func TestTenantRequestsHandedOff(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	p, err := New(config.ProvisionerConfig{Type: Type, Manual: &config.ManualConfig{NotificationWebhook: srv.URL}}, provisioners.Deps{})
	if err != nil {
		t.Fatal(err)
	}
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
	mu.Lock()
	defer mu.Unlock()
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
