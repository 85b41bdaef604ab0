package httpx

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/oklog/ulid/v2"

	"github.com/posternhq/postern/internal/usererr"
)

// ErrorBody is the body of every API error (the HTTP API contract):
// {"error": "short human message", "code": "stable_machine_code"}. A
// server-side failure also carries the request id the user can quote.
type ErrorBody struct {
	Error     string `json:"error"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
}

// CodeInternal is the code of a failure whose cause is not shown.
const CodeInternal = "internal"

// WriteJSON answers with v as JSON and status. Responses are never cached
// and never sniffed as another content type; HTML characters are not
// escaped (the body is JSON, not markup).
func WriteJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; no one is left to tell
}

// Fail answers with a message that is safe to show and a stable code.
func Fail(w http.ResponseWriter, status int, code, msg string) {
	WriteJSON(w, status, ErrorBody{Error: msg, Code: code})
}

// WriteError answers with err. A [usererr.Error] in err's chain gives the
// status, code and message (and Retry-After); anything else is a 500
// "internal error". Failures of the server (5xx) are logged with the
// request's id, which the body carries so the user can quote it; the text
// of an error that is not a usererr.Error is never shown.
func WriteError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := usererr.As(err)
	if e == nil {
		e = &usererr.Error{Status: http.StatusInternalServerError, Code: CodeInternal, Msg: "internal error", Err: err}
	}
	body := ErrorBody{Error: e.Msg, Code: e.Code}
	status := e.HTTPStatus()
	if status >= 500 {
		body.RequestID = RequestID(r)
		if log != nil {
			log.Error("request failed", "request_id", body.RequestID, "method", r.Method, "path", r.URL.Path,
				"code", e.Code, "err", err)
		}
	}
	if e.RetryAfter > 0 {
		secs := int64(math.Ceil(e.RetryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.FormatInt(max(secs, 1), 10))
	}
	WriteJSON(w, status, body)
}

type requestIDKey struct{}

// RequestIDHeader carries a request's id in responses.
const RequestIDHeader = "X-Request-Id"

// WithRequestID gives every request an id (a ULID), in its context and in
// the response's X-Request-Id header. A client-sent id is not trusted.
func WithRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := ulid.Make().String()
		w.Header().Set(RequestIDHeader, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

// RequestID returns r's id, or a new one if r did not pass WithRequestID.
func RequestID(r *http.Request) string {
	if id, ok := r.Context().Value(requestIDKey{}).(string); ok {
		return id
	}
	return ulid.Make().String()
}

// ClientAddr is the address of the client that sent r. The connection's
// peer is the client unless it is one of the trusted proxies (the load
// balancers and ingress controllers in front of postern, as prefixes):
// then X-Forwarded-For (all its headers, in order) is walked from the
// right, each hop having been appended by the proxy to its right, and the
// first hop that is not a trusted proxy is the client. Hops further left
// were written by the client itself and prove nothing. If every hop is
// trusted, the leftmost is the client; a hop that does not parse ends the
// walk at the last trusted address. An unparsable peer is the zero Addr.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	addr := PeerAddr(r.RemoteAddr)
	if !isTrusted(addr, trusted) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		h, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		addr = h.Unmap()
		if !isTrusted(addr, trusted) {
			return addr
		}
	}
	return addr
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// PeerAddr parses a peer address as net/http reports it ("host:port", or a
// bare host); the zero Addr if it does not parse.
func PeerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, _ := netip.ParseAddr(strings.Trim(host, "[]"))
	return a.Unmap()
}

// StatusWriter is a ResponseWriter that remembers the status a handler
// wrote, for metrics. It forwards Flush (live streams) and the rest through
// Unwrap, which http.ResponseController uses.
type StatusWriter struct {
	http.ResponseWriter
	code int
}

// WriteHeader records the first status and writes it.
func (s *StatusWriter) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

// Write writes b; a body written without a status is a 200.
func (s *StatusWriter) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap returns the underlying ResponseWriter.
func (s *StatusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Status returns the status written: 200 if nothing was written yet (what
// net/http sends for a handler that returns without writing).
func (s *StatusWriter) Status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}
