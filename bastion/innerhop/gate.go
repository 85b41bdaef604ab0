package innerhop

import (
	"io"
	"strings"
	"unicode/utf8"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/policy"
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
// for a shell whose lines need gating it arms the line gate.
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
