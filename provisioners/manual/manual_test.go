package manual

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

const cid = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// webhook is a notification webhook that keeps the bodies it is sent.
type webhook struct {
	url    string
	mu     sync.Mutex
	bodies []string
}

func startWebhook(t *testing.T) *webhook {
	wh := &webhook{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("content type %q", r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		wh.mu.Lock()
		wh.bodies = append(wh.bodies, string(b))
		wh.mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	wh.url = srv.URL
	return wh
}

// sent returns the bodies so far.
func (wh *webhook) sent() []string {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	return slices.Clone(wh.bodies)
}

// notifications decodes the bodies so far.
func (wh *webhook) notifications(t *testing.T) []Notification {
	t.Helper()
	var out []Notification
	for _, b := range wh.sent() {
		var n Notification
		if err := json.Unmarshal([]byte(b), &n); err != nil {
			t.Errorf("notification %q: %v", b, err)
		}
		out = append(out, n)
	}
	return out
}

// newManual is a manual backend notifying webhook url.
func newManual(t *testing.T, url string, deps provisioners.Deps) provisioners.Provisioner {
	t.Helper()
	p, err := New(config.ProvisionerConfig{Type: Type, Manual: &config.ManualConfig{NotificationWebhook: url}}, deps)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProvisionNotifiesWebhookAndLog(t *testing.T) {
	wh := startWebhook(t)
	var logs bytes.Buffer
	p := newManual(t, wh.url+"/hook", provisioners.Deps{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	inst, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid, OfferingID: "off-9", CPUCores: 4, MemoryMB: 8192, StorageGB: 100, RequesterSSHPubkey: "ssh-ed25519 AAAA"})
	if err != nil {
		t.Fatal(err)
	}
	if inst.ExternalID != "" || inst.Name != "dc-"+cid {
		t.Fatalf("instance = %+v", inst)
	}
	got := wh.notifications(t)
	if len(got) != 1 {
		t.Fatalf("%d notifications", len(got))
	}
	n := got[0]
	if n.Event != EventProvisionRequested || n.ContractID != cid || n.CPUCores != 4 || n.MemoryMB != 8192 || n.StorageGB != 100 || n.OfferingID != "off-9" {
		t.Fatalf("notification = %+v", n)
	}
	if !strings.Contains(n.Text, "4 vCPU 8192 MB RAM 100 GB disk") || !strings.Contains(n.Text, "dc-"+cid) {
		t.Fatalf("text = %q", n.Text)
	}
	if !strings.Contains(logs.String(), "needs manual provisioning") || !strings.Contains(logs.String(), cid) {
		t.Fatalf("log = %s", logs.String())
	}
	if f := p.Features(); !f.Manual || f.Terminate || f.Health || f.List || !f.Pause {
		t.Fatalf("features = %+v", f)
	}
}

func TestWebhookFailureIsRetryableAndHidesToken(t *testing.T) {
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadGateway)
	}))
	defer srv.Close()
	pp, _ := New(config.ProvisionerConfig{Type: Type, Manual: &config.ManualConfig{NotificationWebhook: srv.URL + "/services/SECRET-TOKEN"}}, provisioners.Deps{})
	p := pp.(*Provisioner)
	p.pause = time.Millisecond
	_, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid})
	if err == nil || !provisioners.RetryPossible(err) {
		t.Fatalf("err = %v, want retryable", err)
	}
	if strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("error leaks the webhook path: %v", err)
	}
	if calls != 3 {
		t.Fatalf("%d attempts, want 3", calls)
	}
	// An unreachable webhook: the URL (and token) must not leak either.
	srv.Close()
	_, err = p.Provision(context.Background(), provisioners.Request{ContractID: cid})
	if err == nil || strings.Contains(err.Error(), "SECRET-TOKEN") {
		t.Fatalf("err = %v", err)
	}
}

func TestNoWebhookOnlyLogs(t *testing.T) {
	p, _ := New(config.ProvisionerConfig{Type: Type}, provisioners.Deps{})
	if _, err := p.Provision(context.Background(), provisioners.Request{ContractID: cid}); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(context.Background(), "x"); err == nil {
		t.Fatal("manual terminate claimed success")
	}
	h, err := p.HealthCheck(context.Background(), "x")
	if err != nil || h.Status != provisioners.Unknown {
		t.Fatalf("health = %+v %v", h, err)
	}
}
