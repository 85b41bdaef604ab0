package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Heartbeat records that replica name is alive now (started is when it
// started). Replicas call it every few seconds; a replica whose heartbeat
// is older than a deadline has died, and another completes the recordings
// it left running (see DeadReplicaSessions and ClaimSession).
func (s *Store) Heartbeat(ctx context.Context, name string, started time.Time) error {
	now := formatTime(s.now())
	_, err := s.db.ExecContext(ctx, `INSERT INTO replicas (name, started, heartbeat) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET heartbeat = excluded.heartbeat, started = excluded.started`,
		name, formatTime(started), now)
	if err != nil {
		return fmt.Errorf("heartbeat of replica %s: %w", name, err)
	}
	return nil
}

// Replica is one replica's last heartbeat.
type Replica struct {
	// Name is the replica's name (the sessions index's replica column).
	Name string
	// Started is when the replica last started.
	Started time.Time
	// Heartbeat is its last heartbeat.
	Heartbeat time.Time
}

// Replicas returns every replica that has sent a heartbeat, most recent
// first.
func (s *Store) Replicas(ctx context.Context) ([]Replica, error) {
	return queryAll(ctx, s.db, "list replicas", `SELECT name, started, heartbeat FROM replicas ORDER BY heartbeat DESC, name`, nil,
		func(row rowScanner) (Replica, error) {
			var r Replica
			var started, hb string
			if err := row.Scan(&r.Name, &started, &hb); err != nil {
				return r, err
			}
			var err error
			if r.Started, err = parseTime(started); err != nil {
				return r, err
			}
			r.Heartbeat, err = parseTime(hb)
			return r, err
		})
}

// DeadReplicaSessions returns the running sessions of replicas other than
// self that have not sent a heartbeat since deadline: those whose replica's
// last heartbeat is older, and those whose replica never sent one (an older
// postern) that started before deadline.
func (s *Store) DeadReplicaSessions(ctx context.Context, self string, deadline time.Time) ([]Session, error) {
	d := formatTime(deadline)
	return queryAll(ctx, s.db, "list sessions of dead replicas", `SELECT `+sessionColumns+` FROM sessions
		WHERE status = ? AND replica <> ? AND (
			replica IN (SELECT name FROM replicas WHERE heartbeat < ?)
			OR (replica NOT IN (SELECT name FROM replicas) AND start_time < ?))
		ORDER BY start_time`, []any{StatusRunning, self, d, d}, scanSession)
}

// ClaimSession makes replica to the owner of the running session id if
// replica from still owns it, and reports whether it did: of several
// replicas trying to take over a dead one's session, exactly one wins.
func (s *Store) ClaimSession(ctx context.Context, id, from, to string) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET replica = ? WHERE id = ? AND replica = ? AND status = ?`,
		to, id, from, StatusRunning)
	if err != nil {
		return false, fmt.Errorf("claim session %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim session %s: %w", id, err)
	}
	return n == 1, nil
}

// PruneReplicas forgets replicas whose last heartbeat is older than before
// and that own no running session.
func (s *Store) PruneReplicas(ctx context.Context, before time.Time) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM replicas WHERE heartbeat < ?
		AND name NOT IN (SELECT replica FROM sessions WHERE status = ?)`, formatTime(before), StatusRunning)
	if err != nil {
		return fmt.Errorf("prune replicas: %w", err)
	}
	return nil
}

// GetSession returns the session with id as t's transaction sees it, or an
// error wrapping ErrNotFound.
func (t *Tx) GetSession(id string) (Session, error) {
	row := t.tx.QueryRowContext(t.ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id)
	r, err := scanSession(row)
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Session{}, fmt.Errorf("session %s: %w", id, ErrNotFound)
		}
		return Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return r, nil
}
