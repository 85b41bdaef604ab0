package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/state"
)

// devUser is the username the development issuer logs in.
const devUser = "dev@example.com"

// fakeApprovals stands in for the bastion's approval broker (tested in its
// own package): requests in memory, decisions recorded.
type fakeApprovals struct {
	mu    sync.Mutex
	reqs  map[string]*state.Approval
	order []string // creation order
	calls []decideCall
}

type decideCall struct {
	ID       string
	Approver certs.Identity
	Approve  bool
	Reason   string
}

func newFakeApprovals() *fakeApprovals {
	return &fakeApprovals{reqs: map[string]*state.Approval{}}
}

func (f *fakeApprovals) add(a state.Approval) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs[a.ID] = &a
	f.order = append(f.order, a.ID)
}

func (f *fakeApprovals) List(_ context.Context, status string, limit int) ([]state.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []state.Approval
	for i := len(f.order) - 1; i >= 0 && len(out) < limit; i-- {
		if a := f.reqs[f.order[i]]; status == "" || a.Status == status {
			out = append(out, *a)
		}
	}
	return out, nil
}

func (f *fakeApprovals) Get(_ context.Context, id string) (state.Approval, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	a, ok := f.reqs[id]
	if !ok {
		return state.Approval{}, fmt.Errorf("get approval %s: %w", id, state.ErrNotFound)
	}
	return *a, nil
}

func (f *fakeApprovals) Decide(_ context.Context, id string, approver certs.Identity, approve bool, reason string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, decideCall{id, approver, approve, reason})
	a, ok := f.reqs[id]
	switch {
	case !ok:
		return usererr.New("not_found", "no such approval request")
	case a.Status != state.ApprovalPending:
		return usererr.New("already_decided", "approval already decided")
	case a.Requester == approver.Username:
		return usererr.New("self_approval", "you cannot decide your own request")
	case id == internalFailureID:
		return errors.New("store: disk I/O error at /var/lib/postern/state.db")
	}
	a.Votes = append(a.Votes, state.Vote{By: approver.Username, Approve: approve, Reason: reason, Via: "web", Time: time.Now()})
	a.Status, a.DecidedBy, a.Note, a.Decided = state.ApprovalDenied, approver.Username, reason, time.Now()
	if approve {
		a.Status = state.ApprovalApproved
	}
	return nil
}

func (f *fakeApprovals) decisions() []decideCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]decideCall(nil), f.calls...)
}

// approvalsFixture is the web UI with approvals, logging in through the
// development issuer on 127.0.0.1.
type approvalsFixture struct {
	srv   *httptest.Server
	ui    *UI
	fake  *fakeApprovals
	perms atomic.Value // []string of the logged-in user
}

func newApprovalsFixture(t *testing.T, withApprovals bool) *approvalsFixture {
	t.Helper()
	env := playtest.New(t)
	f := &approvalsFixture{fake: newFakeApprovals()}
	f.perms.Store([]string{PermApprover})
	idp := devidptest.Start(t, devidp.Options{})
	v, err := certs.NewVerifier(context.Background(), []config.Issuer{{
		Name: "dev", IssuerURL: idp.URL, ClientID: idp.ClientID(), Kind: "human", GroupsClaim: "groups",
	}}, certs.VerifierOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	key, err := CookieKey(context.Background(), env.State)
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{
		PublicURL: f.srv.URL, Issuer: idp.URL, ClientID: idp.ClientID(), RedirectURL: f.srv.URL + "/callback",
		Verifier:    v,
		Permissions: func(certs.Identity) []string { return f.perms.Load().([]string) },
		State:       env.State, Store: env.Store, CookieKey: key,
	}
	if withApprovals {
		opts.Approvals = f.fake
	}
	f.ui, err = New(opts)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/ui/", f.ui)
	mux.Handle("/callback", f.ui)
	now := time.Now().UTC()
	f.fake.add(state.Approval{ID: "01JAPPROVEDOLD0000000000AA", Kind: state.ApprovalCommand, Status: state.ApprovalApproved,
		Requester: "carol@example.com", Target: "db-1", Login: "postgres", Command: "psql -c 'vacuum'", Rule: "psql *",
		Required: 1, Created: now.Add(-2 * time.Hour), Decided: now.Add(-time.Hour), DecidedBy: "dave@example.com"})
	f.fake.add(state.Approval{ID: "01JPENDINGCMD000000000000A", Kind: state.ApprovalCommand, Status: state.ApprovalPending,
		Requester: "alice@example.com", Groups: []string{"dev"}, Target: "web-1", Login: "root",
		Command: "systemctl restart nginx", Rule: "systemctl restart *", Approvers: []string{"sre"}, Required: 1,
		Created: now.Add(-time.Minute), Expires: now.Add(time.Hour)})
	f.fake.add(state.Approval{ID: "01JPENDINGACCESS0000000000", Kind: state.ApprovalAccess, Status: state.ApprovalPending,
		Requester: "bob@example.com", Target: "db-2", Login: "admin", Reason: "incident 42", Duration: 30 * time.Minute,
		Required: 1, Created: now.Add(-30 * time.Second), Expires: now.Add(time.Hour)})
	f.fake.add(state.Approval{ID: "01JPENDINGSELF00000000000A", Kind: state.ApprovalCommand, Status: state.ApprovalPending,
		Requester: devUser, Target: "web-2", Login: "root", Command: "reboot", Rule: "reboot", Required: 1,
		Created: now.Add(-10 * time.Second), Expires: now.Add(time.Hour)})
	return f
}

// loginAt opens p logged out and follows the login through the issuer; it
// returns the final response and body, which must be at p again.
func (f *approvalsFixture) loginAt(t *testing.T, c *http.Client, p string) (*http.Response, string) {
	t.Helper()
	resp, body := get(t, c, f.srv.URL+p)
	if resp.Request.URL.RequestURI() != p {
		t.Fatalf("after login landed on %s; want %s", resp.Request.URL, p)
	}
	return resp, body
}

// csrfToken extracts the form token from a page.
func csrfToken(t *testing.T, body string) string {
	t.Helper()
	i := strings.Index(body, `name="csrf" value="`)
	if i < 0 {
		t.Fatal("no CSRF token in the page")
	}
	tok := body[i+len(`name="csrf" value="`):]
	return tok[:strings.IndexByte(tok, '"')]
}

// postForm posts form to p without following redirects.
func postForm(t *testing.T, c *http.Client, p string, form url.Values, origin string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	resp, err := noRedirect(c).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestUIApprovalsListAndDetail(t *testing.T) {
	f := newApprovalsFixture(t, true)
	c := f.browser(t)

	// The link the bastion prints works through the login.
	resp, body := f.loginAt(t, c, "/ui/approvals/01JPENDINGCMD000000000000A")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("detail: got %d", resp.StatusCode)
	}
	for _, want := range []string{"alice@example.com", "web-1", "root", "systemctl restart nginx", "systemctl restart *",
		"sre", `id="approve"`, `id="deny"`, `action="/ui/approvals/01JPENDINGCMD000000000000A/approve"`,
		`action="/ui/approvals/01JPENDINGCMD000000000000A/deny"`, `name="reason"`, `name="csrf"`, `id="nav-approvals"`} {
		if !strings.Contains(body, want) {
			t.Errorf("detail page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, " style=") {
		t.Error("detail page has inline script or style")
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("detail Cache-Control %q; want no-store", cc)
	}

	// An access request shows its duration and reason; a decided one has
	// no forms.
	_, body = get(t, c, f.srv.URL+"/ui/approvals/01JPENDINGACCESS0000000000")
	if !strings.Contains(body, "30m0s") || !strings.Contains(body, "incident 42") || !strings.Contains(body, "access request") {
		t.Errorf("access request page lacks duration or reason:\n%s", body)
	}
	_, body = get(t, c, f.srv.URL+"/ui/approvals/01JAPPROVEDOLD0000000000AA")
	if strings.Contains(body, `id="approve"`) || !strings.Contains(body, "dave@example.com") {
		t.Errorf("decided request page offers a decision or lacks who decided")
	}

	// The list: pending first (newest first), then decided.
	resp, body = get(t, c, f.srv.URL+"/ui/approvals")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("list: got %d", resp.StatusCode)
	}
	self := strings.Index(body, "/ui/approvals/01JPENDINGSELF00000000000A")
	access := strings.Index(body, "/ui/approvals/01JPENDINGACCESS0000000000")
	cmd := strings.Index(body, "/ui/approvals/01JPENDINGCMD000000000000A")
	old := strings.Index(body, "/ui/approvals/01JAPPROVEDOLD0000000000AA")
	decided := strings.Index(body, `id="decided"`)
	if self < 0 || access < 0 || cmd < 0 || old < 0 || !(self < access && access < cmd && cmd < decided && decided < old) {
		t.Errorf("list order: self %d, access %d, command %d, decided section %d, approved %d", self, access, cmd, decided, old)
	}
	for _, want := range []string{"alice@example.com", "systemctl restart nginx", "access for 30m0s", "psql -c &#39;vacuum&#39;", "approved"} {
		if !strings.Contains(body, want) {
			t.Errorf("list lacks %q", want)
		}
	}
	// The sessions pages link to the approvals too.
	if _, body := get(t, c, f.srv.URL+"/ui/"); !strings.Contains(body, `id="nav-approvals"`) {
		t.Error("the layout has no Approvals link for an approver")
	}

	// Unknown and malformed ids.
	if resp, _ := get(t, c, f.srv.URL+"/ui/approvals/01JNOSUCHREQUEST0000000000"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: got %d; want 404", resp.StatusCode)
	}
	for _, p := range []string{"/ui/approvals/a.b", "/ui/approvals/..%2f", "/ui/approvals/" + strings.Repeat("A", 65)} {
		if resp, _ := get(t, c, f.srv.URL+p); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: got %d; want 400", p, resp.StatusCode)
		}
	}
	if resp, _ := get(t, c, f.srv.URL+"/ui/approvals/01JPENDINGCMD000000000000A/nope"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown action: got %d; want 404", resp.StatusCode)
	}
	if resp, _ := get(t, c, f.srv.URL+"/ui/approvals/01JPENDINGCMD000000000000A/approve"); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET approve: got %d; want 405", resp.StatusCode)
	}
	if n := len(f.fake.decisions()); n != 0 {
		t.Errorf("Decide called %d times by GETs", n)
	}
}

func TestUIApprovalsAdminAllowed(t *testing.T) {
	f := newApprovalsFixture(t, true)
	f.perms.Store([]string{players.PermAdmin})
	c := f.browser(t)
	if resp, _ := f.loginAt(t, c, "/ui/approvals"); resp.StatusCode != http.StatusOK {
		t.Fatalf("admin: got %d; want 200", resp.StatusCode)
	}
}

func TestUIApprovalsForbiddenForAuditor(t *testing.T) {
	f := newApprovalsFixture(t, true)
	f.perms.Store([]string{players.PermAuditor})
	c := f.browser(t)
	resp, body := f.loginAt(t, c, "/ui/approvals")
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "approver") || strings.Contains(body, "systemctl") {
		t.Fatalf("auditor: got %d; want a 403 page without requests", resp.StatusCode)
	}
	if resp, body := get(t, c, f.srv.URL+"/ui/approvals/01JPENDINGCMD000000000000A"); resp.StatusCode != http.StatusForbidden || strings.Contains(body, "systemctl") {
		t.Errorf("auditor detail: got %d; want 403", resp.StatusCode)
	}
	_, body = get(t, c, f.srv.URL+"/ui/")
	if strings.Contains(body, `id="nav-approvals"`) {
		t.Error("an auditor sees the Approvals link")
	}
	tok := csrfToken(t, body)
	if resp := postForm(t, c, f.srv.URL+"/ui/approvals/01JPENDINGCMD000000000000A/approve", url.Values{"csrf": {tok}}, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("auditor approve: got %d; want 403", resp.StatusCode)
	}
	if n := len(f.fake.decisions()); n != 0 {
		t.Errorf("Decide called %d times for an auditor", n)
	}
}

func TestUIApprovalsDisabled(t *testing.T) {
	f := newApprovalsFixture(t, false)
	c := f.browser(t)
	f.perms.Store([]string{players.PermAuditor, PermApprover})
	_, body := f.loginAt(t, c, "/ui/")
	if strings.Contains(body, `id="nav-approvals"`) {
		t.Error("the Approvals link is shown without approvals")
	}
	if resp, _ := get(t, c, f.srv.URL+"/ui/approvals"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("approvals without a broker: got %d; want 404", resp.StatusCode)
	}
}

func TestUIApprovalsDecide(t *testing.T) {
	f := newApprovalsFixture(t, true)
	c := f.browser(t)
	const cmdPath = "/ui/approvals/01JPENDINGCMD000000000000A"
	_, body := f.loginAt(t, c, cmdPath)
	tok := csrfToken(t, body)

	// Refused without a valid token or from another origin; Decide is
	// never reached.
	for name, tc := range map[string]struct {
		form   url.Values
		origin string
	}{
		"no token":     {url.Values{"reason": {"ok"}}, ""},
		"wrong token":  {url.Values{"csrf": {"wrong"}, "reason": {"ok"}}, ""},
		"other origin": {url.Values{"csrf": {tok}}, "http://evil.example"},
	} {
		if resp := postForm(t, c, f.srv.URL+cmdPath+"/approve", tc.form, tc.origin); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: got %d; want 403", name, resp.StatusCode)
		}
	}
	if n := len(f.fake.decisions()); n != 0 {
		t.Fatalf("Decide called %d times without a valid token", n)
	}
	// Logged out: refused too.
	anon := f.browser(t)
	if resp := postForm(t, anon, f.srv.URL+cmdPath+"/approve", url.Values{"csrf": {tok}}, ""); resp.StatusCode != http.StatusForbidden {
		t.Errorf("logged out: got %d; want 403", resp.StatusCode)
	}

	// Approve with the token: Decide gets the logged-in identity.
	resp := postForm(t, c, f.srv.URL+cmdPath+"/approve", url.Values{"csrf": {tok}, "reason": {"  planned change  "}}, f.srv.URL)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != cmdPath {
		t.Fatalf("approve: got %d to %q; want 303 to %s", resp.StatusCode, resp.Header.Get("Location"), cmdPath)
	}
	calls := f.fake.decisions()
	if len(calls) != 1 || calls[0].ID != "01JPENDINGCMD000000000000A" || calls[0].Approver.Username != devUser ||
		!calls[0].Approve || calls[0].Reason != "planned change" {
		t.Fatalf("Decide calls %+v; want one approval by %s with the reason", calls, devUser)
	}
	_, body = get(t, c, f.srv.URL+cmdPath)
	if !strings.Contains(body, "Your approval is recorded.") || !strings.Contains(body, "flash-ok") {
		t.Errorf("no confirmation after approving:\n%s", body)
	}
	if strings.Contains(body, `id="approve"`) {
		t.Error("the approved request still offers a decision")
	}
	// The flash is shown once.
	if _, body = get(t, c, f.srv.URL+cmdPath); strings.Contains(body, "Your approval is recorded.") {
		t.Error("the flash message is shown again")
	}

	// Deny (following the redirect like a browser).
	accessPath := "/ui/approvals/01JPENDINGACCESS0000000000"
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+accessPath+"/deny",
		strings.NewReader(url.Values{"csrf": {tok}, "reason": {"not now"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	r2, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusOK || r2.Request.URL.Path != accessPath {
		t.Errorf("deny: ended at %s with %d", r2.Request.URL, r2.StatusCode)
	}
	calls = f.fake.decisions()
	if len(calls) != 2 || calls[1].Approve || calls[1].Approver.Username != devUser || calls[1].Reason != "not now" {
		t.Fatalf("Decide calls %+v; want a denial by %s", calls, devUser)
	}

	// A too long reason is refused before Decide.
	resp = postForm(t, c, f.srv.URL+"/ui/approvals/01JPENDINGSELF00000000000A/approve",
		url.Values{"csrf": {tok}, "reason": {strings.Repeat("x", maxReasonLen+1)}}, "")
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("long reason: got %d; want 303", resp.StatusCode)
	}
	if _, body := get(t, c, f.srv.URL+"/ui/approvals/01JPENDINGSELF00000000000A"); !strings.Contains(body, "too long") {
		t.Error("no error for a too long reason")
	}
	if n := len(f.fake.decisions()); n != 2 {
		t.Errorf("Decide called for a too long reason")
	}
}

// internalFailureID is a request whose decision fails inside the store.
const internalFailureID = "01JPENDINGFAIL00000000000A"

func TestUIApprovalsDecideError(t *testing.T) {
	f := newApprovalsFixture(t, true)
	c := f.browser(t)
	const selfPath = "/ui/approvals/01JPENDINGSELF00000000000A"
	now := time.Now()
	f.fake.add(state.Approval{ID: internalFailureID, Kind: state.ApprovalCommand, Status: state.ApprovalPending,
		Requester: "bob@example.com", Target: "web-2", Login: "root", Command: "uptime", Rule: "uptime", Required: 1,
		Created: now.Add(-10 * time.Second), Expires: now.Add(time.Hour)})
	_, body := f.loginAt(t, c, selfPath)
	tok := csrfToken(t, body)

	for _, tc := range []struct{ path, want string }{
		{selfPath, "you cannot decide your own request"},
		{"/ui/approvals/01JAPPROVEDOLD0000000000AA", "approval already decided"},
		// A failure that is not the approver's to read: a generic message,
		// nothing of the store's error.
		{"/ui/approvals/" + internalFailureID, "the decision could not be recorded; try again"},
	} {
		resp := postForm(t, c, f.srv.URL+tc.path+"/approve", url.Values{"csrf": {tok}}, "")
		if resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%s: got %d; want 303", tc.path, resp.StatusCode)
		}
		resp, body := get(t, c, f.srv.URL+tc.path)
		if resp.StatusCode != http.StatusOK || !strings.Contains(body, tc.want) || !strings.Contains(body, "flash-error") {
			t.Errorf("%s: got %d; want the page with %q shown as an error", tc.path, resp.StatusCode, tc.want)
		}
		if strings.Contains(body, "disk I/O") || strings.Contains(body, "state.db") {
			t.Errorf("%s: the page shows the store's error", tc.path)
		}
	}
	if n := len(f.fake.decisions()); n != 3 {
		t.Errorf("Decide called %d times; want 3", n)
	}
	if a, _ := f.fake.Get(context.Background(), "01JPENDINGSELF00000000000A"); a.Status != state.ApprovalPending {
		t.Errorf("self-approval changed the request to %s", a.Status)
	}
}

// browser returns an HTTP client with its own cookie jar.
func (f *approvalsFixture) browser(t *testing.T) *http.Client {
	t.Helper()
	return (&uiFixture{}).browser(t)
}
