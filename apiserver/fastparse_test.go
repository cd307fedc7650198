package apiserver

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/dcapi"
)

const testKeyHex = "197f6b23e16c8532c6abc838facd5ea789be0c76b2920334039bfa8b3d368d61"

func rawHeartbeat(extra string, body string) string {
	return "POST " + dcapi.APIPrefix + "/providers/" + testKeyHex + "/heartbeat HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n" + extra + "\r\n" + body
}

// FuzzFastParse checks the fast path's request parser against net/http's:
// whatever it takes (fastOK) net/http reads as the same request — method,
// path, Host, every header field, the body, and the same number of bytes —
// and it never takes more than it was given.
func FuzzFastParse(f *testing.F) {
	body := `{"version":"0.9.0","provisionerType":"docker","capabilities":["vm"],"activeContracts":1}`
	sig := "X-Timestamp: 1700000000000000000\r\nX-Nonce: 123e4567-e89b-42d3-a456-426614174000\r\nX-Agent-Pubkey: " + testKeyHex +
		"\r\nX-Signature: " + strings.Repeat("ab", 64) + "\r\nContent-Type: application/json\r\n"
	f.Add([]byte(rawHeartbeat(sig, body)))
	f.Add([]byte(rawHeartbeat(sig+"Connection: keep-alive\r\nUser-Agent: dc-agent/1\r\nAccept-Encoding: gzip\r\n", body)))
	f.Add([]byte(rawHeartbeat(sig, body) + rawHeartbeat(sig, "{}")))
	f.Add([]byte(rawHeartbeat("x-timestamp:1\r\nx-nonce:\t n \t\r\n", "")))
	f.Add([]byte(rawHeartbeat("Transfer-Encoding: chunked\r\n", body)))
	f.Add([]byte(rawHeartbeat("Host: other\r\n", body)))
	f.Add([]byte(rawHeartbeat(" folded\r\n", body)))
	f.Add([]byte(rawHeartbeat("Bad Name: v\r\n", body)))
	f.Add([]byte(rawHeartbeat("Content-Length: 3\r\n", body)))
	f.Add([]byte(rawHeartbeat("X-Signature: a\r\nX-Signature: b\r\n", body)))
	f.Add([]byte(strings.Replace(rawHeartbeat(sig, body), "HTTP/1.1", "HTTP/1.0", 1)))
	f.Add([]byte(strings.Replace(rawHeartbeat(sig, body), "/heartbeat", "/heartbeat?x=1", 1)))
	f.Add([]byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
	f.Add([]byte(rawHeartbeat(sig, body)[:100]))
	f.Add([]byte(strings.Replace(rawHeartbeat(sig, body), "\r\n\r\n", "\r\n\n", 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r fastReq
		v := parseFast(b, 4096, 1024, &r)
		if v == fastMore {
			// Waiting for more is right only if net/http could not
			// answer these bytes either: no complete request in them.
			req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
			if err == nil {
				if _, err := io.ReadAll(req.Body); err == nil {
					t.Fatalf("fast path waits for more, net/http has a whole request:\n%q", b)
				}
			}
			return
		}
		if v != fastOK {
			return
		}
		if r.totalLen > len(b) || r.headLen > 4096 || r.bodyLen > 1024 {
			t.Fatalf("took %d bytes (head %d, body %d) of %d", r.totalLen, r.headLen, r.bodyLen, len(b))
		}
		br := bufio.NewReader(bytes.NewReader(b))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("fast path took a request net/http refuses: %v\n%q", err, b)
		}
		got, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatalf("net/http body: %v", err)
		}
		consumed := len(b) - br.Buffered()
		if consumed != r.totalLen {
			t.Fatalf("net/http read %d bytes, fast path %d:\n%q", consumed, r.totalLen, b)
		}
		if req.Method != "POST" || req.RequestURI != string(b[5:r.pathEnd]) || req.URL.Path != req.RequestURI || req.URL.RawQuery != "" {
			t.Fatalf("request line: %s %q (path %q), fast path %q", req.Method, req.RequestURI, req.URL.Path, b[5:r.pathEnd])
		}
		if req.Host != string(b[r.host[0]:r.host[1]]) {
			t.Fatalf("Host %q, fast path %q", req.Host, b[r.host[0]:r.host[1]])
		}
		if !bytes.Equal(got, b[r.headLen:r.totalLen]) || req.ContentLength != int64(r.bodyLen) {
			t.Fatalf("body %q (length %d), fast path %q", got, req.ContentLength, b[r.headLen:r.totalLen])
		}
		if req.ProtoMajor != 1 || req.ProtoMinor != 1 || req.Close || len(req.TransferEncoding) > 0 {
			t.Fatalf("not a plain HTTP/1.1 keep-alive request: %+v", req)
		}
		h := http.Header{}
		for i, n := range r.names {
			k := textproto.CanonicalMIMEHeaderKey(string(b[n[0]:n[1]]))
			h[k] = append(h[k], string(b[r.values[i][0]:r.values[i][1]]))
		}
		for k, vs := range req.Header {
			if k == "Content-Length" {
				continue
			}
			if strings.Join(h[k], "\x00") != strings.Join(vs, "\x00") {
				t.Fatalf("header %s: net/http %q, fast path %q", k, vs, h[k])
			}
		}
		for k := range h {
			if _, ok := req.Header[k]; !ok {
				t.Fatalf("header %s only in the fast path", k)
			}
		}
	})
}

func TestParseFastDeclines(t *testing.T) {
	body := `{"version":"1"}`
	ok := rawHeartbeat("X-Nonce: n\r\n", body)
	var r fastReq
	if v := parseFast([]byte(ok), fastMaxHead, fastMaxBody, &r); v != fastOK || r.totalLen != len(ok) {
		t.Fatalf("plain heartbeat: verdict %d, %d of %d bytes", v, r.totalLen, len(ok))
	}
	for i := 1; i < len(ok); i++ {
		if v := parseFast([]byte(ok[:i]), fastMaxHead, fastMaxBody, &r); v != fastMore {
			t.Fatalf("first %d bytes: verdict %d, want more", i, v)
		}
	}
	for name, raw := range map[string]string{
		"chunked":        rawHeartbeat("Transfer-Encoding: chunked\r\n", body),
		"expect":         rawHeartbeat("Expect: 100-continue\r\n", body),
		"close":          rawHeartbeat("Connection: close\r\n", body),
		"upgrade":        rawHeartbeat("Upgrade: h2c\r\n", body),
		"two hosts":      rawHeartbeat("Host: b\r\n", body),
		"two lengths":    rawHeartbeat("Content-Length: 15\r\n", body),
		"two signatures": rawHeartbeat("X-Signature: a\r\nx-signature: a\r\n", body),
		"folded":         rawHeartbeat("X-Nonce: a\r\n b\r\n", body),
		"space in name":  rawHeartbeat("X-Nonce : a\r\n", body),
		"control char":   rawHeartbeat("X-Nonce: a\x01\r\n", body),
		"non-ASCII":      rawHeartbeat("X-Nonce: \xc3\xa9\r\n", body),
		"bare LF":        strings.Replace(ok, "\r\nX-Nonce", "\nX-Nonce", 1),
		"bare LF end":    strings.Replace(ok, "\r\n\r\n", "\r\n\n", 1),
		"bare CR":        strings.Replace(ok, "\r\nX-Nonce", "\rX-Nonce", 1),
		"HTTP/1.0":       strings.Replace(ok, "HTTP/1.1", "HTTP/1.0", 1),
		"query":          strings.Replace(ok, "/heartbeat", "/heartbeat?a=b", 1),
		"uppercase key":  strings.Replace(ok, testKeyHex, strings.ToUpper(testKeyHex), 1),
		"GET":            strings.Replace(ok, "POST", "GET", 1),
		"other endpoint": strings.Replace(ok, "/heartbeat", "/health", 1),
		"no length":      strings.Replace(ok, "Content-Length: 15\r\n", "", 1),
		"no host":        strings.Replace(ok, "Host: 127.0.0.1:8080\r\n", "", 1),
		"signed length":  strings.Replace(ok, "Content-Length: 15", "Content-Length: +15", 1),
		"too large":      rawHeartbeat("", strings.Repeat(" ", fastMaxBody+1)),
		"head too large": rawHeartbeat("X-Pad: "+strings.Repeat("a", fastMaxHead)+"\r\n", body),
	} {
		if v := parseFast([]byte(raw), fastMaxHead, fastMaxBody, &r); v != fastDecline {
			t.Errorf("%s: verdict %d, want decline", name, v)
		}
	}
}
