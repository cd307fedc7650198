package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/decent-stuff/dc-agent/agent/status"
)

// statusServer serves the status socket (see package status).
type statusServer struct {
	path string
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// startStatusServer listens on the unix socket at path (mode 0660, so the
// service's group can read it). A live socket means another agent runs;
// a stale one is replaced.
func (a *Agent) startStatusServer(path string) (*statusServer, error) {
	if path == "" {
		return &statusServer{done: closedChan()}, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("status socket directory: %w (set agent.status_socket to a writable path; the unit's RuntimeDirectory= creates /run/dc-agent)", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another dc-agent answers on %s; stop it first (systemctl stop dc-agent) or set a different agent.status_socket", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale status socket: %w", err)
	}
	// Created with 0660 from the start: no window in which it is wider.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("status socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /"+status.APIVersion+"/state", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a.State())
	})
	mux.HandleFunc("GET /"+status.APIVersion+"/events", a.serveEvents)
	s := &statusServer{path: path, ln: ln, done: make(chan struct{}),
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("status socket stopped", "err", err)
		}
	}()
	return s, nil
}

func (a *Agent) serveEvents(w http.ResponseWriter, r *http.Request) {
	var since uint64
	if s := r.URL.Query().Get("since"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			http.Error(w, "since must be an event sequence number", http.StatusBadRequest)
			return
		}
		since = v
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	past, ch := a.obs.subscribe(since)
	defer a.obs.unsubscribe(ch)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	for _, ev := range past {
		if enc.Encode(ev) != nil {
			return
		}
	}
	fl.Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case ev, ok := <-ch:
			if !ok {
				return
			}
			if enc.Encode(ev) != nil {
				return
			}
			fl.Flush()
		}
	}
}

func (s *statusServer) close() {
	if s.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = s.srv.Shutdown(ctx) // event streams end when the observer closes them
	_ = s.srv.Close()
	<-s.done
	_ = os.Remove(s.path)
}

func closedChan() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}
