package state

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"
)

// GenesisPrev is the Prev of the first event in the chain.
var GenesisPrev = strings.Repeat("0", 64)

// VerifyReport is the outcome of Store.Verify.
type VerifyReport struct {
	// Events is the number of audit events checked.
	Events int64
	// FirstBroken is the sequence number of the first event whose hash,
	// prev link or sequence is wrong; 0 if the chain is intact.
	FirstBroken int64
	// Reason says why FirstBroken is broken; empty if intact.
	Reason string
	// Sessions is the number of sealed sessions whose digest was checked.
	Sessions int
	// BadDigests lists sessions whose index digest differs from their
	// session.sealed event (or whose seal event is missing).
	BadDigests []string
}

// OK reports whether the chain is intact and every sealed digest matches.
func (r VerifyReport) OK() bool { return r.FirstBroken == 0 && len(r.BadDigests) == 0 }

// Hash returns the canonical hash of e: the hex SHA-256 of json.Marshal(e)
// with e.Hash set to "". Times are normalised to UTC first, as Append stores
// them.
func Hash(e Event) (string, error) {
	e.Hash = ""
	e.Time = e.Time.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		return "", fmt.Errorf("encode audit event: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// normalizeDetails round-trips details through JSON so that what is hashed
// now is exactly what is decoded from the store later (numbers stay
// json.Number, structs become maps).
func normalizeDetails(d map[string]any) (map[string]any, string, error) {
	if len(d) == 0 {
		return nil, "", nil
	}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, "", fmt.Errorf("encode audit details: %w", err)
	}
	out, err := decodeDetails(string(b))
	if err != nil {
		return nil, "", err
	}
	return out, string(b), nil
}

func decodeDetails(s string) (map[string]any, error) {
	if s == "" {
		return nil, nil
	}
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode audit details: %w", err)
	}
	if len(m) == 0 {
		return nil, nil
	}
	return m, nil
}

// Append adds e to the audit chain. It assigns Seq, Time (if zero), Prev and
// Hash and returns the stored event once it is committed. Appends are
// serialised within the process (grouped with concurrent writes, see Write)
// and across processes sharing the database. If an audit file is configured
// the event is appended to it as one JSON line after it is committed; a
// failure to write that file is logged, not returned, because the database
// holds the authoritative chain.
func (s *Store) Append(ctx context.Context, e Event) (Event, error) {
	var out Event
	err := s.Write(ctx, func(t *Tx) error {
		var err error
		out, err = t.Append(e)
		return err
	})
	if err != nil {
		return Event{}, err
	}
	return out, nil
}

const eventColumns = `seq, time, type, actor, source, target, session, details, prev, hash`

func scanEvent(rows rowScanner) (Event, error) {
	var e Event
	var t, details string
	if err := rows.Scan(&e.Seq, &t, &e.Type, &e.Actor, &e.Source, &e.Target, &e.Session, &details, &e.Prev, &e.Hash); err != nil {
		return Event{}, fmt.Errorf("scan audit event: %w", err)
	}
	var err error
	if e.Time, err = parseTime(t); err != nil {
		return Event{}, err
	}
	if e.Details, err = decodeDetails(details); err != nil {
		return Event{}, fmt.Errorf("audit event %d: %w", e.Seq, err)
	}
	return e, nil
}

// Events returns up to limit events with Seq greater than afterSeq, in
// sequence order. A limit of zero or less means 1000.
func (s *Store) Events(ctx context.Context, afterSeq int64, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 1000
	}
	return queryAll(ctx, s.db, "query audit events", `SELECT `+eventColumns+` FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?`,
		[]any{afterSeq, limit}, scanEvent)
}

// Verify walks the whole audit chain, recomputing every hash and prev link,
// and checks every sealed session row against its session.sealed event. A
// broken chain or a bad digest is reported in the VerifyReport; the error is
// only for a store that cannot be read.
func (s *Store) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	prev := GenesisPrev
	var after int64
	for {
		evs, err := s.Events(ctx, after, 1000)
		if err != nil {
			return rep, err
		}
		for _, e := range evs {
			rep.Events++
			if rep.FirstBroken == 0 {
				if reason := checkEvent(e, rep.Events, prev); reason != "" {
					rep.FirstBroken, rep.Reason = e.Seq, reason
				}
			}
			prev = e.Hash
			after = e.Seq
		}
		if len(evs) < 1000 {
			break
		}
	}
	if err := s.verifySeals(ctx, &rep); err != nil {
		return rep, err
	}
	return rep, nil
}

// checkEvent returns why e is not the wantSeq-th link after prev, or "".
func checkEvent(e Event, wantSeq int64, prev string) string {
	if e.Seq != wantSeq {
		return fmt.Sprintf("sequence gap: expected seq %d, found %d", wantSeq, e.Seq)
	}
	if e.Prev != prev {
		return "prev does not match the hash of the previous event"
	}
	h, err := Hash(e)
	if err != nil {
		return "event cannot be encoded"
	}
	if h != e.Hash {
		return "hash does not match the event's contents"
	}
	return ""
}

// verifySeals checks every sealed session row against its seal event.
func (s *Store) verifySeals(ctx context.Context, rep *VerifyReport) error {
	rows, err := s.db.QueryContext(ctx, `SELECT s.id, s.sha256, s.object, e.type, e.session, e.details
		FROM sessions s LEFT JOIN audit_events e ON e.seq = s.seal_seq
		WHERE s.seal_seq > 0 ORDER BY s.id`)
	if err != nil {
		return fmt.Errorf("query sealed sessions: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, sum, object string
		var typ, sess, details sql.NullString
		if err := rows.Scan(&id, &sum, &object, &typ, &sess, &details); err != nil {
			return fmt.Errorf("scan sealed session: %w", err)
		}
		rep.Sessions++
		if typ.String != EventSessionSealed || sess.String != id {
			rep.BadDigests = append(rep.BadDigests, id)
			continue
		}
		d, err := decodeDetails(details.String)
		if err != nil {
			rep.BadDigests = append(rep.BadDigests, id)
			continue
		}
		if got, _ := d["sha256"].(string); got != sum || sum == "" {
			rep.BadDigests = append(rep.BadDigests, id)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("query sealed sessions: %w", err)
	}
	return nil
}

// EventFilter selects events in ListEvents. Empty fields match everything.
type EventFilter struct {
	// Actor matches Actor exactly.
	Actor string
	// Target matches Target exactly.
	Target string
	// Type matches Type exactly, or as a prefix when it ends in '*'
	// ("session.*").
	Type string
	// Session matches Session exactly.
	Session string
	// Since keeps events at or after it; unbounded if zero.
	Since time.Time
	// Until keeps events before it; unbounded if zero.
	Until time.Time
	// AfterSeq keeps events with Seq > AfterSeq.
	AfterSeq int64
	// UpToSeq keeps events with Seq <= UpToSeq; unbounded if zero.
	UpToSeq int64
	// Limit caps the number of events; no limit if zero.
	Limit int
	// Newest selects the last Limit matching events rather than the first;
	// either way they are returned in sequence order.
	Newest bool
}

// ListEvents returns the events matching f in sequence order.
func (s *Store) ListEvents(ctx context.Context, f EventFilter) ([]Event, error) {
	var w conds
	w.eq("actor", f.Actor)
	w.eq("target", f.Target)
	if prefix, ok := strings.CutSuffix(f.Type, "*"); ok {
		// Case-sensitive on both backends (LIKE is not on SQLite).
		w.add("substr(type, 1, ?) = ?", len(prefix), prefix)
	} else {
		w.eq("type", f.Type)
	}
	w.eq("session", f.Session)
	w.timeRange("time", f.Since, f.Until)
	if f.AfterSeq > 0 {
		w.add("seq > ?", f.AfterSeq)
	}
	if f.UpToSeq > 0 {
		w.add("seq <= ?", f.UpToSeq)
	}
	order := "seq"
	if f.Newest {
		order = "seq DESC"
	}
	q, args := w.query(`SELECT `+eventColumns+` FROM audit_events`, order, f.Limit)
	evs, err := queryAll(ctx, s.db, "list audit events", q, args, scanEvent)
	if err != nil {
		return nil, err
	}
	if f.Newest {
		slices.Reverse(evs)
	}
	return evs, nil
}
