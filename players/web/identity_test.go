package web

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/state"
)

// webSessionFor returns a browser logged in as id: a web session in the
// state store, as the login callback makes (the development issuer gives
// every user the subject of their username, so two subjects sharing a
// username cannot log in through it).
func (f *uiFixture) webSessionFor(t *testing.T, id certs.Identity) *http.Client {
	t.Helper()
	token, err := randomToken()
	if err != nil {
		t.Fatal(err)
	}
	idJSON, _ := json.Marshal(id)
	now := time.Now()
	if err := f.env.State.PutWebSession(context.Background(), state.WebSession{ID: sessionID(token), Issuer: id.Issuer,
		Subject: id.Subject, Identity: string(idJSON), CSRF: "csrf-" + id.Subject, Created: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(f.srv.URL)
	jar.SetCookies(u, []*http.Cookie{{Name: f.ui.sessionCookieName(), Value: token, Path: "/"}})
	return &http.Client{Jar: jar, Timeout: 30 * time.Second}
}

// TestUIOwnershipIsIdentityKey: in the web UI, two identities with one
// username (two subjects of one issuer, or two issuers) replay only their
// own recordings and watch nothing of each other's; the page says who is
// logged in with the issuer.
func TestUIOwnershipIsIdentityKey(t *testing.T) {
	f := newUIFixture(t)
	f.auditor.Store(false)
	people := []certs.Identity{
		{Issuer: "dev", Subject: "a1", Username: "alice", Kind: certs.KindHuman},
		{Issuer: "dev", Subject: "a2", Username: "alice", Kind: certs.KindHuman},
		{Issuer: "corp", Subject: "a1", Username: "alice", Kind: certs.KindHuman},
	}
	rec := make([]string, len(people))
	for i, id := range people {
		rec[i] = f.env.RecordAs(t, id, "web-1", "uptime", playtest.Step{Output: "output of " + id.Key() + "\r\n"})
	}
	live := f.env.StartAs(t, people[0], "web-1", "top")
	playtest.Play(t, live, playtest.Step{Output: "live\r\n"})
	defer playtest.Finish(t, live)
	for i, id := range people {
		c := f.webSessionFor(t, id)
		resp, body := get(t, c, f.srv.URL+"/ui/")
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "logged in as "+id.Display()) {
			t.Errorf("%s: /ui/ got %d; want 403 naming %q", id.Key(), resp.StatusCode, id.Display())
		}
		for j := range people {
			want := http.StatusNotFound
			if i == j {
				want = http.StatusOK
			}
			resp, body := get(t, c, f.srv.URL+"/ui/sessions/"+rec[j]+"/cast")
			if resp.StatusCode != want {
				t.Errorf("%s replaying %s's recording: %d; want %d", id.Key(), people[j].Key(), resp.StatusCode, want)
			}
			if want == http.StatusOK && !strings.Contains(body, "output of "+id.Key()) {
				t.Errorf("%s's own cast lacks its output", id.Key())
			}
		}
		if i != 0 {
			for _, p := range []string{"/ui/sessions/" + live.ID() + "/live", "/ui/sessions/" + live.ID() + "/cast"} {
				if resp, _ := get(t, c, f.srv.URL+p); resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s watching %s's running session at %s: %d; want 403 or 404", id.Key(), people[0].Key(), p, resp.StatusCode)
				}
			}
		}
	}
}
