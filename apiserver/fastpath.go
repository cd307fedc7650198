package apiserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// The heartbeat fast path: the costliest part of a heartbeat after its
// signature check was net/http's per-request machinery (a request and
// response object, header maps, a background read goroutine, a cancel
// context, buffered writers), not the handler. Agents send one kind of
// request far more than any other, so dc-api reads requests on each
// connection itself and answers plain HTTP/1.1 heartbeats directly; the
// first request it does not take (another endpoint, or anything unusual:
// see parseFast) hands the connection over to net/http with every byte
// already read, unconsumed, and net/http serves that connection from then
// on. The request still goes through the very same handler chain as with
// net/http (request id, access log, panic recovery, body limit, PROTOCOL.md
// §2 authentication and authorization, the heartbeat handler), only the
// parsing of the request and writing of the answer differ.
// Config.DisableFastPath (dc-api serve --http-fast-path=false) turns it off.

// Fast-path limits: a request larger than these goes to net/http.
const (
	fastMaxHead   = 16 << 10
	fastMaxBody   = 64 << 10
	fastFirstRead = 4 << 10
)

// httpTimeouts are the connection timeouts of both paths.
type httpTimeouts struct {
	readHeader, read, write, idle time.Duration
}

// fastPath serves connections accepted from ln; net/http gets the rest
// through Accept.
type fastPath struct {
	s       *Server
	ln      net.Listener
	to      httpTimeouts
	baseCtx context.Context
	maxBody int

	handoff   chan net.Conn
	done      chan struct{} // closed when the listener is closed or failed
	doneOnce  sync.Once
	lnOnce    sync.Once
	acceptErr error

	mu       sync.Mutex
	conns    map[*fastConn]struct{}
	shutting atomic.Bool
	wg       sync.WaitGroup
}

type fastConn struct {
	c     net.Conn
	state atomic.Int32 // fastIdle, fastActive, fastClosed
}

const (
	fastIdle int32 = iota
	fastActive
	fastClosed
)

func newFastPath(s *Server, ln net.Listener, to httpTimeouts, baseCtx context.Context) *fastPath {
	f := &fastPath{s: s, ln: ln, to: to, baseCtx: baseCtx,
		maxBody: int(min(int64(fastMaxBody), s.cfg.MaxBodyBytes)),
		handoff: make(chan net.Conn), done: make(chan struct{}), conns: map[*fastConn]struct{}{}}
	go f.acceptLoop()
	return f
}

// Accept gives net/http the connections the fast path handed over.
func (f *fastPath) Accept() (net.Conn, error) {
	select {
	case c := <-f.handoff:
		return c, nil
	case <-f.done:
		if f.acceptErr != nil {
			return nil, f.acceptErr
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting (net/http's Shutdown and Close call it, and so does
// shutdown, concurrently): only the first call closes the listener and may
// return an error, so that a graceful stop never reports the second close.
func (f *fastPath) Close() error {
	f.doneOnce.Do(func() { close(f.done) })
	var err error
	f.lnOnce.Do(func() { err = f.ln.Close() })
	return err
}

func (f *fastPath) Addr() net.Addr { return f.ln.Addr() }

func (f *fastPath) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			select {
			case <-f.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				f.s.log.Warn("accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			f.doneOnce.Do(func() { f.acceptErr = err; close(f.done) })
			return
		}
		backoff = 0
		fc := &fastConn{c: c}
		f.mu.Lock()
		if f.shutting.Load() {
			f.mu.Unlock()
			_ = c.Close()
			continue
		}
		f.conns[fc] = struct{}{}
		f.wg.Add(1) // before shutdown's Wait: both under mu
		f.mu.Unlock()
		go f.serveConn(fc)
	}
}

func isTemporaryAccept(err error) bool {
	type temporary interface{ Temporary() bool }
	var t temporary
	return errors.As(err, &t) && t.Temporary()
}

// release stops tracking fc (it was closed or handed over).
func (f *fastPath) release(fc *fastConn) {
	f.mu.Lock()
	delete(f.conns, fc)
	f.mu.Unlock()
	f.wg.Done()
}

// shutdown closes the idle fast-path connections at once and the others as
// soon as their request is answered; it returns when all are closed, or
// closes them all when ctx is done first.
func (f *fastPath) shutdown(ctx context.Context) error {
	_ = f.Close()
	f.mu.Lock()
	f.shutting.Store(true)
	for fc := range f.conns {
		if fc.state.CompareAndSwap(fastIdle, fastClosed) {
			_ = fc.c.Close()
		}
	}
	f.mu.Unlock()
	waited := make(chan struct{})
	go func() { f.wg.Wait(); close(waited) }()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		f.closeAll()
		return ctx.Err()
	}
}

// closeAll cuts every fast-path connection (a hard stop).
func (f *fastPath) closeAll() {
	_ = f.Close()
	f.mu.Lock()
	f.shutting.Store(true)
	for fc := range f.conns {
		fc.state.Store(fastClosed)
		_ = fc.c.Close()
	}
	f.mu.Unlock()
}

// fastExchange is the per-connection state of one request: the request,
// its response writer and body, reused from request to request.
type fastExchange struct {
	req     http.Request
	url     url.URL
	body    fastBody
	w       fastWriter
	parsed  fastReq
	remote  string
	out     []byte
	hdrKeys []string
	hdr     http.Header
	// writeDeadline is the write deadline set, renewed when a quarter of
	// the write timeout is used up.
	writeDeadline time.Time
}

func (f *fastPath) serveConn(fc *fastConn) {
	c := fc.c
	handedOver := false
	defer func() {
		if p := recover(); p != nil {
			// The middleware recovers handler panics; this is the fast
			// path's own (net/http too keeps one connection's panic from
			// taking the server down).
			f.s.log.Error("panic serving a connection", "remote", c.RemoteAddr().String(), "panic", fmt.Sprint(p))
			handedOver = false
		}
		if !handedOver {
			fc.state.Store(fastClosed)
			_ = c.Close()
		}
		f.release(fc)
	}()
	if f.shutting.Load() {
		return
	}
	buf := make([]byte, fastFirstRead)
	start, end := 0, 0
	x := &fastExchange{remote: c.RemoteAddr().String()}
	var idleDeadline time.Time // the read deadline set for waiting, if any
	for {
		v := fastMore
		if end > start {
			v = parseFast(buf[start:end], fastMaxHead, f.maxBody, &x.parsed)
		}
		switch v {
		case fastDecline:
			handedOver = f.handOver(fc, buf[start:end])
			return
		case fastMore:
			if end == len(buf) {
				if start > 0 {
					end = copy(buf, buf[start:end])
					start = 0
				} else {
					if len(buf) >= fastMaxHead+f.maxBody {
						handedOver = f.handOver(fc, buf[start:end])
						return
					}
					buf = append(buf, make([]byte, len(buf))...)[:2*len(buf)]
				}
			}
			now := time.Now()
			if end == start {
				// Waiting for the next request: the idle timeout, renewed
				// only when a quarter of it is used up (a deadline per
				// request costs more than the rest of the read).
				if idleDeadline.Sub(now) < f.to.idle*3/4 {
					idleDeadline = now.Add(f.to.idle)
					_ = c.SetReadDeadline(idleDeadline)
				}
			} else if !idleDeadline.IsZero() {
				// Part of a request is in: the rest must follow soon.
				idleDeadline = time.Time{}
				_ = c.SetReadDeadline(now.Add(min(f.to.readHeader, f.to.read)))
			}
			n, err := c.Read(buf[end:])
			end += n
			if err != nil {
				if n > 0 && start < end {
					continue // parse what came with the error first
				}
				return
			}
			continue
		}
		// A complete heartbeat request: serve it unless shutting down.
		if !fc.state.CompareAndSwap(fastIdle, fastActive) {
			return
		}
		keep := f.serve(c, x, buf[start:start+x.parsed.totalLen])
		start += x.parsed.totalLen
		if start == end {
			start, end = 0, 0
			if len(buf) > fastFirstRead {
				buf = make([]byte, fastFirstRead) // a large request was the exception
			}
		}
		if !keep || !fc.state.CompareAndSwap(fastActive, fastIdle) {
			return
		}
		if f.shutting.Load() && fc.state.CompareAndSwap(fastIdle, fastClosed) {
			return
		}
	}
}

// handOver passes c to net/http with the bytes read but not consumed.
func (f *fastPath) handOver(fc *fastConn, pending []byte) bool {
	if !fc.state.CompareAndSwap(fastIdle, fastClosed) {
		return false
	}
	_ = fc.c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: fc.c, pre: slices.Clone(pending)}
	select {
	case f.handoff <- pc:
		return true
	case <-f.done:
		return false
	}
}

// serve answers one parsed request (b holds it whole) and reports whether
// the connection stays open.
func (f *fastPath) serve(c net.Conn, x *fastExchange, b []byte) (keep bool) {
	p := &x.parsed
	head := string(b[:p.headLen]) // one allocation: every name and value is a part of it
	// The header map is the connection's, cleared for each request: no
	// handler keeps it past its request.
	if x.hdr == nil {
		x.hdr = make(http.Header, len(p.names)+1)
	} else {
		clear(x.hdr)
	}
	h := x.hdr
	vals := make([]string, len(p.names)) // one backing array for the values
	for i, nm := range p.names {
		k := textproto.CanonicalMIMEHeaderKey(head[nm[0]:nm[1]])
		v := head[p.values[i][0]:p.values[i][1]]
		if old, ok := h[k]; ok {
			h[k] = append(old, v)
			continue
		}
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
	}
	path := head[5:p.pathEnd]
	x.url = url.URL{Path: path}
	x.body = fastBody{b: b[p.headLen:p.totalLen]}
	x.req = http.Request{
		Method: http.MethodPost, URL: &x.url, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: &x.body, ContentLength: int64(p.bodyLen), Host: head[p.host[0]:p.host[1]],
		RemoteAddr: x.remote, RequestURI: path, Pattern: fastPattern,
	}
	if p.bodyLen == 0 {
		x.req.Body = http.NoBody
	}
	r := &x.req
	r.SetPathValue("pubkey", path[len(fastPrefix)-len("POST "):][:64])
	x.w.reset()
	keep = true
	func() {
		defer func() {
			if p := recover(); p != nil {
				// The middleware recovers every panic but this one, which
				// asks to cut the connection (net/http does so too).
				keep = false
			}
		}()
		// The same middleware and handler as through the mux, routed
		// already.
		f.s.serveRequest(&x.w, r, f.s.mux, f.s.hbRoute, f.baseCtx)
	}()
	if !keep {
		return false
	}
	x.out = x.w.appendResponse(x.out[:0], &x.hdrKeys)
	if f.to.write > 0 {
		if now := time.Now(); x.writeDeadline.Sub(now) < f.to.write*3/4 {
			x.writeDeadline = now.Add(f.to.write)
			_ = c.SetWriteDeadline(x.writeDeadline)
		}
	}
	// Counted before the write: a client may read the answer (and a test
	// the counter) before Write returns here.
	f.s.fastServed.Add(1)
	if _, err := c.Write(x.out); err != nil {
		return false
	}
	return !x.w.closeAfter
}

// fastPattern is the heartbeat route's pattern, as the mux would set it.
const fastPattern = "POST " + dcapi.APIPrefix + "/providers/{pubkey}/heartbeat"

// fastBody is a request body already in memory.
type fastBody struct {
	b []byte
}

func (b *fastBody) Read(p []byte) (int, error) {
	if len(b.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, b.b)
	b.b = b.b[n:]
	return n, nil
}

func (b *fastBody) Close() error { return nil }

// fastWriter collects a handler's answer for one write.
type fastWriter struct {
	h          http.Header
	status     int
	body       []byte
	closeAfter bool
}

func (w *fastWriter) reset() {
	if w.h == nil {
		w.h = make(http.Header, 4)
	} else {
		clear(w.h)
	}
	w.status, w.body, w.closeAfter = 0, w.body[:0], false
}

func (w *fastWriter) Header() http.Header { return w.h }

func (w *fastWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *fastWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body = append(w.body, b...)
	return len(b), nil
}

// appendResponse serialises the answer as net/http would: status line,
// the handler's header fields in sorted order, Date, blank line, body.
func (w *fastWriter) appendResponse(out []byte, keys *[]string) []byte {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	out = append(out, "HTTP/1.1 "...)
	out = strconv.AppendInt(out, int64(status), 10)
	out = append(out, ' ')
	if t := http.StatusText(status); t != "" {
		out = append(out, t...)
	} else {
		out = append(out, "status code "...)
		out = strconv.AppendInt(out, int64(status), 10)
	}
	out = append(out, "\r\n"...)
	if _, ok := w.h["Content-Type"]; !ok && len(w.body) > 0 {
		w.h["Content-Type"] = []string{http.DetectContentType(w.body)}
	}
	// The length is what is sent, whatever the handler said.
	w.h["Content-Length"] = []string{strconv.Itoa(len(w.body))}
	delete(w.h, "Transfer-Encoding")
	delete(w.h, "Date")
	ks := (*keys)[:0]
	for k := range w.h {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	*keys = ks
	for _, k := range ks {
		if k == "Connection" {
			for _, v := range w.h[k] {
				if strings.EqualFold(strings.TrimSpace(v), "close") {
					w.closeAfter = true
				}
			}
		}
		for _, v := range w.h[k] {
			out = append(out, k...)
			out = append(out, ": "...)
			out = appendHeaderValue(out, v)
			out = append(out, "\r\n"...)
		}
	}
	out = append(out, "Date: "...)
	out = append(out, httpDate()...)
	out = append(out, "\r\n\r\n"...)
	return append(out, w.body...)
}

// appendHeaderValue writes v with line breaks turned into spaces, as
// net/http does.
func appendHeaderValue(out []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		out = append(out, c)
	}
	return out
}

// httpDate is the current Date header value, formatted once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.val
	}
	d := &cachedDate{sec: sec, val: now.UTC().Format(http.TimeFormat)}
	dateCache.Store(d)
	return d.val
}

type cachedDate struct {
	sec int64
	val string
}

var dateCache atomic.Pointer[cachedDate]

// prefixConn is a connection handed to net/http: it reads first the bytes
// the fast path read but did not use.
type prefixConn struct {
	net.Conn
	pre []byte
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// CloseWrite keeps net/http's graceful close of TCP connections.
func (p *prefixConn) CloseWrite() error {
	if cw, ok := p.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
