package dcapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The pending lists parse as the live API sends them (snake_case: poem
// ignores serde's rename_all) and as camelCase; the reports are the exact
// bodies the live handlers take.
func TestTenantRequestWire(t *testing.T) {
	cid2 := strings.Repeat("b", 64)
	srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		switch {
		case strings.HasSuffix(s.Path, "/pending-password-reset"):
			writeEnvelope(w, 200, []map[string]any{
				{"contract_id": contractID, "requester_pubkey": strings.Repeat("c", 64), "status": "active"},
				{"contractId": strings.ToUpper(cid2), "requested_at_ns": 7, "seal_to": "ab"},
			}, "")
		case strings.HasSuffix(s.Path, "/pending-ssh-key-rotation"):
			writeEnvelope(w, 200, []map[string]any{
				{"contract_id": contractID, "requester_ssh_pubkey": "ssh-ed25519 AAAA k1"},
				{"contractId": cid2, "requesterSshPubkey": "ssh-ed25519 BBBB k2"},
			}, "")
		default:
			writeEnvelope(w, 200, "ok", "")
		}
	})
	c := newClient(t, srv.URL)
	ctx := context.Background()
	resets, err := c.PendingPasswordResets(ctx)
	if err != nil || !reflect.DeepEqual(resets, []PasswordReset{{ContractID: contractID}, {ContractID: cid2, RequestedAtNs: 7, SealTo: "ab"}}) {
		t.Fatalf("resets %+v %v", resets, err)
	}
	rots, err := c.PendingKeyRotations(ctx)
	if err != nil || !reflect.DeepEqual(rots, []KeyRotation{{ContractID: contractID, SSHPubkey: "ssh-ed25519 AAAA k1"}, {ContractID: cid2, SSHPubkey: "ssh-ed25519 BBBB k2"}}) {
		t.Fatalf("rotations %+v %v", rots, err)
	}
	pw := "s3cret"
	for _, err := range []error{
		c.ReportPassword(ctx, contractID, PasswordUpdate{NewPassword: &pw}),
		c.ReportPassword(ctx, contractID, PasswordUpdate{Error: "no agent"}),
		c.ReportKeyRotation(ctx, contractID, KeyRotationUpdate{}),
		c.ReportKeyRotation(ctx, contractID, KeyRotationUpdate{Error: "bad key"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := requests()[2:]
	want := []string{
		`PUT /api/v1/provider/rental-requests/` + contractID + `/password {"newPassword":"s3cret"}`,
		`PUT /api/v1/provider/rental-requests/` + contractID + `/password {"error":"no agent"}`,
		`PUT /api/v1/provider/rental-requests/` + contractID + `/ssh-key-rotation `,
		`PUT /api/v1/provider/rental-requests/` + contractID + `/ssh-key-rotation {"error":"bad key"}`,
	}
	for i, s := range got {
		if line := s.Method + " " + s.Path + " " + s.Body; line != want[i] {
			t.Errorf("request %d: %s, want %s", i, line, want[i])
		}
	}
	if err := c.ReportPassword(ctx, "../x", PasswordUpdate{Error: "x"}); err == nil {
		t.Fatal("a malformed contract id reached the path")
	}
}

// The event stream delivers the server's events (keep-alives are not
// events), ends with a retryable error when the server closes it or stays
// silent, and says IsNotFound where the server has none.
func TestPasswordResetEvents(t *testing.T) {
	stop := make(chan struct{})
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, ": hello\n\nevent: password-reset-count\ndata: {\"count\":1,\"contract_ids\":[\""+strings.ToUpper(contractID)+"\"]}\n\n")
		fmt.Fprint(w, "event: other\ndata: x\n\nevent: password-reset-count\ndata: {broken\n\n")
		fmt.Fprint(w, ":keep-alive\r\n\r\nevent: password-reset-count\r\ndata: {\"count\":0,\r\ndata: \"contract_ids\":[]}\r\n\r\n")
		w.(http.Flusher).Flush()
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	})
	c := newClient(t, srv.URL)
	var got []PasswordResetEvent
	errc := make(chan error, 1)
	go func() {
		errc <- c.PasswordResetEvents(context.Background(), time.Minute, func(e PasswordResetEvent) {
			got = append(got, e)
			if len(got) == 2 {
				close(stop)
			}
		})
	}()
	err := <-errc
	if !IsRetryable(err) || !reflect.DeepEqual(got, []PasswordResetEvent{{Count: 1, ContractIDs: []string{contractID}}, {Count: 0, ContractIDs: []string{}}}) {
		t.Fatalf("events %+v, end %v", got, err)
	}
	// A stream that stays silent longer than idle is given up.
	silent := make(chan struct{})
	srv2, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		close(silent)
	})
	err = newClient(t, srv2.URL).PasswordResetEvents(context.Background(), 50*time.Millisecond, func(PasswordResetEvent) {})
	<-silent
	if !IsRetryable(err) || !strings.Contains(err.Error(), "no event or keep-alive") {
		t.Fatalf("silent stream: %v", err)
	}
	// A cancelled context ends it without an error.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := c.PasswordResetEvents(ctx, time.Minute, func(PasswordResetEvent) {}); err != nil {
		t.Fatalf("cancelled: %v", err)
	}
}

func TestPasswordResetEventsNotFound(t *testing.T) {
	srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		writeEnvelope(w, 404, nil, "no such endpoint")
	})
	err := newClient(t, srv.URL).PasswordResetEvents(context.Background(), time.Minute, func(PasswordResetEvent) { t.Error("event") })
	if !IsNotFound(err) {
		t.Fatalf("%v", err)
	}
}

// FuzzReadEvents: any byte stream parses without panic, events stay
// within the limits, and a stream cut anywhere yields a prefix of the
// events of the whole.
func FuzzReadEvents(f *testing.F) {
	f.Add([]byte("event: password-reset-count\ndata: {\"count\":0,\"contract_ids\":[]}\n\n: keep-alive\n\n"))
	f.Add([]byte("data: a\r\ndata: b\r\n\r\nevent:x\n\n"))
	f.Add([]byte("\r\r\n:\ndata\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var all []Event
		err := ReadEvents(strings.NewReader(string(b)), func(e Event) error {
			if len(e.Data) > maxEventData || len(e.Name) > maxEventLine {
				t.Fatalf("event over the limits: %d %d", len(e.Name), len(e.Data))
			}
			all = append(all, e)
			return nil
		})
		if err != nil {
			return
		}
		for cut := 0; cut <= len(b); cut += 1 + len(b)/7 {
			var part []Event
			if err := ReadEvents(strings.NewReader(string(b[:cut])), func(e Event) error { part = append(part, e); return nil }); err != nil {
				t.Fatalf("a prefix failed: %v", err)
			}
			// A cut may end an event early ("data: a" then EOF is no
			// event) or split a CRLF; the complete events before it match.
			for i := 0; i+1 < len(part) && i < len(all); i++ {
				if part[i] != all[i] {
					t.Fatalf("cut at %d: event %d %+v, whole stream %+v", cut, i, part[i], all[i])
				}
			}
		}
		stop := errors.New("stop")
		if len(all) > 0 {
			if err := ReadEvents(strings.NewReader(string(b)), func(Event) error { return stop }); err != stop {
				t.Fatalf("fn's error not returned: %v", err)
			}
		}
	})
}
