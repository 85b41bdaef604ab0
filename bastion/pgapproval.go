package bastion

import (
	"context"
	"errors"
	"log/slog"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// StatementGate holds SQL statements of approve rules through the approval
// broker, like commands: the request (kind command, the statement as its
// command, the database as its login) goes to the broker's channels
// (Slack, webhooks, the API) and the statement waits for the decision. It
// implements [pgproxy.StatementApprover].
type StatementGate struct {
	b   *approval.Broker
	log *slog.Logger
}

// NewStatementGate returns the gate for b. log may be nil.
func NewStatementGate(b *approval.Broker, log *slog.Logger) *StatementGate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &StatementGate{b: b, log: log}
}

var _ pgproxy.StatementApprover = (*StatementGate)(nil)

// ApproveStatement blocks until r is approved (nil) or not (an error whose
// text the client sees).
func (g *StatementGate) ApproveStatement(ctx context.Context, r pgproxy.StatementRequest) error {
	pattern := r.Rule.Class
	if pattern != "" {
		pattern = "sql:" + pattern
	} else if r.Rule.Pattern != nil {
		pattern = r.Rule.Pattern.String()
	}
	m := approval.Match{Rule: config.Rule{Match: pattern, Action: pgproxy.ActionApprove, Approvers: r.Rule.Approvers,
		Approvals: r.Rule.Approvals, Timeout: config.Duration(r.Rule.Timeout)}}
	a, err := g.b.SubmitCommand(ctx, approval.CommandRequest{
		Requester: certs.Identity{Username: r.Identity, Groups: r.Groups}, Target: r.Target, Login: r.Database,
		Session: r.Session, Command: r.Statement, Match: m,
	})
	if err != nil {
		g.log.Error("statement approval request could not be stored", "err", err)
		return errors.New("approval unavailable")
	}
	a, err = g.b.Wait(ctx, a.ID)
	if err != nil {
		if ctx.Err() == nil {
			g.log.Error("waiting for statement approval", "request", a.ID, "err", err)
		}
		return errors.New("approval unavailable")
	}
	switch a.Status {
	case state.ApprovalApproved:
		g.b.Outcome(ctx, a, "ran")
		return nil
	case state.ApprovalTimedOut:
		g.b.Outcome(ctx, a, "blocked")
		return errors.New("approval timed out (request " + a.ID + ")")
	default:
		g.b.Outcome(ctx, a, "blocked")
		return errors.New("denied by an approver (request " + a.ID + ")")
	}
}
