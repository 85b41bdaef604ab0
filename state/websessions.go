package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// WebSession is one login to the web UI. The browser holds a random token;
// the row is found by the token's hash (ID), so neither the table nor a
// backup of it can be replayed as a cookie.
type WebSession struct {
	// ID is the hex SHA-256 of the cookie token.
	ID string
	// Issuer and Subject identify the person (the canonical identity key).
	Issuer, Subject string
	// Identity is the identity as the login verified it, JSON-encoded by
	// the web UI.
	Identity string
	// CSRF is the token state-changing requests must carry.
	CSRF string
	// Created and Expires bound the session.
	Created, Expires time.Time
}

// PutWebSession stores a new web session.
func (s *Store) PutWebSession(ctx context.Context, ws WebSession) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO web_sessions (id, issuer, subject, identity, csrf, created, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, ws.ID, ws.Issuer, ws.Subject, ws.Identity, ws.CSRF, formatTime(ws.Created), formatTime(ws.Expires))
	if err != nil {
		return fmt.Errorf("store web session: %w", err)
	}
	return nil
}

// GetWebSession returns the unexpired web session with id, or an error
// wrapping ErrNotFound (also for an expired one).
func (s *Store) GetWebSession(ctx context.Context, id string) (WebSession, error) {
	var ws WebSession
	var created, expires string
	err := s.db.QueryRowContext(ctx, `SELECT id, issuer, subject, identity, csrf, created, expires FROM web_sessions WHERE id = ? AND expires > ?`,
		id, formatTime(s.now())).Scan(&ws.ID, &ws.Issuer, &ws.Subject, &ws.Identity, &ws.CSRF, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return WebSession{}, fmt.Errorf("web session: %w", ErrNotFound)
	}
	if err != nil {
		return WebSession{}, fmt.Errorf("read web session: %w", err)
	}
	if ws.Created, err = parseTime(created); err != nil {
		return WebSession{}, err
	}
	if ws.Expires, err = parseTime(expires); err != nil {
		return WebSession{}, err
	}
	return ws, nil
}

// DeleteWebSession ends one web session (logout). Ending one that does not
// exist is not an error.
func (s *Store) DeleteWebSession(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM web_sessions WHERE id = ?`, id); err != nil {
		return fmt.Errorf("end web session: %w", err)
	}
	return nil
}

// EndWebSessions ends every web session of the identity issuer + subject
// on every replica, and returns how many it ended. It is what a revocation
// (and an identity lock) calls: the next request with any of their cookies
// is refused.
func (s *Store) EndWebSessions(ctx context.Context, issuer, subject string) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM web_sessions WHERE issuer = ? AND subject = ?`, issuer, subject)
	if err != nil {
		return 0, fmt.Errorf("end web sessions of %s/%s: %w", issuer, subject, err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}

// PruneWebSessions deletes expired web sessions and returns how many.
func (s *Store) PruneWebSessions(ctx context.Context) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM web_sessions WHERE expires <= ?`, formatTime(s.now()))
	if err != nil {
		return 0, fmt.Errorf("prune web sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
