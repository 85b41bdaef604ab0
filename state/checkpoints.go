package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// StoredCheckpoint is a signed checkpoint of the audit chain as the store
// keeps it. The store does not read the envelope (package audit defines
// it); it keeps it, orders it by Seq and remembers whether it has been
// written to every anchor outside the store.
type StoredCheckpoint struct {
	// Seq is the sequence number of the event the checkpoint covers.
	Seq int64
	// Time is when it was taken.
	Time time.Time
	// Envelope is the signed checkpoint, as JSON.
	Envelope string
	// Anchored reports whether it has been written to every anchor.
	Anchored bool
}

const checkpointColumns = `seq, time, envelope, anchored`

func scanCheckpoint(row rowScanner) (StoredCheckpoint, error) {
	var c StoredCheckpoint
	var t string
	var anchored int
	if err := row.Scan(&c.Seq, &t, &c.Envelope, &anchored); err != nil {
		return c, err
	}
	c.Anchored = anchored != 0
	var err error
	c.Time, err = parseTime(t)
	return c, err
}

// Head returns the sequence number and hash of the last event of the
// chain; 0 and GenesisPrev for an empty chain.
func (t *Tx) Head() (int64, string, error) {
	if !t.head.loaded {
		if err := t.loadHead(); err != nil {
			return 0, "", err
		}
	}
	return t.head.seq, t.head.hash, nil
}

// loadHead reads the chain head into t.head.
func (t *Tx) loadHead() error {
	var last sql.NullInt64
	var prev sql.NullString
	st, err := t.txStmt(sqlChainHead)
	if err != nil {
		return err
	}
	err = st.QueryRowContext(t.ctx).Scan(&last, &prev)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		t.head.seq, t.head.hash = 0, GenesisPrev
	case err != nil:
		return fmt.Errorf("read audit chain head: %w", err)
	default:
		t.head.seq, t.head.hash = last.Int64, prev.String
	}
	t.head.loaded = true
	return nil
}

// LastCheckpoint returns the checkpoint with the highest Seq; ok is false
// if there is none.
func (t *Tx) LastCheckpoint() (c StoredCheckpoint, ok bool, err error) {
	row := t.tx.QueryRowContext(t.ctx, `SELECT `+checkpointColumns+` FROM audit_checkpoints ORDER BY seq DESC LIMIT 1`)
	c, err = scanCheckpoint(row)
	if errors.Is(err, sql.ErrNoRows) {
		return StoredCheckpoint{}, false, nil
	}
	if err != nil {
		return StoredCheckpoint{}, false, fmt.Errorf("read last checkpoint: %w", err)
	}
	return c, true, nil
}

// CountEvents counts the events of type typ with afterSeq < seq <= upToSeq.
func (t *Tx) CountEvents(typ string, afterSeq, upToSeq int64) (int64, error) {
	return countEvents(t.ctx, t.tx, typ, afterSeq, upToSeq)
}

// countEvents is CountEvents on a database or in a transaction.
func countEvents(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, typ string, afterSeq, upToSeq int64) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM audit_events WHERE type = ? AND seq > ? AND seq <= ?`,
		typ, afterSeq, upToSeq).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count %s events: %w", typ, err)
	}
	return n, nil
}

// PutCheckpoint stores c; a checkpoint of the same Seq already stored is
// kept (two replicas may take one of the same head).
func (t *Tx) PutCheckpoint(c StoredCheckpoint) error {
	anchored := 0
	if c.Anchored {
		anchored = 1
	}
	_, err := t.tx.ExecContext(t.ctx, `INSERT INTO audit_checkpoints (seq, time, envelope, anchored) VALUES (?, ?, ?, ?)
		ON CONFLICT (seq) DO NOTHING`, c.Seq, formatTime(c.Time), c.Envelope, anchored)
	if err != nil {
		return fmt.Errorf("store checkpoint %d: %w", c.Seq, err)
	}
	return nil
}

// Head returns the sequence number and hash of the last event of the chain;
// 0 and GenesisPrev for an empty chain.
func (s *Store) Head(ctx context.Context) (int64, string, error) {
	var seq sql.NullInt64
	var hash sql.NullString
	err := s.db.QueryRowContext(ctx, sqlChainHead).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, GenesisPrev, nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("read audit chain head: %w", err)
	}
	return seq.Int64, hash.String, nil
}

// CountEvents counts the events of type typ with afterSeq < seq <= upToSeq.
func (s *Store) CountEvents(ctx context.Context, typ string, afterSeq, upToSeq int64) (int64, error) {
	return countEvents(ctx, s.db, typ, afterSeq, upToSeq)
}

// Checkpoints returns up to limit stored checkpoints with Seq > afterSeq,
// in order; a limit of zero or less means 1000.
func (s *Store) Checkpoints(ctx context.Context, afterSeq int64, limit int) ([]StoredCheckpoint, error) {
	if limit <= 0 {
		limit = 1000
	}
	return queryAll(ctx, s.db, "list checkpoints", `SELECT `+checkpointColumns+` FROM audit_checkpoints WHERE seq > ? ORDER BY seq LIMIT ?`,
		[]any{afterSeq, limit}, scanCheckpoint)
}

// UnanchoredCheckpoints returns the checkpoints not yet written to every
// anchor, oldest first, at most limit (1000 if zero or less).
func (s *Store) UnanchoredCheckpoints(ctx context.Context, limit int) ([]StoredCheckpoint, error) {
	if limit <= 0 {
		limit = 1000
	}
	return queryAll(ctx, s.db, "list unanchored checkpoints", `SELECT `+checkpointColumns+` FROM audit_checkpoints WHERE anchored = 0 ORDER BY seq LIMIT ?`,
		[]any{limit}, scanCheckpoint)
}

// MarkAnchored records that the checkpoint of seq is written to every
// anchor. It commits with the group of concurrent writes (see Write), so it
// costs appenders no commit of its own.
func (s *Store) MarkAnchored(ctx context.Context, seq int64) error {
	return s.Write(ctx, func(t *Tx) error {
		if _, err := t.tx.ExecContext(t.ctx, `UPDATE audit_checkpoints SET anchored = 1 WHERE seq = ?`, seq); err != nil {
			return fmt.Errorf("mark checkpoint %d anchored: %w", seq, err)
		}
		return nil
	})
}

// ClaimExport takes (or renews) the lease of the export sink for owner
// until now+lease and returns the sink's cursor: the sequence number of the
// last event exported. ok is false while another owner holds an unexpired
// lease; then only that owner exports, so that replicas sharing the store
// do not send the same events twice.
func (s *Store) ClaimExport(ctx context.Context, sink, owner string, lease time.Duration) (seq int64, ok bool, err error) {
	now := s.now().UTC()
	err = s.Write(ctx, func(t *Tx) error {
		var cur int64
		var holder, until string
		err := t.tx.QueryRowContext(t.ctx, `SELECT seq, owner, lease_until FROM audit_export WHERE sink = ?`, sink).Scan(&cur, &holder, &until)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			_, err = t.tx.ExecContext(t.ctx, `INSERT INTO audit_export (sink, seq, owner, lease_until, updated) VALUES (?, 0, ?, ?, ?)`,
				sink, owner, formatTime(now.Add(lease)), formatTime(now))
			if err != nil {
				return fmt.Errorf("claim export %s: %w", sink, err)
			}
			seq, ok = 0, true
			return nil
		case err != nil:
			return fmt.Errorf("claim export %s: %w", sink, err)
		}
		if holder != owner && holder != "" && strings.Compare(until, formatTime(now)) > 0 {
			seq, ok = cur, false
			return nil
		}
		if _, err := t.tx.ExecContext(t.ctx, `UPDATE audit_export SET owner = ?, lease_until = ? WHERE sink = ?`,
			owner, formatTime(now.Add(lease)), sink); err != nil {
			return fmt.Errorf("claim export %s: %w", sink, err)
		}
		seq, ok = cur, true
		return nil
	})
	return seq, ok, err
}

// AdvanceExport moves the cursor of sink to seq, if owner still holds its
// lease; it returns false (and changes nothing) if it does not.
func (s *Store) AdvanceExport(ctx context.Context, sink, owner string, seq int64) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE audit_export SET seq = ?, updated = ? WHERE sink = ? AND owner = ? AND seq <= ?`,
		seq, formatTime(s.now()), sink, owner, seq)
	if err != nil {
		return false, fmt.Errorf("advance export %s: %w", sink, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("advance export %s: %w", sink, err)
	}
	return n == 1, nil
}

// ExportCursor returns the sequence number of the last event exported to
// sink (0 if it has exported nothing).
func (s *Store) ExportCursor(ctx context.Context, sink string) (int64, error) {
	var seq int64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM audit_export WHERE sink = ?`, sink).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read export cursor %s: %w", sink, err)
	}
	return seq, nil
}
