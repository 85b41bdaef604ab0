package saml

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/crewjam/saml"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Lifetimes of the pieces of a login.
const (
	// requestTTL bounds the time between starting a login and the
	// provider's answer (the person types a password, maybe a second
	// factor).
	requestTTL = 10 * time.Minute
	// codeTTL bounds the time between the answer and the redemption of the
	// code (a redirect and one request away).
	codeTTL = 2 * time.Minute
	// maxResponse bounds the ACS request body.
	maxResponse = 1 << 20
)

// Error codes of the SAML endpoints and of login-code redemption
// (contract: they appear as "code" in HTTP error bodies and in the error
// parameter sent to a login's redirect URI as error_description's key).
const (
	// CodeBadLoginRequest: the login's redirect_uri, state or PKCE
	// challenge is missing or not acceptable.
	CodeBadLoginRequest = "bad_login_request"
	// CodeLoginExpired: the answer names no login in progress (expired,
	// answered already, or started elsewhere).
	CodeLoginExpired = "login_expired"
	// CodeAssertionRefused: the provider's answer did not pass validation.
	CodeAssertionRefused = "assertion_refused"
	// CodeAssertionReplayed: the assertion was accepted before.
	CodeAssertionReplayed = "assertion_replayed"
	// CodeLoginCodeInvalid: a login code is unknown, used, expired or
	// presented with the wrong PKCE verifier.
	CodeLoginCodeInvalid = "login_code_invalid"
	// CodeProviderUnavailable: the provider's metadata could not be had
	// yet; answered with 503, retry later.
	CodeProviderUnavailable = "provider_unavailable"
)

// Audit event types.
const (
	// EventLogin records a login accepted from a SAML provider.
	EventLogin = "login.saml"
	// EventLoginRefused records an answer from a SAML provider that was
	// refused.
	EventLoginRefused = "login.saml.refused"
)

// Options configures New. Config, PublicURL and State are required.
type Options struct {
	// Config lists the providers and postern's key.
	Config config.SAML
	// PublicURL is the bastion's external base URL; the endpoints live
	// under PublicURL/v1/saml/.
	PublicURL string
	// State keeps logins in progress, the replay cache, the login codes
	// and the generated key, shared by every replica.
	State *state.Store
	// Aliases returns the alias (identity.aliases) of the identity provider
	// vouched for as subject, "" if none; identities carry no alias if nil.
	Aliases func(provider, subject string) string
	// WebRedirect is the web UI's redirect URI, accepted as a login's
	// redirect_uri beside loopback addresses; none if empty.
	WebRedirect string
	// HTTPClient fetches metadata; a client with a 10s timeout if nil.
	HTTPClient *http.Client
	// Audit receives login.saml and login.saml.refused events; none if nil.
	Audit func(ctx context.Context, e state.Event)
	// Log receives logins and refusals (never assertions or codes);
	// discarded if nil.
	Log *slog.Logger
	// Metrics registers postern_saml_logins_total; not registered if nil.
	Metrics prometheus.Registerer
	// Now is the clock of requests and codes; time.Now if nil. Assertion
	// times are checked against the real clock.
	Now func() time.Time
}

// SP is postern's SAML service provider, for every configured identity
// provider. It is safe for concurrent use; it owns no goroutine.
type SP struct {
	opts   Options
	key    *rsa.PrivateKey
	cert   *x509.Certificate
	base   string // PublicURL without a trailing slash
	byName map[string]*provider
	order  []*provider
	log    *slog.Logger
	now    func() time.Time
	logins *prometheus.CounterVec
}

// ProviderInfo describes one provider to clients (GET /v1/config) and to
// the web UI's login page.
type ProviderInfo struct {
	// Name identifies the provider (and is its identities' issuer).
	Name string
	// DisplayName is what a login page shows.
	DisplayName string
	// LoginURL starts a login: GET it with redirect_uri, state,
	// code_challenge and code_challenge_method=S256.
	LoginURL string
}

// New returns the service provider. It loads (or generates) postern's key
// and checks the configuration; it contacts no provider, so postern starts
// while one is down.
func New(opts Options) (*SP, error) {
	if opts.State == nil {
		return nil, errors.New("saml: a state store is required")
	}
	pub, err := url.Parse(strings.TrimRight(opts.PublicURL, "/"))
	if err != nil || (pub.Scheme != "http" && pub.Scheme != "https") || pub.Host == "" {
		return nil, fmt.Errorf("saml: public URL %q is not an http(s) URL", opts.PublicURL)
	}
	sp := &SP{opts: opts, base: pub.String(), byName: map[string]*provider{}, log: opts.Log, now: opts.Now}
	if sp.log == nil {
		sp.log = slog.New(slog.DiscardHandler)
	}
	if sp.now == nil {
		sp.now = time.Now
	}
	if sp.opts.HTTPClient == nil {
		sp.opts.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if sp.key, sp.cert, err = loadKey(context.Background(), opts.Config, opts.State); err != nil {
		return nil, err
	}
	for i, c := range opts.Config.Providers {
		p, err := newProvider(sp, c)
		if err != nil {
			return nil, fmt.Errorf("identity.saml.providers[%d]: %w", i, err)
		}
		if sp.byName[c.Name] != nil {
			return nil, fmt.Errorf("identity.saml.providers[%d].name: %q is used twice", i, c.Name)
		}
		sp.byName[c.Name] = p
		sp.order = append(sp.order, p)
	}
	sp.logins = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_saml_logins_total",
		Help: "Answers of SAML identity providers, by provider and result (ok, refused, replayed, expired).",
	}, []string{"provider", "result"})
	if sp.logins, err = promx.Register(opts.Metrics, sp.logins); err != nil {
		return nil, fmt.Errorf("saml: %w", err)
	}
	return sp, nil
}

// Providers lists the configured providers, in configuration order.
func (sp *SP) Providers() []ProviderInfo {
	out := make([]ProviderInfo, 0, len(sp.order))
	for _, p := range sp.order {
		name := p.cfg.DisplayName
		if name == "" {
			name = p.cfg.Name
		}
		out = append(out, ProviderInfo{Name: p.cfg.Name, DisplayName: name, LoginURL: p.loginURL})
	}
	return out
}

// Paths of the endpoints under PublicURL.
const pathPrefix = "/v1/saml/"

// ServeHTTP serves, for each provider NAME:
//
//	GET  /v1/saml/NAME/metadata   postern's metadata for that provider
//	GET  /v1/saml/NAME/login      start a login (redirect_uri, state, code_challenge, code_challenge_method=S256)
//	POST /v1/saml/NAME/acs        the provider's answer (HTTP-POST binding)
func (sp *SP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	rest, _ := strings.CutPrefix(r.URL.Path, pathPrefix)
	name, action, _ := strings.Cut(rest, "/")
	p := sp.byName[name]
	if p == nil {
		sp.page(w, http.StatusNotFound, "Unknown identity provider", "postern has no SAML identity provider of that name.")
		return
	}
	switch {
	case action == "metadata" && (r.Method == http.MethodGet || r.Method == http.MethodHead):
		sp.serveMetadata(w, p)
	case action == "login" && r.Method == http.MethodGet:
		sp.startLogin(w, r, p)
	case action == "acs" && r.Method == http.MethodPost:
		sp.acs(w, r, p)
	case action == "metadata" || action == "login" || action == "acs":
		sp.page(w, http.StatusMethodNotAllowed, "Method not allowed", "Use GET for metadata and login, POST for acs.")
	default:
		sp.page(w, http.StatusNotFound, "Not found", "There is no such SAML endpoint.")
	}
}

func (sp *SP) serveMetadata(w http.ResponseWriter, p *provider) {
	b, err := xml.MarshalIndent(p.base().Metadata(), "", "  ")
	if err != nil {
		sp.log.Error("saml metadata", "provider", p.cfg.Name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/samlmetadata+xml")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(b)
}

// startLogin checks the client's login parameters, stores the request and
// sends the browser to the provider with a signed AuthnRequest.
func (sp *SP) startLogin(w http.ResponseWriter, r *http.Request, p *provider) {
	q := r.URL.Query()
	redirect, st, challenge := q.Get("redirect_uri"), q.Get("state"), q.Get("code_challenge")
	if !sp.allowedRedirect(redirect) {
		sp.page(w, http.StatusBadRequest, "Sign-in refused",
			"redirect_uri must be postern login's loopback address (http://127.0.0.1:PORT/callback) or this bastion's web UI.")
		return
	}
	if q.Get("code_challenge_method") != "S256" || len(challenge) != 43 || !base64URL(challenge) {
		sp.page(w, http.StatusBadRequest, "Sign-in refused", "code_challenge must be an S256 PKCE challenge (code_challenge_method=S256).")
		return
	}
	if st == "" || len(st) > 256 || !printable(st) {
		sp.page(w, http.StatusBadRequest, "Sign-in refused", "state must be 1 to 256 printable characters.")
		return
	}
	ssp, err := p.serviceProvider(r.Context())
	if err != nil {
		sp.log.Warn("saml: provider unavailable", "provider", p.cfg.Name, "err", err)
		sp.page(w, http.StatusServiceUnavailable, "Identity provider unavailable", "The identity provider cannot be reached. Try again shortly.")
		return
	}
	binding, resultBinding := saml.HTTPRedirectBinding, saml.HTTPPostBinding
	dest := ssp.GetSSOBindingLocation(binding)
	if dest == "" {
		binding = saml.HTTPPostBinding
		dest = ssp.GetSSOBindingLocation(binding)
	}
	if dest == "" {
		sp.log.Error("saml: the provider's metadata has no SSO endpoint for HTTP-Redirect or HTTP-POST", "provider", p.cfg.Name)
		sp.page(w, http.StatusServiceUnavailable, "Identity provider unavailable", "The identity provider's metadata offers no usable sign-in endpoint.")
		return
	}
	req, err := ssp.MakeAuthenticationRequest(dest, binding, resultBinding)
	if err != nil {
		sp.internal(w, "make authentication request", err)
		return
	}
	relay := randomToken()
	if err := sp.opts.State.PutLoginRequest(r.Context(), state.LoginRequest{
		Relay: relay, Provider: p.cfg.Name, RequestID: req.ID, RedirectURI: redirect, State: st, Challenge: challenge,
		Expires: sp.now().Add(requestTTL),
	}); err != nil {
		sp.internal(w, "store login request", err)
		return
	}
	if binding == saml.HTTPPostBinding {
		form := req.Post(relay)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte("<!doctype html><meta charset=utf-8><title>postern: signing in</title><body>"))
		_, _ = w.Write(form)
		return
	}
	u, err := req.Redirect(relay, ssp)
	if err != nil {
		sp.internal(w, "redirect authentication request", err)
		return
	}
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// allowedRedirect reports whether u may receive a login code: the web UI's
// redirect URI, or a loopback http URL on any port (RFC 8252 §7.3) with
// the path /callback, as postern login listens.
func (sp *SP) allowedRedirect(u string) bool {
	if u == "" || len(u) > 512 {
		return false
	}
	if sp.opts.WebRedirect != "" && u == sp.opts.WebRedirect {
		return true
	}
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" || p.User != nil || p.RawQuery != "" || p.Fragment != "" || p.Path != "/callback" {
		return false
	}
	host, port, err := net.SplitHostPort(p.Host)
	if err != nil || port == "" {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// acs takes a provider's answer: it finds the login in progress by its
// RelayState, validates the response (signature on the response or the
// assertion by the provider's key, destination, issuer, InResponseTo,
// audience, recipient, NotBefore and NotOnOrAfter with crewjam/saml's
// 3-minute skew, decryption of an encrypted assertion), maps it to an
// identity, consumes the assertion's id (once, across replicas) and sends
// the browser to the login's redirect URI with a one-time code.
func (sp *SP) acs(w http.ResponseWriter, r *http.Request, p *provider) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, maxResponse)
	if err := r.ParseForm(); err != nil {
		sp.page(w, http.StatusBadRequest, "Sign-in refused", "The identity provider's answer could not be read.")
		return
	}
	req, err := sp.opts.State.GetLoginRequest(ctx, r.PostForm.Get("RelayState"))
	if err != nil || req.Provider != p.cfg.Name {
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			sp.internal(w, "read login request", err)
			return
		}
		sp.logins.WithLabelValues(p.cfg.Name, "expired").Inc()
		sp.page(w, http.StatusBadRequest, "Sign-in expired", "This sign-in has expired, was answered already or was started elsewhere. Start again.")
		return
	}
	fail := func(code, msg string, cause error) {
		result := "refused"
		if code == CodeAssertionReplayed {
			result = "replayed"
		}
		sp.logins.WithLabelValues(p.cfg.Name, result).Inc()
		sp.log.Info("saml: login refused", "provider", p.cfg.Name, "code", code, "err", cause)
		sp.audit(ctx, state.Event{Type: EventLoginRefused, Source: r.RemoteAddr,
			Details: map[string]any{"provider": p.cfg.Name, "code": code, "reason": msg}})
		sp.redirectError(w, r, req, code, msg)
	}
	if r.Form.Has("SAMLart") || r.PostForm.Get("SAMLResponse") == "" {
		fail(CodeAssertionRefused, "the answer is not a SAML response sent with the HTTP-POST binding", nil)
		return
	}
	if p.cfg.RequireEncryption && !encryptedOnly(r.PostForm.Get("SAMLResponse")) {
		fail(CodeAssertionRefused, "the assertion is not encrypted, and this provider requires it", nil)
		return
	}
	ssp, err := p.serviceProvider(ctx)
	if err != nil {
		sp.log.Warn("saml: provider unavailable", "provider", p.cfg.Name, "err", err)
		sp.page(w, http.StatusServiceUnavailable, "Identity provider unavailable", "The identity provider's metadata cannot be read. Try again shortly.")
		return
	}
	assertion, err := ssp.ParseResponse(r, []string{req.RequestID})
	if err != nil {
		var ire *saml.InvalidResponseError
		if errors.As(err, &ire) {
			err = ire.PrivateErr // the reason, for the log only
		}
		fail(CodeAssertionRefused, "the identity provider's answer did not pass validation", err)
		return
	}
	id, err := p.identity(assertion)
	if err != nil {
		msg := "the identity provider's answer names no usable identity"
		if e := usererr.As(err); e != nil {
			msg = e.Msg
		}
		fail(CodeAssertionRefused, msg, err)
		return
	}
	idJSON, err := json.Marshal(id)
	if err != nil {
		sp.internal(w, "encode identity", err)
		return
	}
	code := randomToken()
	err = sp.opts.State.FinishLogin(ctx, req.Relay, assertion.ID, assertionExpiry(assertion), state.LoginCode{
		Hash: hashCode(code), Identity: string(idJSON), Challenge: req.Challenge, RedirectURI: req.RedirectURI,
		Expires: sp.now().Add(codeTTL),
	})
	switch {
	case errors.Is(err, state.ErrReplayed):
		fail(CodeAssertionReplayed, "this assertion has been used already", err)
		return
	case errors.Is(err, state.ErrNotFound):
		sp.logins.WithLabelValues(p.cfg.Name, "expired").Inc()
		sp.page(w, http.StatusBadRequest, "Sign-in expired", "This sign-in has expired or was answered already. Start again.")
		return
	case err != nil:
		sp.internal(w, "finish login", err)
		return
	}
	sp.logins.WithLabelValues(p.cfg.Name, "ok").Inc()
	sp.log.Info("saml: login", "provider", p.cfg.Name, "identity", id.Username, "subject", id.Subject)
	sp.audit(ctx, state.Event{Type: EventLogin, Actor: id.Username, Source: r.RemoteAddr,
		Details: map[string]any{"provider": p.cfg.Name, "entity_id": p.idpEntityID(), "subject": id.Subject, "groups": id.Groups}})
	u, _ := url.Parse(req.RedirectURI) // stored only after allowedRedirect parsed it
	qv := u.Query()
	qv.Set("code", code)
	qv.Set("state", req.State)
	u.RawQuery = qv.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

// redirectError sends the browser back to the login's redirect URI with an
// OAuth-style error, so that postern login or the web UI shows why.
func (sp *SP) redirectError(w http.ResponseWriter, r *http.Request, req state.LoginRequest, code, msg string) {
	u, err := url.Parse(req.RedirectURI)
	if err != nil {
		sp.page(w, http.StatusUnauthorized, "Sign-in refused", msg)
		return
	}
	qv := u.Query()
	qv.Set("error", "access_denied")
	qv.Set("error_description", code+": "+msg)
	qv.Set("state", req.State)
	u.RawQuery = qv.Encode()
	http.Redirect(w, r, u.String(), http.StatusSeeOther)
}

func (sp *SP) audit(ctx context.Context, e state.Event) {
	if sp.opts.Audit != nil {
		sp.opts.Audit(context.WithoutCancel(ctx), e)
	}
}

// Redeem exchanges a login code for the identity it proves. verifier is
// the PKCE code verifier whose S256 challenge started the login; if
// redirectURI is not empty it must be the URI the code was sent to. A code
// is redeemed once, on any replica. Refusals are *usererr.Error values
// with status 401 and code login_code_invalid.
func (sp *SP) Redeem(ctx context.Context, code, verifier, redirectURI string) (certs.Identity, error) {
	bad := func(cause error) error {
		return &usererr.Error{Status: http.StatusUnauthorized, Code: CodeLoginCodeInvalid,
			Msg: "login code is unknown, used or expired; sign in again", Err: cause}
	}
	if code == "" || len(code) > 128 || verifier == "" || len(verifier) > 128 {
		return certs.Identity{}, bad(errors.New("malformed code or verifier"))
	}
	c, err := sp.opts.State.TakeLoginCode(ctx, hashCode(code))
	if errors.Is(err, state.ErrNotFound) {
		return certs.Identity{}, bad(err)
	}
	if err != nil {
		return certs.Identity{}, fmt.Errorf("redeem login code: %w", err)
	}
	sum := sha256.Sum256([]byte(verifier))
	if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(c.Challenge)) != 1 {
		return certs.Identity{}, bad(errors.New("PKCE verifier does not match"))
	}
	if redirectURI != "" && redirectURI != c.RedirectURI {
		return certs.Identity{}, bad(errors.New("redirect URI does not match"))
	}
	var id certs.Identity
	if err := json.Unmarshal([]byte(c.Identity), &id); err != nil {
		return certs.Identity{}, fmt.Errorf("decode login code identity: %w", err)
	}
	return id, nil
}

// Verify implements certs.TokenVerifier for the bearer token of a SAML
// login (certs.LoginCodeToken): POST /v1/certs takes it like an ID token.
func (sp *SP) Verify(ctx context.Context, token string) (certs.Identity, error) {
	code, verifier, ok := certs.ParseLoginCodeToken(token)
	if !ok {
		return certs.Identity{}, &usererr.Error{Status: http.StatusUnauthorized, Code: CodeLoginCodeInvalid, Msg: "malformed login code"}
	}
	return sp.Redeem(ctx, code, verifier, "")
}

var _ certs.TokenVerifier = (*SP)(nil)

// assertionExpiry is when an assertion stops being acceptable anyway: the
// earliest NotOnOrAfter of its conditions and bearer confirmations, plus
// the clock skew the validation allows. The replay cache keeps its id that
// long.
func assertionExpiry(a *saml.Assertion) time.Time {
	var t time.Time
	earliest := func(c time.Time) {
		if !c.IsZero() && (t.IsZero() || c.Before(t)) {
			t = c
		}
	}
	if a.Conditions != nil {
		earliest(a.Conditions.NotOnOrAfter)
	}
	if a.Subject != nil {
		for _, sc := range a.Subject.SubjectConfirmations {
			if sc.SubjectConfirmationData != nil {
				earliest(sc.SubjectConfirmationData.NotOnOrAfter)
			}
		}
	}
	if t.IsZero() {
		t = time.Now().Add(time.Hour)
	}
	return t.Add(saml.MaxClockSkew)
}

// randomToken returns 32 random bytes, base64url-encoded (43 characters).
func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashCode is how a login code is stored: its SHA-256, hex.
func hashCode(code string) string {
	sum := sha256.Sum256([]byte(code))
	return hex.EncodeToString(sum[:])
}

func base64URL(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// page writes a short HTML page for the browser.
func (sp *SP) page(w http.ResponseWriter, status int, title, body string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><meta charset=utf-8><title>postern: %s</title><h1>%s</h1><p>%s</p>\n",
		html.EscapeString(title), html.EscapeString(title), html.EscapeString(body))
}

func (sp *SP) internal(w http.ResponseWriter, what string, err error) {
	id := randomToken()[:12]
	sp.log.Error("saml: "+what, "error_id", id, "err", err)
	sp.page(w, http.StatusInternalServerError, "Internal error", "Something went wrong on the server (error id "+id+").")
}
