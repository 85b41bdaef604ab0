package login_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
)

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a login's
// progress output and the test's reads; it signals every write.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// await waits until re matches the buffer and returns the first submatch.
func (s *syncBuffer) await(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		if m := re.FindStringSubmatch(s.String()); m != nil {
			return m[len(m)-1]
		}
		select {
		case <-s.changed:
		case <-deadline:
			t.Fatalf("no %v in output:\n%s", re, s.String())
		}
	}
}

// setup starts a development issuer and a bastion that trusts it.
func setup(t *testing.T, dev bool) (*devidptest.Server, *testBastion) {
	t.Helper()
	idp := devidptest.Start(t, devidp.Options{})
	b := startBastion(t, bastionOptions{
		Issuers: []config.Issuer{devIssuer("dev", idp.URL)},
		Dev:     map[string]bool{"dev": dev},
	})
	return idp, b
}

// checkProfile checks that p holds a user certificate from b's user CA for
// the development user with the root login.
func checkProfile(t *testing.T, b *testBastion, p *login.Profile) *ssh.Certificate {
	t.Helper()
	raw, err := os.ReadFile(p.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	cert := pub.(*ssh.Certificate)
	if !b.Authority.User.IsTrusted(cert.SignatureKey) {
		t.Error("certificate is not signed by the bastion's user CA")
	}
	if got := cert.ValidPrincipals; !slices.Equal(got, []string{"dev", "stand-in:root"}) {
		t.Errorf("principals = %q; want [dev stand-in:root]", got)
	}
	if p.Username != "dev" || !slices.Equal(p.Principals, []string{"dev", "stand-in:root"}) {
		t.Errorf("profile = %+v; want user dev with principals dev, stand-in:root", p)
	}
	if p.Serial != fmt.Sprint(cert.Serial) {
		t.Errorf("profile serial = %q; want %d", p.Serial, cert.Serial)
	}
	if _, err := b.Authority.CheckUserCert(cert, "dev", netipLoopback, time.Now()); err != nil {
		t.Errorf("bastion refuses the certificate: %v", err)
	}
	loaded, err := login.LoadProfile(p.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Bastion != b.URL || !loaded.ValidBefore.Equal(p.ValidBefore) {
		t.Errorf("LoadProfile = %+v; want bastion %s valid until %v", loaded, b.URL, p.ValidBefore)
	}
	return cert
}

func TestLoginDevIssuerBrowser(t *testing.T) {
	_, b := setup(t, true)
	out, errb := newSyncBuffer(), newSyncBuffer()
	p, err := login.Login(t.Context(), login.Options{
		Bastion: b.URL, Dir: t.TempDir(), Out: out, Err: errb,
		OpenBrowser: func(string) error { t.Error("browser opened for the development issuer"); return nil },
	})
	if err != nil {
		t.Fatalf("Login: %v\nstderr: %s", err, errb)
	}
	checkProfile(t, b, p)
	for _, want := range []string{"ssh -F " + p.SSHConfig + " -J 127.0.0.1 <login>@<target>", "Include " + p.SSHConfig} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errb.String(), "development issuer") {
		t.Errorf("stderr = %q; want a note about the development issuer", errb)
	}
}

// TestLoginBrowserPKCE runs the browser flow against an issuer that is not
// marked as the development one: the "browser" is an HTTP client that
// follows the authorization URL, after a forged callback was refused.
func TestLoginBrowserPKCE(t *testing.T) {
	_, b := setup(t, false)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	opened := make(chan string, 1)
	errb := newSyncBuffer()
	p, err := login.Login(t.Context(), login.Options{
		Bastion: b.URL, Dir: t.TempDir(), Err: errb,
		OpenBrowser: func(u string) error {
			opened <- u
			wg.Go(func() { browse(t, u) })
			return nil
		},
	})
	if err != nil {
		t.Fatalf("Login: %v\nstderr: %s", err, errb)
	}
	checkProfile(t, b, p)
	u, _ := url.Parse(<-opened)
	q := u.Query()
	for k, want := range map[string]string{"response_type": "code", "code_challenge_method": "S256", "client_id": "postern"} {
		if q.Get(k) != want {
			t.Errorf("authorization URL %s = %q; want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 32 {
			t.Errorf("authorization URL %s = %q; want a long random value", k, q.Get(k))
		}
	}
	if !regexp.MustCompile(`^http://127\.0\.0\.1:\d+/callback$`).MatchString(q.Get("redirect_uri")) {
		t.Errorf("redirect_uri = %q; want http://127.0.0.1:<port>/callback", q.Get("redirect_uri"))
	}
	if !strings.Contains(errb.String(), u.String()) {
		t.Errorf("stderr does not show the authorization URL:\n%s", errb)
	}
}

// browse plays the browser: a forged callback first (which must be refused
// without ending the login), then the real authorization URL.
func browse(t *testing.T, authURL string) {
	u, _ := url.Parse(authURL)
	redirect := u.Query().Get("redirect_uri")
	resp, err := http.Get(redirect + "?state=forged&code=stolen")
	if err != nil {
		t.Errorf("forged callback: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("forged callback answered %d; want 400", resp.StatusCode)
	}
	resp, err = http.Get(authURL)
	if err != nil {
		t.Errorf("follow authorization URL: %v", err)
		return
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("sign-in page answered %d; want 200", resp.StatusCode)
	}
}

// TestLoginBrowserNoBrowser checks that --no-browser only prints the URL:
// the login waits until someone opens it.
func TestLoginBrowserNoBrowser(t *testing.T) {
	_, b := setup(t, false)
	errb := newSyncBuffer()
	type result struct {
		p   *login.Profile
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := login.Login(t.Context(), login.Options{
			Bastion: b.URL, Dir: t.TempDir(), Err: errb, NoBrowser: true,
			OpenBrowser: func(string) error { t.Error("browser opened with NoBrowser"); return nil },
		})
		done <- result{p, err}
	}()
	authURL := errb.await(t, regexp.MustCompile(`(?m)^  (http://\S+)$`), 10*time.Second)
	resp, err := http.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("Login: %v", r.err)
	}
	checkProfile(t, b, r.p)
}

func TestLoginDeviceDevIssuer(t *testing.T) {
	_, b := setup(t, true)
	errb := newSyncBuffer()
	p, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: t.TempDir(), Mode: login.ModeDevice, Err: errb})
	if err != nil {
		t.Fatalf("Login: %v\nstderr: %s", err, errb)
	}
	checkProfile(t, b, p)
	if !regexp.MustCompile(`enter the code:\n\n  \S+\n`).MatchString(errb.String()) ||
		!strings.Contains(errb.String(), "Waiting for the sign-in to be approved...") {
		t.Errorf("stderr lacks the code or the waiting line:\n%s", errb)
	}
}

// TestLoginDevice approves the printed user code the way a person would, on
// the issuer's verification page, while Login polls.
func TestLoginDevice(t *testing.T) {
	idp, b := setup(t, false)
	errb := newSyncBuffer()
	type result struct {
		p   *login.Profile
		err error
	}
	done := make(chan result, 1)
	go func() {
		p, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: t.TempDir(), Mode: login.ModeDevice, Err: errb})
		done <- result{p, err}
	}()
	verify := errb.await(t, regexp.MustCompile(`visit (\S+) and enter`), 10*time.Second)
	code := errb.await(t, regexp.MustCompile(`enter the code:\n\n  (\S+)\n`), 10*time.Second)
	if !strings.HasPrefix(verify, idp.URL) {
		t.Errorf("verification URL %q is not the issuer's", verify)
	}
	select {
	case r := <-done:
		t.Fatalf("Login returned before approval: %+v", r)
	default:
	}
	resp, err := http.PostForm(verify, url.Values{"user_code": {code}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("approval answered %d", resp.StatusCode)
	}
	r := <-done
	if r.err != nil {
		t.Fatalf("Login: %v\nstderr: %s", r.err, errb)
	}
	checkProfile(t, b, r.p)
}

// TestLoginDeviceCancelled checks that cancelling the context stops the
// polling promptly.
func TestLoginDeviceCancelled(t *testing.T) {
	_, b := setup(t, false)
	ctx, cancel := context.WithCancel(t.Context())
	errb := newSyncBuffer()
	done := make(chan error, 1)
	go func() {
		_, err := login.Login(ctx, login.Options{Bastion: b.URL, Dir: t.TempDir(), Mode: login.ModeDevice, Err: errb})
		done <- err
	}()
	errb.await(t, regexp.MustCompile(`enter the code`), 10*time.Second)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v; want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Login kept polling after cancel")
	}
}

func TestLoginToken(t *testing.T) {
	idp, b := setup(t, false)
	tok := idp.Mint(t, nil)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TEST_ID_TOKEN", tok)
	tests := []struct {
		name string
		o    login.Options
	}{
		{"file", login.Options{Mode: login.ModeTokenFile, TokenFile: file}},
		{"env", login.Options{Mode: login.ModeTokenEnv, TokenEnv: "TEST_ID_TOKEN"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			o.Bastion, o.Dir = b.URL, t.TempDir()
			out, errb := newSyncBuffer(), newSyncBuffer()
			o.Out, o.Err = out, errb
			p, err := login.Login(t.Context(), o)
			if err != nil {
				t.Fatal(err)
			}
			checkProfile(t, b, p)
			if p.Issuer != "dev" {
				t.Errorf("issuer = %q; want dev (from the certificate's identity)", p.Issuer)
			}
			if strings.Contains(out.String()+errb.String(), tok) {
				t.Error("the token was printed")
			}
		})
	}
}

// TestLoginRenewal covers re-running login: a fresh certificate is kept
// (and said to be valid), --force renews, and so does the last fifth of the
// lifetime.
func TestLoginRenewal(t *testing.T) {
	idp, b := setup(t, false)
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(idp.Mint(t, nil)), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func(force bool, now time.Time) (*login.Profile, string) {
		t.Helper()
		out := newSyncBuffer()
		p, err := login.Login(t.Context(), login.Options{
			Bastion: b.URL, Dir: dir, Mode: login.ModeTokenFile, TokenFile: file, Force: force, Out: out,
			Now: func() time.Time { return now },
		})
		if err != nil {
			t.Fatal(err)
		}
		return p, out.String()
	}
	serial := func() uint64 {
		t.Helper()
		p, err := login.LoadProfile(dir)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(p.CertFile)
		pub, _, _, _, err := ssh.ParseAuthorizedKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		return pub.(*ssh.Certificate).Serial
	}
	keyOf := func() string {
		b, _ := os.ReadFile(filepath.Join(dir, login.PublicKeyFileName))
		return string(b)
	}

	now := time.Now()
	p1, _ := run(false, now)
	s1, k1 := serial(), keyOf()
	life := p1.ValidBefore.Sub(p1.ValidAfter)

	p2, out := run(false, now.Add(time.Minute))
	if serial() != s1 || !strings.Contains(out, "still valid until") || !strings.Contains(out, "--force") {
		t.Errorf("second login renewed a fresh certificate, or did not say so: %q", out)
	}
	if p2.Username != "dev" || !p2.ValidBefore.Equal(p1.ValidBefore) {
		t.Errorf("second login returned %+v; want the existing profile", p2)
	}

	run(true, now.Add(time.Minute))
	s2 := serial()
	if s2 == s1 {
		t.Error("--force did not renew the certificate")
	}
	if keyOf() != k1 {
		t.Error("renewal generated a new key; want the profile's key reused")
	}

	// In the last fifth of the lifetime, login renews without --force.
	_, out = run(false, p1.ValidAfter.Add(life*4/5+time.Minute))
	if serial() == s2 || strings.Contains(out, "still valid") {
		t.Errorf("login in the last fifth did not renew: %q", out)
	}

	// A profile for another bastion is not "fresh" for this one.
	other := startBastion(t, bastionOptions{Issuers: []config.Issuer{devIssuer("dev", idp.URL)}})
	s3 := serial()
	if _, err := login.Login(t.Context(), login.Options{Bastion: other.URL, Dir: dir, Mode: login.ModeTokenFile, TokenFile: file}); err != nil {
		t.Fatal(err)
	}
	if serial() == s3 {
		t.Error("login to another bastion kept the old bastion's certificate")
	}
}

func TestLoginQuiet(t *testing.T) {
	_, b := setup(t, true)
	out, errb := newSyncBuffer(), newSyncBuffer()
	dir := t.TempDir()
	for range 2 { // the second run finds the certificate fresh
		if _, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir, Quiet: true, Out: out, Err: errb}); err != nil {
			t.Fatal(err)
		}
	}
	if out.String() != "" || errb.String() != "" {
		t.Errorf("quiet login printed stdout %q, stderr %q; want nothing", out, errb)
	}
}

// TestLoginErrors covers the refusals a user meets; every one is a short
// message and none shows the token.
func TestLoginErrors(t *testing.T) {
	idp, b := setup(t, false)
	dir := t.TempDir()
	token := func(tok string) login.Options {
		f := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(f, []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
		return login.Options{Bastion: b.URL, Mode: login.ModeTokenFile, TokenFile: f}
	}
	expired := idp.Mint(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix(), "iat": time.Now().Add(-2 * time.Hour).Unix()})
	noGroups := idp.Mint(t, map[string]any{"groups": []string{}})
	tests := []struct {
		name     string
		o        login.Options
		wantCode string // a *ServerError code, or "" for a local error
		wantMsg  string
		secret   string
	}{
		{name: "expired token", o: token(expired), wantCode: "token_expired", secret: expired},
		{name: "no role", o: token(noGroups), wantCode: certs.CodeNoAccess, wantMsg: "(no_access)", secret: noGroups},
		{name: "garbage token", o: token("not.a.jwt"), wantCode: "*", secret: "not.a.jwt"},
		{name: "missing token file", o: login.Options{Bastion: b.URL, Mode: login.ModeTokenFile, TokenFile: filepath.Join(dir, "nope")}, wantMsg: "read token file"},
		{name: "empty token env", o: login.Options{Bastion: b.URL, Mode: login.ModeTokenEnv, TokenEnv: "POSTERN_TEST_UNSET_VAR"}, wantMsg: "POSTERN_TEST_UNSET_VAR is empty or unset"},
		{name: "unknown issuer", o: login.Options{Bastion: b.URL, Issuer: "corp"}, wantMsg: `no issuer "corp"`},
		{name: "no bastion", o: login.Options{}, wantMsg: "no bastion URL"},
		{name: "bad bastion URL", o: login.Options{Bastion: "bastion.example.com"}, wantMsg: "must look like"},
		{name: "bastion without API", o: login.Options{Bastion: idp.URL}, wantCode: "http_404"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := tt.o
			if o.Dir == "" {
				o.Dir = t.TempDir()
			}
			_, err := login.Login(t.Context(), o)
			if err == nil {
				t.Fatal("Login succeeded; want an error")
			}
			var se *login.ServerError
			isServer := errors.As(err, &se)
			switch {
			case tt.wantCode == "" && isServer:
				t.Errorf("err = %v; want a local error", err)
			case tt.wantCode != "" && !isServer:
				t.Errorf("err = %v (%T); want a server error %s", err, err, tt.wantCode)
			case isServer && tt.wantCode != "*" && se.Code != tt.wantCode:
				t.Errorf("code = %q; want %q", se.Code, tt.wantCode)
			case isServer && !strings.HasSuffix(err.Error(), " ("+se.Code+")"):
				t.Errorf("err = %q; want it to end with (%s)", err, se.Code)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("err = %q; want it to contain %q", err, tt.wantMsg)
			}
			if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
				t.Errorf("err shows the token: %q", err)
			}
		})
	}
	// A failed login leaves no certificate behind.
	if _, err := os.Stat(filepath.Join(dir, login.CertFileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("certificate written by a failed login: %v", err)
	}
}

// TestLoginBrowserForgedCode delivers a made-up code with the right state
// (as a page that learnt the state might): the issuer refuses the exchange,
// the login fails, and the page says so without details.
func TestLoginBrowserForgedCode(t *testing.T) {
	_, b := setup(t, false)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	page := make(chan string, 1)
	_, err := login.Login(t.Context(), login.Options{
		Bastion: b.URL, Dir: t.TempDir(),
		OpenBrowser: func(authURL string) error {
			wg.Go(func() {
				u, _ := url.Parse(authURL)
				q := u.Query()
				resp, err := http.Get(q.Get("redirect_uri") + "?" + url.Values{"state": {q.Get("state")}, "code": {"made-up"}}.Encode())
				if err != nil {
					t.Errorf("callback: %v", err)
					page <- ""
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				page <- fmt.Sprint(resp.StatusCode, " ", string(body))
			})
			return nil
		},
	})
	if err == nil || !strings.Contains(err.Error(), "exchange the authorization code") {
		t.Errorf("err = %v; want the exchange refused", err)
	}
	if p := <-page; !strings.HasPrefix(p, "403 ") || !strings.Contains(p, "could not complete the sign-in") {
		t.Errorf("page = %q; want 403 saying the sign-in failed", p)
	}
}

// TestLoginJSONErrors checks that --json reaches the profile's ssh_config,
// and that switching it on a fresh profile rewrites the file without a new
// certificate.
func TestLoginJSONErrors(t *testing.T) {
	_, b := setup(t, true)
	dir := t.TempDir()
	cfg := func() string {
		b, err := os.ReadFile(filepath.Join(dir, login.SSHConfigFileName))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	p1, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cfg(), "SetEnv") {
		t.Errorf("ssh_config sets POSTERN_JSON_ERRORS without --json:\n%s", cfg())
	}
	p2, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir, JSONErrors: true})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg(), "    SetEnv POSTERN_JSON_ERRORS=1\n") || !p2.JSONErrors || p2.Serial != p1.Serial {
		t.Errorf("after --json: serial %s→%s, JSONErrors %v, ssh_config:\n%s", p1.Serial, p2.Serial, p2.JSONErrors, cfg())
	}
	if p3, err := login.LoadProfile(dir); err != nil || !p3.JSONErrors {
		t.Errorf("LoadProfile = %+v, %v; want JSONErrors", p3, err)
	}
	if _, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cfg(), "SetEnv") {
		t.Errorf("ssh_config still sets POSTERN_JSON_ERRORS without --json:\n%s", cfg())
	}
}

// TestLoginBrowserCancelled checks that cancelling a browser login returns
// promptly and closes the loopback listener.
func TestLoginBrowserCancelled(t *testing.T) {
	_, b := setup(t, false)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	errb := newSyncBuffer()
	done := make(chan error, 1)
	go func() {
		_, err := login.Login(ctx, login.Options{Bastion: b.URL, Dir: t.TempDir(), Err: errb, NoBrowser: true})
		done <- err
	}()
	authURL := errb.await(t, regexp.MustCompile(`(?m)^  (http://\S+)$`), 10*time.Second)
	u, _ := url.Parse(authURL)
	callback := u.Query().Get("redirect_uri")
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "sign-in cancelled") {
			t.Errorf("err = %v; want sign-in cancelled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Login kept waiting after cancel")
	}
	if resp, err := http.Get(callback + "?state=x&code=y"); err == nil {
		resp.Body.Close()
		t.Errorf("the loopback callback still answers after the login ended (%d)", resp.StatusCode)
	}
}

// TestLoginSeveralIssuers checks --issuer: required when the bastion offers
// several interactive issuers, and a profile from one issuer is not "still
// valid" for another.
func TestLoginSeveralIssuers(t *testing.T) {
	a := devidptest.Start(t, devidp.Options{})
	c := devidptest.Start(t, devidp.Options{})
	b := startBastion(t, bastionOptions{
		Issuers: []config.Issuer{devIssuer("a", a.URL), devIssuer("c", c.URL)},
		Dev:     map[string]bool{"a": true, "c": true},
	})
	dir := t.TempDir()
	if _, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir}); err == nil || !strings.Contains(err.Error(), "--issuer (a, c)") {
		t.Errorf("no --issuer: err = %v; want a request to choose between a and c", err)
	}
	run := func(issuer string) (*login.Profile, string) {
		t.Helper()
		out := newSyncBuffer()
		p, err := login.Login(t.Context(), login.Options{Bastion: b.URL, Dir: dir, Issuer: issuer, Out: out})
		if err != nil {
			t.Fatal(err)
		}
		return p, out.String()
	}
	if p, _ := run("a"); p.Issuer != "a" {
		t.Errorf("issuer = %q; want a", p.Issuer)
	}
	if _, out := run("a"); !strings.Contains(out, "still valid") {
		t.Errorf("same issuer again: %q; want still valid", out)
	}
	if p, out := run("c"); p.Issuer != "c" || strings.Contains(out, "still valid") {
		t.Errorf("other issuer: issuer %q, output %q; want a new certificate from c", p.Issuer, out)
	}
	if _, out := run(""); !strings.Contains(out, "still valid") {
		t.Errorf("no --issuer with a fresh profile: %q; want still valid", out)
	}
}
