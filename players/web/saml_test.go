package web

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/saml"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/samltest"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/players/internal/playtest"
)

// samlLogins adapts the real service provider to the UI (as server does).
type samlLogins struct{ sp *saml.SP }

func (s samlLogins) Providers() []SAMLProvider {
	var out []SAMLProvider
	for _, p := range s.sp.Providers() {
		out = append(out, SAMLProvider{Name: p.Name, DisplayName: p.DisplayName, LoginURL: p.LoginURL})
	}
	return out
}

func (s samlLogins) Redeem(ctx context.Context, code, verifier, redirect string) (certs.Identity, error) {
	return s.sp.Redeem(ctx, code, verifier, redirect)
}

// samlUIFixture is the web UI with an OIDC issuer (the development issuer)
// and a SAML provider (samltest), behind one server with the SAML
// endpoints.
type samlUIFixture struct {
	env *playtest.Env
	idp *samltest.IdP
	srv *httptest.Server
}

func newSAMLUIFixture(t *testing.T, withOIDC bool, more ...func(*Options)) *samlUIFixture {
	t.Helper()
	f := &samlUIFixture{env: playtest.New(t), idp: samltest.Start(t)}
	f.idp.AddUser(t, "alice", "alice-pw", "alice@example.com", "ops")
	f.srv = httptest.NewUnstartedServer(nil)
	base := "http://" + f.srv.Listener.Addr().String()
	sp, err := saml.New(saml.Options{
		Config: config.SAML{Providers: []config.SAMLProvider{{Name: "corp", DisplayName: "Corp SSO", MetadataURL: f.idp.MetadataURL(),
			NameIDFormat: "email", GroupsAttribute: "eduPersonAffiliation"}}},
		PublicURL: base, State: f.env.State, WebRedirect: base + "/ui/saml/callback",
	})
	if err != nil {
		t.Fatal(err)
	}
	key, err := CookieKey(context.Background(), f.env.State)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{PublicURL: base, State: f.env.State, Store: f.env.Store, CookieKey: key, SAML: samlLogins{sp},
		Permissions: func(certs.Identity) []string { return []string{players.PermAuditor} }}
	if withOIDC {
		idp := devidptest.Start(t, devidp.Options{})
		v, err := certs.NewVerifier(context.Background(), []config.Issuer{{Name: "dev", IssuerURL: idp.URL, ClientID: idp.ClientID(), Kind: "human"}},
			certs.VerifierOptions{})
		if err != nil {
			t.Fatal(err)
		}
		opts.Issuer, opts.ClientID, opts.Verifier, opts.RedirectURL = idp.URL, idp.ClientID(), v, base+"/callback"
	}
	for _, m := range more {
		m(&opts)
	}
	ui, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ui/", ui)
	mux.Handle("/callback", ui)
	mux.Handle("/v1/saml/", sp)
	f.srv.Config.Handler = mux
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	f.idp.AddServiceProvider(t, "postern", base+"/v1/saml/corp/metadata", true)
	return f
}

// samlLogin signs a browser in through the SAML provider and returns where
// it ended and the page.
func (f *samlUIFixture) samlLogin(t *testing.T, c *http.Client) (*http.Response, string) {
	t.Helper()
	a := f.idp.Login(t, c, f.srv.URL+"/ui/login/saml/corp?return=/sessions/x", "alice", "alice-pw")
	resp, err := c.PostForm(a.ACS, url.Values{"SAMLResponse": {a.SAMLResponse}, "RelayState": {a.RelayState}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestUISAMLLogin(t *testing.T) {
	f := newSAMLUIFixture(t, true)
	c := samltest.Browser(t)
	// Two ways to log in: a page lists them.
	resp, body := get(t, c, f.srv.URL+"/ui/login?return=/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, ">Corp SSO</a>") || !strings.Contains(body, "/ui/login/oidc?return=") {
		t.Fatalf("login page: %d\n%s", resp.StatusCode, body)
	}
	resp, body = f.samlLogin(t, c)
	if resp.Request.URL.Path != "/ui/sessions/x" { // the return path, kept through the login
		t.Fatalf("after the SAML login: %s (%d)\n%s", resp.Request.URL, resp.StatusCode, body)
	}
	resp, body = get(t, c, f.srv.URL+"/ui/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, "alice@example.com") {
		t.Errorf("sessions page after the SAML login: %d", resp.StatusCode)
	}
}

// TestUISAMLLocked: a locked identity signs in at the provider but gets
// no web session.
func TestUISAMLLocked(t *testing.T) {
	f := newSAMLUIFixture(t, false, func(o *Options) {
		o.Locked = func(id certs.Identity) error {
			if id.Issuer == "corp" && id.Subject == "alice@example.com" {
				return &usererr.Error{Status: http.StatusForbidden, Code: "locked", Msg: "your access is locked: deactivated"}
			}
			return nil
		}
	})
	c := samltest.Browser(t)
	resp, body := f.samlLogin(t, c)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Your access is locked: deactivated.") {
		t.Fatalf("locked alice's SAML login: %d\n%s", resp.StatusCode, body)
	}
	if resp, _ := get(t, noRedirect(c), f.srv.URL+"/ui/"); resp.StatusCode != http.StatusFound {
		t.Errorf("the sessions page after a refused login: %d; want a redirect to the login", resp.StatusCode)
	}
}

func TestUISAMLOnly(t *testing.T) {
	f := newSAMLUIFixture(t, false)
	// The only way to log in: straight to it.
	resp, _ := get(t, noRedirect(samltest.Browser(t)), f.srv.URL+"/ui/login?return=/")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login/saml/corp") {
		t.Errorf("login: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, samltest.Browser(t), f.srv.URL+"/callback?code=x&state=y")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("the OIDC callback without OIDC: %d", resp.StatusCode)
	}
}

// TestUISAMLLoginCSRF: a login code is good only in the browser that
// started the login.
func TestUISAMLLoginCSRF(t *testing.T) {
	f := newSAMLUIFixture(t, false)
	attacker := samltest.Browser(t)
	a := f.idp.Login(t, attacker, f.srv.URL+"/ui/login/saml/corp", "alice", "alice-pw")
	resp, err := noRedirect(attacker).PostForm(a.ACS, url.Values{"SAMLResponse": {a.SAMLResponse}, "RelayState": {a.RelayState}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback := resp.Header.Get("Location") // carries the attacker's code
	if !strings.Contains(callback, "/ui/saml/callback?code=") {
		t.Fatalf("no callback: %d %q", resp.StatusCode, callback)
	}
	victim := samltest.Browser(t)
	resp, body := get(t, victim, callback)
	if resp.StatusCode != http.StatusBadRequest || strings.Contains(body, "alice@example.com") {
		t.Errorf("a foreign code logged the victim in: %d", resp.StatusCode)
	}
	// The victim's own login, answered with the attacker's state: refused.
	get(t, noRedirect(victim), f.srv.URL+"/ui/login/saml/corp") // sets the victim's login cookie
	resp, _ = get(t, victim, callback)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a callback with another login's state: %d", resp.StatusCode)
	}
	// A refusal from the provider's side is shown.
	c := samltest.Browser(t)
	resp, _ = get(t, noRedirect(c), f.srv.URL+"/ui/login/saml/corp")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	st := loc.Query().Get("state")
	_, body = get(t, c, f.srv.URL+"/ui/saml/callback?error=access_denied&error_description="+
		url.QueryEscape("assertion_refused: the assertion is not encrypted")+"&state="+url.QueryEscape(st))
	if !strings.Contains(body, "the assertion is not encrypted") {
		t.Errorf("refusal page:\n%s", body)
	}
}
