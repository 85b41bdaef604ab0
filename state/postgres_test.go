package state

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.RunMain(m)) }

// backendEnv selects the backend the store test suite runs against:
// "postgres" (a database on the shared pgtest server) or SQLite (unset).
// TestPostgresSuite sets it when it re-runs the suite.
const backendEnv = "POSTERN_STATE_TEST_BACKEND"

// testURL returns the URL of a fresh, empty store of the backend under test.
func testURL(t testing.TB) string {
	t.Helper()
	if os.Getenv(backendEnv) == "postgres" {
		srv := pgtest.Shared(t)
		return srv.PasswordDSN(srv.NewDB(t))
	}
	return "sqlite://" + filepath.Join(t.TempDir(), "state.db")
}

// TestPostgresSuite runs every other test of this package again, in a child
// process of this test binary, against PostgreSQL: SQLite and PostgreSQL
// stores pass the same suite. Tests that are about SQLite files alone, and
// the PostgreSQL-only tests (which ran in this process), are left out.
func TestPostgresSuite(t *testing.T) {
	if os.Getenv(backendEnv) != "" {
		return // already the child
	}
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	pgtest.Shared(t) // skips clearly if PostgreSQL is not installed; started once here
	args := []string{"-test.run", ".", "-test.skip", "^(TestPostgresSuite|TestSqlitePath|TestFilePermissions|TestPostgresNotifyAcrossStores|TestPostgresAppendManyStores)$",
		"-test.count", "1", "-test.v"}
	if d, ok := t.Deadline(); ok {
		args = append(args, "-test.timeout", time.Until(d).Round(time.Second).String())
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), backendEnv+"=postgres")
	out, err := cmd.CombinedOutput()
	var passed []string
	for line := range strings.Lines(string(out)) {
		if name, ok := strings.CutPrefix(strings.TrimSpace(line), "--- PASS: "); ok && !strings.Contains(name, "/") {
			passed = append(passed, strings.Fields(name)[0])
		}
	}
	if err != nil {
		t.Fatalf("store suite on PostgreSQL: %v\n%s", err, out)
	}
	if len(passed) < 10 {
		t.Fatalf("store suite on PostgreSQL ran only %v\n%s", passed, out)
	}
	t.Logf("passed on PostgreSQL: %s", strings.Join(passed, " "))
}

func TestRebind(t *testing.T) {
	tests := []struct{ in, want string }{
		{`SELECT a FROM t WHERE id = ?`, `SELECT a FROM t WHERE id = $1`},
		{`INSERT INTO t (a, b) VALUES (?, ?)`, `INSERT INTO t (a, b) VALUES ($1, $2)`},
		{`SELECT '?' , ? FROM t`, `SELECT '?' , $1 FROM t`},
		{`WHERE (id LIKE ? ESCAPE '\' OR x like ?)`, `WHERE (id ILIKE $1 ESCAPE '\' OR x ILIKE $2)`},
		{`SELECT likes, unlike, 'LIKE' FROM t`, `SELECT likes, unlike, 'LIKE' FROM t`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
	}
	for _, tt := range tests {
		if got := rebind(tt.in); got != tt.want {
			t.Errorf("rebind(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}

// TestNotify is part of the suite: a subscriber on the same store receives
// payloads; a cancelled subscription closes its channel.
func TestNotify(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.Subscribe(sctx, "approvals")
	if err != nil {
		t.Fatal(err)
	}
	other, err := s.Subscribe(sctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Notify(ctx, "approvals", "a1"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ch:
		if p != "a1" {
			t.Errorf("payload %q; want a1", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no notification")
	}
	select {
	case p := <-other:
		t.Errorf("channel other received %q", p)
	default:
	}
	cancel()
	for range ch { // closed once the subscription ends
	}
	for _, bad := range []string{"", "a;b", "1x", strings.Repeat("x", 64)} {
		if _, err := s.Subscribe(ctx, bad); err == nil {
			t.Errorf("Subscribe(%q) succeeded", bad)
		}
		if err := s.Notify(ctx, bad, ""); err == nil {
			t.Errorf("Notify(%q) succeeded", bad)
		}
	}
}

func pgStores(t *testing.T, n int) []*Store {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL")
	}
	srv := pgtest.Shared(t)
	url := srv.PasswordDSN(srv.NewDB(t))
	var stores []*Store
	for range n {
		s, err := Open(context.Background(), url, Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	return stores
}

// TestPostgresNotifyAcrossStores: a decision stored by one replica reaches a
// subscriber on another through LISTEN/NOTIFY.
func TestPostgresNotifyAcrossStores(t *testing.T) {
	st := pgStores(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, err := st[0].Subscribe(ctx, "approvals")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := st[1].Notify(ctx, "approvals", "decided:42"); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-ch:
		if p != "decided:42" {
			t.Errorf("payload %q", p)
		}
		t.Logf("cross-store notification latency %v", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("no notification across stores")
	}
}

// TestPostgresAppendManyStores: four stores (replicas) appending at once
// keep one linear chain.
func TestPostgresAppendManyStores(t *testing.T) {
	st := pgStores(t, 4)
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, s := range st {
		for range 4 {
			wg.Go(func() {
				for range 10 {
					if _, err := s.Append(ctx, Event{Type: EventAuthSuccess}); err != nil {
						t.Errorf("Append: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
	rep, err := st[3].Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Events != 160 {
		t.Fatalf("report = %+v; want an intact chain of 160", rep)
	}
}

// TestPostgresURLErrorsHidePassword: a failed connection names the server
// but never the password.
func TestPostgresURLErrorsHidePassword(t *testing.T) {
	_, err := Open(context.Background(), "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=5", Options{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v; want an error without the password", err)
	}
	_, err = Open(context.Background(), "postgres://u:hunter2@[::1/db", Options{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v; want an error without the password", err)
	}
}
