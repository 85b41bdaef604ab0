package samltest

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"html"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beevik/etree"
	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlidp"
	dsig "github.com/russellhaering/goxmldsig"
)

// IdP is a crewjam/saml samlidp identity provider served on 127.0.0.1.
type IdP struct {
	// URL is the provider's base URL; its metadata is at URL/metadata.
	URL string
	// Key and Cert sign its metadata, responses and assertions (tests use
	// them to sign answers of their own).
	Key  *rsa.PrivateKey
	Cert *x509.Certificate

	srv    *samlidp.Server
	ts     *httptest.Server
	mu     sync.Mutex
	tamper func(*saml.IdpAuthnRequest) // see Tamper
}

// Start runs an identity provider; the test's cleanup stops it.
func Start(t testing.TB) *IdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	cert := selfSigned(t, key, "samltest identity provider")
	idp := &IdP{Key: key, Cert: cert}
	// The server's URL must be known before the provider is made: listen
	// first, then serve.
	idp.ts = httptest.NewUnstartedServer(nil)
	idp.URL = "http://" + idp.ts.Listener.Addr().String()
	u, _ := url.Parse(idp.URL)
	idp.srv, err = samlidp.New(samlidp.Options{URL: *u, Key: key, Certificate: cert, Store: &samlidp.MemoryStore{},
		Logger: log.New(testWriter{t}, "samlidp: ", 0)})
	if err != nil {
		t.Fatal(err)
	}
	idp.srv.IDP.AssertionMaker = tamperingMaker{idp}
	idp.ts.Config.Handler = idp.srv
	idp.ts.Start()
	t.Cleanup(idp.ts.Close)
	return idp
}

// MetadataURL returns the provider's metadata URL.
func (p *IdP) MetadataURL() string { return p.URL + "/metadata" }

// Metadata returns the provider's metadata XML.
func (p *IdP) Metadata(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(p.MetadataURL())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// AddUser stores a user with a password; its NameID is its email
// (format emailAddress), its groups go out as eduPersonAffiliation.
func (p *IdP) AddUser(t testing.TB, name, password, email string, groups ...string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "password": password, "email": email, "groups": groups})
	p.admin(t, http.MethodPut, "/users/"+name, "application/json", body)
}

// AddServiceProvider registers a service provider from the metadata at
// metadataURL. Without encryption, the encryption key is taken out of the
// metadata first, so that the provider sends plain (signed) assertions.
//
// The registered metadata says AuthnRequestsSigned="false": samlidp checks
// the signature of an HTTP-Redirect request when it arrives, but its login
// form posts the request back without the query's signature (the redirect
// binding carries none inside the XML), and would then refuse it as
// unsigned. Requests that are signed are still verified.
func (p *IdP) AddServiceProvider(t testing.TB, id, metadataURL string, encryption bool) {
	t.Helper()
	resp, err := http.Get(metadataURL)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("service provider metadata: %s", resp.Status)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(md); err != nil {
		t.Fatal(err)
	}
	if !encryption {
		for _, kd := range doc.FindElements("//KeyDescriptor[@use='encryption']") {
			kd.Parent().RemoveChild(kd)
		}
	}
	for _, sso := range doc.FindElements("//SPSSODescriptor") {
		sso.CreateAttr("AuthnRequestsSigned", "false")
	}
	if md, err = doc.WriteToBytes(); err != nil {
		t.Fatal(err)
	}
	p.admin(t, http.MethodPut, "/services/"+id, "application/xml", md)
}

func (p *IdP) admin(t testing.TB, method, path, contentType string, body []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, p.URL+path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("samltest: %s %s: %s %s", method, path, resp.Status, b)
	}
}

// Tamper makes the provider apply f to every assertion it makes, before
// signing and encrypting it (nil: none): a provider that signs what a test
// wants, such as an expired assertion or one for another audience.
func (p *IdP) Tamper(f func(*saml.IdpAuthnRequest)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tamper = f
}

// tamperingMaker is the default assertion maker followed by IdP.tamper.
type tamperingMaker struct{ p *IdP }

func (m tamperingMaker) MakeAssertion(req *saml.IdpAuthnRequest, session *saml.Session) error {
	if err := (saml.DefaultAssertionMaker{}).MakeAssertion(req, session); err != nil {
		return err
	}
	m.p.mu.Lock()
	f := m.p.tamper
	m.p.mu.Unlock()
	if f != nil {
		f(req)
	}
	return nil
}

// Answer is an identity provider's answer as the browser would post it to
// the service provider.
type Answer struct {
	// ACS is where the form posts.
	ACS string
	// SAMLResponse is the base64 Response.
	SAMLResponse string
	// RelayState is returned as given.
	RelayState string
}

// Login runs a login the way a browser would, without one: it follows
// loginURL (a service provider's URL that redirects to the provider),
// signs in with user and password on the provider's form and returns the
// answer the provider's page would post, without posting it. client keeps
// the provider's session cookie (nil: a fresh one).
func (p *IdP) Login(t testing.TB, client *http.Client, loginURL, user, password string) Answer {
	t.Helper()
	if client == nil {
		client = Browser(t)
	}
	resp, err := client.Get(loginURL)
	if err != nil {
		t.Fatalf("samltest: GET %s: %v", loginURL, err)
	}
	page := readBody(t, resp)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("samltest: login start: %s\n%s", resp.Status, page)
	}
	if a, ok := answerForm(page); ok {
		return a // a session at the provider answered at once
	}
	action, fields := form(page)
	if action == "" {
		t.Fatalf("samltest: no login form at %s:\n%s", resp.Request.URL, page)
	}
	fields.Set("user", user)
	fields.Set("password", password)
	req, _ := http.NewRequest(http.MethodPost, action, strings.NewReader(fields.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", p.URL) // as a browser posting the provider's own form
	resp, err = client.Do(req)
	if err != nil {
		t.Fatalf("samltest: POST login: %v", err)
	}
	page = readBody(t, resp)
	a, ok := answerForm(page)
	if !ok {
		t.Fatalf("samltest: no SAMLResponse after login (%s):\n%s", resp.Status, page)
	}
	return a
}

// Post posts the answer to the service provider and returns its response
// (redirects are not followed).
func (a Answer) Post(t testing.TB) *http.Response {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.PostForm(a.ACS, url.Values{"SAMLResponse": {a.SAMLResponse}, "RelayState": {a.RelayState}})
	if err != nil {
		t.Fatalf("samltest: POST %s: %v", a.ACS, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// Document decodes the answer's Response.
func (a Answer) Document(t testing.TB) *etree.Document {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(a.SAMLResponse)
	if err != nil {
		t.Fatal(err)
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(raw); err != nil {
		t.Fatal(err)
	}
	return doc
}

// With returns the answer carrying doc as its Response.
func (a Answer) With(t testing.TB, doc *etree.Document) Answer {
	t.Helper()
	b, err := doc.WriteToBytes()
	if err != nil {
		t.Fatal(err)
	}
	a.SAMLResponse = base64.StdEncoding.EncodeToString(b)
	return a
}

// WithXML returns the answer carrying raw XML as its Response.
func (a Answer) WithXML(raw string) Answer {
	a.SAMLResponse = base64.StdEncoding.EncodeToString([]byte(raw))
	return a
}

// Sign signs el (a Response or an Assertion) in place with the provider's
// key, as the provider does: an enveloped RSA-SHA256 signature with
// exclusive canonicalisation, placed after the element's Issuer. An
// existing signature of el is removed first.
func (p *IdP) Sign(t testing.TB, el *etree.Element) {
	t.Helper()
	for _, s := range el.ChildElements() {
		if s.Tag == "Signature" {
			el.RemoveChild(s)
		}
	}
	ctx := dsig.NewDefaultSigningContext(dsig.TLSCertKeyStore(tls.Certificate{Certificate: [][]byte{p.Cert.Raw}, PrivateKey: p.Key}))
	ctx.Canonicalizer = dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList("")
	if err := ctx.SetSignatureMethod(dsig.RSASHA256SignatureMethod); err != nil {
		t.Fatal(err)
	}
	signed, err := ctx.SignEnveloped(el)
	if err != nil {
		t.Fatal(err)
	}
	sig := signed.ChildElements()[len(signed.ChildElements())-1]
	signed.RemoveChild(sig)
	at := 0
	for i, c := range el.Child {
		if e, ok := c.(*etree.Element); ok && e.Tag == "Issuer" {
			at = i + 1
		}
	}
	el.InsertChildAt(at, sig)
}

// Browser returns an HTTP client with a cookie jar that follows
// redirects, like a browser (without JavaScript).
func Browser(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

func readBody(t testing.TB, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	formAction = regexp.MustCompile(`<form[^>]*action="([^"]*)"`)
	formInput  = regexp.MustCompile(`<input[^>]*name="([^"]*)"[^>]*value="([^"]*)"`)
)

// form returns the first form's action and its inputs' values.
func form(page string) (string, url.Values) {
	m := formAction.FindStringSubmatch(page)
	if m == nil {
		return "", nil
	}
	v := url.Values{}
	for _, in := range formInput.FindAllStringSubmatch(page, -1) {
		v.Set(html.UnescapeString(in[1]), html.UnescapeString(in[2]))
	}
	return html.UnescapeString(m[1]), v
}

// answerForm finds the auto-submitting form that carries a SAMLResponse.
func answerForm(page string) (Answer, bool) {
	action, v := form(page)
	if action == "" || v.Get("SAMLResponse") == "" {
		return Answer{}, false
	}
	return Answer{ACS: action, SAMLResponse: v.Get("SAMLResponse"), RelayState: v.Get("RelayState")}, true
}

func selfSigned(t testing.TB, key *rsa.PrivateKey, cn string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// testWriter writes the provider's log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
