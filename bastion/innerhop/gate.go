package innerhop

import (
	"context"
	"io"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// Exit statuses of held commands (contract, see docs/exit-codes.md).
const (
	// ExitDeniedByRule: a deny rule matched the command.
	ExitDeniedByRule = 120
	// ExitDeniedByApprover: an approver denied the command.
	ExitDeniedByApprover = 121
	// ExitApprovalTimeout: nobody decided before the rule's timeout.
	ExitApprovalTimeout = 122
)

// approvalUserError turns an Approver's refusal into the session's end
// cause: a user-visible error as the approver made it (ExitDenied if it
// names no exit status), anything else a plain denial.
func approvalUserError(err error) *usererr.Error {
	if ue := usererr.As(err); ue != nil {
		return withExit(ue, ExitDenied)
	}
	return &usererr.Error{Msg: "command not allowed", Code: "denied", Exit: ExitDenied, Err: err}
}

// LineApprover is an Approver that also gates the lines typed in
// interactive sessions.
type LineApprover interface {
	Approver
	// GatesLines reports whether lines typed in a session admitted by d
	// need checking.
	GatesLines(d policy.Decision) bool
}

// commandRequest builds the approver request of s for command.
func (s *hopSession) commandRequest(command string) CommandRequest {
	c := s.c
	stored, _ := c.storedCommand(command)
	return CommandRequest{
		Conn: c.ci, Target: c.t, Login: c.login, Session: s.id, Command: command, Stored: stored, Decision: c.decision,
		Notify:     func(line string) { _, _ = s.ch.Stderr().Write([]byte(line)) },
		Marker:     func(label string) { _ = s.tap.Load().marker(label) },
		JSONErrors: s.jsonErrors.Load(),
	}
}

// approve runs the approver for a shell or exec once the recording started;
// for a shell whose lines need gating it arms the line gate (linegate.go).
func (s *hopSession) approve(kind, command string) *usererr.Error {
	c := s.c
	ap := c.h.opts.Approver
	if ap == nil || kind == kindSubsystem {
		return nil
	}
	if err := ap.ApproveCommand(c.ctx, s.commandRequest(command)); err != nil {
		return approvalUserError(err)
	}
	if la, ok := ap.(LineApprover); ok && kind == kindShell && la.GatesLines(c.decision) {
		s.gate.Store(newLineGate(c.ctx, lineGateHooks{
			check: func(ctx context.Context, line string) error { return la.ApproveCommand(ctx, s.commandRequest(line)) },
			notice: func(ue *usererr.Error) {
				_, _ = s.ch.Stderr().Write([]byte("\r\n" + s.userLine(ue)))
			},
			discarded: func(code, why string) {
				_ = s.tap.Load().marker("line not run: " + why)
				c.h.audit(c.ctx, state.Event{Type: state.EventApprovalOutcome, Actor: c.ci.Identity.String(), Target: c.t.Name,
					Session: s.id, Details: map[string]any{"outcome": code, "why": why, "login": c.login}})
			},
		}))
	}
	return nil
}

// gateInput wraps the writer that carries client input to the program or
// target, so that an armed line gate sees it.
func (s *hopSession) gateInput(w io.Writer) io.Writer {
	if s.c.h.opts.Approver == nil {
		return w
	}
	return &gateWriter{s: s, w: w}
}

// gateWriter passes input through the session's line gate once armed.
type gateWriter struct {
	s *hopSession
	w io.Writer
}

func (g *gateWriter) Write(p []byte) (int, error) {
	if lg := g.s.gate.Load(); lg != nil {
		return lg.write(g.w, p)
	}
	return g.w.Write(p)
}
