package state

import (
	"context"
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
// in one transaction: a revocation row always has its event. Revoking a
// serial again keeps the first record and appends nothing.
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
		_, err = t.Append(Event{
			Time:    now,
			Type:    EventCertRevoked,
			Actor:   by,
			Details: map[string]any{"serial": strconv.FormatUint(serial, 10), "reason": reason},
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
