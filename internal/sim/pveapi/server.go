// Package pveapi serves the Proxmox VE HTTP API under /api2/json on top of
// the simulated cluster state in internal/sim/pve, faithfully enough that
// go-proxmox behaves as it does against a real node (BACKENDS.md §1):
// PVEAPIToken authentication checked against the state's tokens and ACLs,
// JSON or form bodies, unknown parameters rejected, {"data": ...}
// envelopes, errors as PVE sends them (the message in the HTTP reason
// phrase, written on a hijacked connection because net/http only writes
// standard phrases), 400 parameter errors as {"errors": {...}}, and
// injected faults (HTTP errors, unreachable nodes, request latency).
//
// Start runs it over HTTPS with the node certificate from the state
// directory, so clients pin its fingerprint as they would a real node's.
package pveapi

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// Server is the API as an http.Handler.
type Server struct {
	store *pve.Store
	// node is the node this API runs on (requests not naming a node are
	// answered by it).
	node string
	log  *slog.Logger

	total atomic.Int64
	mu    sync.Mutex
	calls map[string]int
}

// NewServer returns the API of node backed by store.
func NewServer(store *pve.Store, node string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{store: store, node: node, log: log, calls: map[string]int{}}
}

// Requests is the number of requests served so far.
func (s *Server) Requests() int64 { return s.total.Load() }

// Calls counts requests per route ("POST /nodes/{node}/qemu/{vmid}/clone").
func (s *Server) Calls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// response is what a handler produced.
type response struct {
	status int
	reason string
	body   []byte
	drop   bool // close the connection without answering (unreachable node)
}

// request is a parsed API request.
type request struct {
	method string
	path   string   // below /api2/json
	segs   []string // path segments
	params map[string]string
	actor  string
}

const prefix = "/api2/json"

// errRollback makes Store.Update discard a failed request's changes.
var errRollback = errors.New("request failed")

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.total.Add(1)
	resp, latency := s.handle(r)
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
		}
	}
	if resp.drop {
		dropConn(w)
		return
	}
	writeResponse(w, resp)
}

func (s *Server) handle(r *http.Request) (response, time.Duration) {
	if !strings.HasPrefix(r.URL.Path, prefix+"/") && r.URL.Path != prefix {
		return response{status: 501, reason: fmt.Sprintf("Method '%s %s' not implemented", r.Method, r.URL.Path)}, 0
	}
	req := &request{method: r.Method, path: strings.TrimPrefix(r.URL.Path, prefix)}
	for _, seg := range strings.Split(strings.Trim(req.path, "/"), "/") {
		if seg != "" {
			req.segs = append(req.segs, seg)
		}
	}
	params, perr := parseParams(r)
	req.params = params
	var resp response
	var latency time.Duration
	err := s.store.Update(func(st *pve.State) error {
		latency = st.Timing.Request.D()
		if ferr, hit := consumeHTTPFault(st, r.Method, req.path); hit {
			resp = ferr
			return nil
		}
		if n := s.nodeOf(req); st.Nodes[n] != nil && !st.NodeOnline(n) {
			if n == s.node {
				resp = response{drop: true}
			} else {
				// pveproxy forwards requests for another node to it;
				// AnyEvent::HTTP answers a failed connect with 595 and
				// no body (pve-http-server proxy_request).
				resp = response{status: 595, reason: "No route to host"}
			}
			return nil
		}
		auth := r.Header.Get("Authorization")
		tok, ok := strings.CutPrefix(auth, "PVEAPIToken=")
		if auth == "" {
			resp = errResponse(&pve.Error{Status: 401, Msg: "No ticket"})
			return nil
		}
		if !ok {
			resp = errResponse(&pve.Error{Status: 401, Msg: "authentication failure"})
			return nil
		}
		actor, err := st.Authenticate(tok)
		if err != nil {
			resp = errResponse(pve.AsError(err))
			return nil
		}
		req.actor = actor
		if perr != nil {
			resp = errResponse(perr)
			return nil
		}
		if r.Method != http.MethodGet && !st.Quorate() {
			resp = errResponse(pve.ErrNoQuorum())
			return nil
		}
		route, data, err := s.route(st, req)
		s.count(r.Method + " " + route)
		if err != nil {
			resp = errResponse(pve.AsError(err))
			// Discard whatever the failed operation changed.
			return errRollback
		}
		resp = okResponse(data)
		return nil
	})
	if err != nil && !errors.Is(err, errRollback) {
		s.log.Error("pve simulator state", "err", err)
		return response{status: 500, reason: err.Error()}, 0
	}
	return resp, latency
}

func (s *Server) nodeOf(req *request) string {
	if len(req.segs) >= 2 && req.segs[0] == "nodes" {
		return req.segs[1]
	}
	return s.node
}

func (s *Server) count(route string) {
	s.mu.Lock()
	s.calls[route]++
	s.mu.Unlock()
}

func consumeHTTPFault(st *pve.State, method, path string) (response, bool) {
	for i := range st.Faults.HTTPErrors {
		f := &st.Faults.HTTPErrors[i]
		if f.Count <= 0 || (f.Method != "" && f.Method != method) || !strings.Contains(path, f.PathContains) {
			continue
		}
		f.Count--
		resp := response{status: f.Status, reason: f.Reason, body: []byte(`{"data":null}`)}
		if f.Count == 0 {
			st.Faults.HTTPErrors = append(st.Faults.HTTPErrors[:i], st.Faults.HTTPErrors[i+1:]...)
		}
		return resp, true
	}
	return response{}, false
}

// parseParams merges the query with a JSON or form body, as PVE does.
// JSON numbers keep their text, booleans become 1/0.
func parseParams(r *http.Request) (map[string]string, *pve.Error) {
	out := map[string]string{}
	for k, v := range r.URL.Query() {
		if len(v) > 0 {
			out[k] = v[len(v)-1]
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return out, &pve.Error{Status: 400, Msg: "unable to read request body"}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return out, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" {
		m, perr := ParseJSONParams(body)
		if perr != nil {
			return out, perr
		}
		for k, v := range m {
			out[k] = v
		}
		return out, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return out, &pve.Error{Status: 400, Msg: "unable to parse request body"}
	}
	for k, v := range form {
		if len(v) > 0 {
			out[k] = v[len(v)-1]
		}
	}
	return out, nil
}

// ParseJSONParams converts a JSON object body to PVE's string parameters.
func ParseJSONParams(body []byte) (map[string]string, *pve.Error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, &pve.Error{Status: 400, Msg: "JSON decode failed: " + err.Error()}
	}
	out := map[string]string{}
	perr := map[string]string{}
	for k, v := range m {
		switch x := v.(type) {
		case nil:
		case string:
			out[k] = x
		case json.Number:
			out[k] = x.String()
		case bool:
			out[k] = "0"
			if x {
				out[k] = "1"
			}
		case []any:
			// An array parameter (agent/exec's command): its strings,
			// NUL-separated (a NUL cannot be in a command's argument).
			parts := make([]string, 0, len(x))
			for _, e := range x {
				s, ok := e.(string)
				if !ok {
					perr[k] = "type check ('string') failed - got a " + fmt.Sprintf("%T", e)
					break
				}
				parts = append(parts, s)
			}
			out[k] = strings.Join(parts, "\x00")
		default:
			perr[k] = "type check ('string') failed - got a " + fmt.Sprintf("%T", v)
		}
	}
	if len(perr) > 0 {
		return nil, pve.ParamError(perr)
	}
	return out, nil
}

func okResponse(data any) response {
	b, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		return response{status: 500, reason: "encode response: " + err.Error()}
	}
	return response{status: 200, body: b}
}

func errResponse(e *pve.Error) response {
	switch e.Status {
	case 400:
		b, _ := json.Marshal(map[string]any{"errors": e.Params, "data": nil})
		return response{status: 400, reason: e.Msg, body: b}
	default:
		return response{status: e.Status, reason: e.Msg, body: []byte(`{"data":null}`)}
	}
}

// writeResponse answers; non-200 answers carry PVE's message as the reason
// phrase, which needs the raw connection.
func writeResponse(w http.ResponseWriter, resp response) {
	if resp.status == 200 || resp.reason == "" {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.Header().Set("Cache-Control", "max-age=0")
		w.Header().Set("Pragma", "no-cache")
		w.WriteHeader(resp.status)
		_, _ = w.Write(resp.body)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		w.Header().Set("Content-Type", "application/json;charset=UTF-8")
		w.WriteHeader(resp.status)
		_, _ = w.Write(resp.body)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer conn.Close()
	reason := strings.Join(strings.Fields(strings.ReplaceAll(resp.reason, "\n", " ")), " ")
	fmt.Fprintf(buf, "HTTP/1.1 %03d %s\r\nContent-Type: application/json;charset=UTF-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		resp.status, reason, len(resp.body))
	_, _ = buf.Write(resp.body)
	_ = buf.Flush()
}

func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// Sim is a running HTTPS API.
type Sim struct {
	// URL is the base URL as dc-agent's api_url ("https://127.0.0.1:8006");
	// the API is under URL + "/api2/json".
	URL string
	// Fingerprint is the node certificate's SHA-256 ("AA:BB:...").
	Fingerprint string
	Node        string
	Store       *pve.Store
	Server      *Server
	srv         *http.Server
	ln          net.Listener
	done        chan struct{}
}

// Start serves node's API over HTTPS on addr ("127.0.0.1:0" for a free
// port) with the node certificate from the state directory.
func Start(store *pve.Store, node, addr string, log *slog.Logger) (*Sim, error) {
	var fp string
	if err := store.View(func(st *pve.State) error {
		n := st.Nodes[node]
		if n == nil {
			return fmt.Errorf("node %q is not in the simulated cluster (nodes: %s)", node, strings.Join(st.NodeNames(), ", "))
		}
		fp = n.SSLFingerprint
		return nil
	}); err != nil {
		return nil, err
	}
	certFile, keyFile := store.NodeCertFiles(node)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load node certificate: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	h := NewServer(store, node, log)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		// HTTP/1.1 only: PVE messages need hijacked connections.
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	s := &Sim{URL: "https://" + ln.Addr().String(), Fingerprint: fp, Node: node, Store: store, Server: h,
		srv: srv, ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pve simulator stopped", "err", err)
		}
	}()
	return s, nil
}

// Close stops the server.
func (s *Sim) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

// APIURL is URL + "/api2/json".
func (s *Sim) APIURL() string { return s.URL + prefix }

// sortedCalls formats Calls for logs.
func sortedCalls(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%6d  %s\n", m[k], k)
	}
	return b.String()
}

// CallsReport is a per-route table of the requests served.
func (s *Server) CallsReport() string { return sortedCalls(s.Calls()) }

func atoiParam(name, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, pve.ParamError(map[string]string{name: fmt.Sprintf("type check ('integer') failed - got '%s'", v)})
	}
	return n, nil
}
