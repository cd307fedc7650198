// Package safeurl is the one rule for which URLs dc-agent sends secrets,
// signed requests or downloads over: https everywhere, plain http only to a
// loopback address (a local test or development server), where there is no
// network to listen on. The host is parsed, never matched by prefix:
// http://127.0.0.1@evil.example is evil.example.
package safeurl

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// IsLoopbackHost reports whether host (a URL's Hostname: no port, no
// brackets) is this machine: "localhost", 127.0.0.0/8 or ::1.
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ErrPlainHTTP is returned (wrapped) for an http:// URL to another machine.
var ErrPlainHTTP = errors.New("plain http is only accepted for a loopback address; use https://")

// Check accepts an https URL with a host, or an http URL to a loopback
// address.
func Check(u *url.URL) error {
	switch {
	case u.Host == "":
		return errors.New("no host")
	case u.Scheme == "https":
		return nil
	case u.Scheme == "http" && IsLoopbackHost(u.Hostname()):
		return nil
	case u.Scheme == "http":
		return ErrPlainHTTP
	}
	return fmt.Errorf("scheme %q: use https://", u.Scheme)
}

// maxRedirects is how many redirects a download follows.
const maxRedirects = 10

// NoDowngrade is an http.Client CheckRedirect for downloads: it follows a
// redirect only to a URL Check accepts, and never from https to http (a
// release host may hand off to a CDN over https; a redirect to plain http
// would let anyone on the path answer instead).
func NoDowngrade(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	prev := via[len(via)-1].URL
	if prev.Scheme == "https" && req.URL.Scheme != "https" {
		return fmt.Errorf("refusing the redirect from %s to %s: it leaves https", Redact(prev), Redact(req.URL))
	}
	if err := Check(req.URL); err != nil {
		return fmt.Errorf("refusing the redirect from %s to %s: %w", Redact(prev), Redact(req.URL), err)
	}
	return nil
}

// Redact is u without user info and query, for messages.
func Redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.ForceQuery = false
	return c.String()
}
