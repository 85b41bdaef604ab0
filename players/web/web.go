package web

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

//go:embed templates/*.html
var templateFS embed.FS

// static holds the UI's own script and style sheet (committed) and, once
// `make web` has run, asciinema-player's built files in assets/.
//
//go:embed static assets
var staticFS embed.FS

// Player asset names inside assets/, copied there by `make web`.
const (
	playerJS  = "asciinema-player.min.js"
	playerCSS = "asciinema-player.css"
)

// Options configures the web UI. PublicURL, State and Store are required,
// and a way to log in: Issuer, ClientID and Verifier (OIDC), or SAML, or
// both.
type Options struct {
	// PublicURL is the bastion's external base URL, e.g.
	// https://bastion.example.com; the UI lives under PublicURL/ui/.
	PublicURL string
	// Issuer is the OIDC issuer URL users log in with.
	Issuer string
	// ClientID is the OAuth client of the UI (public, with PKCE).
	ClientID string
	// ClientSecret is the client secret of a confidential client; none if
	// empty.
	ClientSecret string
	// Scopes requested; "openid email profile groups" if empty.
	Scopes []string
	// RedirectURL is the OAuth redirect URI; PublicURL + "/ui/callback" if
	// empty. Its path must be routed to the UI handler.
	RedirectURL string
	// Verifier verifies the ID token of a login and maps it to an identity
	// (*certs.Verifier).
	Verifier certs.TokenVerifier
	// Permissions returns an identity's API permissions; only auditor and
	// admin may use the UI. Nil forbids everyone.
	Permissions func(certs.Identity) []string
	// State is the sessions index.
	State *state.Store
	// Store holds the recordings.
	Store recorder.Store
	// Follow tails a running session (the live view); live viewing is
	// unavailable if nil.
	Follow func(ctx context.Context, id string) (io.ReadCloser, error)
	// CookieKey is the 32-byte key that seals the short-lived cookies (the
	// login in progress, flash messages); see CookieKey for the one every
	// replica shares through the state store. Sessions themselves live in
	// the state store (web_sessions). Required.
	CookieKey []byte
	// SessionTTL is how long a login lasts (unless logged out, or ended by
	// the revocation of a certificate of the same identity); 8h if zero.
	SessionTTL time.Duration
	// HTTPClient talks to the issuer; http.DefaultClient if nil.
	HTTPClient *http.Client
	// Log receives logins and failures; discarded if nil. Tokens are never
	// logged.
	Log *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Metrics registers postern_web_logins_total; nothing is registered if
	// nil.
	Metrics prometheus.Registerer
	// Approvals serves the approvals pages (/ui/approvals) to identities
	// with the approver or admin permission; there are none if nil.
	Approvals Approvals
	// Locks serves the locks page (/ui/locks) and the Terminate button of
	// running sessions to admins and moderators; there are none if nil.
	Locks Locks
	// OnWatch is told who opens the live view of which running session (a
	// moderator joining it); nothing is told if nil.
	OnWatch func(ctx context.Context, who certs.Identity, session string)
	// Locked refuses the web session of an identity a lock matches (the
	// kill switch, lock.Locker.Check): its login fails with the lock's
	// message, and a session already open stops working. No lock check if
	// nil.
	Locked func(certs.Identity) error
	// SearchDisabled hides the search box and answers /ui/search with "search
	// is disabled" (the search.disabled setting).
	SearchDisabled bool
	// SAML offers SAML identity providers on the login page (saml.go); none
	// if nil. With it, Issuer and ClientID may be empty: the UI then logs
	// people in with SAML only.
	SAML SAMLLogins
}

// UI is the web UI handler: sessions list, replay, live view. Mount it at
// /ui/ (and at the redirect URL's path if that is outside /ui/).
type UI struct {
	opts         Options
	log          *slog.Logger
	now          func() time.Time
	ttl          time.Duration
	base         string // URL path prefix of the UI: "/ui"
	origin       string // scheme://host of PublicURL
	callbackPath string // path of the redirect URL
	secure       bool
	sealer       *sealer
	oidc         *oidcClient
	api          *players.API
	tmpl         *template.Template
	static       http.Handler
	built        bool // the player assets are present
	csp          string
	logins       *prometheus.CounterVec // by result
}

// New returns the web UI.
func New(opts Options) (*UI, error) {
	pub, err := url.Parse(strings.TrimRight(opts.PublicURL, "/"))
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("web ui: public URL %q is not an http(s) URL", opts.PublicURL)
	}
	if opts.State == nil || opts.Store == nil {
		return nil, errors.New("web ui: state and store are required")
	}
	oidcLogin := opts.Issuer != "" || opts.ClientID != ""
	if oidcLogin && (opts.Issuer == "" || opts.ClientID == "" || opts.Verifier == nil) {
		return nil, errors.New("web ui: an OIDC login needs an issuer, a client id and a verifier")
	}
	if !oidcLogin && opts.SAML == nil {
		return nil, errors.New("web ui: an OIDC issuer or SAML providers are required to log in")
	}
	s, err := newSealer(opts.CookieKey)
	if err != nil {
		return nil, fmt.Errorf("web ui: %w", err)
	}
	redirect := opts.RedirectURL
	if redirect == "" {
		redirect = pub.String() + "/ui/callback"
	}
	ru, err := url.Parse(redirect)
	if err != nil || ru.Path == "" {
		return nil, fmt.Errorf("web ui: redirect URL %q is not a URL", redirect)
	}
	scopes := opts.Scopes
	if len(scopes) == 0 {
		scopes = []string{"openid", "email", "profile", "groups"}
	}
	u := &UI{
		opts:         opts,
		log:          opts.Log,
		now:          opts.Now,
		ttl:          opts.SessionTTL,
		base:         strings.TrimRight(pub.Path, "/") + "/ui",
		origin:       pub.Scheme + "://" + pub.Host,
		callbackPath: ru.Path,
		secure:       pub.Scheme == "https",
		sealer:       s,
	}
	if oidcLogin {
		u.oidc = &oidcClient{issuer: opts.Issuer, clientID: opts.ClientID, secret: opts.ClientSecret,
			redirect: redirect, scopes: scopes, hc: opts.HTTPClient}
	}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	u.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_web_logins_total",
		Help: "Web UI logins, by result (ok, refused, failed).",
	}, []string{"result"})
	if u.logins, err = promx.Register(opts.Metrics, u.logins); err != nil {
		return nil, fmt.Errorf("web ui: %w", err)
	}
	if u.now == nil {
		u.now = time.Now
	}
	if u.ttl <= 0 {
		u.ttl = 8 * time.Hour
	}
	u.tmpl, err = template.New("").Funcs(template.FuncMap{
		"fmtTime":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
		"duration": duration(u.now),
		"seconds":  func(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) },
		"clock":    func(d time.Duration) string { return clock(d) },
		"deref":    func(p *int) int { return *p },
		"base":     func() string { return u.base },
	}).ParseFS(templateFS, "templates/*.html")
	if err != nil {
		return nil, fmt.Errorf("web ui: templates: %w", err)
	}
	sub, _ := fs.Sub(staticFS, ".")
	u.static = http.FileServerFS(sub)
	_, err1 := fs.Stat(staticFS, "assets/"+playerJS)
	_, err2 := fs.Stat(staticFS, "assets/"+playerCSS)
	u.built = err1 == nil && err2 == nil
	u.api = players.NewAPI(players.APIOptions{
		Auth: cookieAuth{u}, Permissions: opts.Permissions, State: opts.State, Store: opts.Store,
		Follow: opts.Follow, Log: u.log, Now: u.now, SearchDisabled: opts.SearchDisabled,
	})
	// Scripts and styles come from files only: no inline script or style is
	// allowed. 'wasm-unsafe-eval' lets asciinema-player compile its
	// WebAssembly terminal emulator; it does not allow eval of JavaScript.
	u.csp = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; " +
		"font-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
	return u, nil
}

// AssetsBuilt reports whether asciinema-player's files were embedded at
// build time (`make web`).
func (u *UI) AssetsBuilt() bool { return u.built }

// ServeHTTP routes a request of the UI.
func (u *UI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", u.csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	if u.secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	p := r.URL.Path
	if p == u.callbackPath {
		u.serveCallback(w, r)
		return
	}
	rest, ok := strings.CutPrefix(p, u.base)
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case rest == "" || rest == "/":
		u.withAuditor(w, r, u.listPage)
	case rest == "/login" && r.Method == http.MethodGet:
		u.loginPage(w, r)
	case rest == "/login/oidc" && r.Method == http.MethodGet && u.oidc != nil:
		u.startLogin(w, r)
	case strings.HasPrefix(rest, "/login/saml/") && r.Method == http.MethodGet:
		u.startSAMLLogin(w, r, strings.TrimPrefix(rest, "/login/saml/"))
	case rest == samlCallbackPath && u.opts.SAML != nil:
		u.finishSAMLLogin(w, r)
	case rest == "/callback":
		u.serveCallback(w, r)
	case rest == "/logout":
		u.logout(w, r)
	case strings.HasPrefix(rest, "/static/") || strings.HasPrefix(rest, "/assets/"):
		u.serveStatic(w, r, rest)
	case strings.HasPrefix(rest, "/sessions/"):
		u.sessionRoutes(w, r, strings.TrimPrefix(rest, "/sessions/"))
	case rest == "/search":
		u.withAuditor(w, r, u.searchPage)
	case rest == "/approvals" || strings.HasPrefix(rest, "/approvals/"):
		u.approvalRoutes(w, r, strings.TrimPrefix(rest, "/approvals"))
	case rest == "/locks" || strings.HasPrefix(rest, "/locks/"):
		u.lockRoutes(w, r, strings.TrimPrefix(rest, "/locks"))
	default:
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
	}
}

// serveCallback serves the redirect URL for GET only.
func (u *UI) serveCallback(w http.ResponseWriter, r *http.Request) {
	if u.oidc == nil {
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
		return
	}
	if r.Method != http.MethodGet {
		u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	u.finishLogin(w, r)
}

func (u *UI) serveStatic(w http.ResponseWriter, r *http.Request, rest string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	clean := path.Clean(rest)
	if clean != rest || strings.Contains(rest, "..") {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=300")
	r2 := r.Clone(r.Context())
	r2.URL.Path = clean
	u.static.ServeHTTP(w, r2)
}

// withAuditor runs page for a logged-in auditor or admin; it sends others
// to the login or answers 403.
func (u *UI) withAuditor(w http.ResponseWriter, r *http.Request, page func(http.ResponseWriter, *http.Request, session)) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	s, ok := u.currentSession(r)
	if !ok {
		ret := strings.TrimPrefix(r.URL.RequestURI(), u.base)
		http.Redirect(w, r, u.base+"/login?return="+url.QueryEscape(ret), http.StatusFound)
		return
	}
	if !u.mayAudit(s.Identity) {
		w.Header().Set("Cache-Control", "no-store")
		u.render(w, r, http.StatusForbidden, "forbidden.html", pageData{Session: &s,
			Title: "Forbidden", Message: "You are logged in as " + s.Identity.Display() + ", but viewing sessions needs the auditor (or admin) permission."})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	page(w, r, s)
}

// withWatcher runs page for an auditor, or for a moderator when session
// id is running (moderators watch live sessions, not recordings).
func (u *UI) withWatcher(w http.ResponseWriter, r *http.Request, id string, page func(http.ResponseWriter, *http.Request, session)) {
	if s, ok := u.currentSession(r); ok && !u.mayAudit(s.Identity) && u.opts.Permissions != nil &&
		slices.Contains(u.opts.Permissions(s.Identity), players.PermModerator) {
		if row, err := u.opts.State.GetSession(r.Context(), id); err == nil && row.Status == state.StatusRunning {
			w.Header().Set("Cache-Control", "no-store")
			page(w, r, s)
			return
		}
	}
	u.withAuditor(w, r, page)
}

func (u *UI) mayAudit(id certs.Identity) bool {
	if u.opts.Permissions == nil {
		return false
	}
	p := u.opts.Permissions(id)
	return slices.Contains(p, players.PermAuditor) || slices.Contains(p, players.PermAdmin)
}

// logout clears the session; it is a POST with the CSRF token.
func (u *UI) logout(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	s, ok := u.currentSession(r)
	if ok && !u.checkCSRF(r, s) {
		u.errorPage(w, r, http.StatusForbidden, "The request did not carry a valid form token. Reload the page and try again.")
		return
	}
	if ok {
		// Ends the session on every replica: the cookie, if kept or
		// captured, no longer logs anyone in.
		if err := u.opts.State.DeleteWebSession(r.Context(), s.id); err != nil {
			u.internalError(w, r, err)
			return
		}
		u.log.Info("web logout", "identity", s.Identity.Username, "issuer", s.Identity.Issuer)
	}
	u.clearCookie(w, u.sessionCookieName())
	u.render(w, r, http.StatusOK, "message.html", pageData{Title: "Logged out", Message: "You are logged out."})
}

// pageData is what every template gets.
type pageData struct {
	Title   string
	Base    string
	Session *session
	Message string
	Built   bool
	// MayApprove shows the Approvals link.
	MayApprove bool
	// MayTerminate shows the Locks link and a running session's Terminate
	// button; MayLock the lock form and Remove buttons.
	MayTerminate, MayLock bool
	// MaySearch shows the search box.
	MaySearch bool

	// list page
	Filter   state.SessionFilter
	Query    url.Values
	Sessions []state.Session
	Error    string

	// session page
	Detail      *players.SessionDetail
	Markers     []players.Marker
	MoreMarkers bool
	CastURL     string
	LiveURL     string

	// locks page
	Locks []state.Lock
	// search page (search.go) and the replay position it links to
	Search  *searchPage
	StartAt string

	// login page (saml.go)
	Logins []loginOption

	// approvals pages
	Pending  []state.Approval
	Decided  []state.Approval
	Approval *state.Approval
	Flash    *flash
}

func (u *UI) render(w http.ResponseWriter, r *http.Request, status int, name string, d pageData) {
	d.Base, d.Built = u.base, u.built
	d.MayApprove = d.Session != nil && u.mayApprove(d.Session.Identity)
	d.MayTerminate = d.Session != nil && u.mayTerminate(d.Session.Identity)
	d.MaySearch = d.Session != nil && !u.opts.SearchDisabled && u.mayAudit(d.Session.Identity)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := u.tmpl.ExecuteTemplate(w, name, d); err != nil && r.Context().Err() == nil {
		u.log.Error("render page", "page", name, "err", err)
	}
}

func (u *UI) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	var sp *session
	if s, ok := u.currentSession(r); ok {
		sp = &s
	}
	u.render(w, r, status, "message.html", pageData{Title: http.StatusText(status), Message: msg, Session: sp})
}

func (u *UI) internalError(w http.ResponseWriter, r *http.Request, err error) {
	u.log.Error("web ui", "path", r.URL.Path, "err", err)
	u.errorPage(w, r, http.StatusInternalServerError, "Something went wrong on the server.")
}

func (u *UI) listPage(w http.ResponseWriter, r *http.Request, s session) {
	q := r.URL.Query()
	d := pageData{Title: "Sessions", Session: &s, Query: q}
	f, err := players.ParseFilter(q, u.now())
	if err != nil {
		d.Error = err.Error()
		u.render(w, r, http.StatusBadRequest, "list.html", d)
		return
	}
	d.Filter = f
	d.Sessions, err = u.opts.State.ListSessions(r.Context(), f)
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	u.render(w, r, http.StatusOK, "list.html", d)
}

// sessionRoutes serves /ui/sessions/{id}, /cast and /live.
func (u *UI) sessionRoutes(w http.ResponseWriter, r *http.Request, rest string) {
	raw, sub, _ := strings.Cut(rest, "/")
	id, ok := players.NormalizeID(raw)
	if !ok || strings.Contains(r.URL.RawPath, "%") {
		u.errorPage(w, r, http.StatusBadRequest, "That is not a session id.")
		return
	}
	switch sub {
	case "":
		u.withWatcher(w, r, id, func(w http.ResponseWriter, r *http.Request, s session) { u.sessionPage(w, r, s, id) })
	case "cast":
		// The sessions API does the work, authenticated by the cookie.
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/v1/sessions/" + id + "/cast"
		r2.URL.RawPath = ""
		q := r2.URL.Query()
		q.Del("follow")
		r2.URL.RawQuery = q.Encode()
		u.api.ServeHTTP(w, r2)
	case "live":
		u.withWatcher(w, r, id, func(w http.ResponseWriter, r *http.Request, s session) {
			if u.opts.OnWatch != nil {
				u.opts.OnWatch(r.Context(), s.Identity, id)
			}
			u.live(w, r, id)
		})
	default:
		u.errorPage(w, r, http.StatusNotFound, "There is no such page.")
	}
}

// maxMarkers bounds the marker list of the replay page, and maxMarkerScan
// the bytes of a cast read to find them, so that a huge recording does not
// make its page slow (asciinema-player still shows every marker on its
// progress bar).
const (
	maxMarkers    = 500
	maxMarkerScan = 64 << 20
)

func (u *UI) sessionPage(w http.ResponseWriter, r *http.Request, s session, id string) {
	row, err := u.opts.State.GetSession(r.Context(), id)
	if errors.Is(err, state.ErrNotFound) {
		u.errorPage(w, r, http.StatusNotFound, "There is no such session.")
		return
	}
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	d := pageData{Title: "Session " + id, Session: &s, Flash: u.takeFlash(w, r), StartAt: startAt(r)}
	detail := players.SessionDetail{Session: row}
	if row.Status == state.StatusRunning {
		detail.Integrity.Status = players.IntegrityRunning
		if u.opts.Follow != nil {
			d.LiveURL = u.base + "/sessions/" + id + "/live"
		}
	} else {
		d.CastURL = u.base + "/sessions/" + id + "/cast"
		d.Markers, d.MoreMarkers = u.markers(r.Context(), row)
		detail.Integrity = u.integrity(r, id)
	}
	d.Detail = &detail
	u.render(w, r, http.StatusOK, "session.html", d)
}

// integrity asks the sessions API for the cheap integrity check.
func (u *UI) integrity(r *http.Request, id string) players.Integrity {
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath, r2.URL.RawQuery = "/v1/sessions/"+id, "", ""
	r2.Method = http.MethodGet
	rec := &captureWriter{header: http.Header{}}
	u.api.ServeHTTP(rec, r2)
	var d players.SessionDetail
	if rec.status != http.StatusOK || json.Unmarshal(rec.body, &d) != nil {
		return players.Integrity{Status: "unknown"}
	}
	return d.Integrity
}

// captureWriter keeps a small in-process response.
type captureWriter struct {
	header http.Header
	status int
	body   []byte
}

func (c *captureWriter) Header() http.Header { return c.header }
func (c *captureWriter) WriteHeader(s int)   { c.status = s }
func (c *captureWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	c.body = append(c.body, b...)
	return len(b), nil
}

// markers scans a stored cast for its markers (playback positions are
// the recorded times: the web player applies no idle limit).
func (u *UI) markers(ctx context.Context, row state.Session) ([]players.Marker, bool) {
	if row.Object == "" {
		return nil, false
	}
	src := func() (io.ReadCloser, error) {
		rc, err := u.opts.Store.Open(ctx, row.Object)
		if err != nil {
			return nil, err
		}
		return readCloser{io.LimitReader(rc, maxMarkerScan), rc}, nil
	}
	p, err := players.New(src, players.Options{IdleTimeLimit: -1})
	if err != nil {
		u.log.Warn("scan markers", "session", row.ID, "err", err)
		return nil, false
	}
	defer p.Close()
	for {
		_, found, err := p.NextMarker(io.Discard)
		if err != nil {
			u.log.Warn("scan markers", "session", row.ID, "err", err)
			break
		}
		if !found {
			break
		}
		if len(p.Markers()) > maxMarkers {
			return p.Markers()[:maxMarkers], true
		}
	}
	return p.Markers(), row.Size > maxMarkerScan
}

// readCloser pairs a reader with the closer of what it reads.
type readCloser struct {
	io.Reader
	io.Closer
}

// live streams a running session as server-sent events in the form
// asciinema-player's eventsource driver reads: a {"cols","rows"} reset,
// then [time, code, data] events, then a "done" event when it ends.
func (u *UI) live(w http.ResponseWriter, r *http.Request, id string) {
	if u.opts.Follow == nil {
		u.errorPage(w, r, http.StatusNotImplemented, "Live viewing is not available on this server.")
		return
	}
	rc, err := u.opts.Follow(r.Context(), id)
	if err != nil {
		u.log.Info("live view unavailable", "session", id, "err", err)
		u.errorPage(w, r, http.StatusServiceUnavailable, "This session cannot be followed from this server.")
		return
	}
	defer rc.Close()
	dec := recorder.NewDecoder(rc)
	h, err := dec.Header()
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rw := http.NewResponseController(w)
	send := func(event string, v any) bool {
		b, _ := json.Marshal(v)
		if event != "" {
			fmt.Fprintf(w, "event: %s\n", event)
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return false
		}
		return rw.Flush() == nil
	}
	if !send("", map[string]int{"cols": h.Width, "rows": h.Height}) {
		return
	}
	for {
		ev, err := dec.Next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
				send("done", map[string]string{})
			}
			return
		}
		switch ev.Code {
		case recorder.CodeOutput, recorder.CodeResize, recorder.CodeMarker:
			if !send("", []any{ev.Time.Seconds(), ev.Code, ev.Data}) {
				return
			}
		}
	}
}

// duration formats how long a session lasted (or has run).
func duration(now func() time.Time) func(state.Session) string {
	return func(s state.Session) string {
		end := now()
		if s.End != nil {
			end = *s.End
		}
		return end.Sub(s.Start).Round(time.Second).String()
	}
}

// clock formats a playback position as m:ss.
func clock(d time.Duration) string {
	s := int(d.Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
