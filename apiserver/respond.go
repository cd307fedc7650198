package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/decent-stuff/dc-agent/apiserver/store"
)

// apiError is a refusal with its HTTP status and the message the client sees.
type apiError struct {
	status     int
	msg        string
	retryAfter int // seconds, for 429/503
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s", e.status, e.msg) }

func errorf(status int, format string, a ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, a...)}
}

// envelope is the response wrapper of PROTOCOL.md §4.
type envelope struct {
	Success bool   `json:"success"`
	Data    any    `json:"data,omitempty"`
	Error   string `json:"error,omitempty"`
}

// writeJSON writes a success envelope.
func writeJSON(w http.ResponseWriter, status int, data any) {
	b, err := json.Marshal(envelope{Success: true, Data: data})
	if err != nil {
		// Only reachable with an unencodable type: a programming error.
		b, status = []byte(`{"success":false,"error":"internal error: response not encodable"}`), http.StatusInternalServerError
	}
	writeEncoded(w, status, b)
}

// writeEncoded writes an envelope already encoded as JSON.
func writeEncoded(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError writes a failure envelope with the status of err. Errors that
// are not refusals are logged and answered with a generic 500 naming the
// request id, so internals never reach the client.
//
// In the live profile a handler's refusal is HTTP 200 {"success":false,
// "error":…}, as every handler of api/src/openapi/*.rs answers; poem's own
// refusals (authentication, body parsing, routing, the rate limit) are
// plainErrors, plain text with their status, in both profiles.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var pe *plainError
	if errors.As(err, &pe) {
		setErr(r.Context(), pe.msg)
		for k, v := range pe.header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(pe.msg)))
		w.WriteHeader(pe.status)
		_, _ = w.Write([]byte(pe.msg))
		return
	}
	var ae *apiError
	switch {
	case errors.As(err, &ae):
	case store.KindOf(err) != 0:
		ae = &apiError{status: storeStatus(store.KindOf(err)), msg: err.Error()}
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client went away; nobody reads the answer.
		ae = &apiError{status: 499, msg: "client closed request"}
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			ae = errorf(http.StatusRequestEntityTooLarge, "request body is larger than %d bytes", mbe.Limit)
			break
		}
		s.log.ErrorContext(r.Context(), "request failed", "request_id", requestID(r.Context()), "method", r.Method, "path", r.URL.Path, "err", err)
		ae = errorf(http.StatusInternalServerError, "internal error (request id %s); the server log has the details", requestID(r.Context()))
	}
	setErr(r.Context(), ae.msg)
	if ae.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(ae.retryAfter))
	}
	status := ae.status
	if s.live && status != 499 {
		status = http.StatusOK
	}
	b, _ := json.Marshal(envelope{Success: false, Error: ae.msg})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func storeStatus(k store.ErrorKind) int {
	switch k {
	case store.KindNotFound:
		return http.StatusNotFound
	case store.KindConflict:
		return http.StatusConflict
	case store.KindForbidden:
		return http.StatusForbidden
	case store.KindGone:
		return http.StatusGone
	default:
		return http.StatusUnprocessableEntity
	}
}

// decodeBody parses a JSON request body into v. Unknown fields are ignored
// (PROTOCOL.md: be liberal in what is accepted); trailing data is not.
func decodeBody(body []byte, v any) error {
	if len(body) == 0 {
		return errorf(http.StatusBadRequest, "request body is empty; a JSON object is required")
	}
	// Unmarshal takes exactly what the decoder below takes (one value,
	// whitespace around it) and allocates less; the decoder phrases the
	// refusals.
	if json.Unmarshal(body, v) == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return errorf(http.StatusBadRequest, "malformed JSON body: %s", jsonErr(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, "malformed JSON body: unexpected data after the JSON value")
	}
	return nil
}

// jsonErr phrases a decoding error for the client.
func jsonErr(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Sprintf("field %q must be %s, not a JSON %s", te.Field, jsonKind(te.Type.Kind().String()), te.Value)
		}
		return fmt.Sprintf("expected %s, got a JSON %s", jsonKind(te.Type.Kind().String()), te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%v (at byte %d)", se, se.Offset)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "the JSON ends early"
	}
	return err.Error()
}

func jsonKind(k string) string {
	switch k {
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "string":
		return "a string"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	case "ptr":
		return "a value"
	}
	return k
}

// logRequest writes the access log line of a finished request.
func (s *Server) logRequest(r *http.Request, status int, dur float64) {
	level := slog.LevelDebug
	switch {
	case status >= 500:
		level = slog.LevelError
	case status >= 400:
		level = slog.LevelInfo
	}
	if !s.log.Enabled(r.Context(), level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("request_id", requestID(r.Context())),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.Int("status", status),
		slog.Float64("ms", dur),
	}
	if k := callerKey(r.Context()); k != "" {
		attrs = append(attrs, slog.String("key", k[:16]))
	}
	if e := errMsg(r.Context()); e != "" {
		attrs = append(attrs, slog.String("error", e))
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}
