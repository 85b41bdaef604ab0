package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Revocation is one revoked certificate serial.
type Revocation struct {
	// Serial is the certificate serial number.
	Serial uint64 `json:"serial"`
	// Reason is the operator's reason.
	Reason string `json:"reason,omitempty"`
	// By names who revoked it.
	By string `json:"by,omitempty"`
	// Time is when it was revoked.
	Time time.Time `json:"time"`
}

// Serials are unsigned 64-bit; the column is a signed BIGINT, so the bits are
// stored as int64 (serials above 2^63 read back negative in raw SQL).
func serialColumn(serial uint64) int64 { return int64(serial) }

// Revoke records serial as revoked and appends a cert.revoked audit event,
// in one transaction: a revocation row always has its event. The web UI
// sessions of the identity the certificate was issued to (found by its
// cert.issued audit event) end in the same transaction. Revoking a serial
// again keeps the first record and appends nothing.
func (s *Store) Revoke(ctx context.Context, serial uint64, reason, by string) error {
	now := s.now().UTC().Truncate(time.Microsecond)
	return s.Write(ctx, func(t *Tx) error {
		res, err := t.tx.ExecContext(t.ctx, `INSERT INTO revocations (serial, reason, revoked_by, time) VALUES (?, ?, ?, ?)
			ON CONFLICT (serial) DO NOTHING`, serialColumn(serial), reason, by, formatTime(now))
		if err != nil {
			return fmt.Errorf("revoke serial %d: %w", serial, err)
		}
		if n, err := res.RowsAffected(); err == nil && n == 0 {
			return nil
		}
		details := map[string]any{"serial": strconv.FormatUint(serial, 10), "reason": reason}
		issuer, subject, ok, err := certificateIdentity(t.ctx, t.tx, serial)
		if err != nil {
			return fmt.Errorf("revoke serial %d: %w", serial, err)
		}
		if ok {
			res, err := t.tx.ExecContext(t.ctx, `DELETE FROM web_sessions WHERE issuer = ? AND subject = ?`, issuer, subject)
			if err != nil {
				return fmt.Errorf("revoke serial %d: end web sessions: %w", serial, err)
			}
			n, _ := res.RowsAffected()
			details["issuer"], details["subject"], details["web_sessions_ended"] = issuer, subject, n
		}
		_, err = t.Append(Event{
			Time:    now,
			Type:    EventCertRevoked,
			Actor:   by,
			Details: details,
		})
		if err != nil {
			return fmt.Errorf("audit revocation of serial %d: %w", serial, err)
		}
		return nil
	})
}

// IsRevoked reports whether serial has been revoked.
func (s *Store) IsRevoked(ctx context.Context, serial uint64) (bool, error) {
	var n int
	st, err := s.stmt(ctx, sqlIsRevoked)
	if err == nil {
		err = st.QueryRowContext(ctx, serialColumn(serial)).Scan(&n)
	}
	if err != nil {
		return false, fmt.Errorf("check revocation of serial %d: %w", serial, err)
	}
	return n > 0, nil
}

// Revocations returns every revocation, oldest first.
func (s *Store) Revocations(ctx context.Context) ([]Revocation, error) {
	return queryAll(ctx, s.db, "list revocations", `SELECT serial, reason, revoked_by, time FROM revocations ORDER BY time, serial`, nil,
		func(row rowScanner) (Revocation, error) {
			var r Revocation
			var serial int64
			var t string
			if err := row.Scan(&serial, &r.Reason, &r.By, &t); err != nil {
				return r, err
			}
			r.Serial = uint64(serial)
			var err error
			r.Time, err = parseTime(t)
			return r, err
		})
}

// certificateIdentity returns the issuer and subject a certificate serial
// was issued to: from the issued certificates (kept a day past their expiry)
// or, for one issued before they were kept, its cert.issued audit event; ok
// is false for a serial postern has no issuance record of (signed
// elsewhere).
func certificateIdentity(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, serial uint64) (issuer, subject string, ok bool, err error) {
	rows, err := q.QueryContext(ctx, `SELECT issuer, subject FROM issued_certs WHERE serial = ?`, serialColumn(serial))
	if err != nil {
		return "", "", false, fmt.Errorf("find the issuance of serial %d: %w", serial, err)
	}
	if rows.Next() {
		err := rows.Scan(&issuer, &subject)
		rows.Close()
		if err != nil {
			return "", "", false, fmt.Errorf("find the issuance of serial %d: %w", serial, err)
		}
		return issuer, subject, true, nil
	}
	if err := rows.Close(); err != nil {
		return "", "", false, fmt.Errorf("find the issuance of serial %d: %w", serial, err)
	}
	pattern := `%"serial":"` + strconv.FormatUint(serial, 10) + `"%`
	rows, err = q.QueryContext(ctx, `SELECT details FROM audit_events WHERE type = ? AND details LIKE ? ORDER BY seq`,
		EventCertIssued, pattern)
	if err != nil {
		return "", "", false, fmt.Errorf("find the issuance of serial %d: %w", serial, err)
	}
	defer rows.Close()
	for rows.Next() {
		var raw string
		if err := rows.Scan(&raw); err != nil {
			return "", "", false, fmt.Errorf("find the issuance of serial %d: %w", serial, err)
		}
		var d struct{ Serial, Issuer, Subject string }
		if json.Unmarshal([]byte(raw), &d) == nil && d.Serial == strconv.FormatUint(serial, 10) && d.Subject != "" {
			return d.Issuer, d.Subject, true, nil
		}
	}
	return "", "", false, rows.Err()
}
