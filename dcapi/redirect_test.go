package dcapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Finding 7 of issue 15: the client re-sent the signed headers (and the
// body) to wherever a redirect pointed. It follows no redirect: the
// request fails with an error that says to fix api.endpoint, and the
// redirect's target never sees a signed request.
func TestSignedRequestsNeverFollowRedirects(t *testing.T) {
	var mu sync.Mutex
	var leaked []string
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		leaked = append(leaked, r.Method+" "+r.URL.Path+" signature="+r.Header.Get(HeaderSignature))
		mu.Unlock()
		writeEnvelope(w, 200, map[string]any{}, "")
	}))
	t.Cleanup(target.Close)
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
			http.Redirect(w, r, target.URL+r.URL.Path, code)
		})
		c := newClient(t, srv.URL)
		_, getErr := c.HealthSummary(context.Background(), 1)
		_, postErr := c.Heartbeat(context.Background(), Heartbeat{})
		for what, err := range map[string]error{"GET": getErr, "POST": postErr} {
			if err == nil || !strings.Contains(err.Error(), "redirects to "+target.URL) || !strings.Contains(err.Error(), "set api.endpoint") {
				t.Errorf("%d %s: err = %v, want the redirect named with its fix", code, what, err)
			}
			if !IsRetryable(err) {
				t.Errorf("%d %s: a redirect must not drop queued reports (kind %v)", code, what, err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(leaked) != 0 {
		t.Fatalf("the redirect's target received signed requests: %q", leaked)
	}
}

// An injected client keeps its own redirect policy; the API client's copy
// follows none.
func TestInjectedHTTPClientUntouched(t *testing.T) {
	hc := &http.Client{}
	newClient(t, "https://api.example.net", WithHTTPClient(hc))
	if hc.CheckRedirect != nil {
		t.Fatal("New changed the caller's http.Client")
	}
}

// Finding 8 of issue 15: http:// endpoints were accepted for any host.
// Plain http only reaches a loopback address; anything else is refused
// with an error that says to use https.
func TestPlainHTTPEndpointOnlyForLoopback(t *testing.T) {
	for endpoint, ok := range map[string]bool{
		"https://api.decent-cloud.org":  true,
		"http://127.0.0.1:8080":         true,
		"http://localhost:8080/base":    true,
		"http://[::1]:8080":             true,
		"http://api.decent-cloud.org":   false,
		"http://10.1.2.3:8080":          false,
		"http://127.0.0.1@evil.example": false,
		"http://localhost.evil.example": false,
	} {
		_, err := New(endpoint, providerHex, agentKey)
		if ok != (err == nil) {
			t.Errorf("%s: err = %v, want ok=%v", endpoint, err, ok)
		}
		if err != nil && !strings.Contains(err.Error(), "use https://") {
			t.Errorf("%s: %v does not say to use https://", endpoint, err)
		}
	}
}
