package web

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// uiFixture is the web UI over a real recorder and stores, logging in
// through the development issuer, all on 127.0.0.1.
type uiFixture struct {
	env     *playtest.Env
	ui      *UI
	srv     *httptest.Server
	idp     *devidptest.Server
	auditor atomic.Bool  // whether the logged-in user has the auditor permission
	locked  atomic.Bool  // whether a lock matches the logged-in user
	perms   atomic.Value // []string: the logged-in user's permissions, if set (else auditor's)
	locker  *lock.Locker
	reg     *prometheus.Registry
}

func newUIFixture(t *testing.T) *uiFixture {
	t.Helper()
	f := &uiFixture{env: playtest.New(t), reg: prometheus.NewRegistry()}
	f.auditor.Store(true)
	f.idp = devidptest.Start(t, devidp.Options{})
	var err0 error
	if f.locker, err0 = lock.New(context.Background(), lock.Options{Store: f.env.State, Poll: time.Hour}); err0 != nil {
		t.Fatal(err0)
	}
	t.Cleanup(f.locker.Close)
	v, err := certs.NewVerifier(context.Background(), []config.Issuer{{
		Name: "dev", IssuerURL: f.idp.URL, ClientID: f.idp.ClientID(), Kind: "human", GroupsClaim: "groups",
	}}, certs.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	key, err := CookieKey(context.Background(), f.env.State)
	if err != nil {
		t.Fatal(err)
	}
	f.ui, err = New(Options{
		PublicURL: f.srv.URL,
		Issuer:    f.idp.URL,
		ClientID:  f.idp.ClientID(),
		// The development issuer accepts loopback /callback redirects.
		RedirectURL: f.srv.URL + "/callback",
		Verifier:    v,
		Permissions: func(id certs.Identity) []string {
			if p, ok := f.perms.Load().([]string); ok {
				return p
			}
			if f.auditor.Load() {
				return []string{players.PermAuditor}
			}
			return []string{"approver"}
		},
		State:     f.env.State,
		Store:     f.env.Store,
		Follow:    f.env.Recorder.Follow,
		CookieKey: key,
		Metrics:   f.reg,
		Locks:     webLocker{f.locker},
		Locked: func(certs.Identity) error {
			if f.locked.Load() {
				return &usererr.Error{Status: http.StatusForbidden, Code: "locked", Msg: "your access is locked: incident 42"}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/ui/", f.ui)
	mux.Handle("/callback", f.ui)
	return f
}

// webLocker adapts a lock.Locker to Locks, as the service does.
type webLocker struct{ l *lock.Locker }

func (w webLocker) List(ctx context.Context) ([]state.Lock, error) { return w.l.List(ctx, false, 0) }
func (w webLocker) Lock(ctx context.Context, r LockRequest) (state.Lock, error) {
	return w.l.Lock(ctx, lock.Spec{Kind: r.Kind, Name: r.Name, Reason: r.Reason, TTL: r.TTL, By: r.By,
		Identity: certs.Identity{Issuer: r.Issuer, Subject: r.Subject, Username: r.Username}})
}
func (w webLocker) Unlock(ctx context.Context, id, by string) error { return w.l.Unlock(ctx, id, by) }

// browser returns an HTTP client with a cookie jar that follows redirects.
func (f *uiFixture) browser(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

// login logs the client in by following /ui/ through the issuer.
func (f *uiFixture) login(t *testing.T, c *http.Client) string {
	t.Helper()
	resp, err := c.Get(f.srv.URL + "/ui/")
	if err != nil {
		t.Fatalf("GET /ui/: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.Request.URL.Path != "/ui/" {
		t.Fatalf("after login landed on %s; want /ui/", resp.Request.URL)
	}
	return string(body)
}

func get(t *testing.T, c *http.Client, u string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func noRedirect(c *http.Client) *http.Client {
	c2 := *c
	c2.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &c2
}

func TestUILoginAndList(t *testing.T) {
	f := newUIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "up 3 days\r\n"})
	c := f.browser(t)

	// Not logged in: a redirect to the login, keeping where to return.
	resp, _ := get(t, noRedirect(c), f.srv.URL+"/ui/?user=alice@example.com")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "/ui/login?return=") {
		t.Fatalf("got %d to %q; want a redirect to /ui/login", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, _ = get(t, noRedirect(c), f.srv.URL+"/ui/login")
	loc, _ := url.Parse(resp.Header.Get("Location"))
	q := loc.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "" || q.Get("nonce") == "" {
		t.Errorf("authorization request %s lacks PKCE S256, state or nonce", loc)
	}
	var cookie *http.Cookie
	for _, ck := range resp.Cookies() {
		if ck.Name == loginCookie {
			cookie = ck
		}
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode {
		t.Errorf("login cookie %+v; want HttpOnly, SameSite=Lax", cookie)
	}

	body := f.login(t, c)
	if !strings.Contains(body, id) || !strings.Contains(body, "alice@example.com") || !strings.Contains(body, "dev@example.com") {
		t.Errorf("sessions page lacks the session or the user:\n%s", body)
	}
	if n := promtest.ToFloat64(f.ui.logins.WithLabelValues("ok")); n != 1 {
		t.Errorf("postern_web_logins_total{result=ok} = %v; want 1", n)
	}
	u, _ := url.Parse(f.srv.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == sessionCookie && strings.Contains(ck.Value, "dev@example.com") {
			t.Error("the session cookie is not encrypted")
		}
	}

	// Filters.
	_, body = get(t, c, f.srv.URL+"/ui/?user=bob@example.com")
	if strings.Contains(body, id) || !strings.Contains(body, "No sessions match") {
		t.Errorf("filtered list still shows the session")
	}
	resp, body = get(t, c, f.srv.URL+"/ui/?since=yesterday")
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "since") {
		t.Errorf("bad filter: got %d", resp.StatusCode)
	}
}

// TestUILocked: a lock on the logged-in identity stops its web session at
// once, and logging in again is refused with the lock's message.
func TestUILocked(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	f.login(t, c)
	f.locked.Store(true)
	resp, body := get(t, c, f.srv.URL+"/ui/")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "Your access is locked: incident 42.") {
		t.Fatalf("after the lock: %d %s\n%s; want 403 with the lock's message", resp.StatusCode, resp.Request.URL, body)
	}
	if n := promtest.ToFloat64(f.ui.logins.WithLabelValues("refused")); n != 1 {
		t.Errorf("postern_web_logins_total{result=refused} = %v; want 1", n)
	}
	f.locked.Store(false)
	f.login(t, c)
}

// TestUILocks: an admin sees the locks page, makes and removes a lock; a
// moderator sees the page, terminates a running session from its page, and
// may not lock a role; a post without the form token is refused.
func TestUILocks(t *testing.T) {
	f := newUIFixture(t)
	f.perms.Store([]string{"admin"})
	c := f.browser(t)
	f.login(t, c)
	_, body := get(t, c, f.srv.URL+"/ui/locks")
	if !strings.Contains(body, "No lock is in force") || !strings.Contains(body, `id="lock"`) || !strings.Contains(body, `id="nav-locks"`) {
		t.Fatalf("locks page:\n%s", body)
	}
	csrf := csrfOf(t, body)
	post := func(path string, form url.Values) (*http.Response, string) {
		t.Helper()
		resp, err := c.PostForm(f.srv.URL+path, form)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := post("/ui/locks", url.Values{"kind": {"role"}, "name": {"agents"}, "reason": {"x"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a lock without the form token: %d; want 403", resp.StatusCode)
	}
	_, body = post("/ui/locks", url.Values{"csrf": {csrf}, "kind": {"role"}, "name": {"agents"}, "reason": {"runaway"}, "for": {"1h"}})
	if !strings.Contains(body, "Locked (lock ") || !strings.Contains(body, "runaway") {
		t.Fatalf("after locking a role:\n%s", body)
	}
	_, body = post("/ui/locks", url.Values{"csrf": {csrf}, "kind": {"role"}, "name": {"agents"}, "reason": {"x"}, "for": {"soon"}})
	if !strings.Contains(body, "for must be a duration") {
		t.Errorf("a bad duration:\n%s", body)
	}
	ls, _ := f.locker.List(context.Background(), false, 0)
	if len(ls) != 1 || ls[0].Kind != "role" || ls[0].CreatedBy != "dev@example.com" || ls[0].Expires.IsZero() {
		t.Fatalf("locks = %+v", ls)
	}
	_, body = post("/ui/locks/"+ls[0].ID+"/remove", url.Values{"csrf": {csrf}})
	if !strings.Contains(body, "Lock "+ls[0].ID+" removed.") || !strings.Contains(body, "No lock is in force") {
		t.Errorf("after removing:\n%s", body)
	}

	// A moderator: the page, the Terminate button, no role locks.
	f.perms.Store([]string{"moderator"})
	live := f.env.Start(t, "alice@example.com", "web-1", "top")
	defer playtest.Finish(t, live)
	_, body = get(t, c, f.srv.URL+"/ui/sessions/"+live.ID())
	if !strings.Contains(body, `id="terminate"`) {
		t.Fatalf("a running session's page for a moderator lacks Terminate:\n%s", body)
	}
	_, body = post("/ui/locks", url.Values{"csrf": {csrf}, "kind": {"session"}, "name": {live.ID()}, "reason": {"wrong db"}, "from": {"session"}})
	if !strings.Contains(body, "Session terminated (lock ") {
		t.Errorf("after terminating:\n%s", body)
	}
	if err := f.locker.Check(lock.Subject{Session: live.ID()}); err == nil {
		t.Error("the session is not locked")
	}
	_, body = post("/ui/locks", url.Values{"csrf": {csrf}, "kind": {"role"}, "name": {"agents"}, "reason": {"x"}})
	if !strings.Contains(body, "only an admin locks") {
		t.Errorf("a moderator locking a role:\n%s", body)
	}
	if _, body := get(t, c, f.srv.URL+"/ui/locks"); strings.Contains(body, `id="lock"`) {
		t.Error("a moderator sees the lock form")
	}
	f.perms.Store([]string{"auditor"})
	if resp, _ := get(t, c, f.srv.URL+"/ui/locks"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("an auditor on the locks page: %d; want 403", resp.StatusCode)
	}
}

// csrfOf finds the form token in a page.
func csrfOf(t *testing.T, body string) string {
	t.Helper()
	const marker = `name="csrf" value="`
	i := strings.Index(body, marker)
	if i < 0 {
		t.Fatalf("no form token in the page")
	}
	rest := body[i+len(marker):]
	return rest[:strings.IndexByte(rest, '"')]
}

func TestUISecurityHeaders(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	for _, p := range []string{"/ui/", "/ui/static/app.js", "/ui/nope", "/ui/sessions/..%2f"} {
		resp, _ := get(t, noRedirect(c), f.srv.URL+p)
		csp := resp.Header.Get("Content-Security-Policy")
		if csp == "" || strings.Contains(csp, "unsafe-inline") || !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: Content-Security-Policy %q; want script-src 'self' without unsafe-inline", p, csp)
		}
		if resp.Header.Get("X-Frame-Options") != "DENY" {
			t.Errorf("%s: no X-Frame-Options DENY", p)
		}
	}
	f.login(t, c)
	// Pages never contain inline scripts or style attributes.
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "x"}, playtest.Step{Marker: "m1"})
	for _, p := range []string{"/ui/", "/ui/sessions/" + id} {
		_, body := get(t, c, f.srv.URL+p)
		if strings.Contains(body, "<script>") || strings.Contains(body, " style=") || strings.Contains(body, "onclick") {
			t.Errorf("%s has inline script or style", p)
		}
	}
}

func TestUIForbiddenForNonAuditor(t *testing.T) {
	f := newUIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "x"})
	f.auditor.Store(false)
	c := f.browser(t)
	resp, err := c.Get(f.srv.URL + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "auditor") || strings.Contains(string(body), id) {
		t.Fatalf("got %d; want a 403 page without sessions", resp.StatusCode)
	}
	for _, p := range []string{"/ui/sessions/" + id, "/ui/sessions/" + id + "/live"} {
		if resp, _ := get(t, c, f.srv.URL+p); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: got %d; want 403", p, resp.StatusCode)
		}
	}
	// The cast of another's session does not exist for a non-auditor.
	if resp, _ := get(t, c, f.srv.URL+"/ui/sessions/"+id+"/cast"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("cast: got %d; want 404", resp.StatusCode)
	}
}

func TestUICSRF(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	body := f.login(t, c)
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatal("no CSRF token in the page")
	}
	tok := body[i+len(`name="csrf" value="`):]
	tok = tok[:strings.IndexByte(tok, '"')]

	post := func(form url.Values, origin string) int {
		req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/ui/logout", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := noRedirect(c).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post(url.Values{}, ""); got != http.StatusForbidden {
		t.Errorf("logout without token: got %d; want 403", got)
	}
	if got := post(url.Values{"csrf": {"wrong"}}, ""); got != http.StatusForbidden {
		t.Errorf("logout with a wrong token: got %d; want 403", got)
	}
	if got := post(url.Values{"csrf": {tok}}, "http://evil.example"); got != http.StatusForbidden {
		t.Errorf("logout from another origin: got %d; want 403", got)
	}
	if resp, _ := get(t, noRedirect(c), f.srv.URL+"/ui/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("refused logouts ended the session: got %d", resp.StatusCode)
	}
	if got := post(url.Values{"csrf": {tok}}, f.srv.URL); got != http.StatusOK {
		t.Errorf("logout with the token: got %d; want 200", got)
	}
	if resp, _ := get(t, noRedirect(c), f.srv.URL+"/ui/"); resp.StatusCode != http.StatusFound {
		t.Errorf("after logout: got %d; want a redirect to the login", resp.StatusCode)
	}
}

func TestUITamperedCookie(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	f.login(t, c)
	u, _ := url.Parse(f.srv.URL)
	var cks []*http.Cookie
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			b := []byte(ck.Value)
			b[len(b)/2] ^= 1
			if b[len(b)/2] == '-' || b[len(b)/2] == '_' {
				b[len(b)/2] = 'A'
			}
			cks = append(cks, &http.Cookie{Name: sessionCookie, Value: string(b), Path: "/"})
		}
	}
	c.Jar.SetCookies(u, cks)
	if resp, _ := get(t, noRedirect(c), f.srv.URL+"/ui/"); resp.StatusCode != http.StatusFound {
		t.Errorf("tampered cookie: got %d; want a redirect to the login", resp.StatusCode)
	}
}

func TestUISessionPage(t *testing.T) {
	f := newUIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime",
		playtest.Step{Output: "up 3 days\r\n"}, playtest.Step{Marker: "command: uptime"}, playtest.Step{Output: "bye\r\n"})
	c := f.browser(t)
	f.login(t, c)
	resp, body := get(t, c, f.srv.URL+"/ui/sessions/"+strings.ToLower(id))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("got %d", resp.StatusCode)
	}
	for _, want := range []string{`data-cast="/ui/sessions/` + id + `/cast"`, "command: uptime", `class="seek" data-seek="`,
		`id="integrity" class="integrity-ok"`, "exit status 0"} {
		if !strings.Contains(body, want) {
			t.Errorf("session page lacks %q", want)
		}
	}
	resp, body = get(t, c, f.srv.URL+"/ui/sessions/"+id+"/cast")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != players.ContentTypeCast || !strings.Contains(body, "up 3 days") {
		t.Errorf("cast: got %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := get(t, f.browser(t), f.srv.URL+"/ui/sessions/"+id+"/cast"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("cast without login: got %d; want 401", resp.StatusCode)
	}
	for _, p := range []string{"/ui/sessions/../../etc/passwd", "/ui/sessions/%2e%2e%2fx", "/ui/sessions/" + id + "%2fcast"} {
		if resp, _ := get(t, noRedirect(c), f.srv.URL+p); resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMovedPermanently && resp.StatusCode != http.StatusTemporaryRedirect {
			t.Errorf("%s: got %d; want 400", p, resp.StatusCode)
		}
	}
	// Without the player assets the page says how to build them.
	built := f.ui.built
	f.ui.built = false
	defer func() { f.ui.built = built }()
	_, body = get(t, c, f.srv.URL+"/ui/sessions/"+id)
	if !strings.Contains(body, "player assets not built: run make web") {
		t.Error("without assets the page does not say to run make web")
	}
}

func TestUILive(t *testing.T) {
	f := newUIFixture(t)
	s := f.env.Start(t, "alice@example.com", "web-1", "")
	playtest.Play(t, s, playtest.Step{Output: "before\r\n"})
	c := f.browser(t)
	f.login(t, c)
	_, body := get(t, c, f.srv.URL+"/ui/sessions/"+s.ID())
	if !strings.Contains(body, `data-live="/ui/sessions/`+s.ID()+`/live"`) {
		t.Fatalf("running session page has no live view")
	}
	resp, err := c.Get(f.srv.URL + "/ui/sessions/" + s.ID() + "/live")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("live: content type %q", resp.Header.Get("Content-Type"))
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != "" {
				lines <- sc.Text()
			}
		}
		close(lines)
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("live stream ended early")
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatal("timed out reading the live stream")
		}
		return ""
	}
	if l := next(); l != `data: {"cols":80,"rows":24}` {
		t.Errorf("first message %q; want the terminal size", l)
	}
	if l := next(); !strings.Contains(l, `"o","before\r\n"`) {
		t.Errorf("second message %q; want the output", l)
	}
	playtest.Play(t, s, playtest.Step{Output: "during\r\n"})
	if l := next(); !strings.Contains(l, `"o","during\r\n"`) {
		t.Errorf("live message %q; want the new output", l)
	}
	playtest.Finish(t, s)
	for {
		l := next()
		if l == "event: done" {
			break
		}
	}
}

func TestSafeReturn(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/?user=a", "/?user=a"},
		{"/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV", "/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV"},
		{"//evil.example/", "/"},
		{"https://evil.example/", "/"},
		{"/\\evil.example", "/"},
		{"relative", "/"},
	}
	for _, tt := range tests {
		if got := safeReturn(tt.in); got != tt.want {
			t.Errorf("safeReturn(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// browserPrereqs returns node and chromium, or skips the test when they
// or playwright-core are genuinely absent.
func browserPrereqs(t *testing.T) (node, chromium string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		testutil.Missing(t, "node is not installed (apt-get install nodejs npm)")
	}
	chromium = os.Getenv("CHROMIUM")
	if chromium == "" {
		chromium = "/usr/bin/chromium"
	}
	if _, err := os.Stat(chromium); err != nil {
		testutil.Missing(t, "chromium is not installed at %s (apt-get install chromium)", chromium)
	}
	if _, err := os.Stat(filepath.Join("node_modules", "playwright-core")); err != nil {
		testutil.Missing(t, "playwright-core is not installed (npm ci in players/web)")
	}
	return node, chromium
}

// TestBrowserLive opens the live view of a running session in chromium and
// checks that output recorded while the page is open appears.
func TestBrowserLive(t *testing.T) {
	node, chromium := browserPrereqs(t)
	f := newUIFixture(t)
	if !f.ui.AssetsBuilt() {
		t.Fatal("asciinema-player assets were not embedded: run make web before go test")
	}
	s := f.env.Start(t, "alice@example.com", "web-1", "")
	t.Cleanup(func() { s.Finish(context.Background(), recorder.Result{}) })
	playtest.Play(t, s, playtest.Step{Output: "already recorded\r\n"})

	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "live.mjs"), f.srv.URL, "already recorded", "typed while watched",
		filepath.Join(dir, "live.png"), filepath.Join(dir, "chromium-profile"))
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if sc.Text() == "READY" {
			playtest.Play(t, s, playtest.Step{Output: "typed while watched\r\n"})
		}
	}
	err = cmd.Wait()
	t.Logf("live.mjs output:\n%s\n%s", strings.Join(lines, "\n"), stderr.String())
	if err != nil {
		t.Fatalf("browser live test failed: %v", err)
	}
}

// TestBrowserReplay logs in with a real browser (Debian chromium driven by
// playwright-core), opens a recorded session and checks that
// asciinema-player rendered text from the recording.
func TestBrowserReplay(t *testing.T) {
	node, chromium := browserPrereqs(t)
	f := newUIFixture(t)
	if !f.ui.AssetsBuilt() {
		t.Fatal("asciinema-player assets were not embedded: run make web before go test")
	}
	const want = "postern replay check"
	f.env.Record(t, "alice@example.com", "web-1", "echo",
		playtest.Step{Output: "$ echo postern replay check\r\n"}, playtest.Step{Marker: "command: echo"},
		playtest.Step{Output: want + "\r\n"})

	dir := t.TempDir()
	shot := filepath.Join(dir, "replay.png")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "replay.mjs"), f.srv.URL, want, shot, filepath.Join(dir, "chromium-profile"))
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("replay.mjs output:\n%s", out)
	if err != nil {
		t.Fatalf("browser test failed: %v", err)
	}
	if st, err := os.Stat(shot); err != nil || st.Size() == 0 {
		t.Fatalf("no screenshot at %s", shot)
	}
	t.Logf("screenshot: %s", shot)
	// The temporary directory goes away with the test; keep a copy where
	// CI collects artifacts.
	if dst := os.Getenv("POSTERN_ARTIFACTS"); dst != "" {
		b, err := os.ReadFile(shot)
		if err == nil {
			err = os.MkdirAll(dst, 0o755)
		}
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, "web-replay.png"), b, 0o644)
		}
		if err != nil {
			t.Errorf("keep screenshot: %v", err)
		}
		t.Logf("screenshot kept: %s", filepath.Join(dst, "web-replay.png"))
	}
}

func TestPickIssuer(t *testing.T) {
	tests := []struct {
		name    string
		issuers []config.Issuer
		want    string
		ok      bool
	}{
		{name: "none"},
		{name: "agents only", issuers: []config.Issuer{{Name: "gh", IssuerURL: "https://gh", Kind: "agent", Audience: "postern"}}},
		{name: "first human with a client", ok: true, want: "corp", issuers: []config.Issuer{
			{Name: "gh", IssuerURL: "https://gh", Kind: "agent", ClientID: "x"},
			{Name: "noclient", IssuerURL: "https://a", Kind: "human"},
			{Name: "corp", IssuerURL: "https://dex", ClientID: "postern"},
			{Name: "later", IssuerURL: "https://b", ClientID: "postern", Kind: "human"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := PickIssuer(tt.issuers)
			if ok != tt.ok || got.Name != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got.Name, ok, tt.want, tt.ok)
			}
		})
	}
}

// sessionCookieOf returns the session cookie the browser c holds for f.
func (f *uiFixture) sessionCookieOf(t *testing.T, c *http.Client) *http.Cookie {
	t.Helper()
	u, _ := url.Parse(f.srv.URL)
	for _, ck := range c.Jar.Cookies(u) {
		if ck.Name == sessionCookie {
			return &http.Cookie{Name: ck.Name, Value: ck.Value}
		}
	}
	t.Fatal("no session cookie after login")
	return nil
}

// replay asks for /ui/ with nothing but a captured session cookie.
func (f *uiFixture) replay(t *testing.T, base string, ck *http.Cookie) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/ui/", nil)
	req.AddCookie(ck)
	resp, err := noRedirect(&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestUILogoutEndsCapturedCookie: the session lives in the state store, not
// in the cookie: a captured copy of the cookie works on another replica
// (another UI on the same store) while the session lasts, and stops working
// everywhere once the user logs out, without waiting for its expiry.
func TestUILogoutEndsCapturedCookie(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	body := f.login(t, c)
	captured := f.sessionCookieOf(t, c)
	if strings.Contains(captured.Value, "dev") || len(captured.Value) > 64 {
		t.Errorf("the cookie carries more than a random token: %q", captured.Value)
	}

	// Another replica: a second UI sharing the state store.
	key, err := CookieKey(context.Background(), f.env.State)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(Options{PublicURL: f.srv.URL, Issuer: f.idp.URL, ClientID: f.idp.ClientID(),
		RedirectURL: f.srv.URL + "/callback", Verifier: certsVerifier(t, f), State: f.env.State, Store: f.env.Store,
		Permissions: func(certs.Identity) []string { return []string{players.PermAuditor} }, CookieKey: key})
	if err != nil {
		t.Fatal(err)
	}
	replica := httptest.NewServer(other)
	t.Cleanup(replica.Close)
	if got := f.replay(t, replica.URL, captured); got != http.StatusOK {
		t.Fatalf("the session cookie on another replica: got %d; want 200", got)
	}

	i := strings.Index(body, `name="csrf" value="`)
	tok := body[i+len(`name="csrf" value="`):]
	tok = tok[:strings.IndexByte(tok, '"')]
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+"/ui/logout", strings.NewReader(url.Values{"csrf": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := noRedirect(c).Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("logout: %v %v", resp, err)
	}
	resp.Body.Close()
	for _, base := range []string{f.srv.URL, replica.URL} {
		if got := f.replay(t, base, captured); got != http.StatusFound {
			t.Errorf("captured cookie after logout at %s: got %d; want a redirect to the login", base, got)
		}
	}
}

// TestUIRevocationEndsWebSession: revoking a certificate issued to the
// identity ends its web sessions: a captured cookie stops working at once.
func TestUIRevocationEndsWebSession(t *testing.T) {
	f := newUIFixture(t)
	c := f.browser(t)
	f.login(t, c)
	captured := f.sessionCookieOf(t, c)
	ctx := context.Background()
	// The devidp signs in "dev" (issuer "dev", subject "dev"); a certificate
	// issued to the same identity:
	if _, err := f.env.State.Append(ctx, state.Event{Type: state.EventCertIssued, Actor: "dev",
		Details: map[string]any{"serial": "4242", "issuer": "dev", "subject": "dev"}}); err != nil {
		t.Fatal(err)
	}
	if got := f.replay(t, f.srv.URL, captured); got != http.StatusOK {
		t.Fatalf("before the revocation: got %d", got)
	}
	if err := f.env.State.Revoke(ctx, 4242, "laptop lost", "ops"); err != nil {
		t.Fatal(err)
	}
	if got := f.replay(t, f.srv.URL, captured); got != http.StatusFound {
		t.Errorf("captured cookie after the revocation: got %d; want a redirect to the login", got)
	}
}

// certsVerifier is the verifier of f's issuer.
func certsVerifier(t *testing.T, f *uiFixture) certs.TokenVerifier {
	t.Helper()
	v, err := certs.NewVerifier(context.Background(), []config.Issuer{{
		Name: "dev", IssuerURL: f.idp.URL, ClientID: f.idp.ClientID(), Kind: "human", GroupsClaim: "groups",
	}}, certs.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
