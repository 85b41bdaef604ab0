package state

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestListEvents filters events by actor, target, type (exact and
// prefix), session, time and sequence, oldest first or the newest N.
func TestListEvents(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	add := func(min int, typ, actor, target, session string) {
		t.Helper()
		if _, err := s.Append(ctx, Event{Time: base.Add(time.Duration(min) * time.Minute), Type: typ, Actor: actor, Target: target, Session: session}); err != nil {
			t.Fatal(err)
		}
	}
	add(0, EventAuthSuccess, "alice", "", "")
	add(1, EventSessionStart, "alice", "web-1", "s1")
	add(2, EventSessionEnd, "alice", "web-1", "s1")
	add(3, EventSessionStart, "bob", "db-1", "s2")
	add(4, EventSessionSealed, "bob", "db-1", "s2")
	add(5, EventChannelDeny, "Alice", "web-1", "")
	tests := []struct {
		name string
		f    EventFilter
		want []int64
	}{
		{"all", EventFilter{}, []int64{1, 2, 3, 4, 5, 6}},
		{"actor exact and case-sensitive", EventFilter{Actor: "alice"}, []int64{1, 2, 3}},
		{"target", EventFilter{Target: "web-1"}, []int64{2, 3, 6}},
		{"type", EventFilter{Type: EventSessionStart}, []int64{2, 4}},
		{"type prefix", EventFilter{Type: "session.*"}, []int64{2, 3, 4, 5}},
		{"type prefix is not LIKE", EventFilter{Type: "session_*"}, nil},
		{"session", EventFilter{Session: "s2"}, []int64{4, 5}},
		{"since", EventFilter{Since: base.Add(3 * time.Minute)}, []int64{4, 5, 6}},
		{"until", EventFilter{Until: base.Add(2 * time.Minute)}, []int64{1, 2}},
		{"sequence range", EventFilter{AfterSeq: 2, UpToSeq: 4}, []int64{3, 4}},
		{"first two", EventFilter{Limit: 2}, []int64{1, 2}},
		{"newest two, in order", EventFilter{Limit: 2, Newest: true}, []int64{5, 6}},
		{"combined", EventFilter{Actor: "alice", Type: "session.*", Target: "web-1"}, []int64{2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			evs, err := s.ListEvents(ctx, tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, e := range evs {
				got = append(got, e.Seq)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got seqs %v; want %v", got, tt.want)
			}
		})
	}
}

// TestCheckpointsStore keeps checkpoints in order, the first of a Seq,
// with their anchored mark, and counts events in a transaction.
func TestCheckpointsStore(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	for i := range 5 {
		typ := EventAuthSuccess
		if i%2 == 1 {
			typ = EventSessionSealed
		}
		if _, err := s.Append(ctx, Event{Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	err := s.Write(ctx, func(tx *Tx) error {
		seq, hash, err := tx.Head()
		if err != nil || seq != 5 || len(hash) != 64 {
			return fmt.Errorf("head %d %q, %v; want 5", seq, hash, err)
		}
		if _, ok, err := tx.LastCheckpoint(); ok || err != nil {
			return fmt.Errorf("last checkpoint of none: %v, %v", ok, err)
		}
		if n, err := tx.CountEvents(EventSessionSealed, 0, 5); n != 2 || err != nil {
			return fmt.Errorf("sealed count %d, %v; want 2", n, err)
		}
		if n, err := tx.CountEvents(EventSessionSealed, 2, 3); n != 0 || err != nil {
			return fmt.Errorf("sealed count in (2,3] %d, %v; want 0", n, err)
		}
		if err := tx.PutCheckpoint(StoredCheckpoint{Seq: 3, Time: now, Envelope: "three"}); err != nil {
			return err
		}
		if err := tx.PutCheckpoint(StoredCheckpoint{Seq: 5, Time: now, Envelope: "five"}); err != nil {
			return err
		}
		if err := tx.PutCheckpoint(StoredCheckpoint{Seq: 5, Time: now, Envelope: "another five"}); err != nil {
			return err
		}
		last, ok, err := tx.LastCheckpoint()
		if !ok || err != nil || last.Seq != 5 || last.Envelope != "five" || !last.Time.Equal(now) {
			return fmt.Errorf("last checkpoint %+v, %v, %v; want the first of seq 5", last, ok, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seq, _, err := s.Head(ctx); seq != 5 || err != nil {
		t.Errorf("Head = %d, %v", seq, err)
	}
	pending, err := s.UnanchoredCheckpoints(ctx, 0)
	if err != nil || len(pending) != 2 {
		t.Fatalf("unanchored %+v, %v; want 2", pending, err)
	}
	if err := s.MarkAnchored(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if pending, _ = s.UnanchoredCheckpoints(ctx, 0); len(pending) != 1 || pending[0].Seq != 5 {
		t.Errorf("unanchored after marking 3: %+v", pending)
	}
	all, err := s.Checkpoints(ctx, 0, 0)
	if err != nil || len(all) != 2 || all[0].Seq != 3 || !all[0].Anchored || all[1].Anchored {
		t.Errorf("checkpoints %+v, %v", all, err)
	}
	if after, _ := s.Checkpoints(ctx, 3, 0); len(after) != 1 || after[0].Seq != 5 {
		t.Errorf("checkpoints after 3: %+v", after)
	}
}

// TestExportLease: one owner holds a sink's lease at a time; the cursor
// moves only for the holder and never backwards; an expired lease passes.
func TestExportLease(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	s, _ := openTest(t, Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	seq, ok, err := s.ClaimExport(ctx, "s3", "a", time.Minute)
	if err != nil || !ok || seq != 0 {
		t.Fatalf("first claim = %d, %v, %v", seq, ok, err)
	}
	if _, ok, _ := s.ClaimExport(ctx, "s3", "b", time.Minute); ok {
		t.Fatal("b took a's unexpired lease")
	}
	if moved, err := s.AdvanceExport(ctx, "s3", "b", 10); moved || err != nil {
		t.Fatalf("b advanced a's cursor: %v, %v", moved, err)
	}
	if moved, err := s.AdvanceExport(ctx, "s3", "a", 10); !moved || err != nil {
		t.Fatalf("a advance: %v, %v", moved, err)
	}
	if moved, _ := s.AdvanceExport(ctx, "s3", "a", 4); moved {
		t.Error("the cursor moved backwards")
	}
	if _, ok, _ := s.ClaimExport(ctx, "http", "b", time.Minute); !ok {
		t.Error("a lease on one sink blocked another sink")
	}
	now = now.Add(2 * time.Minute)
	seq, ok, err = s.ClaimExport(ctx, "s3", "b", time.Minute)
	if err != nil || !ok || seq != 10 {
		t.Fatalf("claim after expiry = %d, %v, %v; want b to take over at 10", seq, ok, err)
	}
	if c, err := s.ExportCursor(ctx, "s3"); c != 10 || err != nil {
		t.Errorf("cursor = %d, %v", c, err)
	}
	if c, err := s.ExportCursor(ctx, "nothing"); c != 0 || err != nil {
		t.Errorf("cursor of an unknown sink = %d, %v", c, err)
	}
}

// TestOpenMustExist: a reader opening a store that does not exist gets
// ErrNoStore and nothing is created.
func TestOpenMustExist(t *testing.T) {
	ctx := context.Background()
	if _, url := openTest(t, Options{}); strings.HasPrefix(url, "sqlite") {
		dir := filepath.Join(t.TempDir(), "missing")
		_, err := Open(ctx, "sqlite://"+filepath.Join(dir, "state.db"), Options{MustExist: true})
		if !errors.Is(err, ErrNoStore) {
			t.Fatalf("open missing sqlite store: %v; want ErrNoStore", err)
		}
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Open created %s (stat: %v)", dir, err)
		}
		return
	}
	// PostgreSQL: a database without postern's schema is no store.
	url := testURL(t)
	if _, err := Open(ctx, url, Options{MustExist: true}); !errors.Is(err, ErrNoStore) {
		t.Fatalf("open empty database: %v; want ErrNoStore", err)
	}
	s, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = Open(ctx, url, Options{MustExist: true})
	if err != nil {
		t.Fatalf("open existing store: %v", err)
	}
	s.Close()
}
