package safeurl

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://api.decent-cloud.org":     true,
		"https://10.0.0.5:8443/x":          true,
		"http://127.0.0.1:8080":            true,
		"http://127.9.8.7":                 true,
		"http://localhost:1234/api":        true,
		"http://LOCALHOST":                 true,
		"http://[::1]:80":                  true,
		"http://127.0.0.1@evil.example":    false,
		"http://127.0.0.1.evil.example":    false,
		"http://localhost.evil.example":    false,
		"http://evil.example#@127.0.0.1":   false,
		"http://10.0.0.5":                  false,
		"http://[::ffff:127.0.0.1]":        true, // IPv4-mapped loopback is loopback
		"http://0.0.0.0:80":                false,
		"ftp://127.0.0.1/x":                false,
		"https://":                         false,
		"http://[fe80::1%25lo]:80":         false,
		"http://user:pw@localhost:9/x?y=1": true,
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := Check(u) == nil; got != ok {
			t.Errorf("Check(%s) ok = %v, want %v (%v)", raw, got, ok, Check(u))
		}
	}
	u, _ := url.Parse("http://example.net")
	if err := Check(u); !errors.Is(err, ErrPlainHTTP) || !strings.Contains(err.Error(), "use https://") {
		t.Errorf("plain http error: %v", err)
	}
}

func TestNoDowngrade(t *testing.T) {
	req := func(raw string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, raw, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"https://github.com/o/r/releases/download/v1/x", "https://objects.githubusercontent.com/x?sig=1", true},
		{"https://dl.example/x", "http://dl.example/x", false},
		{"https://dl.example/x", "http://127.0.0.1/x", false},
		{"http://127.0.0.1:9/x", "http://127.0.0.1:10/x", true},
		{"http://127.0.0.1:9/x", "http://evil.example/x", false},
		{"http://127.0.0.1:9/x", "http://127.0.0.1@evil.example/x", false},
	} {
		err := NoDowngrade(req(tc.to), []*http.Request{req(tc.from)})
		if (err == nil) != tc.ok {
			t.Errorf("%s -> %s: %v", tc.from, tc.to, err)
		}
		if err != nil && strings.Contains(err.Error(), "sig=1") {
			t.Errorf("query in message: %v", err)
		}
	}
	var via []*http.Request
	for range maxRedirects {
		via = append(via, req("https://a.example/"))
	}
	if err := NoDowngrade(req("https://b.example/"), via); err == nil {
		t.Error("endless redirects followed")
	}
}
