package web

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Cookie names. With an https public URL the session cookie takes the
// __Host- prefix, which browsers accept only when Secure, with Path=/ and
// no Domain: another site on the same domain cannot plant it.
const (
	sessionCookie       = "postern_session"
	secureSessionCookie = "__Host-postern_session"
	loginCookie         = "postern_login"
	secureLoginCookie   = "__Host-postern_login"
)

// loginTTL bounds the time between starting a login and its callback.
const loginTTL = 10 * time.Minute

// sealer encrypts and authenticates cookie values with AES-256-GCM. The
// cookie name is the additional data, so one cookie's value cannot be
// replayed as another's.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("cookie key: want 32 bytes, have %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("cookie key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cookie key: %w", err)
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(name string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("encode cookie: %w", err)
	}
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plain)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("cookie nonce: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(s.aead.Seal(nonce, nonce, plain, []byte(name))), nil
}

func (s *sealer) open(name, value string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(b) < s.aead.NonceSize() {
		return errors.New("malformed cookie")
	}
	plain, err := s.aead.Open(nil, b[:s.aead.NonceSize()], b[s.aead.NonceSize():], []byte(name))
	if err != nil {
		return errors.New("cookie does not authenticate")
	}
	return json.Unmarshal(plain, v)
}

// cookieKeySecret names the cookie key in the state store's secrets.
const cookieKeySecret = "web.cookie_key"

// CookieKey returns the 32-byte key that seals the web UI's short-lived
// cookies (the login in progress, flash messages), kept in the state store
// so that every replica has the same one: a login started on one replica
// finishes on another, and a restart logs nobody out. The first replica to
// ask generates it.
func CookieKey(ctx context.Context, st *state.Store) ([]byte, error) {
	enc, err := st.Secret(ctx, cookieKeySecret, func() ([]byte, error) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		return []byte(base64.StdEncoding.EncodeToString(key)), nil
	})
	if err != nil {
		return nil, fmt.Errorf("cookie key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(string(enc))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("cookie key in the state store is malformed (want 32 bytes in base64)")
	}
	return key, nil
}

// session is a logged-in browser: a row of the state store's web_sessions,
// found by the hash of the random token in the session cookie.
type session struct {
	id       string // hex SHA-256 of the cookie token: the row's key
	Identity certs.Identity
	Expires  int64
	CSRF     string
}

// sessionID is the key of the web session whose cookie holds token.
func sessionID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// pendingLogin is the content of the login cookie between the redirect to
// the issuer and the callback.
type pendingLogin struct {
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	Return   string `json:"return"`
	Expires  int64  `json:"exp"`
}

func randomToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("random token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// oidcClient discovers the issuer once (retrying after failures) and holds
// the OAuth configuration.
type oidcClient struct {
	issuer, clientID, secret, redirect string
	scopes                             []string
	hc                                 *http.Client

	mu   sync.Mutex
	conf *oauth2.Config
}

func (o *oidcClient) ctx(ctx context.Context) context.Context {
	if o.hc != nil {
		return oidc.ClientContext(ctx, o.hc)
	}
	return ctx
}

func (o *oidcClient) config(ctx context.Context) (*oauth2.Config, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.conf != nil {
		return o.conf, nil
	}
	p, err := oidc.NewProvider(o.ctx(ctx), o.issuer)
	if err != nil {
		return nil, fmt.Errorf("discover issuer %s: %w", o.issuer, err)
	}
	o.conf = &oauth2.Config{
		ClientID:     o.clientID,
		ClientSecret: o.secret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  o.redirect,
		Scopes:       o.scopes,
	}
	return o.conf, nil
}

// startLogin redirects the browser to the issuer with a fresh state, nonce
// and PKCE verifier, remembered in the login cookie.
func (u *UI) startLogin(w http.ResponseWriter, r *http.Request) {
	conf, err := u.oidc.config(r.Context())
	if err != nil {
		u.log.Warn("web login: issuer unavailable", "err", err)
		u.errorPage(w, r, http.StatusServiceUnavailable, "The identity provider is unavailable. Try again shortly.")
		return
	}
	var pl pendingLogin
	if pl.State, err = randomToken(); err == nil {
		if pl.Nonce, err = randomToken(); err == nil {
			pl.Verifier = oauth2.GenerateVerifier()
		}
	}
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	if !u.beginLogin(w, r, &pl) {
		return
	}
	target := conf.AuthCodeURL(pl.State, oauth2.S256ChallengeOption(pl.Verifier), oidc.Nonce(pl.Nonce))
	http.Redirect(w, r, target, http.StatusFound)
}

// finishLogin finishes a login: it checks state, exchanges the code with the
// PKCE verifier, verifies the ID token and its nonce, and sets the session
// cookie.
func (u *UI) finishLogin(w http.ResponseWriter, r *http.Request) {
	var pl pendingLogin
	c, err := r.Cookie(u.loginCookieName())
	if err != nil || u.sealer.open(u.loginCookieName(), c.Value, &pl) != nil || pl.Expires < u.now().Unix() {
		u.errorPage(w, r, http.StatusBadRequest, "This login has expired or was started elsewhere. Start again.")
		return
	}
	u.clearCookie(w, u.loginCookieName())
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		u.errorPage(w, r, http.StatusUnauthorized, "The identity provider refused the login.")
		return
	}
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(pl.State)) != 1 {
		u.errorPage(w, r, http.StatusBadRequest, "This login has expired or was started elsewhere. Start again.")
		return
	}
	conf, err := u.oidc.config(r.Context())
	if err != nil {
		u.errorPage(w, r, http.StatusServiceUnavailable, "The identity provider is unavailable. Try again shortly.")
		return
	}
	tok, err := conf.Exchange(u.oidc.ctx(r.Context()), q.Get("code"), oauth2.VerifierOption(pl.Verifier))
	if err != nil {
		u.log.Warn("web login: code exchange failed", "err", err)
		u.logins.WithLabelValues("failed").Inc()
		u.errorPage(w, r, http.StatusUnauthorized, "The login could not be completed. Start again.")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		u.errorPage(w, r, http.StatusUnauthorized, "The identity provider sent no ID token.")
		return
	}
	id, err := u.opts.Verifier.Verify(r.Context(), raw)
	if err != nil {
		msg := "Your identity could not be verified."
		if e := usererr.As(err); e != nil {
			msg = e.Msg
		}
		u.log.Info("web login refused", "err", err)
		u.logins.WithLabelValues("refused").Inc()
		u.errorPage(w, r, http.StatusUnauthorized, msg)
		return
	}
	if nonce, err := tokenNonce(raw); err != nil || subtle.ConstantTimeCompare([]byte(nonce), []byte(pl.Nonce)) != 1 {
		u.errorPage(w, r, http.StatusUnauthorized, "The login could not be completed. Start again.")
		return
	}
	u.openSession(w, r, id, pl.Return)
}

// openSession starts the web session of a verified identity (whatever
// protocol proved it: OIDC or SAML) and sends the browser to ret, a path
// inside the UI. A locked identity gets no session.
func (u *UI) openSession(w http.ResponseWriter, r *http.Request, id certs.Identity, ret string) {
	if u.opts.Locked != nil {
		if err := u.opts.Locked(id); err != nil {
			msg := "Your access is locked."
			if e := usererr.As(err); e != nil {
				msg = upperFirst(e.Msg) + "."
			}
			u.log.Info("web login refused: locked", "identity", id.Username, "issuer", id.Issuer)
			u.logins.WithLabelValues("refused").Inc()
			u.errorPage(w, r, http.StatusForbidden, msg)
			return
		}
	}
	csrf, err := randomToken()
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	token, err := randomToken()
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	idJSON, err := json.Marshal(id)
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	now := u.now()
	// The session lives in the state store, so that every replica knows it
	// and logout (or a revocation) ends it everywhere; the cookie holds
	// only the token.
	err = u.opts.State.PutWebSession(r.Context(), state.WebSession{
		ID: sessionID(token), Issuer: id.Issuer, Subject: id.Subject, Identity: string(idJSON), CSRF: csrf,
		Created: now, Expires: now.Add(u.ttl),
	})
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: u.sessionCookieName(), Value: token, Path: "/", MaxAge: int(u.ttl.Seconds()),
		Secure: u.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
	u.log.Info("web login", "identity", id.Username, "issuer", id.Issuer)
	u.logins.WithLabelValues("ok").Inc()
	http.Redirect(w, r, u.base+ret, http.StatusFound)
}

// tokenNonce returns the nonce claim of an ID token whose signature the
// verifier has already checked.
func tokenNonce(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("malformed token")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return "", err
	}
	return c.Nonce, nil
}

// safeReturn keeps a post-login return path only if it is a path inside
// the UI, so the login cannot be turned into an open redirect.
func safeReturn(p string) string {
	if p == "" || !strings.HasPrefix(p, "/") || strings.HasPrefix(p, "//") || strings.ContainsAny(p, "\\\r\n") {
		return "/"
	}
	u, err := url.Parse(p)
	if err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return p
}

// currentSession returns the request's valid session, if any: the web
// session its cookie's token names, unexpired and not ended (logout,
// revocation) on any replica.
func (u *UI) currentSession(r *http.Request) (session, bool) {
	c, err := r.Cookie(u.sessionCookieName())
	if err != nil || c.Value == "" || len(c.Value) > 128 {
		return session{}, false
	}
	ws, err := u.opts.State.GetWebSession(r.Context(), sessionID(c.Value))
	if err != nil {
		if !errors.Is(err, state.ErrNotFound) {
			u.log.Warn("web session lookup failed", "err", err)
		}
		return session{}, false
	}
	s := session{id: ws.ID, Expires: ws.Expires.Unix(), CSRF: ws.CSRF}
	if err := json.Unmarshal([]byte(ws.Identity), &s.Identity); err != nil || s.Expires < u.now().Unix() {
		return session{}, false
	}
	// A locked identity's session stops working at once; logging in again
	// is refused with the lock's message.
	if u.opts.Locked != nil && u.opts.Locked(s.Identity) != nil {
		return session{}, false
	}
	return s, true
}

// upperFirst capitalises the first letter of a message.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// checkCSRF accepts a state-changing request only with the session's CSRF
// token in the csrf form field (or X-CSRF-Token header), and, when the
// browser says where the request came from, only from this origin.
func (u *UI) checkCSRF(r *http.Request, s session) bool {
	if o := r.Header.Get("Origin"); o != "" && o != u.origin {
		return false
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return false
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	return tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRF)) == 1
}

func (u *UI) sessionCookieName() string {
	if u.secure {
		return secureSessionCookie
	}
	return sessionCookie
}

func (u *UI) loginCookieName() string {
	if u.secure {
		return secureLoginCookie
	}
	return loginCookie
}

func (u *UI) setCookie(w http.ResponseWriter, name string, v any, ttl time.Duration) error {
	val, err := u.sealer.seal(name, v)
	if err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: val, Path: "/", MaxAge: int(ttl.Seconds()),
		Secure: u.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode,
	})
	return nil
}

func (u *UI) clearCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1,
		Secure: u.secure, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// cookieAuth authenticates requests for the sessions API by the session
// cookie (the web UI's own cast and live endpoints).
type cookieAuth struct{ u *UI }

func (c cookieAuth) Authenticate(r *http.Request) (certs.Identity, error) {
	s, ok := c.u.currentSession(r)
	if !ok {
		return certs.Identity{}, &usererr.Error{Status: http.StatusUnauthorized, Code: certs.CodeAuthRequired, Msg: "log in first"}
	}
	return s.Identity, nil
}

// PickIssuer returns the issuer the web UI logs people in with: the first
// issuer for humans (kind human or unset) that has a client id. It reports
// false when there is none (agents-only configurations have no UI login).
func PickIssuer(issuers []config.Issuer) (config.Issuer, bool) {
	for _, is := range issuers {
		if (is.Kind == "" || is.Kind == string(certs.KindHuman)) && is.ClientID != "" && is.IssuerURL != "" {
			return is, true
		}
	}
	return config.Issuer{}, false
}
