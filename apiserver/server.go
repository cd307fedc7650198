// Package apiserver is dc-api, the reference Decent Cloud API server for the
// agent-facing part of the protocol (PROTOCOL.md): signed-request
// authentication with delegated agent keys, contracts for provisioning with
// long-poll, heartbeats, health checks, reconcile, and a dashboard page.
//
// A Server is an http.Handler over a store.Store; Serve runs it with
// graceful shutdown and the watcher that wakes long-polls when another
// process adds contracts.
package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// Config configures a Server. Zero values take the defaults.
type Config struct {
	Store  *store.Store
	Logger *slog.Logger
	// Clock returns the current time (tests shift it to simulate skew).
	Clock func() time.Time
	// MaxBodyBytes limits request bodies (default 2 MiB: a full health batch).
	MaxBodyBytes int64
	// RateLimit is the sustained requests per second allowed per key
	// (default 50) and RateBurst the bucket size (default 200). A negative
	// RateLimit disables limiting (benchmarks).
	RateLimit float64
	RateBurst int
	// NonceCacheSize is the replay cache's size (default 1,000,000
	// entries of 24 bytes): past it, each known key keeps at most the
	// entries it has (at least 8), dropping its oldest as it goes; no
	// request is refused because the cache is full (nonces.go).
	NonceCacheSize int
	// UnknownKeyRate is the requests per second allowed, all together,
	// from keys the server does not know (no active delegation, not a
	// registered provider) and to the unsigned setup endpoint (default
	// 20; burst UnknownKeyBurst, default 100). Negative: unlimited.
	UnknownKeyRate  float64
	UnknownKeyBurst int
	// ReplayCache is ReplayCacheMemory ("" too): the replay cache lives in
	// this process; or ReplayCacheDatabase: every nonce is also recorded
	// in the database, so that several dc-api instances on one database
	// refuse each other's replays (default profile; docs/dc-api.md).
	ReplayCache string
	// WatchInterval is how often the SQLite watcher looks for contracts
	// created by other processes (default 150 ms).
	WatchInterval time.Duration
	// NextHeartbeatSeconds is what heartbeat answers tell agents (default 60).
	NextHeartbeatSeconds int
	// Version is shown on the dashboard.
	Version string
	// DashboardRefresh is the dashboard's self-refresh period (default 10 s).
	DashboardRefresh time.Duration
	// Profile is ProfileDefault ("" too) or ProfileLive: which API the
	// server speaks (docs/dc-api.md).
	Profile string
	// GatewayDomain and GatewayPrefix name the gateway's DNS records
	// <slug>.<dc_id>.<prefix>.<domain> (defaults DefaultGatewayDomain,
	// DefaultGatewayPrefix: the live server's CF_DOMAIN and CF_GW_PREFIX).
	GatewayDomain, GatewayPrefix string
	// PublicURL is the server's public base URL (the live API_PUBLIC_URL):
	// gateway/register answers its acme-dns URL from it, and refuses
	// without one.
	PublicURL string
}

// Replay caches (dc-api serve --replay-cache).
const (
	ReplayCacheMemory   = "memory"
	ReplayCacheDatabase = "database"
)

// Profiles (dc-api serve --profile).
const (
	// ProfileDefault is PROTOCOL.md with dc-api's extensions, plus pools
	// and setup tokens.
	ProfileDefault = "default"
	// ProfileLive behaves as the live Decent Cloud API (v0.6.0) wherever
	// it defines behaviour: its routes, error style, schemas, state rules,
	// rate limit, and no nonce cache.
	ProfileLive = "live"
)

// Server is the API server. Create it with New.
type Server struct {
	cfg     Config
	st      *store.Store
	log     *slog.Logger
	now     func() time.Time
	hub     *hub
	nonces  *nonceCache
	keys    *keyCache
	limiter *rateLimiter
	// unknownLimit is the global limit of unknown keys and setup requests.
	unknownLimit *rateLimiter
	dashLimit    *rateLimiter // per client address
	dash         dashCache
	// sharedNonces: every nonce is also recorded in the database
	// (ReplayCacheDatabase); lastExpire is when old ones were last deleted.
	sharedNonces bool
	lastExpire   atomic.Int64
	ipLimit      *ipLimiter // the live profile's per-IP limit
	live         bool
	mux          *http.ServeMux
	handler      http.Handler
	hbAck        []byte // the (constant) heartbeat answer, encoded once
}

// New builds a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("apiserver: a store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 2 << 20
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = 50
	}
	if cfg.RateBurst <= 0 {
		cfg.RateBurst = 200
	}
	if cfg.NonceCacheSize <= 0 {
		cfg.NonceCacheSize = 1_000_000
	}
	if cfg.UnknownKeyRate == 0 {
		cfg.UnknownKeyRate = 20
	}
	if cfg.UnknownKeyBurst <= 0 {
		cfg.UnknownKeyBurst = 100
	}
	if cfg.NextHeartbeatSeconds <= 0 {
		cfg.NextHeartbeatSeconds = 60
	}
	if cfg.GatewayDomain == "" {
		cfg.GatewayDomain = DefaultGatewayDomain
	}
	if cfg.GatewayPrefix == "" {
		cfg.GatewayPrefix = DefaultGatewayPrefix
	}
	if cfg.DashboardRefresh <= 0 {
		cfg.DashboardRefresh = 10 * time.Second
	}
	if cfg.Version == "" {
		cfg.Version = "dev"
	}
	switch cfg.Profile {
	case "":
		cfg.Profile = ProfileDefault
	case ProfileDefault, ProfileLive:
	default:
		return nil, fmt.Errorf("apiserver: profile %q: use %s or %s", cfg.Profile, ProfileDefault, ProfileLive)
	}
	switch cfg.ReplayCache {
	case "":
		cfg.ReplayCache = ReplayCacheMemory
	case ReplayCacheMemory:
	case ReplayCacheDatabase:
		if cfg.Profile == ProfileLive {
			return nil, fmt.Errorf("apiserver: replay cache %q: the live profile has no replay cache (as the live API); use the default profile", cfg.ReplayCache)
		}
	default:
		return nil, fmt.Errorf("apiserver: replay cache %q: use %s or %s", cfg.ReplayCache, ReplayCacheMemory, ReplayCacheDatabase)
	}
	s := &Server{
		cfg:    cfg,
		st:     cfg.Store,
		log:    cfg.Logger,
		now:    cfg.Clock,
		hub:    newHub(),
		nonces: newNonceCache(cfg.NonceCacheSize, dcapi.TimestampWindowNs),
		keys:   newKeyCache(defaultKeyCacheSize),
		// The dashboard's limit holds in every case (it is not the API's).
		dashLimit: newRateLimiter(1/dashEvery.Seconds(), dashBurst),
		live:      cfg.Profile == ProfileLive,
		// The shared cache, when asked for.
		sharedNonces: cfg.ReplayCache == ReplayCacheDatabase,
	}
	switch {
	case cfg.RateLimit < 0:
	case s.live:
		s.ipLimit = newIPLimiter()
	default:
		s.limiter = newRateLimiter(cfg.RateLimit, cfg.RateBurst)
	}
	if cfg.UnknownKeyRate > 0 {
		s.unknownLimit = newRateLimiter(cfg.UnknownKeyRate, cfg.UnknownKeyBurst)
	}
	s.hbAck, _ = json.Marshal(envelope{Success: true, Data: dcapi.HeartbeatResponse{Acknowledged: true, NextHeartbeatSeconds: cfg.NextHeartbeatSeconds}})
	s.routes()
	s.handler = s.middleware(s.mux)
	return s, nil
}

// ServeHTTP makes the Server an http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Profile is the API the server speaks (ProfileDefault or ProfileLive).
func (s *Server) Profile() string { return s.cfg.Profile }

// Store is the server's store.
func (s *Server) Store() *store.Store { return s.st }

// WakeProvider wakes the long-polls of provider's agents (after a change made
// directly through the store in this process).
func (s *Server) WakeProvider(provider string) { s.hub.notify(provider) }

// Watch runs the cross-process change watcher until ctx is done. Serve runs
// it; call it yourself only when serving the handler some other way.
func (s *Server) Watch(ctx context.Context) {
	_ = s.st.Watch(ctx, s.cfg.WatchInterval, s.hub.notify, s.hub.notifyAll)
}

// drainKey carries the per-Serve channel closed at shutdown: long-polls
// return at once instead of holding up a graceful stop.
type drainKey struct{}

// Serve answers on ln until ctx is done, then shuts down gracefully: it
// stops accepting, ends long-polls with an empty answer, and waits up to
// grace for in-flight requests.
func (s *Server) Serve(ctx context.Context, ln net.Listener, grace time.Duration) error {
	return s.ServeWith(ctx, ln, grace, nil)
}

// ServeWith is Serve with the handler wrapped by wrap (if not nil): the test
// harness injects faults there. A grace of 0 stops hard: in-flight requests
// are cut, as in a crash.
func (s *Server) ServeWith(ctx context.Context, ln net.Listener, grace time.Duration, wrap func(http.Handler) http.Handler) error {
	var h http.Handler = s
	if wrap != nil {
		h = wrap(s)
	}
	drain := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.Watch(wctx) }()
	baseCtx := context.WithValue(context.Background(), drainKey{}, (<-chan struct{})(drain))
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long-polls last up to 30 s; leave room for the rest.
		WriteTimeout:   time.Duration(dcapi.MaxWaitSeconds+30) * time.Second,
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext:    func(net.Listener) context.Context { return baseCtx },
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		close(drain)
		sctx, cancel := context.WithTimeout(context.Background(), grace)
		err = srv.Shutdown(sctx)
		cancel()
		if err != nil {
			_ = srv.Close()
		}
		<-errc
	}
	stopWatch()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func drainCh(ctx context.Context) <-chan struct{} {
	if ch, ok := ctx.Value(drainKey{}).(<-chan struct{}); ok {
		return ch
	}
	return nil
}

// reqInfo is the per-request state the access log reads.
type reqInfo struct {
	id  string
	key string
	err string
}

type reqInfoKey struct{}

func info(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(reqInfoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

func requestID(ctx context.Context) string { return info(ctx).id }
func callerKey(ctx context.Context) string { return info(ctx).key }
func errMsg(ctx context.Context) string    { return info(ctx).err }
func setErr(ctx context.Context, msg string) {
	info(ctx).err = msg
}

// StatusWriter remembers the status a handler answered (200 once it wrote
// a body without one; 0 before it wrote anything): for the access log and
// apitest's request log.
type StatusWriter struct {
	http.ResponseWriter
	Status int
}

func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// middleware adds the request id, the access log, panic recovery, the body
// size limit and the JSON answers for unknown routes.
func (s *Server) middleware(next *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveRequest(w, r, next) })
}

// serveRequest is the middleware for one request.
func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request, next *http.ServeMux) {
	start := time.Now()
	ri := &reqInfo{id: incomingRequestID(r)}
	r = r.WithContext(context.WithValue(r.Context(), reqInfoKey{}, ri))
	w.Header().Set(dcapi.HeaderRequestID, ri.id)
	sw := &StatusWriter{ResponseWriter: w}
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic in handler", "request_id", ri.id, "path", r.URL.Path, "panic", fmt.Sprint(p))
			if sw.Status == 0 {
				s.writeError(sw, r, &plainError{status: http.StatusInternalServerError, msg: "internal error (request id " + ri.id + ")"})
			}
		}
		st := sw.Status
		if st == 0 {
			st = http.StatusOK
		}
		s.logRequest(r, st, float64(time.Since(start).Microseconds())/1000)
	}()
	r.Body = http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes)
	if s.ipLimit != nil {
		if err := s.ipLimit.check(r, s.now()); err != nil {
			s.writeError(sw, r, err)
			return
		}
	}
	if _, pattern := next.Handler(r); pattern == "" {
		s.unrouted(sw, r, next)
		return
	}
	next.ServeHTTP(sw, r)
}

// unrouted answers requests no route matches: 404 or 405 (with Allow), as
// an envelope for the API and plain for the rest.
func (s *Server) unrouted(w http.ResponseWriter, r *http.Request, mux *http.ServeMux) {
	rec := &headerRecorder{h: http.Header{}}
	mux.ServeHTTP(rec, r)
	status := rec.status
	if status == 0 {
		status = http.StatusNotFound
	}
	if allow := rec.h.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	if s.live {
		// poem's NotFoundError / MethodNotAllowedError.
		msg := "not found"
		if status == http.StatusMethodNotAllowed {
			msg = "method not allowed"
		}
		s.writeError(w, r, &plainError{status: status, msg: msg})
		return
	}
	if status == http.StatusMethodNotAllowed {
		s.writeError(w, r, errorf(status, "method %s is not allowed on %s (allowed: %s)", r.Method, r.URL.Path, rec.h.Get("Allow")))
		return
	}
	s.writeError(w, r, errorf(http.StatusNotFound, "no endpoint %s %s (see PROTOCOL.md)", r.Method, r.URL.Path))
}

// headerRecorder captures what the mux's fallback handler would answer.
type headerRecorder struct {
	h      http.Header
	status int
}

func (h *headerRecorder) Header() http.Header         { return h.h }
func (h *headerRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.status = code }

// incomingRequestID keeps a sane client-supplied X-Request-Id (proxies set
// one) or makes a new one.
func incomingRequestID(r *http.Request) string {
	if v := r.Header.Get(dcapi.HeaderRequestID); v != "" && len(v) <= 64 {
		ok := true
		for _, c := range v {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
				ok = false
				break
			}
		}
		if ok {
			return v
		}
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
