package web

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/players/internal/playtest"
)

// recordNeedle records a session whose screen shows "first screen", then
// (cleared) the needle five seconds in, then "last screen" five seconds
// later, and indexes it.
func recordNeedle(t *testing.T, f *uiFixture, needle string) string {
	t.Helper()
	id := f.env.Record(t, "alice@example.com", "web-1", "",
		playtest.Step{Output: "first screen\r\n"},
		playtest.Step{Wait: 5 * time.Second, Output: "\x1b[2J\x1b[H$ grep " + needle + " /etc/sudoers\r\n" + needle + " ALL=(ALL) NOPASSWD: ALL\r\n"},
		playtest.Step{Wait: 5 * time.Second, Output: "\x1b[2J\x1b[Hlast screen\r\n"})
	f.env.Index(t, id)
	return id
}

func TestUISearch(t *testing.T) {
	f := newUIFixture(t)
	id := recordNeedle(t, f, "deploybot")
	other := f.env.Record(t, "bob@example.com", "db-1", "psql", playtest.Step{Output: "DROP TABLE accounts;\r\n"})
	f.env.Index(t, other)
	c := f.browser(t)
	body := f.login(t, c)
	if !strings.Contains(body, `action="/ui/search"`) {
		t.Error("the sessions page has no search box")
	}

	resp, body := get(t, c, f.srv.URL+"/ui/search?q="+url.QueryEscape("deploybot /etc/sudoers"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	link := `href="/ui/sessions/` + id + `?t=5.0` // 5 s in, plus the time the test took
	if !strings.Contains(body, link) || !strings.Contains(body, "<mark>deploybot</mark>") || strings.Contains(body, "accounts") {
		t.Errorf("search page lacks the hit %s:\n%s", link, body)
	}
	resp, body = get(t, c, f.srv.URL+"/ui/sessions/"+id+"?t=5.000")
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `data-start-at="5.000"`) {
		t.Errorf("the replay page does not start at the hit: %d\n%s", resp.StatusCode, body)
	}
	for _, bad := range []string{"-1", "NaN", "1e99", "5;alert(1)", strings.Repeat("9", 20)} {
		_, body = get(t, c, f.srv.URL+"/ui/sessions/"+id+"?t="+url.QueryEscape(bad))
		if strings.Contains(body, "data-start-at") {
			t.Errorf("t=%q became a start position", bad)
		}
	}
	_, body = get(t, c, f.srv.URL+"/ui/search?q=kubectl")
	if !strings.Contains(body, "Nothing matches.") {
		t.Errorf("no-hit search page:\n%s", body)
	}
	resp, body = get(t, c, f.srv.URL+"/ui/search?q="+url.QueryEscape(`"unclosed`))
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "quote is not closed") {
		t.Errorf("bad query: %d\n%s", resp.StatusCode, body)
	}
	resp, body = get(t, c, f.srv.URL+"/ui/search?q="+url.QueryEscape(`<script>alert(1)</script>`))
	if resp.StatusCode != http.StatusOK || strings.Contains(body, "<script>alert") {
		t.Errorf("the query is not escaped: %d", resp.StatusCode)
	}

	// The same permission as replay.
	f.auditor.Store(false)
	resp, body = get(t, c, f.srv.URL+"/ui/search?q=deploybot")
	if resp.StatusCode != http.StatusForbidden || strings.Contains(body, "deploybot ALL") {
		t.Errorf("non-auditor search: %d", resp.StatusCode)
	}
	_, body = get(t, c, f.srv.URL+"/ui/approvals")
	if strings.Contains(body, `class="searchbox"`) {
		t.Error("a non-auditor is offered the search box")
	}
}

// TestBrowserSearch types a search into the search box in chromium, opens
// the hit and checks that asciinema-player shows the recording at the
// hit's moment.
func TestBrowserSearch(t *testing.T) {
	node, chromium := browserPrereqs(t)
	f := newUIFixture(t)
	if !f.ui.AssetsBuilt() {
		t.Fatal("asciinema-player assets were not embedded: run make web before go test")
	}
	recordNeedle(t, f, "deploybot")
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join("e2e", "search.mjs"), f.srv.URL, "deploybot",
		"deploybot ALL=(ALL) NOPASSWD", "last screen", filepath.Join(dir, "search.png"), filepath.Join(dir, "chromium-profile"))
	cmd.Env = append(os.Environ(), "CHROMIUM="+chromium)
	out, err := cmd.CombinedOutput()
	t.Logf("search.mjs output:\n%s", out)
	if err != nil {
		t.Fatalf("browser search test failed: %v", err)
	}
}
