package apitest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
)

// Fault injection. A fault matches requests by method ("" = any) and a
// substring of the URL path ("" = any), e.g. ("POST", "/heartbeat") or
// ("PUT", "/provisioning"). Faults apply in the order they were added; each
// request takes the first that matches.

type faultKind int

const (
	faultFail faultKind = iota
	faultBlock
	faultLose
	faultDelay
)

type fault struct {
	kind      faultKind
	method    string
	path      string
	remaining int // < 0: until removed
	status    int
	delay     time.Duration
	release   chan struct{}
}

type faultSet struct {
	mu   sync.Mutex
	list []*fault
}

func (fs *faultSet) add(f *fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = append(fs.list, f)
}

func (fs *faultSet) take(r *http.Request) *fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.list {
		if (f.method == "" || f.method == r.Method) && strings.Contains(r.URL.Path, f.path) {
			if f.remaining > 0 {
				f.remaining--
				if f.remaining == 0 {
					fs.list = slices.Delete(fs.list, i, i+1)
				}
			}
			return f
		}
	}
	return nil
}

func (fs *faultSet) remove(f *fault) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if i := slices.Index(fs.list, f); i >= 0 {
		fs.list = slices.Delete(fs.list, i, i+1)
	}
}

func (fs *faultSet) releaseAll() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	var keep []*fault
	for _, f := range fs.list {
		if f.kind == faultBlock {
			closeOnce(f.release)
			continue
		}
		keep = append(keep, f)
	}
	fs.list = keep
}

func closeOnce(ch chan struct{}) {
	select {
	case <-ch:
	default:
		close(ch)
	}
}

// FailNext answers the next n matching requests with status (e.g. 503, 500,
// 429) and an error envelope, without reaching the server: nothing is
// stored. n < 0 fails every matching request until ClearFaults.
func (s *Server) FailNext(method, pathContains string, n, status int) {
	s.faults.add(&fault{kind: faultFail, method: method, path: pathContains, remaining: n, status: status})
}

// Block holds every matching request until the returned release func is
// called (then they are served normally) or the server stops (then their
// connections are cut). Use it to freeze the API mid-flight, e.g. to kill an
// agent while its report is in transit.
func (s *Server) Block(method, pathContains string) (release func()) {
	f := &fault{kind: faultBlock, method: method, path: pathContains, remaining: -1, release: make(chan struct{})}
	s.faults.add(f)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.faults.remove(f)
			closeOnce(f.release)
		})
	}
}

// LoseResponseNext lets the server process the next n matching requests
// (their effects are stored) but closes the connection instead of
// answering: the agent sees a network error for a request that succeeded,
// and must resend it idempotently.
func (s *Server) LoseResponseNext(method, pathContains string, n int) {
	s.faults.add(&fault{kind: faultLose, method: method, path: pathContains, remaining: n})
}

// DelayNext delays the next n matching requests by d before serving them.
func (s *Server) DelayNext(method, pathContains string, n int, d time.Duration) {
	s.faults.add(&fault{kind: faultDelay, method: method, path: pathContains, remaining: n, delay: d})
}

// ClearFaults removes every fault (blocked requests are released).
func (s *Server) ClearFaults() {
	s.faults.releaseAll()
	s.faults.mu.Lock()
	s.faults.list = nil
	s.faults.mu.Unlock()
}

// Request is one request the server received.
type Request struct {
	Method string
	Path   string
	Query  string
	Status int    // 0 when the connection was cut
	Fault  string // "", "fail", "block", "lose", "delay"
	At     time.Time
}

type requestLog struct {
	mu   sync.Mutex
	list []Request
}

const maxLoggedRequests = 100000

func (l *requestLog) add(r Request) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.list) >= maxLoggedRequests {
		l.list = l.list[len(l.list)/2:]
	}
	l.list = append(l.list, r)
}

// Requests returns the requests received so far that match method ("" =
// any) and a path substring, oldest first (faulted ones included).
func (s *Server) Requests(method, pathContains string) []Request {
	s.reqs.mu.Lock()
	defer s.reqs.mu.Unlock()
	var out []Request
	for _, r := range s.reqs.list {
		if (method == "" || r.Method == method) && strings.Contains(r.Path, pathContains) {
			out = append(out, r)
		}
	}
	return out
}

// CountRequests counts matching requests that got status (0 = any status).
func (s *Server) CountRequests(method, pathContains string, status int) int {
	n := 0
	for _, r := range s.Requests(method, pathContains) {
		if status == 0 || r.Status == status {
			n++
		}
	}
	return n
}

// wrap is the fault-injecting, request-logging layer around the API.
func (s *Server) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, At: time.Now()}
		defer func() { s.reqs.add(rec) }()
		rw := &apiserver.StatusWriter{ResponseWriter: w}
		f := s.faults.take(r)
		if f == nil {
			h.ServeHTTP(rw, r)
			rec.Status = rw.Status
			return
		}
		switch f.kind {
		case faultFail:
			rec.Fault = "fail"
			b, _ := json.Marshal(map[string]any{"success": false, "error": "injected fault: " + http.StatusText(f.status)})
			rw.Header().Set("Content-Type", "application/json")
			if f.status == http.StatusTooManyRequests || f.status == http.StatusServiceUnavailable {
				rw.Header().Set("Retry-After", "0")
			}
			rw.WriteHeader(f.status)
			_, _ = rw.Write(b)
		case faultDelay:
			rec.Fault = "delay"
			t := time.NewTimer(f.delay)
			select {
			case <-t.C:
				h.ServeHTTP(rw, r)
			case <-r.Context().Done():
				t.Stop()
			}
		case faultBlock:
			rec.Fault = "block"
			select {
			case <-f.release:
			case <-r.Context().Done():
				return
			}
			if !s.Running() {
				// The server went down while the request was held: cut it.
				panic(http.ErrAbortHandler)
			}
			h.ServeHTTP(rw, r)
		case faultLose:
			rec.Fault = "lose"
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, r.WithContext(r.Context()))
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				conn.Close()
				return
			}
			panic(http.ErrAbortHandler)
		}
		rec.Status = rw.Status
	})
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func sortedPerms(p []string) []string {
	out := slices.Clone(p)
	slices.Sort(out)
	return slices.Compact(out)
}
