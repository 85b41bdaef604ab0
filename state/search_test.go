package state

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseSearchQuery(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		want   SearchTerms
		fts5   string
		tsq    string
		errMsg string
	}{
		{name: "word", in: "sudoers", want: SearchTerms{{Words: []string{"sudoers"}}},
			fts5: `"sudoers"`, tsq: `'sudoers'`},
		{name: "two words", in: "DROP  Table", want: SearchTerms{{Words: []string{"drop"}}, {Words: []string{"table"}}},
			fts5: `"drop" AND "table"`, tsq: `'drop' & 'table'`},
		{name: "phrase", in: `"drop table" users`, want: SearchTerms{{Words: []string{"drop", "table"}}, {Words: []string{"users"}}},
			fts5: `"drop table" AND "users"`, tsq: `('drop' <-> 'table') & 'users'`},
		{name: "path is a phrase", in: "/etc/sudoers", want: SearchTerms{{Words: []string{"etc", "sudoers"}}},
			fts5: `"etc sudoers"`, tsq: `('etc' <-> 'sudoers')`},
		{name: "prefix", in: "sudo*", want: SearchTerms{{Words: []string{"sudo"}, Prefix: true}},
			fts5: `"sudo"*`, tsq: `'sudo':*`},
		{name: "quoted prefix", in: `"rm -rf"*`, want: SearchTerms{{Words: []string{"rm", "rf"}, Prefix: true}},
			fts5: `"rm rf"*`, tsq: `('rm' <-> 'rf':*)`},
		{name: "unicode", in: "Grüße", want: SearchTerms{{Words: []string{"grüße"}}}, fts5: `"grüße"`, tsq: `'grüße'`},
		{name: "fts syntax is just punctuation", in: `foo" OR "bar`, want: SearchTerms{{Words: []string{"foo"}}, {Words: []string{"or"}}, {Words: []string{"bar"}}},
			fts5: `"foo" AND "or" AND "bar"`, tsq: `'foo' & 'or' & 'bar'`},
		{name: "unclosed quote", in: `foo "bar`, errMsg: "quote is not closed"},
		{name: "operators are words", in: `NEAR(a b) OR c:d ^e -f`, want: SearchTerms{{Words: []string{"near", "a"}},
			{Words: []string{"b"}}, {Words: []string{"or"}}, {Words: []string{"c", "d"}}, {Words: []string{"e"}}, {Words: []string{"f"}}},
			fts5: `"near a" AND "b" AND "or" AND "c d" AND "e" AND "f"`, tsq: `('near' <-> 'a') & 'b' & 'or' & ('c' <-> 'd') & 'e' & 'f'`},
		{name: "sql quote", in: `x'; DROP TABLE sessions; --`, want: SearchTerms{{Words: []string{"x"}}, {Words: []string{"drop"}},
			{Words: []string{"table"}}, {Words: []string{"sessions"}}}, fts5: `"x" AND "drop" AND "table" AND "sessions"`,
			tsq: `'x' & 'drop' & 'table' & 'sessions'`},
		{name: "empty", in: "  ", errMsg: "no words"},
		{name: "only punctuation", in: `*** -- ""`, errMsg: "no words"},
		{name: "too many terms", in: strings.Repeat("a ", 17), errMsg: "more than 16"},
		{name: "long word", in: strings.Repeat("x", 129), errMsg: "longer than 128"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSearchQuery(tt.in)
			if tt.errMsg != "" {
				var qe *SearchQueryError
				if !errors.As(err, &qe) || !strings.Contains(qe.Msg, tt.errMsg) {
					t.Fatalf("ParseSearchQuery(%q) error = %v; want a SearchQueryError with %q", tt.in, err, tt.errMsg)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseSearchQuery(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
			if f := got.fts5(); f != tt.fts5 {
				t.Errorf("fts5 = %s; want %s", f, tt.fts5)
			}
			if q := got.tsquery(); q != tt.tsq {
				t.Errorf("tsquery = %s; want %s", q, tt.tsq)
			}
		})
	}
}

func TestSearchHighlights(t *testing.T) {
	terms, err := ParseSearchQuery(`"etc sudoers" vi*`)
	if err != nil {
		t.Fatal(err)
	}
	text := "$ vim /etc/sudoers.d/x"
	var got []string
	for _, r := range terms.Highlights(text) {
		got = append(got, text[r[0]:r[1]])
	}
	if want := []string{"vim", "etc", "sudoers"}; !reflect.DeepEqual(got, want) {
		t.Errorf("highlights %q; want %q", got, want)
	}
}

func TestTsvector(t *testing.T) {
	got, ok := tsvector("cat /etc/Sudoers; it's")
	if want := `'cat':1 'etc':2 'sudoers':3 'it':4 's':5`; !ok || got != want {
		t.Errorf("tsvector = %q, %v; want %q", got, ok, want)
	}
	if _, ok := tsvector("--- ;; "); ok {
		t.Error("tsvector of punctuation reports words")
	}
}

// searchFixture is a store with three sealed sessions and their entries.
type searchFixture struct {
	s      *Store
	ctx    context.Context
	t0     time.Time
	ids    []string
	starts []time.Time
}

func newSearchFixture(t *testing.T) *searchFixture {
	t.Helper()
	s, _ := openTest(t, Options{})
	f := &searchFixture{s: s, ctx: context.Background(), t0: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)}
	sessions := []struct {
		identity, target string
		entries          []SearchEntry
	}{
		{"alice", "web-1", []SearchEntry{
			{Kind: SearchInput, Offset: 2 * time.Second, Text: "sudo vim /etc/sudoers"},
			{Kind: SearchOutput, Offset: 3 * time.Second, Text: "root ALL=(ALL) ALL"},
			{Kind: SearchOutput, Offset: time.Second, Text: "Welcome to web-1"},
		}},
		{"bob", "pg-prod", []SearchEntry{
			{Kind: SearchSQL, Offset: 5 * time.Second, Text: "DROP TABLE accounts"},
			{Kind: SearchSQL, Offset: 9 * time.Second, Text: "SELECT * FROM drop_log"},
		}},
		{"alice", "pg-prod", []SearchEntry{
			{Kind: SearchSQL, Offset: 500 * time.Millisecond, Text: "drop table audit_tmp"},
			{Kind: SearchSFTP, Offset: 7 * time.Second, Text: "remove /etc/sudoers.bak"},
			{Kind: SearchCommand, Offset: 0, Text: "--- ;;"}, // no words: skipped
		}},
	}
	for i, ss := range sessions {
		id := fmt.Sprintf("01JSEARCH%017d", i)
		start := f.t0.Add(time.Duration(i) * time.Hour)
		end := start.Add(time.Minute)
		if err := s.PutSession(f.ctx, Session{ID: id, Identity: ss.identity, Issuer: "corp", Target: ss.target, Login: "root",
			Kind: KindShell, Start: start, End: &end, Status: StatusFinished, Object: "x/" + id + ".cast"}); err != nil {
			t.Fatal(err)
		}
		if err := s.IndexSession(f.ctx, id, start, ss.entries, false, nil); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
		f.starts = append(f.starts, start)
	}
	return f
}

// hitKeys renders hits as "session-index:offset:kind".
func (f *searchFixture) hitKeys(hits []SearchHit) []string {
	var out []string
	for _, h := range hits {
		idx := -1
		for i, id := range f.ids {
			if id == h.Session {
				idx = i
			}
		}
		out = append(out, fmt.Sprintf("%d:%d:%s", idx, h.OffsetMS, h.Kind))
	}
	return out
}

func TestSearch(t *testing.T) {
	f := newSearchFixture(t)
	tests := []struct {
		name string
		q    SearchQuery
		want []string
	}{
		{name: "phrase across kinds, newest session first", q: SearchQuery{Text: "/etc/sudoers"},
			want: []string{"2:7000:sftp", "0:2000:input"}},
		{name: "words anywhere", q: SearchQuery{Text: "DROP table"}, want: []string{"2:500:sql", "1:5000:sql"}},
		{name: "phrase order matters", q: SearchQuery{Text: `"table drop"`}, want: nil},
		{name: "within a session, recording order", q: SearchQuery{Text: "drop*"},
			want: []string{"2:500:sql", "1:5000:sql", "1:9000:sql"}},
		{name: "identity filter", q: SearchQuery{Text: "drop", Identity: "bob"}, want: []string{"1:5000:sql", "1:9000:sql"}},
		{name: "issuer filter", q: SearchQuery{Text: "drop", Identity: "bob", Issuer: "corp"}, want: []string{"1:5000:sql", "1:9000:sql"}},
		{name: "other issuer", q: SearchQuery{Text: "drop", Identity: "bob", Issuer: "other"}, want: nil},
		{name: "target filter", q: SearchQuery{Text: "sudoers", Target: "web-1"}, want: []string{"0:2000:input"}},
		{name: "since", q: SearchQuery{Text: "drop", Since: f.t0.Add(90 * time.Minute)}, want: []string{"2:500:sql"}},
		{name: "until", q: SearchQuery{Text: "sudoers", Until: f.t0.Add(time.Hour)}, want: []string{"0:2000:input"}},
		{name: "limit", q: SearchQuery{Text: "drop", Limit: 1}, want: []string{"2:500:sql"}},
		{name: "no match", q: SearchQuery{Text: "kubectl"}, want: nil},
		{name: "case", q: SearchQuery{Text: "WELCOME"}, want: []string{"0:1000:output"}},
		{name: "hostile query text", q: SearchQuery{Text: `x'); DELETE FROM sessions; -- NEAR(`}, want: nil},
	}
	// On PostgreSQL, a search tests the newest entries one by one, then
	// takes older ones from the GIN index: run every case with the first
	// phase covering everything, one entry, and none.
	for _, recent := range []int{5000, 1, 0} {
		pgRecentEntries = recent
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/recent=%d", tt.name, recent), func(t *testing.T) {
				hits, err := f.s.Search(f.ctx, tt.q)
				if err != nil {
					t.Fatal(err)
				}
				if got := f.hitKeys(hits); !reflect.DeepEqual(got, tt.want) {
					t.Errorf("got %v; want %v", got, tt.want)
				}
			})
		}
	}
	pgRecentEntries = 5000
	hits, err := f.s.Search(f.ctx, SearchQuery{Text: "accounts"})
	if err != nil || len(hits) != 1 {
		t.Fatalf("accounts: %v, %v", hits, err)
	}
	h := hits[0]
	if h.Identity != "bob" || h.Target != "pg-prod" || h.Issuer != "corp" || h.Login != "root" || h.SessionKind != KindShell ||
		!h.Start.Equal(f.starts[1]) || h.Text != "DROP TABLE accounts" {
		t.Errorf("hit = %+v", h)
	}
	if rows, _ := f.s.ListSessions(f.ctx, SessionFilter{}); len(rows) != 3 {
		t.Errorf("sessions after a hostile query: %d; want 3", len(rows))
	}
	if _, err := f.s.Search(f.ctx, SearchQuery{Text: `"open`}); !errors.As(err, new(*SearchQueryError)) {
		t.Errorf("unclosed quote: %v; want a SearchQueryError", err)
	}
	st, err := f.s.SearchStats(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Sessions != 3 || st.Entries != 7 {
		t.Errorf("stats %+v; want 3 sessions, 7 entries", st)
	}
}

func TestIndexSessionReplaces(t *testing.T) {
	f := newSearchFixture(t)
	if err := f.s.IndexSession(f.ctx, f.ids[0], f.starts[0], []SearchEntry{{Kind: SearchOutput, Offset: time.Second, Text: "kubectl get pods"}}, true, nil); err != nil {
		t.Fatal(err)
	}
	for q, want := range map[string]int{"sudoers": 1, "kubectl": 1, "welcome": 0} {
		hits, err := f.s.Search(f.ctx, SearchQuery{Text: q})
		if err != nil {
			t.Fatal(err)
		}
		if len(hits) != want {
			t.Errorf("%s: %d hits; want %d", q, len(hits), want)
		}
	}
}

func TestIndexSessionSameMillisecond(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	var many []SearchEntry
	for i := range 450 { // more than one write batch
		many = append(many, SearchEntry{Kind: SearchOutput, Offset: time.Duration(i) * time.Millisecond, Text: fmt.Sprintf("line %d marker", i)})
	}
	for i, id := range []string{"01JSAMEMS00000000000000001", "01JSAMEMS00000000000000002"} {
		if err := s.PutSession(ctx, Session{ID: id, Identity: fmt.Sprint("u", i), Start: start, Status: StatusFinished, Object: "o"}); err != nil {
			t.Fatal(err)
		}
		if err := s.IndexSession(ctx, id, start, many, false, nil); err != nil {
			t.Fatal(err)
		}
	}
	hits, err := s.Search(ctx, SearchQuery{Text: "marker", Limit: MaxSearchLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(hits) != 900 {
		t.Fatalf("%d hits; want 900", len(hits))
	}
	// Each session's hits are together and in recording order.
	for i := 1; i < len(hits); i++ {
		if hits[i].Session == hits[i-1].Session && hits[i].OffsetMS < hits[i-1].OffsetMS {
			t.Fatalf("hit %d out of order: %d after %d", i, hits[i].OffsetMS, hits[i-1].OffsetMS)
		}
		if hits[i].Session != hits[i-1].Session && i != 450 {
			t.Fatalf("sessions interleave at hit %d", i)
		}
	}
}

func TestIndexSessionClaims(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	start := now.Add(-time.Hour)
	for _, id := range []string{"01JCLAIM000000000000000001", "01JCLAIM000000000000000002", "01JCLAIM000000000000000003"} {
		if err := s.PutSession(ctx, Session{ID: id, Start: start, Status: StatusFinished, Object: "o"}); err != nil {
			t.Fatal(err)
		}
	}
	running := "01JCLAIM000000000000000004"
	if err := s.PutSession(ctx, Session{ID: running, Start: start, Status: StatusRunning, Object: "o"}); err != nil {
		t.Fatal(err)
	}
	un, err := s.UnindexedSessions(ctx, 10, 10*time.Minute)
	if err != nil || len(un) != 3 {
		t.Fatalf("unindexed = %v, %v; want the three sealed sessions", un, err)
	}
	id := un[0]
	entries := []SearchEntry{{Kind: SearchOutput, Text: "hello"}}
	// An indexer that stopped mid-way holds a claim: its first write
	// (claim and entries) committed, the last never came.
	if err := s.Write(ctx, func(tx *Tx) error {
		ok, err := tx.claimSearch(id, SearchClaim{Replica: "a", Stale: 10 * time.Minute})
		if !ok {
			return errors.New("first claim refused")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	index := func(replica string) error {
		t.Helper()
		return s.IndexSession(ctx, id, start, entries, false, &SearchClaim{Replica: replica, Stale: 10 * time.Minute})
	}
	if err := index("b"); !errors.Is(err, ErrSearchClaimed) {
		t.Fatalf("a fresh claim was taken over: %v", err)
	}
	if un, _ := s.UnindexedSessions(ctx, 10, 10*time.Minute); len(un) != 2 {
		t.Errorf("claimed session still listed as unindexed: %v", un)
	}
	now = now.Add(11 * time.Minute)
	if un, _ := s.UnindexedSessions(ctx, 10, 10*time.Minute); len(un) != 3 {
		t.Errorf("stale claim not listed again: %v", un)
	}
	if err := s.FailSearch(ctx, id, "bad cast"); err != nil {
		t.Fatal(err)
	}
	if un, _ := s.UnindexedSessions(ctx, 10, 10*time.Minute); len(un) != 2 {
		t.Errorf("failed session listed by backfill: %v", un)
	}
	if err := index("c"); err != nil {
		t.Fatalf("failed session cannot be indexed again: %v", err)
	}
	if err := index("d"); !errors.Is(err, ErrSearchClaimed) {
		t.Fatalf("indexed session indexed again under a claim: %v", err)
	}
	// Failing a session nobody claimed records it too.
	if err := s.FailSearch(ctx, un[1], "unreadable"); err != nil {
		t.Fatal(err)
	}
	st, _ := s.SearchStats(ctx)
	if st.Sessions != 1 || st.Entries != 1 || st.Bytes != 5 || st.Failed != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestSessionEvents(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	for _, e := range []Event{
		{Type: EventSessionStart, Session: "S1"},
		{Type: EventSFTP, Session: "S1", Details: map[string]any{"op": "remove", "path": "/tmp/x"}},
		{Type: EventSFTP, Session: "S2"},
		{Type: "sql.query", Session: "S1", Details: map[string]any{"statement": "select 1"}},
	} {
		if _, err := s.Append(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	evs, err := s.SessionEvents(ctx, "S1", 0, EventSFTP, "sql.query")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 2 || evs[0].Type != EventSFTP || evs[1].Type != "sql.query" {
		t.Errorf("events %+v", evs)
	}
	all, _ := s.SessionEvents(ctx, "S1", 0)
	if len(all) != 3 {
		t.Errorf("%d events of S1; want 3", len(all))
	}
}
