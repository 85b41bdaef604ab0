package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Secret returns the secret called name, creating it with generate the
// first time any replica asks: every replica sharing the store gets the
// same value, and concurrent first calls agree on one (the first insert
// wins; the others read it). Secrets are what postern generates for itself
// (see the secrets table); configured ones never pass through here.
func (s *Store) Secret(ctx context.Context, name string, generate func() ([]byte, error)) ([]byte, error) {
	if v, err := s.readSecret(ctx, name); err == nil {
		return v, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	v, err := generate()
	if err != nil {
		return nil, fmt.Errorf("generate secret %s: %w", name, err)
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO secrets (name, value, created) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
		name, string(v), formatTime(s.now()))
	if err != nil {
		return nil, fmt.Errorf("store secret %s: %w", name, err)
	}
	return s.readSecret(ctx, name) // the value that won, ours or another replica's
}

// LookupSecret returns the secret called name, or an error wrapping
// ErrNotFound if no replica has created it.
func (s *Store) LookupSecret(ctx context.Context, name string) ([]byte, error) {
	return s.readSecret(ctx, name)
}

func (s *Store) readSecret(ctx context.Context, name string) ([]byte, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read secret %s: %w", name, err)
	}
	return []byte(v), nil
}
