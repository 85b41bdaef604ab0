package state

import (
	"context"
	"fmt"
	"time"
)

// Audit events of moderation.
const (
	// EventSessionJoin: a moderator joined a session (watched it live).
	EventSessionJoin = "session.join"
	// EventSessionModerated: a session that waited for a moderator starts.
	EventSessionModerated = "session.moderated"
)

// Join is one moderator joining a session.
type Join struct {
	// Session is the session's id.
	Session string `json:"session"`
	// Who is the moderator's username (shown, never compared), Issuer
	// their issuer's name and Subject their subject.
	Who     string `json:"who"`
	Issuer  string `json:"issuer"`
	Subject string `json:"subject,omitempty"`
	// Key is the moderator's identity key (certs.Identity.Key): who they
	// are. Joins recorded before joins had keys have none and count for
	// nothing.
	Key string `json:"key,omitempty"`
	// Groups are the moderator's groups when they joined.
	Groups []string `json:"groups,omitempty"`
	// Time is when they joined.
	Time time.Time `json:"time"`
}

// JoinSession records j (Time defaults to now) and appends its
// session.join audit event in the same transaction.
func (s *Store) JoinSession(ctx context.Context, j Join) error {
	if j.Session == "" || j.Who == "" {
		return fmt.Errorf("join session: session and who are required")
	}
	if j.Time.IsZero() {
		j.Time = s.now()
	}
	return s.Write(ctx, func(t *Tx) error {
		if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO session_joins (session, who, issuer, subject, who_key, groups, time)
			VALUES (?, ?, ?, ?, ?, ?, ?)`,
			j.Session, j.Who, j.Issuer, j.Subject, j.Key, joinList(j.Groups), formatTime(j.Time)); err != nil {
			return fmt.Errorf("join session %s: %w", j.Session, err)
		}
		_, err := t.Append(Event{Time: j.Time, Type: EventSessionJoin, Actor: j.Who, Session: j.Session,
			Details: map[string]any{"issuer": j.Issuer, "identity_key": j.Key, "mode": "watch"}})
		return err
	})
}

// Joins returns who joined session, in order.
func (s *Store) Joins(ctx context.Context, session string) ([]Join, error) {
	return queryAll(ctx, s.db, "list session joins", `SELECT session, who, issuer, subject, who_key, groups, time FROM session_joins
		WHERE session = ? ORDER BY time`, []any{session}, func(row rowScanner) (Join, error) {
		var j Join
		var groups, tm string
		if err := row.Scan(&j.Session, &j.Who, &j.Issuer, &j.Subject, &j.Key, &groups, &tm); err != nil {
			return j, err
		}
		j.Groups = splitList(groups)
		var err error
		j.Time, err = parseTime(tm)
		return j, err
	})
}
