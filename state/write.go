package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Group commit. Every audit append and session index write goes through
// Store.Write. Concurrent writers are gathered into one database
// transaction with one commit (one fsync of the SQLite WAL, one round trip
// to PostgreSQL) instead of one each: a caller that finds no commit in
// progress becomes the leader and commits everything queued until the queue
// is empty; the others wait for their result. Each write runs inside its own
// savepoint, so a failing write is undone alone and the rest of the group
// still commits. A Write returns only after its transaction has committed
// (or failed), exactly as if it had committed alone: grouping changes the
// cost of durability, not its promise.
//
// database/sql has no group commit and neither driver offers one, so it is
// written here.

// maxGroup bounds how many writes one transaction carries, so a flood of
// writers cannot hold the write lock for long.
const maxGroup = 256

// Tx is a group of writes that commit together: everything a Write function
// does through its Tx becomes durable at once, or not at all. A Tx is valid
// only during the Write call that received it.
type Tx struct {
	s      *Store
	ctx    context.Context
	tx     *sql.Tx
	head   *chainHead
	events []Event // appended in this write, in sequence order
}

// chainHead is the last event of the audit chain as the current group
// transaction sees it; read lazily by the first Append of the group.
type chainHead struct {
	loaded bool
	seq    int64
	hash   string
}

// writeQueue is the Store's group commit state.
type writeQueue struct {
	qmu        sync.Mutex
	queue      []*pendingWrite
	committing bool // a leader is running commitLoop

	writes, groups atomic.Int64
}

// pendingWrite is one queued Write.
type pendingWrite struct {
	f    func(*Tx) error
	done chan error
	// events receives the events f appended, for the audit file.
	events []Event
}

// Write runs f in a transaction shared with other concurrent writers and
// returns when that transaction has committed. f must only use the Tx it is
// given (not the Store) and should do no slow work: the group waits for it.
// If f returns an error, its writes are undone and Write returns that error;
// the other writes of the group are unaffected. A ctx cancelled before the
// write starts abandons it; once it has started, the write runs to its end
// so that the caller's knowledge of what committed stays exact.
func (s *Store) Write(ctx context.Context, f func(*Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := &pendingWrite{f: f, done: make(chan error, 1)}
	s.qmu.Lock()
	s.queue = append(s.queue, w)
	lead := !s.committing
	if lead {
		s.committing = true
	}
	s.qmu.Unlock()
	if lead {
		s.commitLoop(context.WithoutCancel(ctx))
	}
	return <-w.done
}

// commitLoop commits queued writes in groups until the queue is empty. It
// runs on the goroutine of the Write that found no commit in progress.
func (s *Store) commitLoop(ctx context.Context) {
	for {
		s.qmu.Lock()
		n := min(len(s.queue), maxGroup)
		if n == 0 {
			s.committing = false
			s.qmu.Unlock()
			return
		}
		group := s.queue[:n:n]
		s.queue = s.queue[n:]
		if len(s.queue) == 0 {
			s.queue = nil // let the backing array go
		}
		s.qmu.Unlock()
		s.commitGroup(ctx, group)
	}
}

// commitGroup runs group in one transaction and reports each write's result.
func (s *Store) commitGroup(ctx context.Context, group []*pendingWrite) {
	results := make([]error, len(group))
	err := s.runGroup(ctx, group, results)
	for i, w := range group {
		if err != nil {
			w.done <- err
			continue
		}
		w.done <- results[i]
	}
	if err == nil {
		s.exportEvents(group, results)
	}
}

// runGroup executes group in one transaction. results receives each write's
// own error; the returned error is the transaction's (begin or commit), which
// fails every write.
func (s *Store) runGroup(ctx context.Context, group []*pendingWrite, results []error) error {
	s.groups.Add(1)
	s.writes.Add(int64(len(group)))
	tx, err := s.db.BeginTx(ctx, nil) // BEGIN IMMEDIATE on SQLite, advisory lock on PostgreSQL
	if err != nil {
		return fmt.Errorf("begin write: %w", err)
	}
	defer tx.Rollback()
	head := &chainHead{}
	single := len(group) == 1
	for i, w := range group {
		t := &Tx{s: s, ctx: ctx, tx: tx, head: head}
		if single {
			// Alone in its transaction: a failure rolls everything back,
			// no savepoint needed.
			if results[i] = runWrite(w.f, t); results[i] != nil {
				return results[i]
			}
			w.events = t.events
			continue
		}
		saved := *head
		if _, err := tx.ExecContext(ctx, `SAVEPOINT w`); err != nil {
			return fmt.Errorf("write savepoint: %w", err)
		}
		if results[i] = runWrite(w.f, t); results[i] != nil {
			*head = saved
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT w`); err != nil {
				return fmt.Errorf("roll back write: %w", err)
			}
		} else {
			w.events = t.events
		}
		if _, err := tx.ExecContext(ctx, `RELEASE SAVEPOINT w`); err != nil {
			return fmt.Errorf("release write savepoint: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit write: %w", err)
	}
	return nil
}

// runWrite calls f, turning a panic into an error so that one bad write
// cannot leave the other writers of its group waiting forever.
func runWrite(f func(*Tx) error, t *Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("state write panicked: %v", p)
		}
	}()
	return f(t)
}

// exportEvents appends the committed events of group to the audit file, in
// sequence order (the group's order).
func (s *Store) exportEvents(group []*pendingWrite, results []error) {
	if s.auditFile == nil {
		return
	}
	var buf []byte
	for i, w := range group {
		if results[i] != nil {
			continue
		}
		for _, e := range w.events {
			line, err := json.Marshal(e)
			if err != nil {
				s.log.Error("audit file encode failed", "seq", e.Seq, "err", err)
				continue
			}
			buf = append(append(buf, line...), '\n')
		}
	}
	if len(buf) == 0 {
		return
	}
	if _, err := s.auditFile.Write(buf); err != nil {
		s.log.Error("audit file write failed", "err", err)
	}
}

// WriteStats reports how many writes the store has committed and in how
// many transactions (groups); writes ÷ groups is the average group size.
func (s *Store) WriteStats() (writes, groups int64) { return s.writes.Load(), s.groups.Load() }

// Append adds e to the audit chain in t's transaction, assigning Seq, Time
// (if zero), Prev and Hash, and returns the event as it will be stored.
func (t *Tx) Append(e Event) (Event, error) {
	e, detailsJSON, err := t.s.prepareEvent(e)
	if err != nil {
		return Event{}, err
	}
	if !t.head.loaded {
		if err := t.loadHead(); err != nil {
			return Event{}, err
		}
	}
	e.Seq, e.Prev = t.head.seq+1, t.head.hash
	if e.Hash, err = Hash(e); err != nil {
		return Event{}, err
	}
	ins, err := t.txStmt(sqlInsertEvent)
	if err != nil {
		return Event{}, err
	}
	_, err = ins.ExecContext(t.ctx,
		e.Seq, formatTime(e.Time), e.Type, e.Actor, e.Source, e.Target, e.Session, detailsJSON, e.Prev, e.Hash)
	if err != nil {
		return Event{}, fmt.Errorf("insert audit event: %w", err)
	}
	t.head.seq, t.head.hash = e.Seq, e.Hash
	t.events = append(t.events, e)
	return e, nil
}

// prepareEvent checks e, sets its time (now if zero, UTC, microseconds) and
// normalises its details; it returns the details as stored.
func (s *Store) prepareEvent(e Event) (Event, string, error) {
	if e.Type == "" {
		return Event{}, "", errors.New("append audit event: missing type")
	}
	if e.Time.IsZero() {
		e.Time = s.now()
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	details, detailsJSON, err := normalizeDetails(e.Details)
	if err != nil {
		return Event{}, "", err
	}
	e.Details = details
	return e, detailsJSON, nil
}

// PutSession inserts row, or replaces the row with the same ID, in t's
// transaction.
func (t *Tx) PutSession(row Session) error {
	if row.ID == "" {
		return errors.New("put session: missing id")
	}
	var end sql.NullString
	if row.End != nil {
		end = sql.NullString{String: formatTime(*row.End), Valid: true}
	}
	var exit sql.NullInt64
	if row.ExitStatus != nil {
		exit = sql.NullInt64{Int64: int64(*row.ExitStatus), Valid: true}
	}
	var meta string
	if len(row.Meta) > 0 {
		b, err := json.Marshal(row.Meta)
		if err != nil {
			return fmt.Errorf("encode session meta: %w", err)
		}
		meta = string(b)
	}
	masked := 0
	if row.Masked {
		masked = 1
	}
	// DELETE + INSERT is the portable spelling of an upsert that replaces
	// every column.
	del, err := t.txStmt(sqlDeleteSession)
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	if _, err := del.ExecContext(t.ctx, row.ID); err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	ins, err := t.txStmt(sqlInsertSession)
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	_, err = ins.ExecContext(t.ctx,
		row.ID, row.Identity, row.Issuer, row.Role, row.Target, row.Login, row.Kind, row.Command,
		formatTime(row.Start), end, row.Status, exit, row.BytesIn, row.BytesOut, row.Size, row.SHA256,
		row.SealSeq, row.Object, row.Replica, masked, meta, row.IdentityKey)
	if err != nil {
		return fmt.Errorf("put session: %w", err)
	}
	return nil
}
