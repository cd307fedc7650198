package manual

import (
	"context"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// A paused contract's instance is stopped by hand: the provider is asked
// to stop it (not delete it), and to start it again when it resumes.
func TestPauseResumeNotify(t *testing.T) {
	wh := startWebhook(t)
	p := newManual(t, wh.url, provisioners.Deps{})
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
	got := wh.notifications(t)
	if len(got) != 2 || got[0].Event != EventPauseRequested || got[1].Event != EventResumeRequested || got[0].ExternalID != "rack3-box7" ||
		!strings.Contains(got[0].Text, "do not delete") || !strings.Contains(got[1].Text, "start instance rack3-box7") {
		t.Fatalf("notifications %+v", got)
	}
}
