package apiserver

import (
	"bytes"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// The heartbeat fast path (fastpath.go) reads HTTP/1.1 requests itself and
// serves only the most common, plainest shape of one request: the agent
// heartbeat. parseFast decides, from the bytes received so far, whether the
// request at the start of b is such a request (fastOK), may be one but is
// not complete yet (fastMore), or is anything else (fastDecline), which
// hands the connection, bytes unconsumed, to net/http. It declines whatever
// it does not fully understand, so net/http keeps answering every unusual
// request exactly as before: it never needs to be as liberal as net/http,
// only never more.

type fastVerdict int

const (
	fastMore fastVerdict = iota
	fastOK
	fastDecline
)

// fastHeaderMax is the most header fields the fast path takes.
const fastHeaderMax = 32

// fastReq is a parsed heartbeat request: offsets into the parsed bytes.
type fastReq struct {
	headLen  int      // request line + header fields + the empty line
	pathEnd  int      // the request target is b[5:pathEnd]
	host     [2]int   // Host value
	names    [][2]int // other field names, as received
	values   [][2]int // and their values, without surrounding blanks
	bodyLen  int
	totalLen int // headLen + bodyLen
}

// fastPrefix is how every fast-path request starts.
const fastPrefix = "POST " + dcapi.APIPrefix + "/providers/"

// fastSuffix is the request line after the 64-hex provider key.
const fastSuffix = "/heartbeat HTTP/1.1\r\n"

// parseFast parses the request at the start of b. maxHead bounds the
// request line and header fields, maxBody the body. On fastOK, r describes
// the request, which is b[:r.totalLen].
func parseFast(b []byte, maxHead, maxBody int, r *fastReq) fastVerdict {
	// The request line, as far as it has arrived.
	n := min(len(b), len(fastPrefix))
	if string(b[:n]) != fastPrefix[:n] {
		return fastDecline
	}
	keyEnd := len(fastPrefix) + 64
	for i := len(fastPrefix); i < min(len(b), keyEnd); i++ {
		if c := b[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fastDecline
		}
	}
	n = min(len(b), keyEnd+len(fastSuffix))
	if n > keyEnd && string(b[keyEnd:n]) != fastSuffix[:n-keyEnd] {
		return fastDecline
	}
	end := bytes.Index(b, []byte("\r\n\r\n"))
	if end < 0 {
		if len(b) >= maxHead {
			return fastDecline
		}
		// A bare LF (which net/http takes as a line end) or a CR not
		// followed by LF: net/http's, at once, rather than waiting for a
		// CRLF CRLF that may never come.
		for i, c := range b {
			if c == '\n' && (i == 0 || b[i-1] != '\r') || c == '\r' && i+1 < len(b) && b[i+1] != '\n' {
				return fastDecline
			}
		}
		return fastMore
	}
	headLen := end + 4
	if headLen > maxHead {
		return fastDecline
	}
	r.headLen = headLen
	r.pathEnd = keyEnd + len("/heartbeat")
	r.names, r.values = r.names[:0], r.values[:0]
	r.host = [2]int{-1, -1}
	cl := -1
	var seen uint8 // the signed headers and X-Request-Id, to refuse duplicates
	// Header fields: "Name: value\r\n", one per line, no folding.
	for i := keyEnd + len(fastSuffix); i < end+2; {
		eol := bytes.Index(b[i:end+2], []byte("\r\n"))
		if eol <= 0 {
			return fastDecline // an empty line before the end cannot happen; be safe
		}
		line := b[i : i+eol]
		lineStart := i
		i += eol + 2
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return fastDecline
		}
		for _, c := range line[:colon] {
			if !isTokenChar(c) {
				return fastDecline
			}
		}
		vs, ve := colon+1, len(line)
		for vs < ve && (line[vs] == ' ' || line[vs] == '\t') {
			vs++
		}
		for ve > vs && (line[ve-1] == ' ' || line[ve-1] == '\t') {
			ve--
		}
		for _, c := range line[vs:ve] {
			if (c < ' ' && c != '\t') || c > '~' {
				return fastDecline
			}
		}
		name := line[:colon]
		val := [2]int{lineStart + vs, lineStart + ve}
		switch {
		case equalFold(name, "Host"):
			if r.host[0] >= 0 || !validFastHost(line[vs:ve]) {
				return fastDecline
			}
			r.host = val
			continue
		case equalFold(name, "Content-Length"):
			v := line[vs:ve]
			if cl >= 0 || len(v) == 0 || len(v) > 9 {
				return fastDecline
			}
			cl = 0
			for _, c := range v {
				if c < '0' || c > '9' {
					return fastDecline
				}
				cl = cl*10 + int(c-'0')
			}
			continue
		case equalFold(name, "Transfer-Encoding"), equalFold(name, "Expect"), equalFold(name, "Upgrade"),
			equalFold(name, "TE"), equalFold(name, "Trailer"), equalFold(name, "Proxy-Connection"):
			return fastDecline
		case equalFold(name, "Connection"):
			// Only the keep-alive a client may say out loud; close,
			// upgrade and the rest are net/http's.
			if !equalFold(line[vs:ve], "keep-alive") {
				return fastDecline
			}
		default:
			for bit, h := range fastSingleHeaders {
				if equalFold(name, h) {
					if seen&(1<<bit) != 0 {
						return fastDecline
					}
					seen |= 1 << bit
				}
			}
		}
		if len(r.names) == fastHeaderMax {
			return fastDecline
		}
		r.names = append(r.names, [2]int{lineStart, lineStart + colon})
		r.values = append(r.values, val)
	}
	if r.host[0] < 0 || cl < 0 || cl > maxBody {
		return fastDecline
	}
	r.bodyLen = cl
	r.totalLen = headLen + cl
	if len(b) < r.totalLen {
		return fastMore
	}
	return fastOK
}

// fastSingleHeaders may appear at most once in a fast-path request (the
// authentication reads the first; a duplicate goes to net/http, which does
// the same, so that the fast path needs no opinion on it).
var fastSingleHeaders = [...]string{dcapi.HeaderTimestamp, dcapi.HeaderNonce, dcapi.HeaderSignature,
	dcapi.HeaderAgentPubkey, dcapi.HeaderPublicKey, dcapi.HeaderRequestID, "Content-Type"}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validFastHost takes the plain host[:port] forms (names, IPv4, bracketed
// IPv6); anything else is left to net/http's own check.
func validFastHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// equalFold is ASCII case-insensitive equality of b and s.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := b[i], s[i]
		if x >= 'A' && x <= 'Z' {
			x += 'a' - 'A'
		}
		if y >= 'A' && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
