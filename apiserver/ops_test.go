package apiserver_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestRequestIDsAndAccessLog: every answer carries X-Request-Id (a sane
// incoming one is kept, anything else replaced), the structured access log
// has one JSON line per request under the same id, refusals are logged at
// info with the reason, and neither bodies, signatures nor full agent keys
// reach the log.
func TestRequestIDsAndAccessLog(t *testing.T) {
	t.Parallel()
	logs := &testutil.SyncBuffer{}
	srv := apitest.Start(t, apitest.WithLogger(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	prov := srv.NewProvider("Log Hosting")
	agent := srv.NewAgent(prov)
	agentHex := identity.PublicHex(agent)
	path := dcapi.APIPrefix + "/providers/" + prov.Pubkey + "/heartbeat"
	const marker = "body-marker-7f3a"
	body := []byte(`{"version":"` + marker + `","provisionerType":"script","capabilities":null,"activeContracts":0}`)

	var sigs []string
	do := func(requestID string, sent []byte) (int, string) {
		t.Helper()
		ts := strconv.FormatInt(time.Now().UnixNano(), 10)
		nonce := uuid.NewString()
		sig := identity.SignRequest(agent, ts, nonce, "POST", path, body)
		sigs = append(sigs, sig)
		req, err := http.NewRequest("POST", srv.URL+path, bytes.NewReader(sent))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set(dcapi.HeaderTimestamp, ts)
		req.Header.Set(dcapi.HeaderNonce, nonce)
		req.Header.Set(dcapi.HeaderAgentPubkey, agentHex)
		req.Header.Set(dcapi.HeaderSignature, sig)
		req.Header.Set("Content-Type", "application/json")
		if requestID != "" {
			req.Header.Set(dcapi.HeaderRequestID, requestID)
		}
		a := roundTrip(t, req)
		return a.status, a.header.Get(dcapi.HeaderRequestID)
	}
	generated := regexp.MustCompile(`^[0-9a-f]{16}$`)

	code, kept := do("trace-abc.1", body)
	if code != http.StatusOK || kept != "trace-abc.1" {
		t.Fatalf("sane incoming id: status %d, X-Request-Id %q; want 200 and the id kept", code, kept)
	}
	_, fresh := do("", body)
	if !generated.MatchString(fresh) {
		t.Fatalf("no incoming id: X-Request-Id %q, want 16 hex digits", fresh)
	}
	for _, bad := range []string{"has space", "quote\"d", strings.Repeat("x", 65), "slash/ed"} {
		if _, got := do(bad, body); !generated.MatchString(got) {
			t.Fatalf("incoming id %q: X-Request-Id %q, want it replaced by a fresh one", bad, got)
		}
	}
	code, refusedID := do("trace-refused", append([]byte(nil), bytes.Replace(body, []byte(marker), []byte("tampered-marker"), 1)...))
	if code != http.StatusUnauthorized || refusedID != "trace-refused" {
		t.Fatalf("tampered body: status %d, X-Request-Id %q", code, refusedID)
	}
	// Even the fallback (unknown endpoint) answers with an id.
	resp, err := http.Get(srv.URL + "/api/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !generated.MatchString(resp.Header.Get(dcapi.HeaderRequestID)) {
		t.Fatalf("unknown endpoint: X-Request-Id %q", resp.Header.Get(dcapi.HeaderRequestID))
	}

	// The access log lines are written as the answers go out: wait for them.
	type line struct {
		Level     string  `json:"level"`
		Msg       string  `json:"msg"`
		RequestID string  `json:"request_id"`
		Method    string  `json:"method"`
		Path      string  `json:"path"`
		Status    int     `json:"status"`
		Ms        float64 `json:"ms"`
		Key       string  `json:"key"`
		Error     string  `json:"error"`
	}
	find := func(id string) (line, bool) {
		sc := bufio.NewScanner(strings.NewReader(logs.String()))
		for sc.Scan() {
			var l line
			if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
				t.Fatalf("log line is not JSON: %q", sc.Text())
			}
			if l.Msg == "request" && l.RequestID == id {
				return l, true
			}
		}
		return line{}, false
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, a := find("trace-abc.1")
		_, b := find("trace-refused")
		if a && b {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("access log lines missing:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	ok, _ := find("trace-abc.1")
	if ok.Level != "DEBUG" || ok.Method != "POST" || ok.Path != path || ok.Status != 200 || ok.Key != agentHex[:16] {
		t.Errorf("access log of a good request = %+v", ok)
	}
	refused, _ := find("trace-refused")
	if refused.Level != "INFO" || refused.Status != 401 || !strings.Contains(refused.Error, "signature") {
		t.Errorf("access log of a refusal = %+v (want INFO, 401 and the reason)", refused)
	}
	all := logs.String()
	for _, secret := range append([]string{marker, "tampered-marker", agentHex}, sigs...) {
		if strings.Contains(all, secret) {
			t.Errorf("the log contains %q (bodies, signatures and full agent keys must stay out):\n%s", secret, all)
		}
	}
}
