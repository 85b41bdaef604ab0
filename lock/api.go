package lock

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Permissions the API checks (the same strings as the policy's).
const (
	// PermAdmin may make, list and remove every kind of lock.
	PermAdmin = "admin"
	// PermModerator may list locks and terminate sessions (session locks).
	PermModerator = "moderator"
)

// Authenticator proves who made an API request; *certs.APIAuth implements it.
type Authenticator interface {
	Authenticate(r *http.Request) (certs.Identity, error)
}

// APIOptions configures the locks API. Locker, Auth and Permissions are
// required.
type APIOptions struct {
	// Locker makes and removes the locks.
	Locker *Locker
	// Auth authenticates requests.
	Auth Authenticator
	// Permissions returns the API permissions of an identity
	// (policy.Engine.Permissions).
	Permissions func(certs.Identity) []string
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
}

// API serves the locks HTTP API:
//
//	GET    /v1/locks[?all=1&limit=N]   active locks (all: every lock, newest first): admin or moderator
//	GET    /v1/locks/{id}              one lock: admin or moderator
//	POST   /v1/locks                   {"kind","issuer","subject","username","name","reason","for":"1h"}:
//	                                   admin; a session lock (terminate) also moderator
//	DELETE /v1/locks/{id}              remove a lock: admin
//
// Errors are {"error": "...", "code": "..."}.
type API struct {
	opts APIOptions
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewAPI returns the API handler. Mount it at /v1/locks and /v1/locks/.
func NewAPI(opts APIOptions) (*API, error) {
	if opts.Locker == nil || opts.Auth == nil || opts.Permissions == nil {
		return nil, errors.New("locks API: locker, auth and permissions are required")
	}
	a := &API{opts: opts, log: opts.Log, mux: http.NewServeMux()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.mux.HandleFunc("GET /v1/locks", a.list)
	a.mux.HandleFunc("POST /v1/locks", a.create)
	a.mux.HandleFunc("GET /v1/locks/{id}", a.get)
	a.mux.HandleFunc("DELETE /v1/locks/{id}", a.remove)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		httpx.Fail(w, http.StatusNotFound, "not_found", "not found")
	})
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// auth authenticates r and checks that the caller holds one of perms.
func (a *API) auth(w http.ResponseWriter, r *http.Request, perms ...string) (certs.Identity, bool) {
	id, err := a.opts.Auth.Authenticate(r)
	if err != nil {
		if usererr.As(err) == nil {
			err = &usererr.Error{Status: http.StatusUnauthorized, Code: certs.CodeAuthRequired, Msg: "authentication required", Err: err}
		}
		httpx.WriteError(w, r, a.log, err)
		return id, false
	}
	return id, a.require(w, id, perms...)
}

// require answers 403 and reports false unless id holds one of perms.
func (a *API) require(w http.ResponseWriter, id certs.Identity, perms ...string) bool {
	have := a.opts.Permissions(id)
	for _, p := range perms {
		if slices.Contains(have, p) {
			return true
		}
	}
	httpx.Fail(w, http.StatusForbidden, "forbidden", "the "+strings.Join(perms, " or ")+" permission is required")
	return false
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.auth(w, r, PermAdmin, PermModerator); !ok {
		return
	}
	q := r.URL.Query()
	all := q.Get("all") == "1" || q.Get("all") == "true"
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	ls, err := a.opts.Locker.List(r.Context(), all, limit)
	if err != nil {
		httpx.WriteError(w, r, a.log, err)
		return
	}
	if ls == nil {
		ls = []state.Lock{}
	}
	httpx.WriteJSON(w, http.StatusOK, ls)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	if _, ok := a.auth(w, r, PermAdmin, PermModerator); !ok {
		return
	}
	lk, err := a.opts.Locker.Get(r.Context(), r.PathValue("id"))
	if err != nil {
		httpx.WriteError(w, r, a.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, lk)
}

// CreateBody is the body of POST /v1/locks.
type CreateBody struct {
	// Kind is identity, role, target or session.
	Kind string `json:"kind"`
	// Issuer and Subject name the identity of an identity lock; Username
	// is kept for display.
	Issuer   string `json:"issuer,omitempty"`
	Subject  string `json:"subject,omitempty"`
	Username string `json:"username,omitempty"`
	// Name is the role, target or session id.
	Name string `json:"name,omitempty"`
	// Reason says why (required).
	Reason string `json:"reason"`
	// For is how long the lock lasts ("1h"); forever if empty.
	For string `json:"for,omitempty"`
}

func (a *API) create(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r, PermAdmin, PermModerator)
	if !ok {
		return
	}
	var body CreateBody
	dec := json.NewDecoder(io.LimitReader(r.Body, 16<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		httpx.Fail(w, http.StatusBadRequest, "bad_request", "body must be JSON {kind, issuer, subject, name, reason, for}")
		return
	}
	if body.Kind != state.LockSession && !a.require(w, id, PermAdmin) {
		return
	}
	var ttl time.Duration
	if body.For != "" {
		var err error
		if ttl, err = time.ParseDuration(body.For); err != nil || ttl <= 0 {
			httpx.Fail(w, http.StatusBadRequest, "bad_request", "for must be a positive duration such as 1h")
			return
		}
	}
	lk, err := a.opts.Locker.Lock(r.Context(), Spec{Kind: body.Kind, Name: body.Name, Reason: body.Reason, TTL: ttl,
		By:       id.Username,
		Identity: certs.Identity{Issuer: body.Issuer, Subject: body.Subject, Username: body.Username}})
	if err != nil {
		httpx.WriteError(w, r, a.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, lk)
}

func (a *API) remove(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r, PermAdmin)
	if !ok {
		return
	}
	lockID := r.PathValue("id")
	if err := a.opts.Locker.Unlock(r.Context(), lockID, id.Username); err != nil {
		httpx.WriteError(w, r, a.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"lock": lockID, "status": "removed"})
}
