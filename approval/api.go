package approval

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

// Permission names the API checks (the same strings as the policy's).
const (
	permApprover = "approver"
	permAdmin    = "admin"
)

// DefaultMaxWait caps ?wait= on GET /v1/approvals/{id}.
const DefaultMaxWait = 60 * time.Second

// Authenticator proves who made an API request; *certs.APIAuth implements it.
type Authenticator interface {
	Authenticate(r *http.Request) (certs.Identity, error)
}

// APIOptions configures the approvals API. Broker, Auth and Permissions are
// required.
type APIOptions struct {
	// Broker holds the requests.
	Broker *Broker
	// Auth authenticates requests.
	Auth Authenticator
	// Permissions returns the API permissions of an identity
	// (policy.Engine.Permissions).
	Permissions func(certs.Identity) []string
	// TargetExists reports whether an access request may name target; every
	// name is accepted if nil. It must answer the same for targets that do
	// not exist and targets the requester may not ask for.
	TargetExists func(id certs.Identity, target string) bool
	// MaxWait caps ?wait=; DefaultMaxWait if zero.
	MaxWait time.Duration
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
}

// API serves the approvals HTTP API:
//
//	GET  /v1/approvals[?status=pending&limit=N]   approvers: all; others: their own
//	POST /v1/approvals                            {"target","login","for":"1h","reason"}: access request
//	GET  /v1/approvals/{id}[?wait=30s]            requester or approver; long-polls while pending
//	POST /v1/approvals/{id}/approve|deny          {"reason"}: approver (not the requester)
//	POST /v1/approvals/{id}/revoke                ends the grant of an approved access request: approver
//
// Errors are {"error": "...", "code": "..."}.
type API struct {
	opts APIOptions
	log  *slog.Logger
	mux  *http.ServeMux
}

// NewAPI returns the API handler. Mount it at /v1/approvals and
// /v1/approvals/.
func NewAPI(opts APIOptions) (*API, error) {
	if opts.Broker == nil || opts.Auth == nil || opts.Permissions == nil {
		return nil, errors.New("approvals API: broker, auth and permissions are required")
	}
	if opts.MaxWait <= 0 {
		opts.MaxWait = DefaultMaxWait
	}
	a := &API{opts: opts, log: opts.Log, mux: http.NewServeMux()}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.mux.HandleFunc("GET /v1/approvals", a.list)
	a.mux.HandleFunc("POST /v1/approvals", a.request)
	a.mux.HandleFunc("GET /v1/approvals/{id}", a.get)
	a.mux.HandleFunc("POST /v1/approvals/{id}/approve", a.decide(true))
	a.mux.HandleFunc("POST /v1/approvals/{id}/deny", a.decide(false))
	a.mux.HandleFunc("POST /v1/approvals/{id}/revoke", a.revoke)
	a.mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		httpx.Fail(w, http.StatusNotFound, "not_found", "not found")
	})
	return a, nil
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mux.ServeHTTP(w, r)
}

func (a *API) auth(w http.ResponseWriter, r *http.Request) (certs.Identity, bool) {
	id, err := a.opts.Auth.Authenticate(r)
	if err != nil {
		if ce := usererr.As(err); ce != nil {
			httpx.WriteError(w, r, a.log, ce)
		} else {
			httpx.Fail(w, http.StatusUnauthorized, "auth_required", "authentication required")
		}
		return certs.Identity{}, false
	}
	return id, true
}

func (a *API) isApprover(id certs.Identity) bool {
	ps := a.opts.Permissions(id)
	return slices.Contains(ps, permApprover) || slices.Contains(ps, permAdmin)
}

// mayView reports whether id may see request ap.
func (a *API) mayView(id certs.Identity, ap state.Approval) bool {
	return (ap.RequesterKey != "" && ap.RequesterKey == id.Key()) || a.isApprover(id)
}

func (a *API) list(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r)
	if !ok {
		return
	}
	status := r.URL.Query().Get("status")
	switch status {
	case "", state.ApprovalPending, state.ApprovalApproved, state.ApprovalDenied, state.ApprovalTimedOut, state.ApprovalCanceled:
	default:
		httpx.Fail(w, http.StatusBadRequest, "bad_request", "unknown status")
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 100
	}
	all, err := a.opts.Broker.List(r.Context(), status, limit)
	if err != nil {
		a.log.Error("list approvals", "err", err)
		httpx.Fail(w, http.StatusInternalServerError, "internal", "could not list approvals")
		return
	}
	out := []state.Approval{}
	for _, ap := range all {
		if a.mayView(id, ap) {
			out = append(out, ap)
		}
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// accessRequestBody is the body of POST /v1/approvals.
type accessRequestBody struct {
	Target string `json:"target"`
	Login  string `json:"login"`
	For    string `json:"for"`
	Reason string `json:"reason"`
}

func (a *API) request(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r)
	if !ok {
		return
	}
	var body accessRequestBody
	if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&body); err != nil {
		httpx.Fail(w, http.StatusBadRequest, "bad_request", "body must be JSON {target, for, reason}")
		return
	}
	d, err := time.ParseDuration(body.For)
	if err != nil || d <= 0 {
		httpx.Fail(w, http.StatusBadRequest, "bad_request", "for must be a positive duration such as 1h")
		return
	}
	if a.opts.TargetExists != nil && !a.opts.TargetExists(id, body.Target) {
		httpx.Fail(w, http.StatusForbidden, "forbidden", "access to that target cannot be requested")
		return
	}
	ap, err := a.opts.Broker.SubmitAccess(r.Context(), AccessRequest{Requester: id, Target: body.Target,
		Login: body.Login, Duration: d, Reason: strings.TrimSpace(body.Reason)})
	if err != nil {
		httpx.WriteError(w, r, a.log, err)
		return
	}
	httpx.WriteJSON(w, http.StatusCreated, ap)
}

func (a *API) get(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r)
	if !ok {
		return
	}
	reqID := r.PathValue("id")
	ap, err := a.opts.Broker.Get(r.Context(), reqID)
	if err != nil || !a.mayView(id, ap) {
		a.notFound(w, err)
		return
	}
	if s := r.URL.Query().Get("wait"); s != "" && ap.Status == state.ApprovalPending {
		d, err := time.ParseDuration(s)
		if err != nil || d < 0 {
			httpx.Fail(w, http.StatusBadRequest, "bad_request", "wait must be a duration such as 30s")
			return
		}
		ap, err = a.opts.Broker.WaitFor(r.Context(), reqID, min(d, a.opts.MaxWait))
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			a.log.Error("wait for approval", "request", reqID, "err", err)
			httpx.Fail(w, http.StatusInternalServerError, "internal", "could not read the request")
			return
		}
	}
	httpx.WriteJSON(w, http.StatusOK, ap)
}

func (a *API) notFound(w http.ResponseWriter, err error) {
	if err != nil && !errors.Is(err, ErrNotFound) {
		a.log.Error("get approval", "err", err)
		httpx.Fail(w, http.StatusInternalServerError, "internal", "could not read the request")
		return
	}
	httpx.Fail(w, http.StatusNotFound, "not_found", "no such approval request")
}

// decisionBody is the body of POST /v1/approvals/{id}/approve|deny.
type decisionBody struct {
	Reason string `json:"reason"`
}

func (a *API) decide(approve bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, ok := a.auth(w, r)
		if !ok {
			return
		}
		if !a.isApprover(id) {
			httpx.Fail(w, http.StatusForbidden, "forbidden", "the approver permission is required")
			return
		}
		var body decisionBody
		if r.ContentLength != 0 {
			if err := json.NewDecoder(io.LimitReader(r.Body, 16<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				httpx.Fail(w, http.StatusBadRequest, "bad_request", "body must be JSON {reason}")
				return
			}
		}
		ap, err := a.opts.Broker.Decide(r.Context(), r.PathValue("id"), Decision{Approver: id, Trusted: true,
			Approve: approve, Reason: strings.TrimSpace(body.Reason), Via: "api"})
		switch {
		case errors.Is(err, ErrNotFound):
			httpx.Fail(w, http.StatusNotFound, "not_found", "no such approval request")
		case errors.Is(err, ErrDecided):
			httpx.Fail(w, http.StatusConflict, "already_decided", "already decided: "+strings.ReplaceAll(ap.Status, "_", " "))
		case errors.Is(err, ErrSelfApproval):
			httpx.WriteError(w, r, a.log, ErrSelfApproval)
		case errors.Is(err, ErrNotApprover):
			httpx.WriteError(w, r, a.log, ErrNotApprover)
		case err != nil:
			a.log.Error("decide approval", "err", err)
			httpx.Fail(w, http.StatusInternalServerError, "internal", "could not record the decision")
		default:
			httpx.WriteJSON(w, http.StatusOK, ap)
		}
	}
}

func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	id, ok := a.auth(w, r)
	if !ok {
		return
	}
	if !a.isApprover(id) {
		httpx.Fail(w, http.StatusForbidden, "forbidden", "the approver permission is required")
		return
	}
	reqID := r.PathValue("id")
	err := a.opts.Broker.RevokeGrant(r.Context(), reqID, id.Display())
	switch {
	case errors.Is(err, state.ErrNotFound):
		httpx.Fail(w, http.StatusNotFound, "not_found", "no active grant for that request")
	case err != nil:
		a.log.Error("revoke grant", "err", err)
		httpx.Fail(w, http.StatusInternalServerError, "internal", "could not revoke the grant")
	default:
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"grant": reqID, "status": "revoked"})
	}
}
