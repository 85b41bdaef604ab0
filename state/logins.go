package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Browser logins.
//
// A login at an identity provider that answers through the browser (SAML)
// spans three requests that may reach different replicas: the start (a
// LoginRequest is stored under the RelayState sent to the provider), the
// provider's answer (the request is looked up, the assertion's id is
// consumed so that it is accepted once, and a one-time LoginCode is
// stored), and the redemption of the code (by `postern login` or the web
// UI). Every piece lives here, in the store the replicas share, and
// expires.

// ErrReplayed reports an assertion whose id has been accepted before.
var ErrReplayed = errors.New("assertion has already been used")

// LoginRequest is a login in progress at an identity provider.
type LoginRequest struct {
	// Relay is the RelayState sent with the request: the key of the row.
	Relay string
	// Provider names the identity provider.
	Provider string
	// RequestID is the id of the authentication request, which the answer
	// must name (InResponseTo).
	RequestID string
	// RedirectURI is where the login ends (postern login's loopback
	// listener, or the web UI).
	RedirectURI string
	// State is the client's state, returned to it with the code.
	State string
	// Challenge is the client's PKCE code challenge (S256).
	Challenge string
	// Expires is when the request may no longer be answered.
	Expires time.Time
}

// LoginCode is the one-time code a finished login is redeemed with.
type LoginCode struct {
	// Hash is the SHA-256 of the code (hex): the code itself is never
	// stored.
	Hash string
	// Identity is the identity the login proved (JSON; package state does
	// not know its type).
	Identity string
	// Challenge is the PKCE code challenge the redeemer's verifier must
	// match.
	Challenge string
	// RedirectURI is where the code was sent.
	RedirectURI string
	// Expires is when the code lapses.
	Expires time.Time
}

// PutLoginRequest stores r (and forgets expired requests).
func (s *Store) PutLoginRequest(ctx context.Context, r LoginRequest) error {
	now := formatTime(s.now())
	err := s.Write(ctx, func(t *Tx) error {
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM login_requests WHERE expires < ?`, now); err != nil {
			return err
		}
		_, err := t.tx.ExecContext(t.ctx, `INSERT INTO login_requests (relay, provider, request_id, redirect_uri, state, challenge, expires)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, r.Relay, r.Provider, r.RequestID, r.RedirectURI, r.State, r.Challenge, formatTime(r.Expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("store login request: %w", err)
	}
	return nil
}

// GetLoginRequest returns the unexpired request stored under relay, or an
// error wrapping ErrNotFound.
func (s *Store) GetLoginRequest(ctx context.Context, relay string) (LoginRequest, error) {
	r := LoginRequest{Relay: relay}
	var expires string
	err := s.db.QueryRowContext(ctx, `SELECT provider, request_id, redirect_uri, state, challenge, expires FROM login_requests WHERE relay = ?`,
		relay).Scan(&r.Provider, &r.RequestID, &r.RedirectURI, &r.State, &r.Challenge, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return LoginRequest{}, fmt.Errorf("login request: %w", ErrNotFound)
	}
	if err != nil {
		return LoginRequest{}, fmt.Errorf("get login request: %w", err)
	}
	if r.Expires, err = parseTime(expires); err != nil {
		return LoginRequest{}, err
	}
	if !s.now().Before(r.Expires) {
		return LoginRequest{}, fmt.Errorf("login request expired: %w", ErrNotFound)
	}
	return r, nil
}

// FinishLogin ends the request stored under relay and stores code, in one
// write, consuming the assertion id assertion (kept until assertionExpires)
// on the way. It returns an error wrapping ErrNotFound if the request is
// gone (answered already, or expired), and ErrReplayed if the assertion
// was accepted before; then nothing is written.
func (s *Store) FinishLogin(ctx context.Context, relay, assertion string, assertionExpires time.Time, code LoginCode) error {
	now := s.now()
	return s.Write(ctx, func(t *Tx) error {
		if err := t.consumeAssertion(assertion, assertionExpires, now); err != nil {
			return err
		}
		res, err := t.tx.ExecContext(t.ctx, `DELETE FROM login_requests WHERE relay = ? AND expires > ?`, relay, formatTime(now))
		if err != nil {
			return fmt.Errorf("finish login: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return fmt.Errorf("login request: %w", ErrNotFound)
		}
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM login_codes WHERE expires < ?`, formatTime(now)); err != nil {
			return err
		}
		_, err = t.tx.ExecContext(t.ctx, `INSERT INTO login_codes (hash, identity, challenge, redirect_uri, expires) VALUES (?, ?, ?, ?, ?)`,
			code.Hash, code.Identity, code.Challenge, code.RedirectURI, formatTime(code.Expires))
		return err
	})
}

// ConsumeAssertion records the assertion id until expires, or returns
// ErrReplayed if it is recorded (and not expired) already. Every replica
// sharing the store sees the record.
func (s *Store) ConsumeAssertion(ctx context.Context, id string, expires time.Time) error {
	now := s.now()
	return s.Write(ctx, func(t *Tx) error { return t.consumeAssertion(id, expires, now) })
}

func (t *Tx) consumeAssertion(id string, expires, now time.Time) error {
	if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM consumed_assertions WHERE expires < ?`, formatTime(now)); err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT COUNT(*) FROM consumed_assertions WHERE id = ?`, id).Scan(&n); err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	if n > 0 {
		return ErrReplayed
	}
	if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO consumed_assertions (id, expires) VALUES (?, ?)`, id, formatTime(expires)); err != nil {
		return fmt.Errorf("replay cache: %w", err)
	}
	return nil
}

// TakeLoginCode removes and returns the unexpired code with hash, or an
// error wrapping ErrNotFound: a code is redeemed at most once.
func (s *Store) TakeLoginCode(ctx context.Context, hash string) (LoginCode, error) {
	c := LoginCode{Hash: hash}
	now := s.now()
	err := s.Write(ctx, func(t *Tx) error {
		var expires string
		err := t.tx.QueryRowContext(t.ctx, `SELECT identity, challenge, redirect_uri, expires FROM login_codes WHERE hash = ?`, hash).
			Scan(&c.Identity, &c.Challenge, &c.RedirectURI, &expires)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("login code: %w", ErrNotFound)
		}
		if err != nil {
			return err
		}
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM login_codes WHERE hash = ?`, hash); err != nil {
			return err
		}
		if c.Expires, err = parseTime(expires); err != nil {
			return err
		}
		if !now.Before(c.Expires) {
			return fmt.Errorf("login code expired: %w", ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return LoginCode{}, err
	}
	return c, nil
}
