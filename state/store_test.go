package state

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// openTest opens a fresh store of the backend under test (see testURL) and
// returns it with its URL, for opening a second handle on the same store.
func openTest(t testing.TB, opts Options) (*Store, string) {
	t.Helper()
	url := testURL(t)
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

func TestSqlitePath(t *testing.T) {
	tests := []struct {
		name, url, want string
		err             bool
	}{
		{name: "absolute", url: "sqlite:///var/lib/postern/state.db", want: "/var/lib/postern/state.db"},
		{name: "relative", url: "sqlite://state.db", want: "state.db"},
		{name: "relative dir", url: "sqlite://data/state.db", want: "data/state.db"},
		{name: "wrong scheme", url: "postgres://x/y", err: true},
		{name: "empty", url: "sqlite://", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := sqlitePath(tt.url)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v; want error %v", err, tt.err)
			}
			if got != filepath.FromSlash(tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestAppendVerifyChain(t *testing.T) {
	ctx := context.Background()
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s, url := openTest(t, Options{AuditFile: auditFile})
	for i := range 10 {
		e, err := s.Append(ctx, Event{Type: EventAuthSuccess, Actor: "alice", Details: map[string]any{
			"i": i, "big": uint64(1<<63 + 5), "f": 0.1, "nested": map[string]any{"b": 1, "a": []int{1, 2}}, "html": "<&>",
		}})
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if e.Seq != int64(i+1) {
			t.Errorf("seq = %d; want %d", e.Seq, i+1)
		}
		if i == 0 && e.Prev != GenesisPrev {
			t.Errorf("genesis prev = %q", e.Prev)
		}
	}
	rep, err := s.Verify(ctx)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !rep.OK() || rep.Events != 10 {
		t.Fatalf("report = %+v; want intact with 10 events", rep)
	}

	// The audit file holds the same chain, reproducible from the documented rule.
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	prev := GenesisPrev
	n := 0
	for sc.Scan() {
		var e Event
		dec := json.NewDecoder(bytesReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&e); err != nil {
			t.Fatal(err)
		}
		h, _ := Hash(e)
		if h != e.Hash || e.Prev != prev {
			t.Fatalf("audit file line %d does not verify", n+1)
		}
		prev = e.Hash
		n++
	}
	if n != 10 {
		t.Errorf("audit file lines = %d; want 10", n)
	}

	// Persisted across reopen.
	s.Close()
	s2, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	e, err := s2.Append(ctx, Event{Type: EventConfigReload})
	if err != nil || e.Seq != 11 || e.Prev != prev {
		t.Fatalf("append after reopen: seq %d prev ok %v err %v", e.Seq, e.Prev == prev, err)
	}
}

func TestVerifyDetectsTamper(t *testing.T) {
	tests := []struct {
		name   string
		sql    string
		want   int64
		reason string
	}{
		{name: "details edited", sql: `UPDATE audit_events SET details = '{"cmd":"ls"}' WHERE seq = 4`, want: 4, reason: "hash"},
		{name: "actor edited", sql: `UPDATE audit_events SET actor = 'mallory' WHERE seq = 7`, want: 7, reason: "hash"},
		{name: "row deleted", sql: `DELETE FROM audit_events WHERE seq = 5`, want: 6, reason: "sequence"},
		{name: "rehashed row", sql: `UPDATE audit_events SET hash = 'x' WHERE seq = 3`, want: 3, reason: "hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			s, url := openTest(t, Options{})
			for i := range 8 {
				if _, err := s.Append(ctx, Event{Type: EventChannelOpen, Details: map[string]any{"cmd": fmt.Sprint("rm -rf ", i)}}); err != nil {
					t.Fatal(err)
				}
			}
			// Tamper through a second handle, as another process would.
			other, err := Open(ctx, url, Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.db.Exec(tt.sql); err != nil {
				t.Fatal(err)
			}
			rep, err := s.Verify(ctx)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if rep.FirstBroken != tt.want {
				t.Errorf("FirstBroken = %d (%s); want %d", rep.FirstBroken, rep.Reason, tt.want)
			}
			if !contains(rep.Reason, tt.reason) {
				t.Errorf("Reason = %q; want it to mention %q", rep.Reason, tt.reason)
			}
		})
	}
}

func TestConcurrentAppend(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for i := range 4 {
				if _, err := s.Append(ctx, Event{Type: EventAuthSuccess, Details: map[string]any{"g": g, "i": i}}); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	rep, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Events != 200 {
		t.Fatalf("report = %+v; want intact chain of 200", rep)
	}
}

func TestConcurrentAppendTwoHandles(t *testing.T) {
	// Two Stores on one database stand for two processes (replicas): BEGIN
	// IMMEDIATE (SQLite) or the advisory lock (PostgreSQL) keeps the chain
	// linear.
	ctx := context.Background()
	a, url := openTest(t, Options{})
	b, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		for range 5 {
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
	rep, err := a.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Events != 100 {
		t.Fatalf("report = %+v; want intact chain of 100", rep)
	}
}

func TestEvents(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	for range 5 {
		if _, err := s.Append(ctx, Event{Type: EventAuthFailure, Session: "S"}); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.Events(ctx, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Seq != 3 || evs[1].Seq != 4 {
		t.Fatalf("got %+v; want seqs 3,4", evs)
	}
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	base := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	exit := 3
	end := base.Add(2 * time.Hour)
	rows := []Session{
		{ID: "01A", Identity: "alice", Role: "sre", Target: "web-1", Login: "deploy", Kind: KindShell, Start: base, Status: StatusRunning, Replica: "r1"},
		{ID: "01B", Identity: "bob", Role: "dev", Target: "web-2", Login: "app", Kind: KindExec, Command: "uptime 100%", Start: base.Add(time.Hour), Status: StatusFinished, ExitStatus: &exit, End: &end, Meta: map[string]any{"format": "v2"}},
		{ID: "01C", Identity: "alice", Role: "sre", Target: "pg", Login: "psql", Kind: KindCommand, Start: base.Add(2 * time.Hour), Status: StatusInterrupted},
	}
	for _, r := range rows {
		if err := s.PutSession(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetSession(ctx, "01B")
	if err != nil {
		t.Fatal(err)
	}
	if got.ExitStatus == nil || *got.ExitStatus != 3 || got.End == nil || !got.End.Equal(end) || got.Meta["format"] != "v2" || got.Command != "uptime 100%" {
		t.Errorf("GetSession = %+v", got)
	}
	if _, err := s.GetSession(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetSession(nope) err = %v; want ErrNotFound", err)
	}
	// Replace.
	rows[0].Status = StatusFinished
	if err := s.PutSession(ctx, rows[0]); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    SessionFilter
		want []string
	}{
		{name: "all newest first", f: SessionFilter{}, want: []string{"01C", "01B", "01A"}},
		{name: "user", f: SessionFilter{User: "alice"}, want: []string{"01C", "01A"}},
		{name: "target", f: SessionFilter{Target: "web-2"}, want: []string{"01B"}},
		{name: "role", f: SessionFilter{Role: "sre"}, want: []string{"01C", "01A"}},
		{name: "status", f: SessionFilter{Status: StatusFinished}, want: []string{"01B", "01A"}},
		{name: "text command", f: SessionFilter{Text: "uptime"}, want: []string{"01B"}},
		{name: "text percent literal", f: SessionFilter{Text: "100%"}, want: []string{"01B"}},
		{name: "text underscore literal", f: SessionFilter{Text: "_"}, want: nil},
		{name: "since", f: SessionFilter{Since: base.Add(time.Hour)}, want: []string{"01C", "01B"}},
		{name: "until", f: SessionFilter{Until: base.Add(time.Hour)}, want: []string{"01A"}},
		{name: "limit", f: SessionFilter{Limit: 1}, want: []string{"01C"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.ListSessions(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range got {
				ids = append(ids, r.ID)
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.want) {
				t.Errorf("got %v; want %v", ids, tt.want)
			}
		})
	}
}

func TestVerifySealedDigest(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	seal, err := s.Append(ctx, Event{Type: EventSessionSealed, Session: "S1", Details: map[string]any{"sha256": "abc", "object": "k"}})
	if err != nil {
		t.Fatal(err)
	}
	row := Session{ID: "S1", Start: time.Now(), Status: StatusFinished, SHA256: "abc", SealSeq: seal.Seq}
	if err := s.PutSession(ctx, row); err != nil {
		t.Fatal(err)
	}
	rep, err := s.Verify(ctx)
	if err != nil || !rep.OK() || rep.Sessions != 1 {
		t.Fatalf("report = %+v, %v; want intact with 1 session", rep, err)
	}
	row.SHA256 = "abd"
	if err := s.PutSession(ctx, row); err != nil {
		t.Fatal(err)
	}
	rep, err = s.Verify(ctx)
	if err != nil || rep.OK() || fmt.Sprint(rep.BadDigests) != "[S1]" {
		t.Fatalf("report = %+v, %v; want S1 bad", rep, err)
	}
}

func TestRevocations(t *testing.T) {
	ctx := context.Background()
	s, _ := openTest(t, Options{})
	serials := []uint64{1, 42, 1<<64 - 1}
	for _, n := range serials {
		if err := s.Revoke(ctx, n, "lost laptop", "admin"); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Revoke(ctx, 42, "again", "admin"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		serial uint64
		want   bool
	}{{1, true}, {42, true}, {1<<64 - 1, true}, {2, false}, {1 << 63, false}} {
		got, err := s.IsRevoked(ctx, tt.serial)
		if err != nil || got != tt.want {
			t.Errorf("IsRevoked(%d) = %v, %v; want %v", tt.serial, got, err, tt.want)
		}
	}
	list, err := s.Revocations(ctx)
	if err != nil || len(list) != 3 {
		t.Fatalf("Revocations = %+v, %v; want 3", list, err)
	}
	if list[0].Reason != "lost laptop" || list[0].By != "admin" {
		t.Errorf("first revocation = %+v", list[0])
	}
	evs, err := s.Events(ctx, 0, 0)
	if err != nil || len(evs) != 3 || evs[2].Details["serial"] != "18446744073709551615" {
		t.Errorf("audit events = %+v, %v; want 3 cert.revoked", evs, err)
	}
}

func TestFilePermissions(t *testing.T) {
	// SQLite only: the database is a file.
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := Open(context.Background(), "sqlite://"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v; want 0600", fi.Mode().Perm())
	}
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	ctx := context.Background()
	url := testURL(t)
	if !isPostgresURL(url) {
		url = "sqlite://" + filepath.Join(t.TempDir(), "sub", "state.db") // directory created by Open
	}
	var wg sync.WaitGroup
	stores := make([]*Store, 6)
	for i := range stores {
		wg.Go(func() {
			s, err := Open(ctx, url, Options{})
			if err != nil {
				t.Errorf("Open: %v", err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			defer s.Close()
		}
	}
	if stores[0] == nil {
		t.FailNow()
	}
	var n, distinct int
	if err := stores[0].db.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT version) FROM schema_version`).Scan(&n, &distinct); err != nil {
		t.Fatal(err)
	}
	if n != distinct || n == 0 {
		t.Errorf("schema_version has %d rows for %d versions; want each once", n, distinct)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, url := range []string{"postgres://127.0.0.1:1/x?connect_timeout=5", "postgres://%zz", "mysql://x/y", "sqlite://", "::"} {
		if s, err := Open(context.Background(), url, Options{}); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", url)
		}
	}
	if _, err := Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "s.db"), Options{AuditFile: "/proc/nonexistent/audit.jsonl"}); err == nil {
		t.Error("Open with an unwritable audit file succeeded")
	}
}
