package state

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Session kinds.
const (
	KindShell     = "shell"
	KindExec      = "exec"
	KindSubsystem = "subsystem"
	KindForward   = "forward"
	KindCommand   = "command"
)

// Session statuses.
const (
	StatusRunning     = "running"
	StatusFinished    = "finished"
	StatusInterrupted = "interrupted"
	StatusFailed      = "failed"
	// StatusDenied is a session that policy refused after it began: a
	// command denied by a rule or an approver, an approval that timed out
	// or was refused, a shell for an exec-only role.
	StatusDenied = "denied"
)

// Session is one row of the sessions index: who recorded what, where the
// recording is stored and the digest that seals it.
type Session struct {
	// ID is the session id (a ULID: ids sort by start time).
	ID string `json:"id"`
	// Identity is the username of the user or agent.
	Identity string `json:"identity"`
	// Issuer is the configured name of the identity's OIDC issuer.
	Issuer string `json:"issuer"`
	// IdentityKey is the identity's key (certs.Identity.Key: "<issuer>:<subject>"
	// or "alias:<name>"): whose session it is. Empty for rows written before
	// sessions had keys; those belong to nobody but auditors.
	IdentityKey string `json:"identity_key"`
	// Role is the role that granted access.
	Role string `json:"role"`
	// Target is the target name.
	Target string `json:"target"`
	// Login is the login used on the target.
	Login string `json:"login"`
	// Kind is shell, exec, subsystem, forward or command.
	Kind string `json:"kind"`
	// Command is the exec command or subsystem name; empty for a shell.
	Command string `json:"command,omitempty"`
	// Start is when the session started.
	Start time.Time `json:"start"`
	// End is when it ended; nil while running.
	End *time.Time `json:"end,omitempty"`
	// Status is running, finished, interrupted, denied or failed.
	Status string `json:"status"`
	// ExitStatus is the remote exit status, if one was received.
	ExitStatus *int `json:"exit_status,omitempty"`
	// BytesIn counts bytes the user sent.
	BytesIn int64 `json:"bytes_in"`
	// BytesOut counts bytes sent to the user.
	BytesOut int64 `json:"bytes_out"`
	// Size is the size of the stored recording in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex digest of the stored recording.
	SHA256 string `json:"sha256,omitempty"`
	// SealSeq is the audit sequence number of the session.sealed event; 0
	// until sealed.
	SealSeq int64 `json:"seal_seq,omitempty"`
	// Object is the recording's key in the recording store.
	Object string `json:"object,omitempty"`
	// Replica names the server replica that records the session.
	Replica string `json:"replica,omitempty"`
	// Masked reports whether parts of the recording were masked.
	Masked bool `json:"masked"`
	// Meta holds further details (format, terminal size, approvals).
	Meta map[string]any `json:"meta,omitempty"`
}

// SessionFilter selects sessions in ListSessions. Empty fields match
// everything.
type SessionFilter struct {
	// User matches Identity (the username) exactly.
	User string
	// IdentityKey matches IdentityKey exactly. Callers that list one
	// identity's own sessions must refuse an empty key themselves: here it
	// matches everything.
	IdentityKey string
	// Target matches Target exactly.
	Target string
	// Role matches Role exactly.
	Role string
	// Status matches Status exactly.
	Status string
	// Text matches a substring of the id, identity, target, login or command.
	Text string
	// Since keeps sessions that started at or after it; unbounded if zero.
	Since time.Time
	// Until keeps sessions that started before it; unbounded if zero.
	Until time.Time
	// Limit caps the number of rows; no limit if zero.
	Limit int
}

const sessionColumns = `id, identity, issuer, role, target, login, kind, command, start_time, end_time, status,
	exit_status, bytes_in, bytes_out, size, sha256, seal_seq, object, replica, masked, meta, identity_key`

// PutSession inserts row, or replaces the row with the same ID.
func (s *Store) PutSession(ctx context.Context, row Session) error {
	return s.Write(ctx, func(t *Tx) error { return t.PutSession(row) })
}

func scanSession(rows rowScanner) (Session, error) {
	var r Session
	var start string
	var end sql.NullString
	var exit sql.NullInt64
	var masked int
	var meta string
	err := rows.Scan(&r.ID, &r.Identity, &r.Issuer, &r.Role, &r.Target, &r.Login, &r.Kind, &r.Command,
		&start, &end, &r.Status, &exit, &r.BytesIn, &r.BytesOut, &r.Size, &r.SHA256, &r.SealSeq,
		&r.Object, &r.Replica, &masked, &meta, &r.IdentityKey)
	if err != nil {
		return Session{}, err
	}
	if r.Start, err = parseTime(start); err != nil {
		return Session{}, err
	}
	if end.Valid {
		t, err := parseTime(end.String)
		if err != nil {
			return Session{}, err
		}
		r.End = &t
	}
	if exit.Valid {
		v := int(exit.Int64)
		r.ExitStatus = &v
	}
	r.Masked = masked != 0
	if meta != "" {
		if err := json.Unmarshal([]byte(meta), &r.Meta); err != nil {
			return Session{}, fmt.Errorf("decode session meta: %w", err)
		}
	}
	return r, nil
}

// GetSession returns the session with id, or an error wrapping ErrNotFound.
func (s *Store) GetSession(ctx context.Context, id string) (Session, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = ?`, id)
	r, err := scanSession(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("session %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	return r, nil
}

// ListSessions returns the sessions matching f, newest first.
func (s *Store) ListSessions(ctx context.Context, f SessionFilter) ([]Session, error) {
	var w conds
	w.eq("identity", f.User)
	w.eq("identity_key", f.IdentityKey)
	w.eq("target", f.Target)
	w.eq("role", f.Role)
	w.eq("status", f.Status)
	w.timeRange("start_time", f.Since, f.Until)
	if f.Text != "" {
		pat := "%" + escapeLike(f.Text) + "%"
		w.add(`(id LIKE ? ESCAPE '\' OR identity LIKE ? ESCAPE '\' OR target LIKE ? ESCAPE '\'
			OR login LIKE ? ESCAPE '\' OR command LIKE ? ESCAPE '\')`, pat, pat, pat, pat, pat)
	}
	q, args := w.query(`SELECT `+sessionColumns+` FROM sessions`, "start_time DESC, id DESC", f.Limit)
	return queryAll(ctx, s.db, "list sessions", q, args, scanSession)
}

// conds builds the WHERE clause of a filtered query.
type conds struct {
	where []string
	args  []any
}

// add adds a condition with its arguments.
func (c *conds) add(cond string, args ...any) {
	c.where = append(c.where, cond)
	c.args = append(c.args, args...)
}

// eq adds "column = v" unless v is empty.
func (c *conds) eq(column, v string) {
	if v != "" {
		c.add(column+" = ?", v)
	}
}

// timeRange adds since <= column < until for the bounds that are set.
func (c *conds) timeRange(column string, since, until time.Time) {
	if !since.IsZero() {
		c.add(column+" >= ?", formatTime(since))
	}
	if !until.IsZero() {
		c.add(column+" < ?", formatTime(until))
	}
}

// query returns the full query and its arguments: sel, the conditions,
// the order and a limit (none if zero).
func (c *conds) query(sel, order string, limit int) (string, []any) {
	q := sel
	if len(c.where) > 0 {
		q += " WHERE " + strings.Join(c.where, " AND ")
	}
	q += " ORDER BY " + order
	args := c.args
	if limit > 0 {
		q += " LIMIT ?"
		args = append(args, limit)
	}
	return q, args
}

func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}
