package state

import (
	"context"
	"fmt"
	"time"
)

// IssuedCert is one user certificate postern issued, as renewals need it.
type IssuedCert struct {
	// Serial is the certificate's serial.
	Serial uint64 `json:"serial"`
	// KeyFingerprint is the SHA256 fingerprint of the certified key.
	KeyFingerprint string `json:"key_fingerprint"`
	// Issuer and Subject name the identity.
	Issuer  string `json:"issuer"`
	Subject string `json:"subject"`
	// Principals are the certificate's principals.
	Principals []string `json:"principals"`
	// ValidBefore is when it expires.
	ValidBefore time.Time `json:"valid_before"`
}

// RecordIssued keeps c (a certificate just issued) for IssuedFor.
// Certificates that expired a day ago are forgotten on the way.
func (s *Store) RecordIssued(ctx context.Context, c IssuedCert) error {
	now := s.now()
	return s.Write(ctx, func(t *Tx) error {
		if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM issued_certs WHERE valid_before < ?`,
			formatTime(now.Add(-24*time.Hour))); err != nil {
			return fmt.Errorf("forget old certificates: %w", err)
		}
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO issued_certs (serial, key_fp, issuer, subject, principals, valid_before)
			VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (serial) DO NOTHING`, serialColumn(c.Serial), c.KeyFingerprint, c.Issuer,
			c.Subject, joinList(c.Principals), formatTime(c.ValidBefore)); err != nil {
			return fmt.Errorf("record issued certificate %d: %w", c.Serial, err)
		}
		return nil
	})
}

// IssuedFor returns the unexpired, unrevoked certificates issued for key
// (fingerprint) and the identity issuer/subject, the one that expires last
// first (at most 16).
func (s *Store) IssuedFor(ctx context.Context, key, issuer, subject string) ([]IssuedCert, error) {
	return queryAll(ctx, s.db, "issued certificates", `SELECT serial, key_fp, issuer, subject, principals, valid_before
		FROM issued_certs c WHERE key_fp = ? AND issuer = ? AND subject = ? AND valid_before > ?
		AND NOT EXISTS (SELECT 1 FROM revocations r WHERE r.serial = c.serial)
		ORDER BY valid_before DESC LIMIT 16`, []any{key, issuer, subject, formatTime(s.now())},
		func(row rowScanner) (IssuedCert, error) {
			var c IssuedCert
			var serial int64
			var principals, vb string
			if err := row.Scan(&serial, &c.KeyFingerprint, &c.Issuer, &c.Subject, &principals, &vb); err != nil {
				return c, err
			}
			c.Serial, c.Principals = uint64(serial), splitList(principals)
			var err error
			c.ValidBefore, err = parseTime(vb)
			return c, err
		})
}
