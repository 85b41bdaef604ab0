package players

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/state"
)

func TestAPISearch(t *testing.T) {
	f := newAPIFixture(t)
	web := f.env.Record(t, "alice@example.com", "web-1", "sudo cat /etc/sudoers",
		playtest.Step{Output: "root ALL=(ALL) ALL\r\n"})
	db := f.env.Record(t, "bob@example.com", "db-1", "psql", playtest.Step{Output: "DROP TABLE accounts;\r\nDROP TABLE\r\n"})
	f.env.Index(t, web)
	f.env.Index(t, db)

	search := func(t *testing.T, user string, q url.Values) *http.Response {
		t.Helper()
		return f.get(t, user, "/v1/sessions/search?"+q.Encode())
	}
	t.Run("auditor finds the command", func(t *testing.T) {
		resp := search(t, auditor, url.Values{"q": {"/etc/sudoers"}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		var hits []SearchHit
		if err := json.Unmarshal(readAll(t, resp), &hits); err != nil {
			t.Fatal(err)
		}
		if len(hits) != 1 || hits[0].Session != web || hits[0].Kind != "command" || hits[0].Identity != "alice@example.com" ||
			hits[0].Offset != 0.001 || len(hits[0].Matches) != 2 || hits[0].Text[hits[0].Matches[0][0]:hits[0].Matches[0][1]] != "etc" {
			t.Errorf("hits %+v", hits)
		}
	})
	t.Run("filters", func(t *testing.T) {
		for _, tt := range []struct {
			q    url.Values
			want int
		}{
			{url.Values{"q": {"drop table"}}, 1},
			{url.Values{"q": {"drop table"}, "identity": {"alice@example.com"}}, 0},
			{url.Values{"q": {"drop table"}, "user": {"bob@example.com"}, "target": {"db-1"}}, 1},
			{url.Values{"q": {"drop"}, "since": {"1h"}}, 1},
			{url.Values{"q": {"drop"}, "until": {time.Now().Add(-time.Hour).Format(time.RFC3339)}}, 0},
			{url.Values{"q": {"ALL"}, "limit": {"1"}}, 1},
		} {
			var hits []SearchHit
			resp := search(t, admin, tt.q)
			if err := json.Unmarshal(readAll(t, resp), &hits); err != nil || len(hits) != tt.want {
				t.Errorf("%v: %d hits (%v); want %d", tt.q, len(hits), err, tt.want)
			}
		}
	})
	t.Run("permissions as replay", func(t *testing.T) {
		if resp := search(t, "", url.Values{"q": {"sudoers"}}); resp.StatusCode != http.StatusUnauthorized || errorCode(t, resp) != certs.CodeAuthRequired {
			t.Errorf("no credentials: status %d", resp.StatusCode)
		}
		// Without the auditor permission, people search their own
		// recordings only, as they replay only their own.
		own := f.env.Record(t, developer, "web-1", "grep sudoers /etc/group", playtest.Step{Output: "sudo:x:27:\r\n"})
		f.env.Index(t, own)
		for _, user := range []string{developer, "nobody@example.com"} {
			resp := search(t, user, url.Values{"q": {"sudoers"}})
			var hits []SearchHit
			if err := json.Unmarshal(readAll(t, resp), &hits); err != nil || resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: status %d, %v", user, resp.StatusCode, err)
			}
			for _, h := range hits {
				if h.Identity != user {
					t.Errorf("%s found %s's session %s", user, h.Identity, h.Session)
				}
			}
			if user == developer && (len(hits) != 1 || hits[0].Session != own) {
				t.Errorf("%s does not find their own session: %+v", user, hits)
			}
			if resp := search(t, user, url.Values{"q": {"sudoers"}, "identity": {"alice@example.com"}}); resp.StatusCode != http.StatusForbidden ||
				errorCode(t, resp) != CodeForbidden {
				t.Errorf("%s searched alice's sessions: status %d", user, resp.StatusCode)
			}
		}
	})
	t.Run("bad queries", func(t *testing.T) {
		for _, q := range []url.Values{
			{},
			{"q": {"  "}},
			{"q": {`"unclosed`}},
			{"q": {"*** ---"}},
			{"q": {strings.Repeat("w ", 20)}},
			{"q": {strings.Repeat("x", 600)}},
			{"q": {"x"}, "limit": {"0"}},
			{"q": {"x"}, "limit": {"100000"}},
			{"q": {"x"}, "since": {"yesterday"}},
		} {
			resp := search(t, auditor, q)
			if resp.StatusCode != http.StatusBadRequest || errorCode(t, resp) != CodeBadQuery {
				t.Errorf("%v: status %d; want 400 bad_query", q, resp.StatusCode)
			}
		}
	})
	t.Run("hostile text finds nothing and breaks nothing", func(t *testing.T) {
		for _, q := range []string{`x'); DROP TABLE sessions; --`, `NEAR("a" "b", 3)`, `col:val OR ^x`, "\x00\xff", `'':* & !`} {
			resp := search(t, auditor, url.Values{"q": {q}})
			if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusBadRequest {
				t.Errorf("%q: status %d", q, resp.StatusCode)
			}
		}
		if rows, err := f.env.State.ListSessions(t.Context(), stateFilterAll()); err != nil || len(rows) != 3 {
			t.Errorf("sessions after hostile searches: %d, %v", len(rows), err)
		}
	})
}

func TestAPISearchDisabled(t *testing.T) {
	env := playtest.New(t)
	users := playtest.NewUsers(t)
	api := NewAPI(APIOptions{Auth: &certs.APIAuth{Authority: users.Authority}, State: env.State, Store: env.Store,
		Permissions: func(certs.Identity) []string { return []string{PermAuditor} }, SearchDisabled: true})
	srv := httptest.NewServer(api)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/v1/sessions/search?q=x", nil)
	users.Sign(t, req, auditor)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || errorCode(t, resp) != CodeSearchDisabled {
		t.Errorf("status %d; want 404 search_disabled", resp.StatusCode)
	}
}

func stateFilterAll() state.SessionFilter { return state.SessionFilter{} }
