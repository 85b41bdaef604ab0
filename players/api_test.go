package players

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/state"
)

// apiFixture is the sessions API over a real recorder, state store and
// file store, served on 127.0.0.1.
type apiFixture struct {
	env   *playtest.Env
	users *playtest.Users
	srv   *httptest.Server
	reg   *prometheus.Registry
}

// Users of the fixture and their permissions.
const (
	auditor   = "audra@example.com"
	admin     = "adam@example.com"
	developer = "dev@example.com"
	moderator = "mo@example.com"
)

func newAPIFixture(t *testing.T) *apiFixture {
	t.Helper()
	env := playtest.New(t)
	users := playtest.NewUsers(t)
	reg := prometheus.NewRegistry()
	api := NewAPI(APIOptions{
		Metrics: reg,
		Auth:    &certs.APIAuth{Authority: users.Authority},
		Permissions: func(id certs.Identity) []string {
			switch id.Username {
			case auditor:
				return []string{PermAuditor}
			case admin:
				return []string{"approver", PermAdmin}
			case developer:
				return []string{"approver"}
			case moderator:
				return []string{PermModerator}
			}
			return nil
		},
		State:  env.State,
		Store:  env.Store,
		Follow: env.Recorder.Follow,
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/sessions", api)
	mux.Handle("/v1/sessions/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return &apiFixture{env: env, users: users, srv: srv, reg: reg}
}

// get sends a GET of path (as written on the wire) as user ("" sends no
// credentials).
func (f *apiFixture) get(t *testing.T, user, path string, hdr ...string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, f.srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Opaque keeps the path exactly as written (dot segments, escapes).
	req.URL.Opaque = path
	if i := strings.IndexByte(path, '?'); i >= 0 {
		req.URL.Opaque, req.URL.RawQuery = path[:i], path[i+1:]
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if user != "" {
		f.users.Sign(t, req, user)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return b
}

func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var e struct{ Error, Code string }
	if err := json.Unmarshal(readAll(t, resp), &e); err != nil || e.Error == "" {
		t.Fatalf("error body is not {error, code}: %v", err)
	}
	return e.Code
}

func TestAPIAuthMatrix(t *testing.T) {
	f := newAPIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "up 3 days\r\n"})
	paths := []string{"/v1/sessions", "/v1/sessions/" + id, "/v1/sessions/" + id + "/cast"}
	tests := []struct {
		name, user string
		want       []int // per path
		wantCode   string
	}{
		{name: "no auth", want: []int{401, 401, 401}, wantCode: certs.CodeAuthRequired},
		// Without the auditor permission: one's own (none here) list, and
		// another's session does not exist.
		{name: "non-auditor", user: developer, want: []int{200, 404, 404}},
		{name: "no permissions", user: "nobody@example.com", want: []int{200, 404, 404}},
		{name: "the session's own user", user: "alice@example.com", want: []int{200, 200, 200}},
		{name: "auditor", user: auditor, want: []int{200, 200, 200}},
		{name: "admin", user: admin, want: []int{200, 200, 200}},
	}
	for _, tt := range tests {
		for i, p := range paths {
			t.Run(tt.name+" "+p, func(t *testing.T) {
				resp := f.get(t, tt.user, p)
				if resp.StatusCode != tt.want[i] {
					t.Fatalf("got %d; want %d", resp.StatusCode, tt.want[i])
				}
				if tt.wantCode != "" {
					if got := errorCode(t, resp); got != tt.wantCode {
						t.Errorf("got code %q; want %q", got, tt.wantCode)
					}
				}
				if i == 0 && resp.StatusCode == 200 {
					var rows []state.Session
					if err := json.Unmarshal(readAll(t, resp), &rows); err != nil {
						t.Fatal(err)
					}
					mine := tt.user == "alice@example.com" || tt.user == auditor || tt.user == admin
					if (len(rows) == 1) != mine {
						t.Errorf("%s lists %d sessions", tt.user, len(rows))
					}
				}
			})
		}
	}
	// Asking for another user's sessions by name needs the auditor permission.
	if resp := f.get(t, developer, "/v1/sessions?user=alice@example.com"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("non-auditor listing alice's sessions: %d; want 403", resp.StatusCode)
	}
	resp := f.get(t, "", "/v1/sessions")
	if !strings.Contains(resp.Header.Get("WWW-Authenticate"), certs.APIAuthScheme) {
		t.Errorf("401 without a WWW-Authenticate naming %s", certs.APIAuthScheme)
	}
	want := `
		# HELP postern_sessions_api_requests_total Requests to the sessions API, by route (list, show, cast, follow, search) and HTTP status.
		# TYPE postern_sessions_api_requests_total counter
		postern_sessions_api_requests_total{code="200",route="cast"} 3
		postern_sessions_api_requests_total{code="200",route="list"} 5
		postern_sessions_api_requests_total{code="200",route="show"} 3
		postern_sessions_api_requests_total{code="401",route="cast"} 1
		postern_sessions_api_requests_total{code="401",route="list"} 2
		postern_sessions_api_requests_total{code="401",route="show"} 1
		postern_sessions_api_requests_total{code="403",route="list"} 1
		postern_sessions_api_requests_total{code="404",route="cast"} 2
		postern_sessions_api_requests_total{code="404",route="show"} 2
	`
	if err := promtest.GatherAndCompare(f.reg, strings.NewReader(want), "postern_sessions_api_requests_total"); err != nil {
		t.Error(err)
	}
}

// TestAPIModeratorSeesRunningSessions: the moderator permission lists and
// follows others' running sessions (to moderate them), never their
// finished recordings.
func TestAPIModeratorSeesRunningSessions(t *testing.T) {
	f := newAPIFixture(t)
	done := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "up\r\n"})
	live := f.env.Start(t, "alice@example.com", "web-1", "top")
	playtest.Play(t, live, playtest.Step{Output: "live\r\n"})
	var rows []state.Session
	resp := f.get(t, moderator, "/v1/sessions?status=running")
	if resp.StatusCode != 200 || json.Unmarshal(readAll(t, resp), &rows) != nil || len(rows) != 1 || rows[0].ID != live.ID() {
		t.Fatalf("moderator listing running sessions: %d %+v", resp.StatusCode, rows)
	}
	resp = f.get(t, moderator, "/v1/sessions")
	if resp.StatusCode != 200 || json.Unmarshal(readAll(t, resp), &rows) != nil || len(rows) != 0 {
		t.Errorf("moderator listing every session: %d %+v; want only their own (none)", resp.StatusCode, rows)
	}
	if resp := f.get(t, moderator, "/v1/sessions/"+live.ID()); resp.StatusCode != 200 {
		t.Errorf("moderator showing a running session: %d", resp.StatusCode)
	}
	if resp := f.get(t, moderator, "/v1/sessions/"+done+"/cast"); resp.StatusCode != 404 {
		t.Errorf("moderator reading a finished recording: %d; want 404", resp.StatusCode)
	}
	playtest.Finish(t, live)
}

func TestAPIBadIDs(t *testing.T) {
	f := newAPIFixture(t)
	for _, p := range []string{
		"/v1/sessions/..%2F..%2Fetc%2Fpasswd",
		"/v1/sessions/%2e%2e",
		"/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FA",   // 25 characters
		"/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAVV", // 27
		"/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAU",  // U is not Crockford base32
		"/v1/sessions/81ARZ3NDEKTSV4RRFFQ69G5FAV",  // time overflows
		"/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV/meta",
		"/v1/sessions/01ARZ3NDEKTSV4RRFFQ69G5FAV/cast/x",
		"/v1/sessions/2026%2F01%2F01%2FX.cast",
	} {
		t.Run(p, func(t *testing.T) {
			// Bad ids are refused before authentication.
			resp := f.get(t, "", p)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("got %d; want 400", resp.StatusCode)
			}
			if got := errorCode(t, resp); got != CodeBadID {
				t.Errorf("got code %q; want %q", got, CodeBadID)
			}
		})
	}
	// A well-formed id that does not exist is a 404 for an auditor.
	resp := f.get(t, auditor, "/v1/sessions/01arz3ndektsv4rrffq69g5fav")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("unknown id: got %d; want 404", resp.StatusCode)
	}
}

func TestAPIListFilters(t *testing.T) {
	f := newAPIFixture(t)
	a := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "x"})
	b := f.env.Record(t, "bob@example.com", "db-1", "psql -c 'select 1'", playtest.Step{Output: "y"})
	tests := []struct {
		query string
		want  []string
	}{
		{query: "", want: []string{b, a}},
		{query: "?user=alice@example.com", want: []string{a}},
		{query: "?target=db-1", want: []string{b}},
		{query: "?q=select", want: []string{b}},
		{query: "?status=running", want: nil},
		{query: "?since=1h", want: []string{b, a}},
		{query: "?until=2000-01-01T00:00:00Z", want: nil},
		{query: "?limit=1", want: []string{b}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			resp := f.get(t, auditor, "/v1/sessions"+tt.query)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d; want 200", resp.StatusCode)
			}
			var rows []state.Session
			if err := json.Unmarshal(readAll(t, resp), &rows); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range rows {
				got = append(got, r.ID)
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
	for _, q := range []string{"?limit=0", "?limit=x", "?since=yesterday"} {
		if resp := f.get(t, auditor, "/v1/sessions"+q); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: got %d; want 400", q, resp.StatusCode)
		}
	}
}

func TestAPIShowIntegrity(t *testing.T) {
	f := newAPIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime", playtest.Step{Output: "up 3 days\r\n"})
	show := func(q string) SessionDetail {
		t.Helper()
		resp := f.get(t, auditor, "/v1/sessions/"+id+q)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("got %d; want 200", resp.StatusCode)
		}
		var d SessionDetail
		if err := json.Unmarshal(readAll(t, resp), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := show("")
	if d.ID != id || d.Identity != "alice@example.com" || d.Integrity.Status != IntegrityOK || d.Integrity.Checked != "seal+size" {
		t.Fatalf("got %+v; want the session with integrity ok (seal+size)", d)
	}
	if d := show("?verify=full"); d.Integrity.Status != IntegrityOK || d.Integrity.Checked != "sha256" {
		t.Errorf("full verify: got %+v; want ok (sha256)", d.Integrity)
	}
	// Tamper with the stored object, keeping its size.
	path := filepath.Join(f.env.Store.Root(), filepath.FromSlash(d.Object))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(b, []byte("3 days"), []byte("9 days"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	if d := show(""); d.Integrity.Status != IntegrityOK {
		t.Errorf("cheap check after a same-size edit: got %+v; want ok (size and seal agree)", d.Integrity)
	}
	if d := show("?verify=full"); d.Integrity.Status != IntegrityMismatch {
		t.Errorf("full verify after tampering: got %+v; want mismatch", d.Integrity)
	}
	if err := os.WriteFile(path, append(b, b...), 0o600); err != nil {
		t.Fatal(err)
	}
	if d := show(""); d.Integrity.Status != IntegrityMismatch {
		t.Errorf("cheap check after a size change: got %+v; want mismatch", d.Integrity)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if d := show(""); d.Integrity.Status != IntegrityMissing {
		t.Errorf("after removal: got %+v; want missing", d.Integrity)
	}
}

func TestAPICast(t *testing.T) {
	f := newAPIFixture(t)
	id := f.env.Record(t, "alice@example.com", "web-1", "uptime",
		playtest.Step{Output: "up 3 days\r\n"}, playtest.Step{Marker: "command: uptime"})
	resp := f.get(t, auditor, "/v1/sessions/"+id+"/cast")
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ContentTypeCast {
		t.Fatalf("got %d %s; want 200 %s", resp.StatusCode, resp.Header.Get("Content-Type"), ContentTypeCast)
	}
	cast := readAll(t, resp)
	p, err := New(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(cast)), nil }, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p.Seek(&out, time.Hour)
	if out.String() != "up 3 days\r\n" || len(p.Markers()) < 1 || p.Markers()[0].Label != "command: uptime" {
		t.Errorf("cast replays %q with markers %v", out.String(), p.Markers())
	}

	resp = f.get(t, auditor, "/v1/sessions/"+id+"/cast", "Range", "bytes=0-9")
	if resp.StatusCode != http.StatusPartialContent {
		t.Fatalf("range: got %d; want 206", resp.StatusCode)
	}
	if got := readAll(t, resp); !bytes.Equal(got, cast[:10]) {
		t.Errorf("range: got %q; want %q", got, cast[:10])
	}
	resp = f.get(t, auditor, "/v1/sessions/"+id+"/cast", "Range", "bytes=10-")
	if got := readAll(t, resp); resp.StatusCode != http.StatusPartialContent || !bytes.Equal(got, cast[10:]) {
		t.Errorf("open range: got %d %q; want 206 %q", resp.StatusCode, got, cast[10:])
	}
}

func TestAPIFollowLive(t *testing.T) {
	f := newAPIFixture(t)
	s := f.env.Start(t, "alice@example.com", "web-1", "")
	playtest.Play(t, s, playtest.Step{Output: "first line\r\n"})

	// Without follow, a running session's cast is refused.
	if resp := f.get(t, auditor, "/v1/sessions/"+s.ID()+"/cast"); resp.StatusCode != http.StatusConflict {
		t.Errorf("running without follow: got %d; want 409", resp.StatusCode)
	}

	resp := f.get(t, auditor, "/v1/sessions/"+s.ID()+"/cast?follow=1")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("follow: got %d; want 200", resp.StatusCode)
	}
	events := make(chan string, 16)
	done := make(chan error, 1)
	go func() {
		p, err := New(func() (io.ReadCloser, error) { return resp.Body, nil }, Options{})
		if err != nil {
			done <- err
			return
		}
		for {
			fr, err := p.Next()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			if fr.Event.Code == "o" {
				events <- fr.Event.Data
			}
		}
	}()
	waitFor := func(want string) {
		t.Helper()
		select {
		case got := <-events:
			if got != want {
				t.Fatalf("followed %q; want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %q", want)
		}
	}
	waitFor("first line\r\n")
	playtest.Play(t, s, playtest.Step{Output: "second line\r\n"})
	waitFor("second line\r\n")
	playtest.Finish(t, s)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("follow stream: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the follow stream did not end when the session finished")
	}

	// Following a finished session serves the stored cast.
	resp = f.get(t, auditor, "/v1/sessions/"+s.ID()+"/cast?follow=1")
	if b := readAll(t, resp); resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte("second line")) {
		t.Errorf("follow after finish: got %d %q", resp.StatusCode, b)
	}
}

func TestAPIMethodNotAllowed(t *testing.T) {
	f := newAPIFixture(t)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodDelete, f.srv.URL+"/v1/sessions", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("got %d; want 405", resp.StatusCode)
	}
}

func FuzzNormalizeID(f *testing.F) {
	f.Add("01ARZ3NDEKTSV4RRFFQ69G5FAV")
	f.Add("../../etc/passwd")
	f.Add("01arz3ndektsv4rrffq69g5fav")
	f.Fuzz(func(t *testing.T, id string) {
		n, ok := NormalizeID(id)
		if !ok {
			return
		}
		if len(n) != 26 || strings.ContainsAny(n, "./\\%ILOU") || strings.ToUpper(id) != n {
			t.Fatalf("NormalizeID(%q) = %q", id, n)
		}
	})
}

func TestParseAge(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		bad  bool
	}{
		{in: "24h", want: 24 * time.Hour},
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "1d12h", want: 36 * time.Hour},
		{in: "90m", want: 90 * time.Minute},
		{in: "-1h", bad: true},
		{in: "d", bad: true},
		{in: "yesterday", bad: true},
		{in: "99999999d", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseAge(tt.in)
		if (err != nil) != tt.bad || (!tt.bad && got != tt.want) {
			t.Errorf("ParseAge(%q) = %v, %v; want %v (error %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}

func FuzzParseAge(f *testing.F) {
	for _, s := range []string{"24h", "7d", "1d12h", "-1h", "d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, err := ParseAge(s); err == nil && d < 0 {
			t.Fatalf("ParseAge(%q) = %v", s, d)
		}
	})
}
