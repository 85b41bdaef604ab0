package state

import (
	"context"
	"fmt"
	"time"
)

// JournalEntry is one checkpoint of a recording: the bytes of its cast from
// offset Pos, as they were when Time was.
type JournalEntry struct {
	// Pos is the offset of Data in the cast.
	Pos int64
	// Data are the cast's bytes from Pos.
	Data []byte
	// Time is when the checkpoint was taken.
	Time time.Time
}

// AppendJournal stores a checkpoint of session's cast: data from offset pos.
// An entry at the same offset is replaced (a checkpoint taken again after a
// streamed upload started over).
func (s *Store) AppendJournal(ctx context.Context, session string, pos int64, data []byte) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO recording_journal (session, pos, size, data, time) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (session, pos) DO UPDATE SET size = excluded.size, data = excluded.data, time = excluded.time`,
		session, pos, int64(len(data)), data, formatTime(s.now()))
	if err != nil {
		return fmt.Errorf("checkpoint recording %s: %w", session, err)
	}
	return nil
}

// TrimJournal deletes the checkpoints of session that end at or before
// offset upTo (the recording store holds those bytes now).
func (s *Store) TrimJournal(ctx context.Context, session string, upTo int64) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM recording_journal WHERE session = ? AND pos + size <= ?`, session, upTo); err != nil {
		return fmt.Errorf("trim checkpoints of %s: %w", session, err)
	}
	return nil
}

// Journal returns the checkpoints of session, by offset.
func (s *Store) Journal(ctx context.Context, session string) ([]JournalEntry, error) {
	return queryAll(ctx, s.db, "read checkpoints", `SELECT pos, data, time FROM recording_journal WHERE session = ? ORDER BY pos`,
		[]any{session}, func(row rowScanner) (JournalEntry, error) {
			var e JournalEntry
			var t string
			if err := row.Scan(&e.Pos, &e.Data, &t); err != nil {
				return e, err
			}
			var err error
			e.Time, err = parseTime(t)
			return e, err
		})
}

// DeleteJournal deletes every checkpoint of session (sealed: the recording
// store has all of it).
func (s *Store) DeleteJournal(ctx context.Context, session string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM recording_journal WHERE session = ?`, session); err != nil {
		return fmt.Errorf("delete checkpoints of %s: %w", session, err)
	}
	return nil
}
