package dcapi

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzDecodeResponse feeds arbitrary statuses, Retry-After values and bodies
// to the response decoder (both error styles of PROTOCOL.md §4). It must
// never panic, succeed only for a 2xx success envelope (or an empty 204),
// and always return a typed, printable error otherwise.
func FuzzDecodeResponse(f *testing.F) {
	f.Add(200, "", []byte(`{"success":true,"data":[{"contract_id":"ab","cpu_cores":2,"memory_amount":"16 GB"}]}`))
	f.Add(200, "", []byte(`{"success":false,"error":"Contract not found"}`))
	f.Add(401, "", []byte("Unauthorized: Invalid signature"))
	f.Add(503, "120", []byte(`{"success":false,"error":"maintenance"}`))
	f.Add(429, "Wed, 21 Oct 2015 07:28:00 GMT", []byte("slow down"))
	f.Add(204, "", []byte(""))
	f.Fuzz(func(t *testing.T, status int, retry string, body []byte) {
		h := http.Header{}
		h.Set("Retry-After", retry)
		now := func() time.Time { return time.Unix(1700000000, 0) }
		var out []PendingContract
		err := decodeResponse("GET", "/x", status, h, body, &out, now)
		if err == nil {
			if status < 200 || status > 299 {
				t.Fatalf("status %d decoded as success", status)
			}
			if status != http.StatusNoContent && !strings.Contains(strings.ToLower(string(body)), "success") { // encoding/json matches keys case-insensitively
				t.Fatalf("success without an envelope: %q", body)
			}
			return
		}
		e, ok := err.(*Error)
		if !ok {
			t.Fatalf("untyped error %T: %v", err, err)
		}
		if e.Kind < KindPermanent || e.Kind > KindNotFound || e.Error() == "" {
			t.Fatalf("bad error %+v", e)
		}
		if e.RetryAfter < 0 || e.RetryAfter > maxRetryAfter {
			t.Fatalf("RetryAfter %v out of range for %q", e.RetryAfter, retry)
		}
		if len(e.Message) > 4096 && (status < 200 || status > 299) && !strings.HasPrefix(strings.TrimSpace(string(body)), "{") {
			t.Fatalf("plain-text message not bounded: %d bytes", len(e.Message))
		}
	})
}

func FuzzParseSizeMB(f *testing.F) {
	for _, s := range []string{"16 GB", "512MB", "1 TB", "1.5 GiB", "100", " 2 t ", "0", "1e3 GB", "-1 GB", "NaN", "9999999999999 PB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mb, err := ParseSizeMB(s)
		if err != nil {
			if !strings.Contains(err.Error(), "size") {
				t.Fatalf("error %q does not say what was wrong", err)
			}
			return
		}
		if mb < 0 {
			t.Fatalf("%q → %d MB", s, mb)
		}
		gb, err := ParseSizeGB(s)
		if err != nil || gb*1024 < mb || (gb-1)*1024 >= mb && mb > 0 {
			t.Fatalf("%q: %d MB but %d GB (%v)", s, mb, gb, err)
		}
	})
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"https://api.decent-cloud.org", "http://127.0.0.1:8080/", "https://x/base/", "ftp://x", "https://", " https://a?b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseEndpoint(s)
		if err != nil {
			return
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || strings.HasSuffix(u.Path, "/") {
			t.Fatalf("%q accepted as %#v", s, u)
		}
	})
}
