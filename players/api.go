package players

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Permissions that grant access to recorded sessions.
const (
	PermAuditor = "auditor"
	PermAdmin   = "admin"
	// PermModerator lists and watches running sessions (to moderate them).
	PermModerator = "moderator"
)

// ContentTypeCast is the media type of a cast answer.
const ContentTypeCast = "application/x-asciicast"

// Authenticator proves who sent a request; *certs.APIAuth implements it.
type Authenticator interface {
	Authenticate(r *http.Request) (certs.Identity, error)
}

// APIOptions configures NewAPI.
type APIOptions struct {
	// Auth authenticates every request. Required.
	Auth Authenticator
	// Permissions returns the API permissions of an identity's roles
	// (auditor, approver, admin). Nil grants nothing: every request is
	// forbidden.
	Permissions func(certs.Identity) []string
	// State is the sessions index. Required.
	State *state.Store
	// Store holds the recordings. Required.
	Store recorder.Store
	// Follow tails the spool of a running session, ending when the session
	// ends; live following is unavailable if nil.
	Follow func(ctx context.Context, id string) (io.ReadCloser, error)
	// OnFollow is told who starts following which running session (a
	// moderator joining it); nothing is told if nil.
	OnFollow func(ctx context.Context, who certs.Identity, session string)
	// Log receives request failures; discarded if nil.
	Log *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Metrics registers postern_sessions_api_requests_total; nothing is
	// registered if nil.
	Metrics prometheus.Registerer
	// SearchDisabled answers searches with "search is disabled" (the
	// search.disabled setting).
	SearchDisabled bool
}

// API serves the sessions API (DESIGN §4):
//
//	GET /v1/sessions?user=&identity_key=&target=&role=&status=&q=&since=&until=&limit=  index rows, newest first
//	GET /v1/sessions/{id}                         metadata and integrity (?verify=full hashes the object)
//	GET /v1/sessions/{id}/cast                    the cast (Range requests supported)
//	GET /v1/sessions/{id}/cast?follow=1           a running session's cast, streamed until it ends
//	GET /v1/sessions/search?q=&identity=&identity_key=&target=&since=&until=&limit=  search across recordings
//
// The auditor and admin permissions see every session; the moderator
// permission also every running one (to watch it: ?status=running lists
// them); anyone else sees only their own (the identity key recorded with
// the session, never the username: two subjects or two issuers may carry
// one username): the list is theirs alone, and another's session is "no
// such session". A session recorded without a key is nobody's own.
type API struct {
	opts     APIOptions
	log      *slog.Logger
	now      func() time.Time
	requests *prometheus.CounterVec // by route and status code
}

// NewAPI returns the sessions API handler; mount it at /v1/sessions and
// /v1/sessions/. Two APIs on one registry share their counter; it panics if
// opts.Metrics holds a different collector of the same name (a programming
// error, like http.ServeMux on a duplicate pattern).
func NewAPI(opts APIOptions) *API {
	a := &API{opts: opts, log: opts.Log, now: opts.Now}
	a.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_sessions_api_requests_total",
		Help: "Requests to the sessions API, by route (list, show, cast, follow, search) and HTTP status.",
	}, []string{"route", "code"})
	var err error
	if a.requests, err = promx.Register(opts.Metrics, a.requests); err != nil {
		panic(err) // a conflicting collector of the same name: a programming error
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a
}

// Error codes of the API beyond those of certs.APIAuth.
const (
	CodeForbidden   = "forbidden"
	CodeBadID       = "bad_id"
	CodeBadQuery    = "bad_query"
	CodeNotFound    = "not_found"
	CodeRunning     = "session_running"
	CodeNotLive     = "not_live"
	CodeInternal    = "internal"
	CodeBadMethod   = "method_not_allowed"
	CodeNoRecording = "no_recording"
)

// fail is a refusal to answer with: status, stable code, a safe message
// and the internal cause (logged only).
func fail(status int, code, msg string, err error) *usererr.Error {
	return &usererr.Error{Status: status, Code: code, Msg: msg, Err: err}
}

// ServeHTTP routes a request under /v1/sessions.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &httpx.StatusWriter{ResponseWriter: w}
	a.serve(sw, r)
	a.requests.WithLabelValues(routeOf(r), strconv.Itoa(sw.Status())).Inc()
}

// routeOf names the route of r for metrics.
func routeOf(r *http.Request) string {
	rest := strings.Trim(strings.TrimPrefix(r.URL.Path, "/v1/sessions"), "/")
	switch {
	case rest == "":
		return "list"
	case rest == "search":
		return "search"
	case !strings.Contains(rest, "/"):
		return "show"
	case r.URL.Query().Get("follow") != "":
		return "follow"
	}
	return "cast"
}

func (a *API) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		a.writeError(w, r, fail(http.StatusMethodNotAllowed, CodeBadMethod, "method not allowed", nil))
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/sessions")
	if !ok {
		a.writeError(w, r, fail(http.StatusNotFound, CodeNotFound, "not found", nil))
		return
	}
	// Check the path before authenticating, so that probing for paths
	// learns nothing about credentials, and before anything reaches a store.
	rest = strings.TrimPrefix(rest, "/")
	id, sub, _ := strings.Cut(rest, "/")
	searching := rest == "search"
	if id != "" && !searching {
		norm, ok := NormalizeID(id)
		if !ok || (sub != "" && sub != "cast") || strings.Contains(r.URL.RawPath, "%2") {
			a.writeError(w, r, fail(http.StatusBadRequest, CodeBadID, "invalid session id", nil))
			return
		}
		id = norm
	}
	ident, err := a.opts.Auth.Authenticate(r)
	if err != nil {
		e := usererr.As(err)
		if e == nil {
			a.writeError(w, r, fail(http.StatusInternalServerError, CodeInternal, "internal error", err))
			return
		}
		if e.HTTPStatus() == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", certs.APIAuthScheme+`, Bearer`)
		}
		a.writeError(w, r, e)
		return
	}
	who := reader{id: ident, auditor: a.mayAudit(ident), moderator: a.holds(ident, PermModerator)}
	switch {
	case searching:
		err = a.search(w, r, who)
	case id == "":
		err = a.list(w, r, who)
	case sub == "":
		err = a.show(w, r, who, id)
	default:
		err = a.cast(w, r, who, id)
	}
	if err != nil {
		a.writeError(w, r, err)
	}
}

// reader is who reads: an auditor reads every session, anyone else their
// own.
type reader struct {
	id                 certs.Identity
	auditor, moderator bool
}

// owns reports whether the session row is r's own: recorded under r's
// identity key. A row without a key (recorded before sessions had keys)
// and a reader without one own nothing.
func (r reader) owns(s state.Session) bool {
	return ownedBy(s.IdentityKey, r.id)
}

// ownedBy reports whether a recording with identity key key is id's own.
func ownedBy(key string, id certs.Identity) bool {
	return key != "" && key == id.Key()
}

// mayRead reports whether r may read session s.
func (r reader) mayRead(s state.Session) bool {
	return r.auditor || r.owns(s) || r.moderator && s.Status == state.StatusRunning
}

// mayAudit reports whether id holds the auditor or admin permission.
func (a *API) mayAudit(id certs.Identity) bool { return a.holds(id, PermAuditor, PermAdmin) }

// holds reports whether id holds one of perms.
func (a *API) holds(id certs.Identity, perms ...string) bool {
	if a.opts.Permissions == nil {
		return false
	}
	have := a.opts.Permissions(id)
	return slices.ContainsFunc(perms, func(p string) bool { return slices.Contains(have, p) })
}

// NormalizeID checks a session id strictly — a ULID: 26 characters of
// Crockford's base32 — and returns it upper-cased. Anything else (a path, a
// dot, an escape) is refused.
func NormalizeID(id string) (string, bool) {
	if len(id) != 26 {
		return "", false
	}
	b := []byte(id)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
			b[i] = c
		}
		switch {
		case c >= '0' && c <= '9':
		case c >= 'A' && c <= 'Z' && c != 'I' && c != 'L' && c != 'O' && c != 'U':
		default:
			return "", false
		}
	}
	// The first character encodes the top 3 bits of a 48-bit time.
	if b[0] > '7' {
		return "", false
	}
	return string(b), true
}

// ParseFilter reads a SessionFilter from the query parameters user,
// identity_key, target, role, status, q (text), since and until (RFC 3339
// or a duration before now, like "24h") and limit.
func ParseFilter(q map[string][]string, now time.Time) (state.SessionFilter, error) {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return strings.TrimSpace(v[0])
		}
		return ""
	}
	f := state.SessionFilter{User: get("user"), IdentityKey: get("identity_key"), Target: get("target"), Role: get("role"),
		Status: get("status"), Text: get("q")}
	var err error
	if f.Since, err = ParseWhen(get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = ParseWhen(get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	f.Limit = 100
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 10000 {
			return f, errors.New("limit: want a number from 1 to 10000")
		}
		f.Limit = n
	}
	for _, s := range []string{f.User, f.IdentityKey, f.Target, f.Role, f.Status, f.Text} {
		if len(s) > 256 {
			return f, errors.New("a filter value is too long")
		}
	}
	return f, nil
}

// ParseWhen parses an RFC 3339 time or a duration before now ("2h", "7d").
func ParseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := ParseAge(s)
	if err != nil {
		return time.Time{}, errors.New("want an RFC 3339 time or a duration like 24h or 7d")
	}
	return now.Add(-d), nil
}

// ParseAge parses a duration that also accepts days ("7d", "1d12h").
func ParseAge(s string) (time.Duration, error) {
	var days int
	if i := strings.IndexByte(s, 'd'); i > 0 {
		n, err := strconv.Atoi(s[:i])
		if err != nil || n < 0 || n > 100000 {
			return 0, fmt.Errorf("bad duration %q", s)
		}
		days, s = n, s[i+1:]
	}
	var d time.Duration
	if s != "" {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, err
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration")
	}
	total := d + time.Duration(days)*24*time.Hour
	if total < d {
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	return total, nil
}

func (a *API) list(w http.ResponseWriter, r *http.Request, who reader) error {
	f, err := ParseFilter(r.URL.Query(), a.now())
	if err != nil {
		return fail(http.StatusBadRequest, CodeBadQuery, err.Error(), nil)
	}
	others := who.auditor || who.moderator && f.Status == state.StatusRunning
	if !others {
		key := who.id.Key()
		if f.User != "" && f.User != who.id.Username || f.IdentityKey != "" && f.IdentityKey != key {
			return fail(http.StatusForbidden, CodeForbidden, "auditor permission required to list others' sessions", nil)
		}
		if key == "" {
			// No key, nothing of one's own (an empty filter matches all).
			httpx.WriteJSON(w, http.StatusOK, []state.Session{})
			return nil
		}
		f.IdentityKey = key
	}
	rows, err := a.opts.State.ListSessions(r.Context(), f)
	if err != nil {
		return fail(http.StatusInternalServerError, CodeInternal, "internal error", err)
	}
	if !others {
		rows = slices.DeleteFunc(rows, func(s state.Session) bool { return !who.owns(s) })
	}
	if rows == nil {
		rows = []state.Session{}
	}
	httpx.WriteJSON(w, http.StatusOK, rows)
	return nil
}

// Integrity states of a recording.
const (
	IntegrityOK       = "ok"        // sealed, and the stored object matches
	IntegrityMismatch = "mismatch"  // the object or the seal disagrees with the index
	IntegrityMissing  = "missing"   // the index names an object the store lacks
	IntegrityUnsealed = "unsealed"  // finished but never sealed
	IntegrityRunning  = "recording" // still being recorded
)

// Integrity is the integrity status of a recording.
type Integrity struct {
	// Status is ok, mismatch, missing, unsealed or recording.
	Status string `json:"status"`
	// Checked says what was compared: "seal+size" (the index digest
	// against the audit seal, and the object's size), or "sha256" (the
	// object was hashed, with ?verify=full).
	Checked string `json:"checked,omitempty"`
	// Detail explains a status other than ok.
	Detail string `json:"detail,omitempty"`
}

// SessionDetail is the body of GET /v1/sessions/{id}.
type SessionDetail struct {
	state.Session
	// Integrity is the recording's integrity status.
	Integrity Integrity `json:"integrity"`
}

func (a *API) show(w http.ResponseWriter, r *http.Request, who reader, id string) error {
	s, err := a.session(r.Context(), who, id)
	if err != nil {
		return err
	}
	full := r.URL.Query().Get("verify") == "full"
	integ, err := a.integrity(r.Context(), s, full)
	if err != nil {
		return fail(http.StatusInternalServerError, CodeInternal, "internal error", err)
	}
	httpx.WriteJSON(w, http.StatusOK, SessionDetail{Session: s, Integrity: integ})
	return nil
}

// session reads session id for who: another's session is "no such
// session" to someone who may not read it.
func (a *API) session(ctx context.Context, who reader, id string) (state.Session, error) {
	s, err := a.opts.State.GetSession(ctx, id)
	if errors.Is(err, state.ErrNotFound) || err == nil && !who.mayRead(s) {
		return state.Session{}, fail(http.StatusNotFound, CodeNotFound, "no such session", nil)
	}
	if err != nil {
		return s, fail(http.StatusInternalServerError, CodeInternal, "internal error", err)
	}
	return s, nil
}

// integrity checks a recording cheaply — the index digest against the
// sealed audit event and the stored object's size — or, with full, by
// hashing the stored object.
func (a *API) integrity(ctx context.Context, s state.Session, full bool) (Integrity, error) {
	if s.Status == state.StatusRunning {
		return Integrity{Status: IntegrityRunning}, nil
	}
	if s.Object == "" {
		return Integrity{Status: IntegrityMissing, Detail: "no recording is stored for this session"}, nil
	}
	if s.SealSeq == 0 || s.SHA256 == "" {
		return Integrity{Status: IntegrityUnsealed, Detail: "the recording was never sealed in the audit log"}, nil
	}
	evs, err := a.opts.State.Events(ctx, s.SealSeq-1, 1)
	if err != nil {
		return Integrity{}, err
	}
	if len(evs) != 1 || evs[0].Seq != s.SealSeq || evs[0].Type != state.EventSessionSealed || evs[0].Session != s.ID {
		return Integrity{Status: IntegrityMismatch, Checked: "seal+size", Detail: "the audit seal event is missing"}, nil
	}
	if d, _ := evs[0].Details["sha256"].(string); d != s.SHA256 {
		return Integrity{Status: IntegrityMismatch, Checked: "seal+size", Detail: "the index digest differs from the audit seal"}, nil
	}
	info, err := a.opts.Store.Stat(ctx, s.Object)
	if errors.Is(err, recorder.ErrNotFound) {
		return Integrity{Status: IntegrityMissing, Detail: "the stored recording is missing"}, nil
	}
	if err != nil {
		return Integrity{}, err
	}
	if info.Size != s.Size {
		return Integrity{Status: IntegrityMismatch, Checked: "seal+size", Detail: "the stored recording's size differs from the index"}, nil
	}
	if !full {
		return Integrity{Status: IntegrityOK, Checked: "seal+size"}, nil
	}
	rc, err := a.opts.Store.Open(ctx, s.Object)
	if err != nil {
		return Integrity{}, err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return Integrity{}, err
	}
	if hex.EncodeToString(h.Sum(nil)) != s.SHA256 {
		return Integrity{Status: IntegrityMismatch, Checked: "sha256", Detail: "the stored recording's digest differs from the seal"}, nil
	}
	return Integrity{Status: IntegrityOK, Checked: "sha256"}, nil
}

func (a *API) cast(w http.ResponseWriter, r *http.Request, who reader, id string) error {
	s, err := a.session(r.Context(), who, id)
	if err != nil {
		return err
	}
	follow := r.URL.Query().Get("follow")
	if s.Status == state.StatusRunning && (follow == "1" || follow == "true") {
		if a.opts.OnFollow != nil {
			a.opts.OnFollow(r.Context(), who.id, id)
		}
		err := a.follow(w, r, id)
		if !errors.Is(err, errNotLive) {
			return err
		}
		// The session ended between the index read and the follow: serve
		// the stored recording.
		if s, err = a.session(r.Context(), who, id); err != nil {
			return err
		}
	}
	if s.Status == state.StatusRunning {
		return fail(http.StatusConflict, CodeRunning, "the session is still running; follow it with ?follow=1", nil)
	}
	if s.Object == "" {
		return fail(http.StatusNotFound, CodeNoRecording, "no recording is stored for this session", nil)
	}
	info, err := a.opts.Store.Stat(r.Context(), s.Object)
	if errors.Is(err, recorder.ErrNotFound) {
		return fail(http.StatusNotFound, CodeNoRecording, "the recording is missing from the store", nil)
	}
	if err != nil {
		return fail(http.StatusInternalServerError, CodeInternal, "internal error", err)
	}
	rs := &storeReadSeeker{ctx: r.Context(), store: a.opts.Store, key: s.Object, size: info.Size}
	defer rs.Close()
	w.Header().Set("Content-Type", ContentTypeCast)
	w.Header().Set("Content-Disposition", `attachment; filename="`+s.ID+`.cast"`)
	if s.SHA256 != "" {
		w.Header().Set("ETag", `"`+s.SHA256+`"`)
	}
	// ServeContent answers Range, If-Range and HEAD requests.
	http.ServeContent(w, r, "", info.ModTime, rs)
	return nil
}

var errNotLive = errors.New("session is not live")

// follow streams a running session's cast until it ends.
func (a *API) follow(w http.ResponseWriter, r *http.Request, id string) error {
	if a.opts.Follow == nil {
		return fail(http.StatusNotImplemented, CodeNotLive, "live following is not available on this server", nil)
	}
	rc, err := a.opts.Follow(r.Context(), id)
	if err != nil {
		if errors.Is(err, recorder.ErrNotFound) || errors.Is(err, state.ErrNotFound) {
			return errNotLive
		}
		return fail(http.StatusServiceUnavailable, CodeNotLive, "the session cannot be followed from this server", err)
	}
	defer rc.Close()
	w.Header().Set("Content-Type", ContentTypeCast)
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rw := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := rc.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return nil // the client went away
			}
			if ferr := rw.Flush(); ferr != nil {
				return nil
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			// Headers are sent: ending the stream early is all we can do.
			if r.Context().Err() == nil {
				a.log.Warn("follow session", "session", id, "err", err)
			}
			return nil
		}
	}
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpx.WriteError(w, r, a.log, err)
}

// storeReadSeeker reads a stored object as an io.ReadSeeker for
// http.ServeContent: seeking is free, and each read after a seek opens a
// ranged read of the store.
type storeReadSeeker struct {
	ctx   context.Context
	store recorder.Store
	key   string
	size  int64
	off   int64
	rc    io.ReadCloser
}

func (s *storeReadSeeker) Read(p []byte) (int, error) {
	if s.off >= s.size {
		return 0, io.EOF
	}
	if s.rc == nil {
		rc, err := s.store.OpenRange(s.ctx, s.key, s.off, -1)
		if err != nil {
			return 0, err
		}
		s.rc = rc
	}
	n, err := s.rc.Read(p)
	s.off += int64(n)
	return n, err
}

func (s *storeReadSeeker) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = s.off + offset
	case io.SeekEnd:
		abs = s.size + offset
	default:
		return 0, errors.New("seek: bad whence")
	}
	if abs < 0 {
		return 0, errors.New("seek: negative position")
	}
	if abs != s.off && s.rc != nil {
		s.rc.Close()
		s.rc = nil
	}
	s.off = abs
	return abs, nil
}

func (s *storeReadSeeker) Close() error {
	if s.rc == nil {
		return nil
	}
	err := s.rc.Close()
	s.rc = nil
	return err
}
