package server

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/policy"
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
		Requester: r.Requester, Target: r.Target, Login: r.Database,
		Session: r.Session, Command: r.Statement, Match: m,
	})
	if ue := usererr.As(err); ue != nil {
		return errors.New(ue.Msg) // refused by the broker (the rate limit)
	}
	if err != nil {
		g.log.Error("statement approval request could not be stored", "err", err)
		return errors.New("approval unavailable")
	}
	a, err = g.b.Hold(ctx, a.ID)
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
		if a.Note != "" {
			return errors.New("denied by an approver (request " + a.ID + "): " + policy.Printable(a.Note))
		}
		return errors.New("denied by an approver (request " + a.ID + ")")
	}
}

// ApprovalGate applies a role's command rules (policy.Decision.Rules, first
// match wins) with an approval broker. It implements [innerhop.LineApprover]: an exec
// command is checked before it is sent upstream, a line typed in a shell
// when Enter is pressed.
//
//   - no match or allow: the command runs;
//   - deny: refused at once, exit 120, "postern: command denied by rule";
//   - approve: a request is stored and the channels notified; the client's
//     stderr shows one line with the request id, what it waits for and the
//     approval URL; approved → the command runs, denied → exit 121, timed
//     out → exit 122. If the session ends while waiting the request is
//     canceled.
//
// Markers in the recording: "approval requested <id>: <command>",
// "approval <status> <id> by <who>", "approval outcome <id>: released" (or
// "blocked"); a deny rule adds "approval denied by rule: <command>". Audit
// events: approval.requested, approval.vote, approval.decided (broker) and
// approval.outcome.
type ApprovalGate struct {
	b   *approval.Broker
	log *slog.Logger
}

// NewApprovalGate returns the gate for b. log may be nil.
func NewApprovalGate(b *approval.Broker, log *slog.Logger) *ApprovalGate {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &ApprovalGate{b: b, log: log}
}

var _ innerhop.LineApprover = (*ApprovalGate)(nil)

// GatesLines implements innerhop.LineApprover: lines are gated when a rule
// could hold or refuse one (a deny or approve rule); allow rules alone
// change nothing.
func (g *ApprovalGate) GatesLines(d policy.Decision) bool {
	for _, r := range d.Rules {
		if r.Action == approval.ActionDeny || r.Action == approval.ActionApprove {
			return true
		}
	}
	return false
}

// ApproveCommand implements Approver. An interactive shell (Command "")
// is let through: its lines are gated as they are typed.
func (g *ApprovalGate) ApproveCommand(ctx context.Context, req innerhop.CommandRequest) error {
	if req.Command == "" || len(req.Decision.Rules) == 0 {
		return nil
	}
	rules, err := approval.CompileRules(req.Decision.Rules)
	if err != nil {
		// The policy validated them; fail closed all the same.
		g.log.Error("command rules do not compile", "err", err)
		return &usererr.Error{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: innerhop.ExitDeniedByRule, Global: true}
	}
	m, ok := rules.Match(req.Command)
	if !ok || m.Action() == approval.ActionAllow {
		return nil
	}
	mark := func(label string) {
		if req.Marker != nil {
			req.Marker(label)
		}
	}
	actor := ""
	if req.Conn != nil {
		actor = req.Conn.Identity.Display()
	}
	stored := cmp.Or(req.Stored, req.Command) // what may be stored: masked
	if m.Action() == approval.ActionDeny {
		mark("approval denied by rule: " + policy.Printable(stored))
		g.b.Outcome(ctx, state.Approval{Requester: actor, Target: req.Target.Name, Session: req.Session,
			Status: state.ApprovalDenied, Command: stored}, "denied_by_rule")
		return &usererr.Error{Msg: "command denied by rule", Code: "denied_by_rule", Exit: innerhop.ExitDeniedByRule, Global: true}
	}
	cr := approval.CommandRequest{Target: req.Target.Name, Login: req.Login, Session: req.Session,
		Command: stored, Match: m}
	if req.Conn != nil {
		cr.Requester = req.Conn.Identity
	}
	a, err := g.b.SubmitCommand(ctx, cr)
	if ue := usererr.As(err); ue != nil {
		// Refused by the broker (the rate limit): the command does not run,
		// and the user reads why.
		mark("approval refused: " + ue.Msg)
		return &usererr.Error{Msg: ue.Msg, Code: ue.Code, Exit: innerhop.ExitDenied, Global: true, Err: err}
	}
	if err != nil {
		g.log.Error("approval request could not be stored", "err", err)
		return &usererr.Error{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: innerhop.ExitApprovalTimeout, Global: true}
	}
	mark("approval requested " + a.ID + ": " + policy.Printable(stored))
	if req.Notify != nil {
		req.Notify(waitingLine(a, g.b.URL(a.ID), req.JSONErrors))
	}
	a, err = g.b.Hold(ctx, a.ID)
	if err != nil {
		if ctx.Err() != nil {
			mark("approval canceled " + a.ID)
			return &usererr.Error{Msg: "session ended while waiting for approval", Code: "approval_canceled", Exit: innerhop.ExitApprovalTimeout, Global: true}
		}
		g.log.Error("approval wait failed", "request", a.ID, "err", err)
		mark("approval failed " + a.ID)
		return &usererr.Error{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: innerhop.ExitApprovalTimeout, Global: true}
	}
	mark(fmt.Sprintf("approval %s %s by %s", a.Status, a.ID, a.DecidedBy))
	if a.Status == state.ApprovalApproved {
		mark("approval outcome " + a.ID + ": released")
		g.b.Outcome(ctx, a, "released")
		if req.Notify != nil && req.JSONErrors {
			// Machine readers learn the hold is over (people see the
			// command run).
			b, _ := json.Marshal(map[string]any{"status": "approved", "code": "approval_approved", "request": a.ID,
				"decided_by": a.DecidedBy})
			req.Notify(string(b) + "\r\n")
		}
		return nil
	}
	mark("approval outcome " + a.ID + ": blocked")
	g.b.Outcome(ctx, a, "blocked")
	if a.Status == state.ApprovalDenied {
		msg := "command denied by approver (request " + a.ID + ")"
		if a.Note != "" {
			msg += ": " + policy.Printable(a.Note) // the approver's reason, for the person or agent that asked
		}
		return &usererr.Error{Msg: msg, Code: "denied_by_approver", Exit: innerhop.ExitDeniedByApprover, Global: true}
	}
	return &usererr.Error{Msg: "approval timed out (request " + a.ID + ")", Code: "approval_timeout",
		Exit: innerhop.ExitApprovalTimeout, Global: true}
}

// waitingLine is the one stderr line shown while a command is held.
func waitingLine(a state.Approval, url string, asJSON bool) string {
	who := strings.Join(a.Approvers, ", ")
	if asJSON {
		b, _ := json.Marshal(map[string]any{"status": "pending", "code": "approval_pending", "request": a.ID,
			"approvals": a.Required, "approvers": a.Approvers, "expires": a.Expires.Format(time.RFC3339), "url": url})
		return string(b) + "\r\n"
	}
	line := fmt.Sprintf("postern: approval required: request %s waits up to %s for %d approval(s) from %s",
		a.ID, a.Expires.Sub(a.Created).Round(time.Second), a.Required, who)
	if url != "" {
		line += ": " + url
	} else {
		line += " (postern approvals approve " + a.ID + ")"
	}
	return line + "\r\n"
}
