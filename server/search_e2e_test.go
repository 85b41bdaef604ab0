package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/state"
)

// searchEnv is a whole postern with an sshd target web-1 where alice may
// log in and audit; bob may log in only.
type searchEnv struct {
	svc   *posterntest.Service
	alice *posterntest.User
	bob   *posterntest.User
}

func newSearchEnv(t *testing.T) *searchEnv {
	t.Helper()
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	_, web := posterntest.SSHD(t, auth, "web-1")
	login := testLogin(t)
	cfg := &config.Config{
		DataDir: dataDir, PublicURL: "https://bastion.test", Targets: []config.Target{web},
		Roles: []config.Role{
			{Name: "ops", Match: config.RoleMatch{Users: []string{"alice"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Record: "required", Permissions: []string{"auditor"}},
			{Name: "dev", Match: config.RoleMatch{Users: []string{"bob"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Record: "required"},
		},
	}
	e := &searchEnv{svc: posterntest.Start(t, cfg)}
	e.alice = e.svc.User(alice, login)
	e.bob = e.svc.User(certs.Identity{Issuer: "https://idp.test", Subject: "bob-sub", Username: "bob", Kind: certs.KindHuman}, login)
	return e
}

// search asks GET /v1/sessions/search as u.
func (e *searchEnv) search(t *testing.T, u *posterntest.User, q url.Values) (int, []players.SearchHit) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.svc.HTTPURL+"/v1/sessions/search?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(u.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.SignAPIRequest(req, u.Cert, signer, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hits []players.SearchHit
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&hits); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, hits
}

// waitIndexed waits until n sessions are indexed: the indexer runs in the
// background after each seal, and the store is where it reports.
func (e *searchEnv) waitIndexed(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.svc.State.SearchStats(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Sessions >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions indexed after 30s; want %d", st.Sessions, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSearchEndToEnd records an exec session, an interactive session with
// a password prompt and an SFTP session through the stock OpenSSH client,
// and finds each piece through the search API, with replay permissions.
func TestSearchEndToEnd(t *testing.T) {
	testutil.Need(t, "sftp")
	e := newSearchEnv(t)

	r := e.alice.SSH(nil, nil, "web-1", `echo exec-needle-7; printf '\033[31mred-needle\033[0m\n'`)
	if r.Code != 0 {
		t.Fatalf("exec: %d %s", r.Code, r.Stderr)
	}

	c := e.alice.PTY(t, 100, 30, "-tt", "web-1")
	c.Expect(`[#$] `) // the shell's prompt: typing starts once the session is recorded
	c.Send("PS1='$ '; echo typed-needle-$((4+5))\r")
	c.Expect(`typed-needle-9`)
	// The prompt is spelled differently on the command line, so that the
	// echo of the typed command cannot pass for it: the password is typed
	// only once read(1) shows the prompt with echo off.
	c.Send(`w=word; read -s -p "Pass$w: " pw; echo; echo read-$?` + "\r")
	c.Expect(`Password: `)
	c.Send("hunter2-secret\r")
	c.Expect(`read-0`)
	c.Send("exit\r")
	if code, out := c.Wait(); code != 0 {
		t.Fatalf("interactive session: %d %q", code, out)
	}

	dir := t.TempDir()
	local := filepath.Join(dir, "payload.txt")
	if err := os.WriteFile(local, []byte("data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	remote := filepath.Join(dir, "uploaded-needle.txt") // the target runs on this machine
	batch := filepath.Join(dir, "batch")
	if err := os.WriteFile(batch, []byte("put "+local+" "+remote+"\nrm "+remote+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if r, err := testutil.Run(nil, nil, "sftp", "-F", e.alice.SSHConfig, "-b", batch, "web-1"); err != nil || r.Code != 0 {
		t.Fatalf("sftp: %v %d %s", err, r.Code, r.Stderr)
	}
	e.svc.WaitEvents(state.EventSessionSealed, 3)
	e.waitIndexed(t, 3)

	find := func(q string) []players.SearchHit {
		t.Helper()
		code, hits := e.search(t, e.alice, url.Values{"q": {q}})
		if code != http.StatusOK {
			t.Fatalf("search %q: status %d", q, code)
		}
		return hits
	}
	kinds := func(hits []players.SearchHit) string {
		var k []string
		for _, h := range hits {
			k = append(k, h.Kind)
		}
		return strings.Join(k, ",")
	}
	if hits := find("exec-needle-7"); kinds(hits) != "command,output" || hits[0].Target != "web-1" || hits[0].Identity != "alice" {
		t.Errorf("exec command: %+v", hits)
	}
	// The command line spells the colour out ("\033[31mred-needle"): only the
	// output holds the phrase.
	if hits := find("red-needle"); kinds(hits) != "output" || !strings.Contains(hits[0].Text, "red-needle") ||
		strings.Contains(hits[0].Text, "\x1b") {
		t.Errorf("coloured output: %+v", hits)
	}
	typed := find("typed-needle")
	if !strings.Contains(kinds(typed), "input") {
		t.Errorf("typed line: %+v", typed)
	}
	for _, h := range typed {
		if h.Kind == "input" && (h.Text != "PS1='$ '; echo typed-needle-$((4+5))" || h.Offset <= 0) {
			t.Errorf("input hit %+v", h)
		}
	}
	if hits := find("hunter2-secret"); len(hits) != 0 {
		t.Errorf("the password typed at a prompt is searchable: %+v", hits)
	}
	if hits := find("uploaded-needle.txt"); kinds(hits) != "sftp,sftp" || !strings.HasPrefix(hits[0].Text, "write "+remote) ||
		hits[1].Text != "remove "+remote {
		t.Errorf("sftp operations: %+v", hits)
	}
	if hits := find("typed-needle"); len(hits) == 0 || hits[0].SessionKind != state.KindShell {
		t.Errorf("session kind of the typed hit: %+v", hits)
	}
	// bob (no auditor permission) searches his own recordings only.
	if code, hits := e.search(t, e.bob, url.Values{"q": {"exec-needle-7"}}); code != http.StatusOK || len(hits) != 0 {
		t.Errorf("bob searching alice's words: status %d, %d hits; want 200 and none", code, len(hits))
	}
	if code, _ := e.search(t, e.bob, url.Values{"q": {"exec-needle-7"}, "identity": {alice.Username}}); code != http.StatusForbidden {
		t.Errorf("bob searching alice's recordings by name: status %d; want 403", code)
	}
}

// TestSearchPostgres finds a SQL statement sent to a PostgreSQL target
// through ssh -L, and the rows it returned.
func TestSearchPostgres(t *testing.T) {
	e := newPGEnv(t, nil, config.Masking{})
	r := e.psql(t, "CREATE TABLE search_needle_accounts (id int); INSERT INTO search_needle_accounts VALUES (4242); SELECT id FROM search_needle_accounts; DROP TABLE search_needle_accounts;")
	if r.Code != 0 {
		t.Fatalf("psql: %d %s", r.Code, r.Stderr)
	}
	e.svc.WaitEvents(state.EventSessionSealed, 1)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if st, _ := e.svc.State.SearchStats(context.Background()); st.Sessions >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sql session was not indexed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	hits, err := e.svc.State.Search(context.Background(), state.SearchQuery{Text: `"drop table" search_needle_accounts`})
	if err != nil {
		t.Fatal(err)
	}
	var sql int
	for _, h := range hits {
		if h.Kind == state.SearchSQL && h.Text == "DROP TABLE search_needle_accounts" {
			sql++
		}
	}
	if sql != 1 {
		t.Errorf("DROP TABLE statement hits: %+v", hits)
	}
	if hits, _ := e.svc.State.Search(context.Background(), state.SearchQuery{Text: "4242"}); len(hits) == 0 {
		t.Error("the row the SELECT returned is not searchable")
	}
}
