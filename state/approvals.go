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

// Approval kinds.
const (
	// ApprovalCommand holds one command (exec or a typed shell line).
	ApprovalCommand = "command"
	// ApprovalAccess asks for just-in-time access to a target.
	ApprovalAccess = "access"
)

// Approval statuses. Pending is the only status that changes.
const (
	ApprovalPending  = "pending"
	ApprovalApproved = "approved"
	ApprovalDenied   = "denied"
	ApprovalTimedOut = "timed_out"
	ApprovalCanceled = "canceled"
)

// Audit event types of approvals and just-in-time grants.
const (
	EventApprovalRequested = "approval.requested"
	EventApprovalVote      = "approval.vote"
	EventApprovalDecided   = "approval.decided"
	EventApprovalOutcome   = "approval.outcome"
	EventGrantCreated      = "grant.created"
	EventGrantRevoked      = "grant.revoked"
)

// ErrDecided reports a decision on an approval that is no longer pending.
var ErrDecided = errors.New("approval already decided")

// Vote is one approver's decision on an approval.
type Vote struct {
	// By is the approver's readable name (certs.Identity.Display).
	By string `json:"by"`
	// Key is the approver's identity key (certs.Identity.Key): distinct
	// approvers are counted by it.
	Key string `json:"key,omitempty"`
	// Approve is true for an approval, false for a denial.
	Approve bool `json:"approve"`
	// Reason is the approver's note.
	Reason string `json:"reason,omitempty"`
	// Via names the channel: api, slack, cli.
	Via string `json:"via,omitempty"`
	// Time is when the vote was cast.
	Time time.Time `json:"time"`
}

// Approval is one request held for approvers.
type Approval struct {
	// ID is the request id (ULID).
	ID string `json:"id"`
	// Kind is ApprovalCommand or ApprovalAccess.
	Kind string `json:"kind"`
	// Status is one of the Approval* statuses.
	Status string `json:"status"`
	// Requester is the requester's readable name (certs.Identity.Display).
	Requester string `json:"requester"`
	// RequesterKey is the requester's identity key (certs.Identity.Key):
	// who may see the request and who may not decide it.
	RequesterKey string `json:"requester_key"`
	// Groups are the requester's groups.
	Groups []string `json:"groups,omitempty"`
	// Target is the target name.
	Target string `json:"target"`
	// Login is the login on the target.
	Login string `json:"login,omitempty"`
	// Command is the held command line (command kind).
	Command string `json:"command,omitempty"`
	// Session is the session id (command kind).
	Session string `json:"session,omitempty"`
	// Rule is the matching rule's pattern.
	Rule string `json:"rule,omitempty"`
	// Approvers are the groups or usernames that may decide.
	Approvers []string `json:"approvers"`
	// Required is the number of approvals needed.
	Required int `json:"required"`
	// Reason is the requester's reason (access kind).
	Reason string `json:"reason,omitempty"`
	// Duration is the access asked for (access kind).
	Duration time.Duration `json:"duration,omitempty"`
	// Votes are the decisions cast so far.
	Votes []Vote `json:"votes,omitempty"`
	// Created is when the request was made.
	Created time.Time `json:"created"`
	// Expires is when a pending request times out.
	Expires time.Time `json:"expires"`
	// Decided is when the status left pending.
	Decided time.Time `json:"decided,omitzero"`
	// DecidedBy names who (or what: "timeout") ended the request.
	DecidedBy string `json:"decided_by,omitempty"`
	// Note is the deciding reason.
	Note string `json:"note,omitempty"`
}

// voter is who cast v: the key, or for votes stored without one, the name.
func (v Vote) voter() string {
	if v.Key != "" {
		return v.Key
	}
	return v.By
}

// Approvals returns the number of approving votes.
func (a Approval) Approvals() int {
	n := 0
	for _, v := range a.Votes {
		if v.Approve {
			n++
		}
	}
	return n
}

const approvalColumns = `id, kind, status, requester, requester_key, req_groups, target, login, command, session, rule, approvers,
	required, reason, duration_ms, votes, created, expires, decided, decided_by, note`

func joinList(l []string) string { return strings.Join(l, "\n") }

func splitList(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// CreateApproval stores a new pending request. Created defaults to now.
func (s *Store) CreateApproval(ctx context.Context, a Approval) error {
	if a.ID == "" || a.Requester == "" || a.RequesterKey == "" {
		return errors.New("create approval: id, requester and requester key are required")
	}
	if a.Created.IsZero() {
		a.Created = s.now()
	}
	if a.Required < 1 {
		a.Required = 1
	}
	a.Status = ApprovalPending
	_, err := s.db.ExecContext(ctx, `INSERT INTO approvals (`+approvalColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?, '', '', '')`,
		a.ID, a.Kind, a.Status, a.Requester, a.RequesterKey, joinList(a.Groups), a.Target, a.Login, a.Command, a.Session, a.Rule,
		joinList(a.Approvers), a.Required, a.Reason, a.Duration.Milliseconds(), formatTime(a.Created), formatTime(a.Expires))
	if err != nil {
		return fmt.Errorf("create approval %s: %w", a.ID, err)
	}
	return nil
}

func scanApproval(row rowScanner) (Approval, error) {
	var a Approval
	var groups, approvers, votes, created, expires, decided string
	var durMS int64
	if err := row.Scan(&a.ID, &a.Kind, &a.Status, &a.Requester, &a.RequesterKey, &groups, &a.Target, &a.Login, &a.Command, &a.Session,
		&a.Rule, &approvers, &a.Required, &a.Reason, &durMS, &votes, &created, &expires, &decided, &a.DecidedBy, &a.Note); err != nil {
		return Approval{}, err
	}
	a.Groups, a.Approvers = splitList(groups), splitList(approvers)
	a.Duration = time.Duration(durMS) * time.Millisecond
	if votes != "" {
		if err := json.Unmarshal([]byte(votes), &a.Votes); err != nil {
			return Approval{}, fmt.Errorf("approval %s votes: %w", a.ID, err)
		}
	}
	var err error
	if a.Created, err = parseTime(created); err != nil {
		return Approval{}, err
	}
	if a.Expires, err = parseTime(expires); err != nil {
		return Approval{}, err
	}
	if decided != "" {
		if a.Decided, err = parseTime(decided); err != nil {
			return Approval{}, err
		}
	}
	return a, nil
}

// GetApproval returns the request with id, or ErrNotFound.
func (s *Store) GetApproval(ctx context.Context, id string) (Approval, error) {
	a, err := scanApproval(s.db.QueryRowContext(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Approval{}, fmt.Errorf("approval %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Approval{}, fmt.Errorf("get approval %s: %w", id, err)
	}
	return a, nil
}

// ListApprovals returns requests with the given status (all if empty),
// newest first, at most limit (100 if zero).
func (s *Store) ListApprovals(ctx context.Context, status string, limit int) ([]Approval, error) {
	if limit <= 0 {
		limit = 100
	}
	q := `SELECT ` + approvalColumns + ` FROM approvals`
	args := []any{}
	if status != "" {
		q += ` WHERE status = ?`
		args = append(args, status)
	}
	q += ` ORDER BY created DESC, id DESC LIMIT ?`
	args = append(args, limit)
	return queryAll(ctx, s.db, "list approvals", q, args, scanApproval)
}

// VoteApproval adds v to the pending request id in one transaction: a denial
// denies it, and the Required-th distinct approval approves it; an approved
// access request creates its just-in-time grant (id = the request id) in the
// same transaction. An approver
// who voted already is not counted twice. A request past its expiry is timed
// out instead. It returns the request after the vote, and ErrDecided (with
// the request) if it was not pending.
func (s *Store) VoteApproval(ctx context.Context, id string, v Vote) (Approval, error) {
	return s.updateApproval(ctx, id, func(a *Approval, now time.Time) error {
		if !now.Before(a.Expires) {
			a.Status, a.DecidedBy, a.Note = ApprovalTimedOut, "timeout", "timed out"
			return nil
		}
		if v.Time.IsZero() {
			v.Time = now
		}
		for _, o := range a.Votes {
			if o.voter() == v.voter() && o.Approve == v.Approve {
				return nil
			}
		}
		a.Votes = append(a.Votes, v)
		switch {
		case !v.Approve:
			a.Status, a.DecidedBy, a.Note = ApprovalDenied, v.By, v.Reason
		case a.Approvals() >= a.Required:
			a.Status, a.DecidedBy, a.Note = ApprovalApproved, v.By, v.Reason
		}
		return nil
	})
}

// ExpireApproval times out the request id if it is pending and past its
// expiry, or ends it with status (ApprovalCanceled, ApprovalTimedOut) when
// force is set. It returns the request; ErrDecided if it was not pending.
func (s *Store) ExpireApproval(ctx context.Context, id, status string, force bool) (Approval, error) {
	return s.updateApproval(ctx, id, func(a *Approval, now time.Time) error {
		if force || !now.Before(a.Expires) {
			a.Status, a.DecidedBy, a.Note = status, "timeout", strings.ReplaceAll(status, "_", " ")
			if status == ApprovalCanceled {
				a.DecidedBy = "requester"
			}
		}
		return nil
	})
}

func (s *Store) updateApproval(ctx context.Context, id string, f func(a *Approval, now time.Time) error) (Approval, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Approval{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	defer tx.Rollback()
	a, err := scanApproval(tx.QueryRowContext(ctx, `SELECT `+approvalColumns+` FROM approvals WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Approval{}, fmt.Errorf("approval %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Approval{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	if a.Status != ApprovalPending {
		return a, ErrDecided
	}
	now := s.now().UTC()
	if err := f(&a, now); err != nil {
		return Approval{}, err
	}
	if a.Status != ApprovalPending {
		a.Decided = now
	}
	votes := ""
	if len(a.Votes) > 0 {
		b, err := json.Marshal(a.Votes)
		if err != nil {
			return Approval{}, fmt.Errorf("update approval %s: %w", id, err)
		}
		votes = string(b)
	}
	decided := ""
	if !a.Decided.IsZero() {
		decided = formatTime(a.Decided)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE approvals SET status = ?, votes = ?, decided = ?, decided_by = ?, note = ?
		WHERE id = ?`, a.Status, votes, decided, a.DecidedBy, a.Note, id); err != nil {
		return Approval{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	// An approved access request becomes a grant in the same transaction, so
	// that whoever sees the approval also finds the grant.
	var g *JITGrant
	if a.Kind == ApprovalAccess && a.Status == ApprovalApproved {
		g = &JITGrant{ID: a.ID, Identity: a.RequesterKey, Username: a.Requester, Target: a.Target, Approval: a.ID, Created: now, Expires: now.Add(a.Duration)}
		if a.Login != "" {
			g.Logins = []string{a.Login}
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, identity, username, target, logins, approval, created, expires)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, g.ID, g.Identity, g.Username, g.Target, joinList(g.Logins), g.Approval,
			formatTime(g.Created), formatTime(g.Expires)); err != nil {
			return Approval{}, fmt.Errorf("grant access for approval %s: %w", id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return Approval{}, fmt.Errorf("update approval %s: %w", id, err)
	}
	if g != nil {
		if _, err := s.Append(ctx, grantEvent(*g)); err != nil {
			return a, fmt.Errorf("audit grant %s: %w", g.ID, err)
		}
	}
	return a, nil
}

func grantEvent(g JITGrant) Event {
	return Event{Type: EventGrantCreated, Actor: g.Username, Target: g.Target,
		Details: map[string]any{"grant": g.ID, "identity": g.Identity, "approval": g.Approval, "expires": formatTime(g.Expires), "logins": g.Logins}}
}

// JITGrant is a just-in-time grant: an approved access request adds Target
// (with Logins) to the reachable targets of the identity keyed Identity
// until Expires.
type JITGrant struct {
	// ID is the grant id.
	ID string `json:"id"`
	// Identity is the identity key (certs.Identity.Key) the grant is for.
	Identity string `json:"identity"`
	// Username is the readable name of who the grant is for.
	Username string `json:"username"`
	// Target is the target name.
	Target string `json:"target"`
	// Logins are the logins usable on the target; the request's login.
	Logins []string `json:"logins,omitempty"`
	// Approval is the access request that created the grant.
	Approval string `json:"approval,omitempty"`
	// Created is when the grant was made.
	Created time.Time `json:"created"`
	// Expires is when it stops applying.
	Expires time.Time `json:"expires"`
	// Revoked is when it was revoked, zero if not.
	Revoked time.Time `json:"revoked,omitzero"`
	// RevokedBy names who revoked it.
	RevokedBy string `json:"revoked_by,omitempty"`
}

// CreateGrant stores g and appends a grant.created audit event. Approved
// access requests get their grant from VoteApproval; CreateGrant is for
// grants made directly by an operator.
func (s *Store) CreateGrant(ctx context.Context, g JITGrant) error {
	if g.Identity == "" {
		return fmt.Errorf("create grant %s: no identity key", g.ID)
	}
	if g.Created.IsZero() {
		g.Created = s.now()
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO grants (id, identity, username, target, logins, approval, created, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, g.ID, g.Identity, g.Username, g.Target, joinList(g.Logins), g.Approval,
		formatTime(g.Created), formatTime(g.Expires))
	if err != nil {
		return fmt.Errorf("create grant %s: %w", g.ID, err)
	}
	_, err = s.Append(ctx, grantEvent(g))
	if err != nil {
		return fmt.Errorf("audit grant %s: %w", g.ID, err)
	}
	return nil
}

// RevokeGrant revokes grant id and appends a grant.revoked audit event;
// ErrNotFound if there is no unrevoked grant id.
func (s *Store) RevokeGrant(ctx context.Context, id, by string) error {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `UPDATE grants SET revoked = ?, revoked_by = ? WHERE id = ? AND revoked = ''`,
		formatTime(now), by, id)
	if err != nil {
		return fmt.Errorf("revoke grant %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		return fmt.Errorf("grant %s: %w", id, ErrNotFound)
	}
	if _, err := s.Append(ctx, Event{Type: EventGrantRevoked, Actor: by, Details: map[string]any{"grant": id}}); err != nil {
		return fmt.Errorf("audit grant revocation %s: %w", id, err)
	}
	return nil
}

// AllGrants, given to ActiveGrants, lists the grants of every identity.
const AllGrants = "*"

// ActiveGrants returns the unrevoked grants of the identity keyed identity
// (every identity's if AllGrants; none if empty) that have not expired,
// soonest expiry first.
func (s *Store) ActiveGrants(ctx context.Context, identity string) ([]JITGrant, error) {
	if identity == "" {
		return nil, nil
	}
	q := `SELECT id, identity, username, target, logins, approval, created, expires, revoked, revoked_by FROM grants
		WHERE revoked = '' AND expires > ?`
	args := []any{formatTime(s.now())}
	if identity != AllGrants {
		q += ` AND identity = ?`
		args = append(args, identity)
	}
	return queryAll(ctx, s.db, "list grants", q+` ORDER BY expires, id`, args, func(row rowScanner) (JITGrant, error) {
		var g JITGrant
		var logins, created, expires, revoked string
		err := row.Scan(&g.ID, &g.Identity, &g.Username, &g.Target, &logins, &g.Approval, &created, &expires, &revoked, &g.RevokedBy)
		if err != nil {
			return g, err
		}
		g.Logins = splitList(logins)
		if g.Created, err = parseTime(created); err != nil {
			return g, err
		}
		g.Expires, err = parseTime(expires)
		return g, err
	})
}
