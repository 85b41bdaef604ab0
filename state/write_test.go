package state

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
)

// holdLeader starts a Write whose function blocks until release is closed,
// so that writes queued meanwhile are committed together as the next
// group. It returns once that Write is running.
func holdLeader(t *testing.T, s *Store) (release func(), done <-chan error) {
	t.Helper()
	running := make(chan struct{})
	gate := make(chan struct{})
	errc := make(chan error, 1)
	go func() {
		errc <- s.Write(context.Background(), func(tx *Tx) error {
			close(running)
			<-gate
			_, err := tx.Append(Event{Type: EventAuthSuccess, Actor: "leader"})
			return err
		})
	}()
	<-running
	return sync.OnceFunc(func() { close(gate) }), errc
}

// waitQueued waits until n writes are queued behind the running group.
func waitQueued(t *testing.T, s *Store, n int) {
	t.Helper()
	for {
		s.qmu.Lock()
		q := len(s.queue)
		s.qmu.Unlock()
		if q >= n {
			return
		}
		runtime.Gosched() // the writers are goroutines on their way to the queue
	}
}

func TestGroupCommitSharesOneTransaction(t *testing.T) {
	ctx := context.Background()
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s, _ := openTest(t, Options{AuditFile: auditFile})
	release, leaderDone := holdLeader(t, s)

	const n = 40
	var wg sync.WaitGroup
	seqs := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			e, err := s.Append(ctx, Event{Type: EventSessionStart, Details: map[string]any{"i": i}})
			if err != nil {
				t.Errorf("Append %d: %v", i, err)
				return
			}
			seqs[i] = e.Seq
		})
	}
	waitQueued(t, s, n)
	release()
	wg.Wait()
	if err := <-leaderDone; err != nil {
		t.Fatalf("leader: %v", err)
	}

	writes, groups := s.WriteStats()
	// migrations do not go through Write: the leader's group, then one
	// group of n.
	if writes != n+1 || groups != 2 {
		t.Errorf("writes, groups = %d, %d; want %d, 2", writes, groups, n+1)
	}
	seen := map[int64]bool{}
	for i, q := range seqs {
		if q < 2 || q > n+1 || seen[q] {
			t.Errorf("append %d got seq %d (duplicate or out of range)", i, q)
		}
		seen[q] = true
	}
	rep, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Events != n+1 {
		t.Fatalf("report = %+v; want intact chain of %d", rep, n+1)
	}
	// The audit file has every event once, in chain order.
	f, err := os.Open(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want int64 = 1
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var e Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit file line %d: %v", want, err)
		}
		if e.Seq != want {
			t.Fatalf("audit file line %d has seq %d", want, e.Seq)
		}
		want++
	}
	if want != n+2 {
		t.Errorf("audit file has %d lines; want %d", want-1, n+1)
	}
}

func TestGroupCommitIsolatesFailedWrite(t *testing.T) {
	ctx := context.Background()
	auditFile := filepath.Join(t.TempDir(), "audit.jsonl")
	s, _ := openTest(t, Options{AuditFile: auditFile})
	release, leaderDone := holdLeader(t, s)

	errBad := errors.New("bad write")
	type result struct {
		name string
		err  error
	}
	results := make(chan result, 4)
	write := func(name string, f func(*Tx) error) {
		go func() { results <- result{name, s.Write(ctx, f)} }()
	}
	write("good-before", func(tx *Tx) error {
		_, err := tx.Append(Event{Type: EventSessionStart, Session: "good-before"})
		return err
	})
	waitQueued(t, s, 1)
	// Appends and a session row, then fails: all of it must be undone.
	write("failing", func(tx *Tx) error {
		if _, err := tx.Append(Event{Type: EventSessionStart, Session: "failing"}); err != nil {
			return err
		}
		if err := tx.PutSession(Session{ID: "failing", Status: StatusRunning}); err != nil {
			return err
		}
		return errBad
	})
	waitQueued(t, s, 2)
	write("panicking", func(tx *Tx) error {
		if _, err := tx.Append(Event{Type: EventSessionStart, Session: "panicking"}); err != nil {
			return err
		}
		panic("boom")
	})
	waitQueued(t, s, 3)
	write("good-after", func(tx *Tx) error {
		if _, err := tx.Append(Event{Type: EventSessionStart, Session: "good-after"}); err != nil {
			return err
		}
		return tx.PutSession(Session{ID: "good-after", Status: StatusRunning})
	})
	waitQueued(t, s, 4)
	release()
	if err := <-leaderDone; err != nil {
		t.Fatalf("leader: %v", err)
	}
	got := map[string]error{}
	for range 4 {
		r := <-results
		got[r.name] = r.err
	}
	if got["good-before"] != nil || got["good-after"] != nil {
		t.Errorf("good writes failed: %v, %v", got["good-before"], got["good-after"])
	}
	if !errors.Is(got["failing"], errBad) {
		t.Errorf("failing write: err = %v; want %v", got["failing"], errBad)
	}
	if got["panicking"] == nil {
		t.Errorf("panicking write: err = nil; want an error")
	}

	evs, err := s.Events(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for _, e := range evs {
		sessions = append(sessions, e.Session)
	}
	if want := []string{"", "good-before", "good-after"}; !slices.Equal(sessions, want) {
		t.Errorf("chain holds sessions %q; want %q", sessions, want)
	}
	rep, err := s.Verify(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("report = %+v; want intact chain", rep)
	}
	if _, err := s.GetSession(ctx, "failing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("session of the failed write: err = %v; want ErrNotFound", err)
	}
	if _, err := s.GetSession(ctx, "good-after"); err != nil {
		t.Errorf("session of the good write: %v", err)
	}
	b, err := os.ReadFile(auditFile)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(splitLines(b)); n != 3 {
		t.Errorf("audit file has %d lines; want 3 (no line for an undone event)", n)
	}
}

func TestWriteCancelledBeforeStart(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	err := s.Write(ctx, func(*Tx) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Errorf("Write with a cancelled context: err = %v, ran = %v; want context.Canceled, not run", err, called)
	}
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	sc := bufio.NewScanner(bytesReader(b))
	for sc.Scan() {
		out = append(out, append([]byte(nil), sc.Bytes()...))
	}
	return out
}
