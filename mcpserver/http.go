package mcpserver

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/usererr"
)

// Authenticator proves who made an HTTP request; *certs.APIAuth
// implements it.
type Authenticator interface {
	Authenticate(r *http.Request) (certs.Identity, error)
}

// HandlerOptions configures the HTTP endpoint. Auth and Caller are required.
type HandlerOptions struct {
	// Auth authenticates every request, as the rest of the API does (a
	// signed Postern-SSH request or a bearer OIDC ID token; a locked
	// identity is refused).
	Auth Authenticator
	// Caller returns whom the server acts for once a request proved id:
	// the bastion gives it a short certificate of its own (its roles, its
	// locks, its rate limit).
	Caller func(ctx context.Context, r *http.Request, id certs.Identity) (Caller, error)
	// Version is reported to MCP clients.
	Version string
	// IdleTimeout closes the server of an identity that made no request
	// this long and runs no command; 30m if zero.
	IdleTimeout time.Duration
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
}

// Handler serves MCP over streamable HTTP (stateless: every POST carries
// its own authentication) with one Server per identity, so commands that
// identity started (held for approval, say) are found by its later calls
// on this replica. Mount it at /v1/mcp. It is safe for concurrent use;
// Close ends what it runs.
type Handler struct {
	opts   HandlerOptions
	log    *slog.Logger
	stream http.Handler
	cache  *sdk.SchemaCache

	mu      sync.Mutex
	servers map[string]*entry // by encoded identity
	closed  bool
}

type entry struct {
	srv  *Server
	last time.Time
}

// serverKey carries the caller's Server through the SDK's handler.
type serverKey struct{}

// NewHandler returns the HTTP endpoint.
func NewHandler(opts HandlerOptions) (*Handler, error) {
	if opts.Auth == nil || opts.Caller == nil {
		return nil, errors.New("mcp: the HTTP endpoint needs auth and a caller")
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 30 * time.Minute
	}
	h := &Handler{opts: opts, log: opts.Log, cache: sdk.NewSchemaCache(), servers: map[string]*entry{}}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	h.stream = sdk.NewStreamableHTTPHandler(func(r *http.Request) *sdk.Server {
		if s, ok := r.Context().Value(serverKey{}).(*Server); ok {
			return s.MCP()
		}
		return nil
	}, &sdk.StreamableHTTPOptions{
		Stateless: true,
		// Every request is authenticated (a signature or a token no
		// rebinding page holds), which is what the SDK's localhost
		// protection stands in for; behind a proxy on loopback it would
		// refuse the bastion's own public name.
		DisableLocalhostProtection: true,
		Logger:                     h.log,
	})
	return h, nil
}

// ServeHTTP authenticates r and hands it to the caller's MCP server.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, err := h.opts.Auth.Authenticate(r)
	if err != nil {
		if usererr.As(err) == nil {
			err = &usererr.Error{Status: http.StatusUnauthorized, Code: certs.CodeAuthRequired, Msg: "authentication required", Err: err}
		}
		if usererr.As(err).HTTPStatus() == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", certs.APIAuthScheme+", Bearer")
		}
		httpx.WriteError(w, r, h.log, err)
		return
	}
	srv, err := h.server(r, id)
	if err != nil {
		httpx.WriteError(w, r, h.log, err)
		return
	}
	h.stream.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), serverKey{}, srv)))
}

// server returns id's Server, making it on its first request, and closes
// servers that have been idle too long.
func (h *Handler) server(r *http.Request, id certs.Identity) (*Server, error) {
	key := certs.EncodeIdentity(id)
	now := time.Now()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, &usererr.Error{Status: http.StatusServiceUnavailable, Code: "shutting_down", Msg: "the server is shutting down"}
	}
	var idle []*Server
	for k, e := range h.servers {
		if k != key && now.Sub(e.last) > h.opts.IdleTimeout && !e.srv.busy() {
			idle = append(idle, e.srv)
			delete(h.servers, k)
		}
	}
	e, ok := h.servers[key]
	if ok {
		e.last = now
	}
	h.mu.Unlock()
	for _, s := range idle {
		s.Close()
	}
	if ok {
		return e.srv, nil
	}
	caller, err := h.opts.Caller(r.Context(), r, id)
	if err != nil {
		return nil, err
	}
	srv, err := New(Options{Caller: caller, Version: h.opts.Version, Log: h.log.With("identity", id.Username), SchemaCache: h.cache})
	if err != nil {
		return nil, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.servers[key]; ok { // made meanwhile by a concurrent first request
		srv.Close()
		return e.srv, nil
	}
	h.servers[key] = &entry{srv: srv, last: now}
	return srv, nil
}

// Close ends every server's commands and connections.
func (h *Handler) Close() {
	h.mu.Lock()
	h.closed = true
	servers := h.servers
	h.servers = nil
	h.mu.Unlock()
	for _, e := range servers {
		e.srv.Close()
	}
}

// busy reports whether the server runs a command.
func (s *Server) busy() bool {
	s.runs.mu.Lock()
	defer s.runs.mu.Unlock()
	for _, r := range s.runs.byID {
		if !r.isDone() {
			return true
		}
	}
	return false
}
