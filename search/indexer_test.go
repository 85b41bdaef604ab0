package search

import (
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// clock is a settable clock for the recorder.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a real recorder, file store and SQLite state store.
type env struct {
	st     *state.Store
	store  *recorder.FileStore
	rec    *recorder.Recorder
	clock  *clock
	sealed chan string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	store, err := recorder.NewFileStore(filepath.Join(dir, "recordings"))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, store: store, clock: &clock{now: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}, sealed: make(chan string, 16)}
	e.rec, err = recorder.New(recorder.Options{Store: store, State: st, SpoolDir: filepath.Join(dir, "spool"), Now: e.clock.Now,
		Sealed: func(id string) { e.sealed <- id }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rec.Close() })
	return e
}

// step is one thing that happens in a recorded session.
type step struct {
	wait time.Duration
	out  string
	in   string
}

// record records a session of steps and returns its id.
func (e *env) record(t *testing.T, meta recorder.Meta, steps []step) string {
	t.Helper()
	ctx := context.Background()
	s, err := e.rec.Start(ctx, meta)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range steps {
		e.clock.advance(st.wait)
		if st.out != "" {
			if err := s.Output([]byte(st.out)); err != nil {
				t.Fatal(err)
			}
		}
		if st.in != "" {
			if err := s.Input([]byte(st.in)); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.clock.advance(time.Second)
	if _, err := s.Finish(ctx, recorder.Result{}); err != nil {
		t.Fatal(err)
	}
	return s.ID()
}

// shellSession is an interactive session with a sudo password prompt.
var shellSession = []step{
	{wait: 100 * time.Millisecond, out: "\x1b]0;alice@web-1: ~\x07alice@web-1:~$ "},
	{wait: time.Second, in: "sudo vim /etc/sudoers\r"},
	{wait: 10 * time.Millisecond, out: "sudo vim /etc/sudoers\r\n[sudo] password for alice: "},
	{wait: time.Second, in: "hunter2\r"},
	{wait: 10 * time.Millisecond, out: "\r\n\x1b[?1049h\x1b[1;1H# User privilege specification\x1b[2;1Hroot\tALL=(ALL:ALL) ALL\x1b[?1049l"},
	{wait: 3 * time.Second, out: "alice@web-1:~$ "},
	{wait: time.Second, in: "ls\x7f\x7fcat /var/log/syslog\r"},
	{wait: 10 * time.Millisecond, out: "cat /var/log/syslog\r\nMar  1 kernel: eth0 up\r\nMar  1 kernel: eth0 up\r\nMar  1 sshd: accepted\r\n"},
}

func TestExtract(t *testing.T) {
	e := newEnv(t)
	id := e.record(t, recorder.Meta{Identity: "alice", Target: "web-1", Kind: state.KindShell}, shellSession)
	row, err := e.st.GetSession(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := e.store.Open(context.Background(), row.Object)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	events := []state.Event{
		{Type: state.EventSFTP, Time: row.Start.Add(5 * time.Second), Details: map[string]any{"op": "remove", "path": "/etc/sudoers.bak"}},
		{Type: state.EventSFTP, Time: row.Start.Add(6 * time.Second), Details: map[string]any{"op": "rename", "path": "/a", "to": "/b"}},
		{Type: state.EventSFTP, Time: row.Start.Add(7 * time.Second), Details: map[string]any{"op": "close", "path": "/etc/hosts", "flags": "read"}},
		{Type: state.EventSFTP, Time: row.Start.Add(8 * time.Second), Details: map[string]any{"op": "close", "path": "/etc/motd", "flags": "write|creat|trunc"}},
		{Type: eventSQL, Time: row.Start.Add(9 * time.Second), Details: map[string]any{"statement": "DROP TABLE accounts"}},
		{Type: eventSQL, Time: row.Start.Add(-time.Second), Details: map[string]any{"statement": "SELECT 1"}},
	}
	res, err := Extract(rc, row, events, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, en := range res.Entries {
		got = append(got, fmt.Sprintf("%s@%d:%s", en.Kind, en.Offset.Milliseconds(), en.Text))
	}
	slices.Sort(got)
	want := []string{
		"input@1100:sudo vim /etc/sudoers",
		"input@6120:cat /var/log/syslog",
		"output@100:alice@web-1:~$ sudo vim /etc/sudoers\n[sudo] password for alice:",
		"output@2120:# User privilege specification\nroot ALL=(ALL:ALL) ALL",
		"output@5120:alice@web-1:~$ cat /var/log/syslog\nMar  1 kernel: eth0 up\nMar  1 sshd: accepted",
		"sftp@5000:remove /etc/sudoers.bak",
		"sftp@6000:rename /a -> /b",
		"sftp@7000:read /etc/hosts",
		"sftp@8000:write /etc/motd",
		"sql@0:SELECT 1",
		"sql@9000:DROP TABLE accounts",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, en := range res.Entries {
		if strings.Contains(en.Text, "hunter2") {
			t.Errorf("the password typed at the sudo prompt was indexed: %q", en.Text)
		}
	}
	if res.Truncated {
		t.Error("truncated")
	}
}

func TestExtractExecAndBudget(t *testing.T) {
	e := newEnv(t)
	var steps []step
	for i := range 200 {
		steps = append(steps, step{wait: 100 * time.Millisecond, out: fmt.Sprintf("line %04d of the log\r\n", i)})
	}
	steps = append(steps, step{wait: time.Second, in: "typed after the budget\r"})
	id := e.record(t, recorder.Meta{Identity: "bot", Target: "web-1", Kind: state.KindExec, Command: "journalctl -u nginx"}, steps)
	row, _ := e.st.GetSession(context.Background(), id)
	rc, _ := e.store.Open(context.Background(), row.Object)
	defer rc.Close()
	res, err := Extract(rc, row, nil, Limits{MaxOutputText: 500})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Truncated {
		t.Error("not truncated")
	}
	var out int
	var kinds []string
	for _, en := range res.Entries {
		kinds = append(kinds, en.Kind)
		if en.Kind == state.SearchOutput {
			out += len(strings.ReplaceAll(en.Text, "\n", ""))
			if strings.Contains(en.Text, "line 0030") {
				t.Errorf("output past the budget indexed: %q", en.Text)
			}
		}
	}
	if out > 500 || out < 400 {
		t.Errorf("%d bytes of output indexed; want up to the 500-byte budget", out)
	}
	if kinds[0] != state.SearchCommand || res.Entries[0].Text != "journalctl -u nginx" || !slices.Contains(kinds, state.SearchInput) {
		t.Errorf("kinds %v", kinds)
	}
	// Output windows cover at most two seconds each.
	for _, en := range res.Entries {
		if en.Kind == state.SearchOutput && strings.Count(en.Text, "\n") > 20 {
			t.Errorf("an output entry spans %d lines (more than 2s at 100ms a line)", strings.Count(en.Text, "\n")+1)
		}
	}
}

func TestIndexerQueueAndBackfill(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	// Recorded before any indexer runs: left to the backfill.
	old := e.record(t, recorder.Meta{Identity: "alice", Target: "web-1", Kind: state.KindShell}, shellSession)
	<-e.sealed
	reg := prometheus.NewRegistry()
	ix, err := New(Options{State: e.st, Store: e.store, Replica: "r1", Metrics: reg, Backfill: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); ix.Run(rctx) }()
	defer func() { cancel(); <-done }()
	waitHits := func(q string, want int) []state.SearchHit {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			hits, err := e.st.Search(ctx, state.SearchQuery{Text: q})
			if err != nil {
				t.Fatal(err)
			}
			if len(hits) == want {
				return hits
			}
			if time.Now().After(deadline) {
				t.Fatalf("search %q: %d hits; want %d", q, len(hits), want)
			}
			time.Sleep(10 * time.Millisecond) // the store is the indexer's only output: poll it until the deadline
		}
	}
	hits := waitHits("/etc/sudoers", 2) // the echoed output, then the typed line
	if hits[0].Session != old || hits[0].Kind != state.SearchOutput || hits[0].OffsetMS != 100 ||
		hits[1].Kind != state.SearchInput || hits[1].OffsetMS != 1100 {
		t.Errorf("backfilled hits %+v", hits)
	}
	// A session sealed while the indexer runs is indexed from the queue.
	e.clock.advance(time.Hour)
	fresh := e.record(t, recorder.Meta{Identity: "bob", Target: "db-1", Kind: state.KindExec, Command: "pg_dump accounts"}, nil)
	ix.Enqueue(<-e.sealed)
	hits = waitHits("pg_dump", 1)
	if hits[0].Session != fresh || hits[0].Kind != state.SearchCommand || hits[0].Identity != "bob" {
		t.Errorf("queued hit %+v", hits[0])
	}
	if got := promtest.ToFloat64(ix.indexed.WithLabelValues("ok")); got != 2 {
		t.Errorf("postern_search_sessions_indexed_total{ok} = %v; want 2", got)
	}
	if n, err := ix.Index(ctx, "01JNOSUCHSESSION0000000000"); err == nil || n != 0 {
		t.Errorf("Index of a missing session = %d, %v", n, err)
	}
}

func TestIndexerBrokenRecording(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.record(t, recorder.Meta{Identity: "alice", Target: "web-1", Kind: state.KindShell}, shellSession)
	row, _ := e.st.GetSession(ctx, id)
	garbage := "this is not a cast\n"
	if err := e.store.Put(ctx, row.Object, strings.NewReader(garbage), int64(len(garbage)), recorder.ContentTypeCast); err != nil {
		t.Fatal(err)
	}
	ix, err := New(Options{State: e.st, Store: e.store, Replica: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	if ix.index(ctx, id) {
		t.Fatal("a broken recording was indexed")
	}
	if un, _ := e.st.UnindexedSessions(ctx, 10, claimStale); len(un) != 0 {
		t.Errorf("a failed session is offered to backfill again: %v", un)
	}
	if st, _ := e.st.SearchStats(ctx); st.Failed != 1 {
		t.Errorf("stats %+v; want one failed session", st)
	}
}

func TestIndexerClaims(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	id := e.record(t, recorder.Meta{Identity: "alice", Target: "web-1", Kind: state.KindShell}, shellSession)
	a, _ := New(Options{State: e.st, Store: e.store, Replica: "a"})
	b, _ := New(Options{State: e.st, Store: e.store, Replica: "b"})
	if !a.index(ctx, id) {
		t.Fatal("replica a did not index a fresh session")
	}
	if b.index(ctx, id) {
		t.Error("replica b indexed a session replica a indexed")
	}
	if st, _ := e.st.SearchStats(ctx); st.Sessions != 1 || st.Failed != 0 {
		t.Errorf("stats %+v", st)
	}
}
