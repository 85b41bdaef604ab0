package saml

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/samltest"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// fixture is a service provider served on 127.0.0.1 with three providers
// backed by one samltest identity provider: corp (encrypted assertions),
// plain (the provider is not given postern's encryption key, so its
// assertions are plain and tests can alter them) and strict (like plain,
// but postern requires encryption).
type fixture struct {
	sp     *SP
	idp    *samltest.IdP
	st     *state.Store
	srv    *httptest.Server
	reg    *prometheus.Registry
	events []state.Event
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f := &fixture{idp: samltest.Start(t), st: st, reg: prometheus.NewRegistry()}
	f.idp.AddUser(t, "alice", "alice-pw", "alice@example.com", "ops", "auditors")
	f.idp.AddUser(t, "mallory", "mallory-pw", "admin@example.com.evil.test", "ops")
	f.srv = httptest.NewUnstartedServer(nil)
	base := "http://" + f.srv.Listener.Addr().String()
	provider := func(name string, encrypted bool) config.SAMLProvider {
		return config.SAMLProvider{Name: name, MetadataURL: f.idp.MetadataURL(), NameIDFormat: "email",
			GroupsAttribute: "eduPersonAffiliation", RequireEncryption: encrypted}
	}
	f.sp, err = New(Options{
		Config: config.SAML{Providers: []config.SAMLProvider{
			provider("corp", false), provider("plain", false), provider("strict", true),
			{Name: "picky", MetadataURL: f.idp.MetadataURL(), NameIDFormat: "email", UsernameAttribute: "uid",
				Require: map[string]string{"eduPersonAffiliation": "admins"}},
		}},
		PublicURL: base, State: st, WebRedirect: base + "/ui/saml/callback", Metrics: f.reg,
		Log:   slog.New(slog.NewTextHandler(t.Output(), nil)),
		Audit: func(_ context.Context, e state.Event) { f.events = append(f.events, e) },
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(pathPrefix, f.sp)
	f.srv.Config.Handler = mux
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	f.idp.AddServiceProvider(t, "corp", base+"/v1/saml/corp/metadata", true)
	f.idp.AddServiceProvider(t, "plain", base+"/v1/saml/plain/metadata", false)
	f.idp.AddServiceProvider(t, "strict", base+"/v1/saml/strict/metadata", false)
	f.idp.AddServiceProvider(t, "picky", base+"/v1/saml/picky/metadata", true)
	return f
}

// client is a login in progress as postern login makes it.
type client struct {
	loginURL, redirect, state, verifier string
}

func (f *fixture) client(provider string) client {
	c := client{redirect: "http://127.0.0.1:49999/callback", state: randomToken()[:16], verifier: randomToken()}
	sum := sha256.Sum256([]byte(c.verifier))
	q := url.Values{"redirect_uri": {c.redirect}, "state": {c.state},
		"code_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}, "code_challenge_method": {"S256"}}
	c.loginURL = f.srv.URL + pathPrefix + provider + "/login?" + q.Encode()
	return c
}

// login signs in at the identity provider and returns its answer, not yet
// posted.
func (f *fixture) login(t *testing.T, provider, user, password string) (client, samltest.Answer) {
	t.Helper()
	c := f.client(provider)
	return c, f.idp.Login(t, nil, c.loginURL, user, password)
}

// result is where the service provider sent the browser after an answer.
type result struct {
	status int
	code   string
	err    string // error_description
}

func (c client) result(t *testing.T, resp *http.Response) result {
	t.Helper()
	r := result{status: resp.StatusCode}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || err != nil {
		return r
	}
	if !strings.HasPrefix(loc.String(), c.redirect+"?") {
		t.Fatalf("redirected to %s; want the login's redirect URI", loc)
	}
	if loc.Query().Get("state") != c.state {
		t.Errorf("state %q came back as %q", c.state, loc.Query().Get("state"))
	}
	r.code, r.err = loc.Query().Get("code"), loc.Query().Get("error_description")
	return r
}

func TestLoginEncryptedAssertion(t *testing.T) {
	f := newFixture(t)
	c, a := f.login(t, "corp", "alice", "alice-pw")
	if doc := a.Document(t); doc.FindElement("//EncryptedAssertion") == nil || doc.FindElement("//Assertion") != nil {
		t.Fatal("the provider did not encrypt the assertion to postern's key")
	}
	r := c.result(t, a.Post(t))
	if r.code == "" {
		t.Fatalf("login refused: %+v", r)
	}
	id, err := f.sp.Redeem(context.Background(), r.code, c.verifier, c.redirect)
	if err != nil {
		t.Fatal(err)
	}
	want := certs.Identity{Issuer: "corp", Subject: "alice@example.com", Username: "alice@example.com", Kind: certs.KindHuman,
		Groups: []string{"ops", "auditors"}}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("identity %+v; want %+v", id, want)
	}
	// The code is redeemed once.
	if _, err := f.sp.Redeem(context.Background(), r.code, c.verifier, c.redirect); usererr.As(err) == nil || usererr.As(err).Code != CodeLoginCodeInvalid {
		t.Errorf("second redemption: %v", err)
	}
	if len(f.events) != 1 || f.events[0].Type != EventLogin || f.events[0].Actor != "alice@example.com" ||
		f.events[0].Details["entity_id"] != f.idp.MetadataURL() {
		t.Errorf("audit events %+v", f.events)
	}
	if got := promtest.ToFloat64(f.sp.logins.WithLabelValues("corp", "ok")); got != 1 {
		t.Errorf("postern_saml_logins_total{corp,ok} = %v", got)
	}
}

func TestAuthnRequestIsSigned(t *testing.T) {
	f := newFixture(t)
	c := f.client("corp")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(c.loginURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), f.idp.URL+"/sso?") {
		t.Fatalf("login start: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	q := loc.Query()
	if q.Get("SigAlg") != "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" || q.Get("Signature") == "" || len(q.Get("RelayState")) > 80 {
		t.Fatalf("AuthnRequest redirect not signed with RSA-SHA256: %v", q)
	}
	// saml-bindings §3.4.4.1: the signature covers the query's parameters
	// as sent, in this order.
	raw := loc.RawQuery
	var signed []string
	for _, k := range []string{"SAMLRequest", "RelayState", "SigAlg"} {
		for part := range strings.SplitSeq(raw, "&") {
			if strings.HasPrefix(part, k+"=") {
				signed = append(signed, part)
			}
		}
	}
	sig, _ := base64.StdEncoding.DecodeString(q.Get("Signature"))
	sum := sha256.Sum256([]byte(strings.Join(signed, "&")))
	if err := rsa.VerifyPKCS1v15(f.sp.cert.PublicKey.(*rsa.PublicKey), crypto.SHA256, sum[:], sig); err != nil {
		t.Errorf("AuthnRequest signature does not verify with postern's certificate: %v", err)
	}
}

func TestLoginParameters(t *testing.T) {
	f := newFixture(t)
	good := f.client("corp")
	u, _ := url.Parse(good.loginURL)
	for _, tt := range []struct {
		name string
		set  map[string]string
	}{
		{"foreign redirect", map[string]string{"redirect_uri": "https://evil.example/callback"}},
		{"non-loopback http", map[string]string{"redirect_uri": "http://10.0.0.1:5000/callback"}},
		{"loopback other path", map[string]string{"redirect_uri": "http://127.0.0.1:5000/steal"}},
		{"loopback with userinfo", map[string]string{"redirect_uri": "http://x@127.0.0.1:5000/callback"}},
		{"localhost name", map[string]string{"redirect_uri": "http://localhost.evil.example:5000/callback"}},
		{"plain challenge", map[string]string{"code_challenge_method": "plain"}},
		{"short challenge", map[string]string{"code_challenge": "abc"}},
		{"no state", map[string]string{"state": ""}},
		{"state with spaces", map[string]string{"state": "a b"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			q := u.Query()
			for k, v := range tt.set {
				q.Set(k, v)
			}
			resp, err := http.Get(f.srv.URL + u.Path + "?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d; want 400", resp.StatusCode)
			}
		})
	}
	// The web UI's own redirect URI is allowed.
	q := u.Query()
	q.Set("redirect_uri", f.srv.URL+"/ui/saml/callback")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(f.srv.URL + u.Path + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("web redirect refused: %d", resp.StatusCode)
	}
	for _, p := range []string{"/v1/saml/nope/login", "/v1/saml/corp/other"} {
		resp, _ := http.Get(f.srv.URL + p)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d; want 404", p, resp.StatusCode)
		}
	}
}

func TestMetadata(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Get(f.srv.URL + "/v1/saml/corp/metadata")
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if _, err := doc.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ed := doc.FindElement("//EntityDescriptor")
	sso := doc.FindElement("//SPSSODescriptor")
	if ed == nil || sso == nil || ed.SelectAttrValue("entityID", "") != f.srv.URL+"/v1/saml/corp/metadata" ||
		sso.SelectAttrValue("AuthnRequestsSigned", "") != "true" || sso.SelectAttrValue("WantAssertionsSigned", "") != "true" {
		t.Fatalf("metadata:\n%s", mustString(doc))
	}
	acs := doc.FindElements("//AssertionConsumerService")
	if len(acs) != 1 || acs[0].SelectAttrValue("Binding", "") != saml.HTTPPostBinding ||
		acs[0].SelectAttrValue("Location", "") != f.srv.URL+"/v1/saml/corp/acs" {
		t.Errorf("ACS endpoints: want one HTTP-POST at /acs:\n%s", mustString(doc))
	}
	if doc.FindElement("//KeyDescriptor[@use='encryption']") == nil || doc.FindElement("//KeyDescriptor[@use='signing']") == nil {
		t.Error("metadata lacks the signing or the encryption key")
	}
	if doc.FindElement("//NameIDFormat").Text() != string(saml.EmailAddressNameIDFormat) {
		t.Errorf("NameIDFormat %q", doc.FindElement("//NameIDFormat").Text())
	}
}

func mustString(doc *etree.Document) string {
	s, _ := doc.WriteToString()
	return s
}

// hostile alters an answer's Response; the service provider must refuse it.
type hostile struct {
	name     string
	provider string
	user     string // alice if empty
	tamper   func(*saml.IdpAuthnRequest)
	alter    func(t *testing.T, f *fixture, doc *etree.Document)
}

// signatures returns the Signature children of el.
func signatures(el *etree.Element) []*etree.Element {
	var out []*etree.Element
	for _, c := range el.ChildElements() {
		if c.Tag == "Signature" {
			out = append(out, c)
		}
	}
	return out
}

// evilCopy returns a copy of the assertion whose NameID (and mail) names
// admin@example.com, without its signature.
func evilCopy(a *etree.Element) *etree.Element {
	e := a.Copy()
	for _, s := range signatures(e) {
		e.RemoveChild(s)
	}
	e.FindElement(".//NameID").SetText("admin@example.com")
	return e
}

func responseAssertion(doc *etree.Document) (*etree.Element, *etree.Element) {
	r := doc.Root()
	return r, r.FindElement("./Assertion")
}

func removeSignatures(el *etree.Element) {
	for _, s := range signatures(el) {
		el.RemoveChild(s)
	}
}

var hostileAnswers = []hostile{
	{name: "unsigned", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		removeSignatures(a)
	}},
	{name: "altered NameID under a valid signature", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		_, a := responseAssertion(doc)
		a.FindElement(".//NameID").SetText("admin@example.com")
	}},
	{name: "signed by another key", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		other := samltest.Start(t)
		r, a := responseAssertion(doc)
		other.Sign(t, a)
		other.Sign(t, r)
	}},
	// Signature wrapping (Somorovsky et al., "On Breaking SAML", 2012):
	// a forged element where the service provider reads, the signed
	// original where the signature check looks.
	{name: "XSW1 response signature, forged response wraps the original", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		orig := r.Copy()
		r.RemoveChild(a)
		r.AddChild(evilCopy(a))
		r.CreateAttr("ID", "forged-response")
		sig := signatures(r)[0]
		obj := sig.CreateElement("ds:Object")
		removeSignatures(orig)
		obj.AddChild(orig)
	}},
	{name: "XSW2 response signature, original before the signature", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		orig := r.Copy()
		removeSignatures(orig)
		r.RemoveChild(a)
		r.AddChild(evilCopy(a))
		r.CreateAttr("ID", "forged-response")
		sig := signatures(r)[0]
		r.InsertChildAt(sig.Index(), orig)
	}},
	{name: "XSW3 forged assertion before the signed one", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		e := evilCopy(a)
		e.CreateAttr("ID", "forged-assertion")
		r.InsertChildAt(a.Index(), e)
	}},
	{name: "XSW4 forged assertion wraps the signed one", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		e := evilCopy(a)
		e.CreateAttr("ID", "forged-assertion")
		r.RemoveChild(a)
		e.AddChild(a)
		r.AddChild(e)
	}},
	{name: "XSW5 forged assertion carries the original's signature", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		e := evilCopy(a)
		sig := signatures(a)[0]
		a.RemoveChild(sig)
		e.InsertChildAt(1, sig)
		r.RemoveChild(a)
		r.AddChild(e)
		r.AddChild(a)
	}},
	{name: "XSW6 original inside the forged assertion's signature", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		e := evilCopy(a)
		sig := signatures(a)[0].Copy()
		orig := a.Copy()
		removeSignatures(orig)
		sig.CreateElement("ds:Object").AddChild(orig)
		e.InsertChildAt(1, sig)
		r.RemoveChild(a)
		r.AddChild(e)
	}},
	{name: "XSW7 original hidden in Extensions", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		ext := r.CreateElement("samlp:Extensions")
		r.RemoveChild(ext)
		r.InsertChildAt(1, ext)
		r.RemoveChild(a)
		ext.AddChild(a)
		e := evilCopy(a)
		r.AddChild(e)
	}},
	{name: "XSW8 original in an Object of the forged assertion's signature", alter: func(t *testing.T, f *fixture, doc *etree.Document) {
		r, a := responseAssertion(doc)
		removeSignatures(r)
		e := evilCopy(a)
		sig := signatures(a)[0]
		a.RemoveChild(sig)
		e.InsertChildAt(1, sig)
		sig.CreateElement("ds:Object").AddChild(a.Copy())
		r.RemoveChild(a)
		r.AddChild(e)
	}},
	{name: "wrong audience", tamper: func(req *saml.IdpAuthnRequest) {
		req.Assertion.Conditions.AudienceRestrictions = []saml.AudienceRestriction{{Audience: saml.Audience{Value: "https://other.example/sp"}}}
	}},
	{name: "expired", tamper: func(req *saml.IdpAuthnRequest) {
		past := time.Now().Add(-30 * time.Minute)
		req.Assertion.Conditions.NotBefore, req.Assertion.Conditions.NotOnOrAfter = past.Add(-time.Minute), past
		req.Assertion.Subject.SubjectConfirmations[0].SubjectConfirmationData.NotOnOrAfter = past
	}},
	{name: "not yet valid", tamper: func(req *saml.IdpAuthnRequest) {
		req.Assertion.Conditions.NotBefore = time.Now().Add(30 * time.Minute)
	}},
	{name: "wrong recipient", tamper: func(req *saml.IdpAuthnRequest) {
		req.Assertion.Subject.SubjectConfirmations[0].SubjectConfirmationData.Recipient = "https://other.example/acs"
	}},
	{name: "transient NameID", tamper: func(req *saml.IdpAuthnRequest) {
		req.Assertion.Subject.NameID.Format = string(saml.TransientNameIDFormat)
	}},
	{name: "plain assertion where encryption is required", provider: "strict"},
	{name: "required attribute missing", provider: "picky"},
}

func TestHostileAnswers(t *testing.T) {
	f := newFixture(t)
	for _, h := range hostileAnswers {
		t.Run(h.name, func(t *testing.T) {
			f.idp.Tamper(h.tamper)
			defer f.idp.Tamper(nil)
			provider := h.provider
			if provider == "" {
				provider = "plain"
			}
			c, a := f.login(t, provider, "alice", "alice-pw")
			if h.alter != nil {
				doc := a.Document(t)
				h.alter(t, f, doc)
				a = a.With(t, doc)
			}
			r := c.result(t, a.Post(t))
			if r.code != "" {
				id, _ := f.sp.Redeem(context.Background(), r.code, c.verifier, "")
				t.Fatalf("accepted as %+v", id)
			}
			if !strings.HasPrefix(r.err, CodeAssertionRefused+":") {
				t.Errorf("refusal %+v; want %s", r, CodeAssertionRefused)
			}
		})
	}
	if got := promtest.ToFloat64(f.sp.logins.WithLabelValues("plain", "refused")); got < 10 {
		t.Errorf("postern_saml_logins_total{plain,refused} = %v", got)
	}
}

func TestSignatureOnResponseOrAssertion(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		name  string
		alter func(t *testing.T, doc *etree.Document)
	}{
		{"both", func(*testing.T, *etree.Document) {}},
		{"assertion only", func(t *testing.T, doc *etree.Document) { removeSignatures(doc.Root()) }},
		{"response only", func(t *testing.T, doc *etree.Document) {
			r, a := responseAssertion(doc)
			removeSignatures(a)
			f.idp.Sign(t, r)
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, a := f.login(t, "plain", "alice", "alice-pw")
			doc := a.Document(t)
			tt.alter(t, doc)
			r := c.result(t, a.With(t, doc).Post(t))
			if r.code == "" {
				t.Fatalf("refused: %+v", r)
			}
		})
	}
}

// TestCommentInjectedNameID: a comment inside the NameID does not change
// the signature (exclusive canonicalisation drops comments), so a reader
// that takes the text before the comment would log mallory in as
// admin@example.com. The whole text is the subject.
func TestCommentInjectedNameID(t *testing.T) {
	f := newFixture(t)
	c, a := f.login(t, "plain", "mallory", "mallory-pw")
	doc := a.Document(t)
	nameID := doc.FindElement("//Assertion/Subject/NameID")
	if nameID.Text() != "admin@example.com.evil.test" {
		t.Fatalf("NameID %q", nameID.Text())
	}
	nameID.SetText("admin@example.com")
	nameID.AddChild(etree.NewComment(""))
	nameID.AddChild(etree.NewText(".evil.test"))
	r := c.result(t, a.With(t, doc).Post(t))
	if r.code == "" {
		return // refused: fine as well
	}
	id, err := f.sp.Redeem(context.Background(), r.code, c.verifier, "")
	if err != nil {
		t.Fatal(err)
	}
	if id.Subject != "admin@example.com.evil.test" || id.Username != "admin@example.com.evil.test" {
		t.Fatalf("comment injection logged in as %+v", id)
	}
}

func TestReplayAndRequestBinding(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, a := f.login(t, "plain", "alice", "alice-pw")
	if r := c.result(t, a.Post(t)); r.code == "" {
		t.Fatalf("first post refused: %+v", r)
	}
	// The same answer again: its login is over.
	if resp := a.Post(t); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("replayed answer: status %d; want 400", resp.StatusCode)
	}
	// The answer under another login's RelayState: InResponseTo does not
	// match that login's request.
	c2 := f.client("plain")
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(c2.loginURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	a2 := a
	a2.RelayState = loc.Query().Get("RelayState")
	if r := c2.result(t, a2.Post(t)); r.code != "" || !strings.HasPrefix(r.err, CodeAssertionRefused) {
		t.Errorf("answer to another request: %+v", r)
	}
	// An assertion another replica accepted already (the replay cache is
	// in the shared store).
	c3, a3 := f.login(t, "plain", "alice", "alice-pw")
	var assertionID string
	if el := a3.Document(t).FindElement("//Assertion"); el != nil {
		assertionID = el.SelectAttrValue("ID", "")
	}
	if err := f.st.ConsumeAssertion(ctx, assertionID, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if r := c3.result(t, a3.Post(t)); r.code != "" || !strings.HasPrefix(r.err, CodeAssertionReplayed) {
		t.Errorf("assertion accepted elsewhere: %+v", r)
	}
	// An unsolicited answer (IdP-initiated) has no login.
	c4, a4 := f.login(t, "plain", "alice", "alice-pw")
	a4.RelayState = ""
	if resp := a4.Post(t); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unsolicited answer: status %d", resp.StatusCode)
	}
	_ = c4
	// The artifact binding is not accepted.
	c5, a5 := f.login(t, "plain", "alice", "alice-pw")
	resp, err = (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).PostForm(a5.ACS,
		url.Values{"SAMLart": {"AAQAAMFbLinlXaCM+FIxiDwGOLAy2T71gbpO7ZhNzAgEANlB90ECfpNEVLg="}, "RelayState": {a5.RelayState}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if r := c5.result(t, resp); r.code != "" || !strings.HasPrefix(r.err, CodeAssertionRefused) {
		t.Errorf("artifact: %+v", r)
	}
}

func TestRedeem(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c, a := f.login(t, "corp", "alice", "alice-pw")
	r := c.result(t, a.Post(t))
	if _, err := f.sp.Redeem(ctx, r.code, randomToken(), ""); usererr.As(err) == nil || usererr.As(err).Code != CodeLoginCodeInvalid {
		t.Errorf("wrong verifier: %v", err)
	}
	// A wrong verifier used the code up.
	if _, err := f.sp.Redeem(ctx, r.code, c.verifier, ""); err == nil {
		t.Error("a code survived a wrong verifier")
	}
	c, a = f.login(t, "corp", "alice", "alice-pw")
	r = c.result(t, a.Post(t))
	if _, err := f.sp.Redeem(ctx, r.code, c.verifier, "http://127.0.0.1:1/elsewhere"); err == nil {
		t.Error("a code redeemed for another redirect URI")
	}
	// The bearer-token path of POST /v1/certs.
	c, a = f.login(t, "corp", "alice", "alice-pw")
	r = c.result(t, a.Post(t))
	v := certs.LoginCodes{Tokens: refuseAll{}, Codes: f.sp}
	id, err := v.Verify(ctx, certs.LoginCodeToken(r.code, c.verifier))
	if err != nil || id.Username != "alice@example.com" || id.Issuer != "corp" {
		t.Errorf("login code token: %+v, %v", id, err)
	}
	for _, tok := range []string{"postern-code.", "postern-code.x", "postern-code.a.b.c", certs.LoginCodeToken(r.code, c.verifier)} {
		if _, err := v.Verify(ctx, tok); err == nil {
			t.Errorf("token %q accepted", tok)
		}
	}
	if _, err := v.Verify(ctx, "eyJhbGciOi.x.y"); !errors.Is(err, errRefused) {
		t.Errorf("an ID token did not go to the OIDC verifier: %v", err)
	}
}

var errRefused = errors.New("refused")

// refuseAll stands for the OIDC verifier in routing tests.
type refuseAll struct{}

func (refuseAll) Verify(context.Context, string) (certs.Identity, error) {
	return certs.Identity{}, errRefused
}

func TestAttributeMapping(t *testing.T) {
	p := &provider{cfg: config.SAMLProvider{Name: "corp", UsernameAttribute: "uid", GroupsAttribute: "memberOf",
		Require: map[string]string{"department": "eng"}}}
	attr := func(name string, vals ...string) saml.Attribute {
		a := saml.Attribute{Name: "urn:oid:" + name, FriendlyName: name}
		for _, v := range vals {
			a.Values = append(a.Values, saml.AttributeValue{Value: v})
		}
		return a
	}
	assertion := func(nameID string, attrs ...saml.Attribute) *saml.Assertion {
		return &saml.Assertion{Subject: &saml.Subject{NameID: &saml.NameID{Value: nameID, Format: string(saml.PersistentNameIDFormat)}},
			AttributeStatements: []saml.AttributeStatement{{Attributes: attrs}}}
	}
	id, err := p.identity(assertion("00u1abc", attr("uid", "alice"), attr("memberOf", "ops", "sre", "ops"), attr("department", "eng")))
	want := certs.Identity{Issuer: "corp", Subject: "00u1abc", Username: "alice", Kind: certs.KindHuman, Groups: []string{"ops", "sre"}}
	if err != nil || !reflect.DeepEqual(id, want) {
		t.Errorf("identity %+v, %v; want %+v", id, err, want)
	}
	// identity.aliases names the person behind the provider's subject.
	p.sp = &SP{opts: Options{Aliases: func(provider, subject string) string {
		if provider == "corp" && subject == "00u1abc" {
			return "alice"
		}
		return ""
	}}}
	if id, err := p.identity(assertion("00u1abc", attr("uid", "alice"), attr("department", "eng"))); err != nil || id.Alias != "alice" || id.Key() != "alias:alice" {
		t.Errorf("aliased identity %+v (key %q), %v", id, id.Key(), err)
	}
	p.sp = nil
	for _, tt := range []struct {
		name string
		a    *saml.Assertion
	}{
		{"no NameID", &saml.Assertion{Subject: &saml.Subject{}}},
		{"no username", assertion("x", attr("department", "eng"))},
		{"two usernames", assertion("x", attr("uid", "a", "b"), attr("department", "eng"))},
		{"username with a space", assertion("x", attr("uid", "a b"), attr("department", "eng"))},
		{"username with a newline", assertion("x", attr("uid", "a\nb"), attr("department", "eng"))},
		{"required value missing", assertion("x", attr("uid", "a"), attr("department", "sales"))},
	} {
		if _, err := p.identity(tt.a); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

func TestKeys(t *testing.T) {
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(t.TempDir(), "state.db")
	st, err := state.Open(ctx, url, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k1, c1, err := loadKey(ctx, config.SAML{}, st)
	if err != nil {
		t.Fatal(err)
	}
	// Another replica of the same store gets the same key.
	other, err := state.Open(ctx, url, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	k2, c2, err := loadKey(ctx, config.SAML{}, other)
	if err != nil || !k1.Equal(k2) || !c1.Equal(c2) {
		t.Fatalf("second load: %v", err)
	}
	if k1.N.BitLen() != spKeyBits {
		t.Errorf("generated key has %d bits", k1.N.BitLen())
	}
	if _, _, err := loadKey(ctx, config.SAML{Key: "not pem", Certificate: "x"}, st); err == nil {
		t.Error("a malformed configured key was accepted")
	}
}
