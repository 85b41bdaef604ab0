package state

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Lock kinds: what a lock names.
const (
	// LockIdentity locks one identity: Issuer (the configured issuer name)
	// and Subject (the token's sub claim).
	LockIdentity = "identity"
	// LockRole locks every identity a role matches.
	LockRole = "role"
	// LockTarget locks a target: sessions to it end, new ones are refused.
	LockTarget = "target"
	// LockSession ends one session (Name is its id).
	LockSession = "session"
)

// Audit event types of locks.
const (
	EventLockCreated = "lock.created"
	EventLockRemoved = "lock.removed"
	// EventLockEnforced: a live connection, channel or session was ended
	// by a lock.
	EventLockEnforced = "lock.enforced"
)

// Lock is one lock. It is active from when it is stored until Expires
// (never, if zero) unless it is removed first.
type Lock struct {
	// ID is the lock id (ULID).
	ID string `json:"id"`
	// Kind is LockIdentity, LockRole, LockTarget or LockSession.
	Kind string `json:"kind"`
	// Issuer and Subject name the identity of an identity lock.
	Issuer  string `json:"issuer,omitempty"`
	Subject string `json:"subject,omitempty"`
	// Username is the locked identity's username when it was locked, for
	// people reading the lock; matching uses Issuer and Subject only.
	Username string `json:"username,omitempty"`
	// Name is the role, the target or the session id of the other kinds.
	Name string `json:"name,omitempty"`
	// Reason is why the lock was made; the user whose session ends reads it.
	Reason string `json:"reason"`
	// CreatedBy names who made the lock.
	CreatedBy string `json:"created_by"`
	// Created is when the lock was made.
	Created time.Time `json:"created"`
	// Expires is when the lock stops applying; zero if never.
	Expires time.Time `json:"expires,omitzero"`
	// Removed is when the lock was removed; zero if it was not.
	Removed time.Time `json:"removed,omitzero"`
	// RemovedBy names who removed it.
	RemovedBy string `json:"removed_by,omitempty"`
}

// Active reports whether l applies at now. Created plays no part: a
// replica whose clock lags the one that made the lock enforces it all the
// same.
func (l Lock) Active(now time.Time) bool {
	return l.Removed.IsZero() && (l.Expires.IsZero() || now.Before(l.Expires))
}

// lockEvent is the audit event of a lock's creation.
func lockEvent(l Lock) Event {
	d := map[string]any{"lock": l.ID, "kind": l.Kind, "reason": l.Reason}
	switch l.Kind {
	case LockIdentity:
		d["issuer"], d["subject"], d["username"] = l.Issuer, l.Subject, l.Username
	default:
		d["name"] = l.Name
	}
	if !l.Expires.IsZero() {
		d["expires"] = formatTime(l.Expires)
	}
	e := Event{Time: l.Created, Type: EventLockCreated, Actor: l.CreatedBy, Details: d}
	switch l.Kind {
	case LockTarget:
		e.Target = l.Name
	case LockSession:
		e.Session = l.Name
	}
	return e
}

const lockColumns = `id, kind, issuer, subject, username, name, reason, created_by, created, expires, removed, removed_by`

// CreateLock stores l and appends its lock.created audit event in the same
// transaction. Created defaults to now.
func (s *Store) CreateLock(ctx context.Context, l Lock) error {
	if l.ID == "" || l.Kind == "" {
		return errors.New("create lock: id and kind are required")
	}
	if l.Created.IsZero() {
		l.Created = s.now()
	}
	expires := ""
	if !l.Expires.IsZero() {
		expires = formatTime(l.Expires)
	}
	return s.Write(ctx, func(t *Tx) error {
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO locks (`+lockColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', '')`, l.ID, l.Kind, l.Issuer, l.Subject, l.Username,
			l.Name, l.Reason, l.CreatedBy, formatTime(l.Created), expires); err != nil {
			return fmt.Errorf("create lock: %w", err)
		}
		if _, err := t.Append(lockEvent(l)); err != nil {
			return fmt.Errorf("audit lock %s: %w", l.ID, err)
		}
		return nil
	})
}

// RemoveLock removes lock id on behalf of by and appends a lock.removed
// audit event; ErrNotFound if there is no lock id that is not removed yet.
func (s *Store) RemoveLock(ctx context.Context, id, by string) error {
	now := s.now()
	return s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `UPDATE locks SET removed = ?, removed_by = ? WHERE id = ? AND removed = ''`,
			formatTime(now), by, id)
		if err != nil {
			return fmt.Errorf("remove lock %s: %w", id, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return fmt.Errorf("lock %s: %w", id, ErrNotFound)
		}
		if _, err := t.Append(Event{Time: now, Type: EventLockRemoved, Actor: by, Details: map[string]any{"lock": id}}); err != nil {
			return fmt.Errorf("audit lock removal %s: %w", id, err)
		}
		return nil
	})
}

// GetLock returns lock id, or ErrNotFound.
func (s *Store) GetLock(ctx context.Context, id string) (Lock, error) {
	ls, err := queryAll(ctx, s.db, "get lock", `SELECT `+lockColumns+` FROM locks WHERE id = ?`, []any{id}, scanLock)
	if err != nil {
		return Lock{}, err
	}
	if len(ls) == 0 {
		return Lock{}, fmt.Errorf("lock %s: %w", id, ErrNotFound)
	}
	return ls[0], nil
}

// ActiveLocks returns the locks that are neither removed nor expired at
// now, oldest first. It is the query every replica runs to refresh the
// locks it enforces, so it reads only unremoved rows.
func (s *Store) ActiveLocks(ctx context.Context) ([]Lock, error) {
	return queryAll(ctx, s.db, "list active locks",
		`SELECT `+lockColumns+` FROM locks WHERE removed = '' AND (expires = '' OR expires > ?) ORDER BY created, id`,
		[]any{formatTime(s.now())}, scanLock)
}

// ListLocks returns up to limit locks, newest first, including removed and
// expired ones.
func (s *Store) ListLocks(ctx context.Context, limit int) ([]Lock, error) {
	if limit <= 0 {
		limit = 100
	}
	return queryAll(ctx, s.db, "list locks", `SELECT `+lockColumns+` FROM locks ORDER BY created DESC, id DESC LIMIT ?`,
		[]any{limit}, scanLock)
}

func scanLock(row rowScanner) (Lock, error) {
	var l Lock
	var created, expires, removed string
	if err := row.Scan(&l.ID, &l.Kind, &l.Issuer, &l.Subject, &l.Username, &l.Name, &l.Reason, &l.CreatedBy,
		&created, &expires, &removed, &l.RemovedBy); err != nil {
		return l, err
	}
	var err error
	if l.Created, err = parseTime(created); err != nil {
		return l, err
	}
	if expires != "" {
		if l.Expires, err = parseTime(expires); err != nil {
			return l, err
		}
	}
	if removed != "" {
		if l.Removed, err = parseTime(removed); err != nil {
			return l, err
		}
	}
	return l, nil
}
