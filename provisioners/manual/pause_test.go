package manual

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
)

// A paused contract's instance is stopped by hand: the provider is asked
// to stop it (not delete it), and to start it again when it resumes.
func TestPauseResumeNotify(t *testing.T) {
	var mu sync.Mutex
	var got []Notification
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var n Notification
		if err := json.NewDecoder(r.Body).Decode(&n); err != nil {
			t.Error(err)
		}
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}))
	defer srv.Close()
	p, err := New(config.ProvisionerConfig{Type: Type, Manual: &config.ManualConfig{NotificationWebhook: srv.URL}}, provisioners.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Features().Pause {
		t.Fatal("manual backend does not offer pause")
	}
	pr := p.(provisioners.Pauser)
	if err := pr.Pause(context.Background(), "rack3-box7"); err != nil {
		t.Fatal(err)
	}
	if err := pr.Resume(context.Background(), "rack3-box7"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || got[0].Event != EventPauseRequested || got[1].Event != EventResumeRequested || got[0].ExternalID != "rack3-box7" ||
		!strings.Contains(got[0].Text, "do not delete") || !strings.Contains(got[1].Text, "start instance rack3-box7") {
		t.Fatalf("notifications %+v", got)
	}
}
