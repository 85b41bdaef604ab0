package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
)

// SAML logins.
//
// A SAML identity provider answers postern's service provider, not the
// UI: the UI starts a login there as any client does (redirect_uri =
// PublicURL/ui/saml/callback, a state and a PKCE challenge, kept in the
// login cookie), and the service provider sends the browser back to the
// callback with a one-time code, which the UI redeems with its verifier
// before it opens the session. A login that did not start in this browser
// (no login cookie, another state) is refused, so nobody can log a victim
// in as themselves.

// SAMLProvider is a SAML identity provider people may log in with.
type SAMLProvider struct {
	// Name identifies the provider.
	Name string
	// DisplayName is shown on the login page.
	DisplayName string
	// LoginURL starts a login at the provider (see certs/saml).
	LoginURL string
}

// SAMLLogins is the SAML service provider as the web UI uses it.
type SAMLLogins interface {
	// Providers lists the providers.
	Providers() []SAMLProvider
	// Redeem exchanges a login code, its PKCE verifier and the redirect URI
	// it was sent to for the identity it proves.
	Redeem(ctx context.Context, code, verifier, redirectURI string) (certs.Identity, error)
}

// samlCallbackPath is where the service provider sends the browser back.
const samlCallbackPath = "/saml/callback"

// loginOption is one way to log in, as the login page lists them.
type loginOption struct {
	Name string
	URL  string
}

// loginPage serves /ui/login: straight to the only way to log in, or a
// page that lists them (the OIDC issuer and each SAML provider).
func (u *UI) loginPage(w http.ResponseWriter, r *http.Request) {
	ret := r.URL.Query().Get("return")
	var opts []loginOption
	if u.oidc != nil {
		opts = append(opts, loginOption{Name: "Single sign-on (OpenID Connect)", URL: u.base + "/login/oidc?return=" + url.QueryEscape(ret)})
	}
	if u.opts.SAML != nil {
		for _, p := range u.opts.SAML.Providers() {
			opts = append(opts, loginOption{Name: p.DisplayName, URL: u.base + "/login/saml/" + url.PathEscape(p.Name) + "?return=" + url.QueryEscape(ret)})
		}
	}
	switch len(opts) {
	case 0:
		u.errorPage(w, r, http.StatusServiceUnavailable, "No way to log in is configured.")
	case 1:
		if u.oidc != nil {
			u.startLogin(w, r) // no page and no extra redirect when OIDC is the only way
			return
		}
		http.Redirect(w, r, opts[0].URL, http.StatusFound)
	default:
		w.Header().Set("Cache-Control", "no-store")
		u.render(w, r, http.StatusOK, "login.html", pageData{Title: "Log in", Logins: opts})
	}
}

// startSAMLLogin serves /ui/login/saml/NAME: it remembers a fresh state and
// PKCE verifier in the login cookie and sends the browser to the service
// provider's login URL for NAME.
func (u *UI) startSAMLLogin(w http.ResponseWriter, r *http.Request, name string) {
	var login string
	if u.opts.SAML != nil {
		for _, p := range u.opts.SAML.Providers() {
			if p.Name == name {
				login = p.LoginURL
			}
		}
	}
	if login == "" {
		u.errorPage(w, r, http.StatusNotFound, "There is no such identity provider.")
		return
	}
	var pl pendingLogin
	var err error
	if pl.State, err = randomToken(); err == nil {
		pl.Verifier, err = randomToken()
	}
	if err != nil {
		u.internalError(w, r, err)
		return
	}
	if !u.beginLogin(w, r, &pl) {
		return
	}
	sum := sha256.Sum256([]byte(pl.Verifier))
	q := url.Values{"redirect_uri": {u.samlRedirect()}, "state": {pl.State},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	http.Redirect(w, r, login+"?"+q.Encode(), http.StatusFound)
}

// samlRedirect is the UI's redirect URI for SAML logins.
func (u *UI) samlRedirect() string { return u.origin + u.base + samlCallbackPath }

// finishSAMLLogin serves /ui/saml/callback: it checks the login cookie and
// state, redeems the code with the cookie's verifier and opens the session.
func (u *UI) finishSAMLLogin(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		u.errorPage(w, r, http.StatusMethodNotAllowed, "Method not allowed.")
		return
	}
	var pl pendingLogin
	c, err := r.Cookie(u.loginCookieName())
	if err != nil || u.sealer.open(u.loginCookieName(), c.Value, &pl) != nil || pl.Expires < u.now().Unix() || pl.Verifier == "" {
		u.errorPage(w, r, http.StatusBadRequest, "This login has expired or was started elsewhere. Start again.")
		return
	}
	u.clearCookie(w, u.loginCookieName())
	q := r.URL.Query()
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(pl.State)) != 1 {
		u.errorPage(w, r, http.StatusBadRequest, "This login has expired or was started elsewhere. Start again.")
		return
	}
	if q.Get("error") != "" {
		msg := "The identity provider's answer was refused."
		if _, d, ok := strings.Cut(q.Get("error_description"), ": "); ok && len(d) < 200 {
			msg = "The identity provider's answer was refused: " + d + "."
		}
		u.logins.WithLabelValues("refused").Inc()
		u.errorPage(w, r, http.StatusUnauthorized, msg)
		return
	}
	id, err := u.opts.SAML.Redeem(r.Context(), q.Get("code"), pl.Verifier, u.samlRedirect())
	if err != nil {
		msg := "The login could not be completed. Start again."
		if e := usererr.As(err); e != nil {
			msg = e.Msg
		} else {
			u.log.Warn("web login: redeeming a SAML login code failed", "err", err)
		}
		u.logins.WithLabelValues("refused").Inc()
		u.errorPage(w, r, http.StatusUnauthorized, msg)
		return
	}
	u.openSession(w, r, id, pl.Return)
}

// beginLogin completes a login about to leave for an identity provider
// (the page to return to, the expiry) and keeps it in the browser's login
// cookie; it answers the request itself and reports false if it cannot.
func (u *UI) beginLogin(w http.ResponseWriter, r *http.Request, pl *pendingLogin) bool {
	pl.Return = safeReturn(r.URL.Query().Get("return"))
	pl.Expires = u.now().Add(loginTTL).Unix()
	if err := u.setCookie(w, u.loginCookieName(), *pl, loginTTL); err != nil {
		u.internalError(w, r, err)
		return false
	}
	return true
}
