package bastion

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/posternhq/postern/approval"
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

// ApprovalError is the refusal of a held command. Its message is safe to
// show; Exit is the status the client sees.
type ApprovalError struct {
	// Msg is the one-line reason.
	Msg string
	// Code is stable: denied_by_rule, denied_by_approver, approval_timeout,
	// approval_unavailable.
	Code string
	// Exit is the exit status.
	Exit int
	// Request is the approval request id, if one was made.
	Request string
}

func (e *ApprovalError) Error() string { return e.Msg }

// approvalUserError turns an InnerApprover's refusal into the session's end
// cause, with the approval exit statuses for an *ApprovalError.
func approvalUserError(err error) *hopUserError {
	var ae *ApprovalError
	if errors.As(err, &ae) {
		return &hopUserError{msg: ae.Msg, code: ae.Code, exit: ae.Exit, global: true, err: err}
	}
	return &hopUserError{msg: err.Error(), code: "denied", exit: ExitDenied, err: err}
}

// LineApprover is an InnerApprover that also gates the lines typed in
// interactive sessions.
type LineApprover interface {
	InnerApprover
	// GatesLines reports whether lines typed in a session admitted by d
	// need checking.
	GatesLines(d policy.Decision) bool
}

// ApprovalGate applies a role's command rules (policy.Decision.Rules, first
// match wins) with an approval broker. It implements [LineApprover]: an exec
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

var _ LineApprover = (*ApprovalGate)(nil)

// GatesLines implements LineApprover.
func (g *ApprovalGate) GatesLines(d policy.Decision) bool { return len(d.Rules) > 0 }

// ApproveCommand implements InnerApprover. An interactive shell (Command "")
// is let through: its lines are gated as they are typed.
func (g *ApprovalGate) ApproveCommand(ctx context.Context, req CommandRequest) error {
	if req.Command == "" || len(req.Decision.Rules) == 0 {
		return nil
	}
	rules, err := approval.CompileRules(req.Decision.Rules)
	if err != nil {
		// The policy validated them; fail closed all the same.
		g.log.Error("command rules do not compile", "err", err)
		return &ApprovalError{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: ExitDeniedByRule}
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
		actor = req.Conn.Identity.Username
	}
	if m.Action() == approval.ActionDeny {
		mark("approval denied by rule: " + policy.Printable(req.Command))
		g.b.Outcome(ctx, state.Approval{Requester: actor, Target: req.Target.Name, Session: req.Session,
			Status: state.ApprovalDenied, Command: req.Command}, "denied_by_rule")
		return &ApprovalError{Msg: "command denied by rule", Code: "denied_by_rule", Exit: ExitDeniedByRule}
	}
	cr := approval.CommandRequest{Target: req.Target.Name, Login: req.Login, Session: req.Session,
		Command: req.Command, Match: m}
	if req.Conn != nil {
		cr.Requester = req.Conn.Identity
	}
	a, err := g.b.SubmitCommand(ctx, cr)
	if err != nil {
		g.log.Error("approval request could not be stored", "err", err)
		return &ApprovalError{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: ExitApprovalTimeout}
	}
	mark("approval requested " + a.ID + ": " + policy.Printable(req.Command))
	if req.Notify != nil {
		req.Notify(waitingLine(a, g.b.URL(a.ID), req.JSONErrors))
	}
	a, err = g.b.Wait(ctx, a.ID)
	if err != nil {
		if ctx.Err() != nil {
			if c, cerr := g.b.Cancel(context.WithoutCancel(ctx), a.ID); cerr == nil {
				a = c
			}
			mark("approval canceled " + a.ID)
			return &ApprovalError{Msg: "session ended while waiting for approval", Code: "approval_canceled", Exit: ExitApprovalTimeout, Request: a.ID}
		}
		g.log.Error("approval wait failed", "request", a.ID, "err", err)
		mark("approval failed " + a.ID)
		return &ApprovalError{Msg: "approval unavailable; command not run", Code: "approval_unavailable", Exit: ExitApprovalTimeout, Request: a.ID}
	}
	mark(fmt.Sprintf("approval %s %s by %s", a.Status, a.ID, a.DecidedBy))
	if a.Status == state.ApprovalApproved {
		mark("approval outcome " + a.ID + ": released")
		g.b.Outcome(ctx, a, "released")
		return nil
	}
	mark("approval outcome " + a.ID + ": blocked")
	g.b.Outcome(ctx, a, "blocked")
	if a.Status == state.ApprovalDenied {
		return &ApprovalError{Msg: "command denied by approver (request " + a.ID + ")", Code: "denied_by_approver",
			Exit: ExitDeniedByApprover, Request: a.ID}
	}
	return &ApprovalError{Msg: "approval timed out (request " + a.ID + ")", Code: "approval_timeout",
		Exit: ExitApprovalTimeout, Request: a.ID}
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

// commandRequest builds the approver request of s for command.
func (s *hopSession) commandRequest(command string) CommandRequest {
	c := s.c
	return CommandRequest{
		Conn: c.ci, Target: c.t, Login: c.login, Session: s.id, Command: command, Decision: c.decision,
		Notify:     func(line string) { _, _ = s.ch.Stderr().Write([]byte(line)) },
		Marker:     func(label string) { _ = s.tap.Load().marker(label) },
		JSONErrors: s.jsonErrors.Load(),
	}
}

// approve runs the approver for a shell or exec once the recording started;
// for a shell whose lines need gating it arms the line gate.
func (s *hopSession) approve(kind, command string) *hopUserError {
	c := s.c
	ap := c.h.opts.Approver
	if ap == nil || kind == kindSubsystem {
		return nil
	}
	if err := ap.ApproveCommand(c.ctx, s.commandRequest(command)); err != nil {
		return approvalUserError(err)
	}
	if la, ok := ap.(LineApprover); ok && kind == kindShell && la.GatesLines(c.decision) {
		s.gate.Store(&lineGate{
			check: func(line string) error { return la.ApproveCommand(c.ctx, s.commandRequest(line)) },
			notice: func(err error) {
				_, _ = s.ch.Stderr().Write([]byte("\r\n" + s.userLine(approvalUserError(err))))
			},
		})
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

// Line gating (best effort). The gate follows the line being typed in an
// interactive session: printable input is appended, backspace (DEL, ^H)
// removes a character, ^U and ^C clear the line, ^W removes the last word,
// escape sequences (cursor keys, function keys) are skipped, and text inside
// a bracketed paste (ESC[200~ … ESC[201~) is taken literally, newlines
// included. On Enter (CR or LF outside a paste) the line is matched against
// the rules: an allowed line passes; for a flagged one, the bytes before
// Enter are sent, the Enter is held until the request is decided, and then
// either sent (approved) or replaced by ^U, the line kill, with a notice
// (denied, timed out). Input typed while a line is held waits behind it.
//
// What it cannot see: lines recalled from history or edited with cursor
// keys, tab-completion results, aliases and functions, what a program reads
// itself (scripts, editors, here-documents), and commands run by another
// command. Roles that must be exact use exec only (interactive: deny).
type lineGate struct {
	check  func(line string) error // nil: the line may run
	notice func(err error)         // tells the user why a line was killed

	// Used only by the input copy goroutine.
	line    []byte
	esc     int // 0 none, 1 after ESC, 2 in CSI, 3 in SS3/other one-byte sequence
	csi     []byte
	inPaste bool
}

const (
	ctrlC   = 0x03
	ctrlH   = 0x08
	ctrlU   = 0x15
	ctrlW   = 0x17
	keyEsc  = 0x1b
	keyDel  = 0x7f
	maxLine = 64 << 10
)

// write passes p to w, holding an Enter that ends a flagged line.
func (g *lineGate) write(w io.Writer, p []byte) (int, error) {
	start := 0
	for i := 0; i < len(p); i++ {
		b := p[i]
		if g.esc > 0 {
			g.escape(b)
			continue
		}
		switch {
		case b == keyEsc:
			g.esc, g.csi = 1, g.csi[:0]
		case (b == '\r' || b == '\n') && g.inPaste:
			g.add('\n')
		case b == '\r' || b == '\n':
			line := string(g.line)
			g.line = g.line[:0]
			if strings.TrimSpace(line) == "" {
				continue
			}
			if _, err := w.Write(p[start:i]); err != nil {
				return start, err
			}
			start = i
			if err := g.check(line); err != nil {
				// Kill the line instead of running it.
				if _, werr := w.Write([]byte{ctrlU}); werr != nil {
					return i, werr
				}
				g.notice(err)
				start = i + 1
			}
		case b == keyDel || b == ctrlH:
			if n := len(g.line); n > 0 {
				_, size := utf8.DecodeLastRune(g.line)
				g.line = g.line[:n-size]
			}
		case b == ctrlU || b == ctrlC:
			g.line = g.line[:0]
		case b == ctrlW:
			l := strings.TrimRight(string(g.line), " ")
			if j := strings.LastIndexByte(l, ' '); j >= 0 {
				g.line = g.line[:j+1]
			} else {
				g.line = g.line[:0]
			}
		case b == '\t' && g.inPaste:
			g.add(b)
		case b >= 0x20:
			g.add(b)
		}
	}
	if _, err := w.Write(p[start:]); err != nil {
		return start, err
	}
	return len(p), nil
}

func (g *lineGate) add(b byte) {
	if len(g.line) < maxLine {
		g.line = append(g.line, b)
	}
}

// escape consumes one byte of an escape sequence, watching for the
// bracketed paste markers ESC[200~ and ESC[201~.
func (g *lineGate) escape(b byte) {
	switch g.esc {
	case 1:
		switch b {
		case '[':
			g.esc = 2
		case 'O':
			g.esc = 3
		default:
			g.esc = 0 // ESC x (meta keys)
		}
	case 2:
		if b >= 0x40 && b <= 0x7e {
			if b == '~' {
				switch string(g.csi) {
				case "200":
					g.inPaste = true
				case "201":
					g.inPaste = false
				}
			}
			g.esc = 0
			return
		}
		if len(g.csi) < 16 {
			g.csi = append(g.csi, b)
		}
	default:
		g.esc = 0
	}
}
