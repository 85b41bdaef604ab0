package innerhop

import (
	"bytes"
	"context"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/posternhq/postern/internal/usererr"
)

// Line gating. In an interactive session of a role with deny or approve
// rules, the gate follows the line being typed the way readline (bash's
// line editor, in its default emacs mode) edits it, and decides each line
// when it is entered — before the Enter reaches the shell:
//
//   - modelled exactly: printable text and UTF-8, inserted at the cursor;
//     backspace (DEL, Ctrl-H) and Delete; cursor moves (Left, Right, Home,
//     End, Ctrl-A/E/B/F); Ctrl-U (kill to the start), Ctrl-K (kill to the
//     end), Ctrl-W (kill the word before the cursor), Ctrl-D (delete under
//     the cursor), Ctrl-C (discard the line: it goes on alone, and what
//     follows waits 100 ms behind the kill keys, see kill), Ctrl-L and
//     Ctrl-G (no change);
//     a bracketed paste (ESC[200~ … ESC[201~), taken literally;
//   - not modelled: everything else — history (Up, Down, Ctrl-P/N/R/S),
//     completion (Tab), yank (Ctrl-Y), transpose, quoted insert (Ctrl-V),
//     Alt/Meta keys, vi mode, function keys, Ctrl-X sequences. Such a key
//     makes the line unverifiable: when it is entered it does not run. The
//     gate discards it (Ctrl-C to the shell) and says why; retyping the
//     line runs it. This is the fail-closed rule: a key the gate cannot
//     follow never lets a line through unchecked.
//
// When a line is entered (CR, LF, or Ctrl-O, which also loads the next
// history line and so makes the following line unverifiable), the gate
// holds the Enter and asks the approver (check): an allowed line gets its
// Enter; a denied one is discarded (Ctrl-C, then Ctrl-E Ctrl-E Ctrl-U: see
// kill) and a notice gives the reason. While a line waits for approvers, typed input waits behind it,
// except Ctrl-C, which abandons the line at once: the request is canceled,
// the line discarded, and what follows the Ctrl-C is typed as usual. Inside
// a bracketed paste every line end is checked too (the shell may not be
// reading a paste at all): the text so far must be allowed for the paste
// to go on.
//
// What it cannot see at all: what a program reads itself (scripts, editors,
// here-documents), what a command runs in turn, aliases and functions.
// Roles that must be exact use exec only (interactive: deny).
type lineGate struct {
	hooks lineGateHooks
	ctx   context.Context // the session's: a check ends with it

	mu sync.Mutex // serialises the input copy goroutine and a decision's resume
	w  io.Writer  // where input goes (the program or target)

	// The line as readline has it.
	line      []byte
	cur       int    // cursor, a byte offset at a character boundary
	uncertain string // the first key the gate could not follow; "" if none
	esc       int    // 0 none, 1 after ESC, 2 in CSI, 3 after ESC O
	csi       []byte
	quoted    bool   // after Ctrl-V: the next byte is literal
	inPaste   bool   // inside a bracketed paste
	pasteEnd  int    // bytes of the paste end marker matched so far
	approved  string // text of the current line approved at a line end inside a paste

	// A held line, or input paused after a Ctrl-C.
	held      bool
	pausing   bool // held after a Ctrl-C rather than for a line
	heldEnd   byte // the Enter to send if allowed
	cancel    context.CancelFunc
	abandoned bool          // Ctrl-C while held
	queue     []byte        // input typed while held
	space     chan struct{} // closed when the hold ends
}

// lineGateHooks are what the gate tells and asks its session.
type lineGateHooks struct {
	// check decides a line: nil runs it; a user-visible error (with the
	// reason) refuses it. It blocks while the line waits for approvers and
	// ends early when ctx does.
	check func(ctx context.Context, line string) error
	// notice writes one line to the client's stderr.
	notice func(ue *usererr.Error)
	// discarded records a line that did not run without a check: code
	// line_unverifiable or line_abandoned, and why.
	discarded func(code, why string)
}

// Control keys.
const (
	ctrlA   = 0x01
	ctrlB   = 0x02
	ctrlC   = 0x03
	ctrlD   = 0x04
	ctrlE   = 0x05
	ctrlF   = 0x06
	ctrlG   = 0x07
	ctrlH   = 0x08
	ctrlK   = 0x0b
	ctrlL   = 0x0c
	ctrlO   = 0x0f
	ctrlU   = 0x15
	ctrlV   = 0x16
	ctrlW   = 0x17
	keyEsc  = 0x1b
	keyDel  = 0x7f
	maxLine = 64 << 10
	// maxQueue bounds the input held behind a line that waits for
	// approvers; past it the input copy waits.
	maxQueue = 64 << 10
)

// pasteEndMarker ends a bracketed paste.
const pasteEndMarker = "\x1b[201~"

func newLineGate(ctx context.Context, h lineGateHooks) *lineGate {
	return &lineGate{hooks: h, ctx: ctx}
}

// step results.
const (
	stepPass      = iota // the byte goes through
	stepEnter            // the byte enters the line (CR, LF)
	stepOperate          // Ctrl-O: enters the line and loads the next history line
	stepInterrupt        // Ctrl-C: goes through alone, then the kill keys
)

// write passes p to w through the gate. It returns len(p) unless w fails:
// bytes held behind a line that waits for approvers are written when the
// line is decided.
func (g *lineGate) write(w io.Writer, p []byte) (int, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.w = w
	for g.held {
		if i := bytes.IndexByte(p, ctrlC); i >= 0 && !g.abandoned && !g.pausing {
			// Ctrl-C abandons the held line: what was typed behind it goes,
			// what follows the Ctrl-C is typed after the line is discarded.
			g.abandoned = true
			g.queue = append(g.queue[:0], p[i+1:]...)
			g.cancel()
			return len(p), nil
		}
		if len(g.queue)+len(p) <= maxQueue {
			g.queue = append(g.queue, p...)
			return len(p), nil
		}
		space := g.space
		g.mu.Unlock()
		select {
		case <-space:
		case <-g.ctx.Done():
		}
		g.mu.Lock()
		if g.ctx.Err() != nil {
			return 0, context.Cause(g.ctx)
		}
	}
	if err := g.feed(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// wait waits until no line is held (tests).
func (g *lineGate) wait() {
	for {
		g.mu.Lock()
		held, space := g.held, g.space
		g.mu.Unlock()
		if !held {
			return
		}
		<-space
	}
}

// feed runs p through the editing model, writing what may pass to w, until
// a line is held (the rest of p then waits in the queue). Called with mu
// held.
func (g *lineGate) feed(p []byte) error {
	start := 0
	for i := 0; i < len(p); i++ {
		act := g.step(p[i])
		if act == stepPass {
			continue
		}
		if act == stepInterrupt {
			// The user's Ctrl-C goes on alone: the terminal drops input that
			// arrives together with it, which would part the shell's line
			// from the gate's. What follows waits a moment, behind the kill
			// keys (a shell busy with an earlier signal does not always drop
			// its line): as kill does.
			if _, err := g.w.Write(p[start:i]); err != nil {
				return err
			}
			return g.kill(p[i+1:])
		}
		if _, err := g.w.Write(p[start:i]); err != nil {
			return err
		}
		start = i + 1
		line := string(g.line)
		switch {
		case g.uncertain != "":
			why := g.uncertain
			g.hooks.notice(&usererr.Error{Code: "line_unverifiable", Global: true,
				Msg: "line not run: it was edited with " + why + ", which postern cannot follow; type it again"})
			g.hooks.discarded("line_unverifiable", why)
			return g.kill(p[i+1:])
		case strings.TrimSpace(line) == "" || (g.approved != "" && strings.TrimRight(line, "\n") == g.approved):
			if _, err := g.w.Write(p[i : i+1]); err != nil {
				return err
			}
			g.entered(act)
		default:
			g.hold(line, p[i], act)
			g.queue = append(g.queue[:0], p[i+1:]...)
			return nil
		}
	}
	_, err := g.w.Write(p[start:])
	return err
}

// interruptPause is how long input waits after a Ctrl-C the user typed.
const interruptPause = 100 * time.Millisecond

// pauseAfterInterrupt holds the input after a Ctrl-C (rest, and what is
// typed next) for interruptPause, then sends the kill keys and the input.
// Called with mu held.
func (g *lineGate) pauseAfterInterrupt(rest []byte) {
	g.held, g.pausing, g.abandoned = true, true, false
	g.space = make(chan struct{})
	g.queue = append(g.queue[:0], rest...)
	time.AfterFunc(interruptPause, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.held, g.pausing = false, false
		close(g.space)
		q := g.queue
		g.queue = nil
		if g.ctx.Err() != nil {
			return
		}
		if _, err := g.w.Write(killKeys); err == nil {
			_ = g.feed(q) // a write error ends the session's input copy at its next write
		}
	})
}

// hold starts the check of line; its Enter (end) waits for the decision.
// Called with mu held.
func (g *lineGate) hold(line string, end byte, act int) {
	ctx, cancel := context.WithCancel(g.ctx)
	g.held, g.heldEnd, g.cancel, g.abandoned = true, end, cancel, false
	g.space = make(chan struct{})
	go func() { // ends with the check, which ends with the session at the latest
		err := g.hooks.check(ctx, line)
		cancel()
		g.resume(line, act, err)
	}()
}

// resume applies the decision on the held line and feeds the input that
// waited behind it.
func (g *lineGate) resume(line string, act int, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.queue
	g.queue = nil
	g.held = false
	close(g.space)
	if g.ctx.Err() != nil {
		return
	}
	// A write error ends the session's input copy at its next write.
	switch {
	case g.abandoned:
		g.hooks.notice(&usererr.Error{Code: "line_abandoned", Global: true,
			Msg: "line abandoned; its approval request was canceled"})
		g.hooks.discarded("line_abandoned", "Ctrl-C while it waited for approval")
		_ = g.kill(q)
	case err != nil:
		g.hooks.notice(approvalUserError(err))
		_ = g.kill(q)
	default:
		if _, werr := g.w.Write([]byte{g.heldEnd}); werr != nil {
			return
		}
		if g.inPaste {
			g.approved = line
		}
		g.entered(act)
		_ = g.feed(q)
	}
}

// entered updates the model after an Enter reached the shell: a new line,
// or inside a paste a newline in the same one. Called with mu held.
func (g *lineGate) entered(act int) {
	if g.inPaste {
		g.insert('\n')
		return
	}
	g.reset()
	if act == stepOperate {
		g.uncertain = "Ctrl-O (operate-and-get-next)"
	}
}

// killKeys discard what is left of a line after Ctrl-C (see kill): Ctrl-E
// Ctrl-E Ctrl-U. In readline's emacs mode (bash, zsh, fish and readline
// programs alike) Ctrl-E moves to the end of the line and Ctrl-U kills back
// to its start, whatever the cursor was; a program reading the terminal in
// its cooked mode (or a shell between two prompts) takes Ctrl-U as the line
// kill character, which erases everything typed on the line. (In vi insert
// mode the Ctrl-Es are inserted and Ctrl-U kills back from the cursor.)
var killKeys = []byte{ctrlE, ctrlE, ctrlU}

// kill discards the line in the shell and starts a new one: Ctrl-C, which
// makes readline drop its line in every editing mode and interrupts a
// program reading the terminal, then — once the terminal has taken the
// Ctrl-C on its own (interruptPause) — the kill keys, for a shell that was
// busy and did not drop the line, and then rest, the input that followed.
// Called with mu held.
func (g *lineGate) kill(rest []byte) error {
	g.reset()
	if _, err := g.w.Write([]byte{ctrlC}); err != nil {
		return err
	}
	g.pauseAfterInterrupt(rest)
	return nil
}

// reset starts a new, empty line. Called with mu held.
func (g *lineGate) reset() {
	g.line, g.cur, g.uncertain = g.line[:0], 0, ""
	g.esc, g.quoted, g.inPaste, g.pasteEnd, g.approved = 0, false, false, 0, ""
}

// step applies one input byte to the model.
func (g *lineGate) step(b byte) int {
	if g.inPaste {
		return g.pasteStep(b)
	}
	if g.quoted {
		g.quoted = false
		g.insert(b)
		return stepPass
	}
	if g.esc > 0 {
		g.escape(b)
		return stepPass
	}
	switch b {
	case '\r', '\n':
		return stepEnter
	case ctrlO:
		return stepOperate
	case keyEsc:
		g.esc, g.csi = 1, g.csi[:0]
	case keyDel, ctrlH:
		g.backspace()
	case ctrlD:
		g.deleteAt()
	case ctrlA:
		g.cur = 0
	case ctrlE:
		g.cur = len(g.line)
	case ctrlB:
		g.left()
	case ctrlF:
		g.right()
	case ctrlK:
		g.line = g.line[:g.cur]
	case ctrlU:
		g.line = append(g.line[:0], g.line[g.cur:]...)
		g.cur = 0
	case ctrlW:
		g.rubout()
	case ctrlC:
		g.reset()
		return stepInterrupt
	case ctrlL, ctrlG:
	case ctrlV:
		g.mark("Ctrl-V (quoted insert)")
		g.quoted = true
	case '\t':
		g.mark("Tab (completion)")
	default:
		if b < 0x20 {
			g.mark("Ctrl-" + string(rune('@'+b)))
			return stepPass
		}
		g.insert(b)
	}
	return stepPass
}

// pasteStep takes one byte of a bracketed paste: literal text, line ends
// checked, until the end marker.
func (g *lineGate) pasteStep(b byte) int {
	if b == pasteEndMarker[g.pasteEnd] {
		g.pasteEnd++
		if g.pasteEnd == len(pasteEndMarker) {
			g.inPaste, g.pasteEnd = false, 0
		}
		return stepPass
	}
	if g.pasteEnd > 0 {
		// What looked like the end marker was text.
		for _, c := range []byte(pasteEndMarker[:g.pasteEnd]) {
			g.insert(c)
		}
		g.pasteEnd = 0
		if b == pasteEndMarker[0] {
			g.pasteEnd = 1
			return stepPass
		}
	}
	if b == '\r' || b == '\n' {
		return stepEnter
	}
	g.insert(b)
	return stepPass
}

// escape consumes one byte of an escape sequence.
func (g *lineGate) escape(b byte) {
	switch g.esc {
	case 1:
		switch b {
		case '[':
			g.esc = 2
		case 'O':
			g.esc = 3
		default:
			g.esc = 0
			g.mark("an Alt or Meta key (ESC " + printableKey(b) + ")")
		}
	case 2:
		if b >= 0x40 && b <= 0x7e {
			g.esc = 0
			g.csiKey(string(g.csi), b)
			return
		}
		if len(g.csi) >= 16 {
			g.esc = 0
			g.mark("an unknown key sequence")
			return
		}
		g.csi = append(g.csi, b)
	default:
		g.esc = 0
		g.cursorKey(b, "")
	}
}

// csiKey applies a CSI key sequence (ESC [ params final).
func (g *lineGate) csiKey(params string, final byte) {
	if final == '~' {
		switch params {
		case "1", "7":
			g.cur = 0
		case "4", "8":
			g.cur = len(g.line)
		case "3":
			g.deleteAt()
		case "200":
			g.inPaste, g.pasteEnd = true, 0
		case "201":
		default:
			g.mark("a function key (ESC[" + params + "~)")
		}
		return
	}
	g.cursorKey(final, params)
}

// cursorKey applies a cursor key (CSI or SS3 final byte, no modifiers).
func (g *lineGate) cursorKey(final byte, params string) {
	if params != "" {
		g.mark("a modified key (ESC[" + params + printableKey(final) + ")")
		return
	}
	switch final {
	case 'C':
		g.right()
	case 'D':
		g.left()
	case 'H':
		g.cur = 0
	case 'F':
		g.cur = len(g.line)
	case 'A', 'B':
		g.mark("history (Up or Down)")
	default:
		g.mark("a function key")
	}
}

// mark makes the line unverifiable; the first reason is kept.
func (g *lineGate) mark(why string) {
	if g.uncertain == "" {
		g.uncertain = why
	}
}

// insert puts b at the cursor.
func (g *lineGate) insert(b byte) {
	if len(g.line) >= maxLine {
		g.mark("a line longer than postern follows")
		return
	}
	g.line = append(g.line, 0)
	copy(g.line[g.cur+1:], g.line[g.cur:])
	g.line[g.cur] = b
	g.cur++
}

// left moves the cursor one character back.
func (g *lineGate) left() {
	for g.cur > 0 {
		g.cur--
		if g.line[g.cur]&0xC0 != 0x80 {
			return
		}
	}
}

// right moves the cursor one character on.
func (g *lineGate) right() {
	if g.cur >= len(g.line) {
		return
	}
	g.cur++
	for g.cur < len(g.line) && g.line[g.cur]&0xC0 == 0x80 {
		g.cur++
	}
}

// backspace deletes the character before the cursor.
func (g *lineGate) backspace() {
	end := g.cur
	g.left()
	g.line = append(g.line[:g.cur], g.line[end:]...)
}

// deleteAt deletes the character under the cursor (Ctrl-D on an empty line
// is end of input, which changes nothing here).
func (g *lineGate) deleteAt() {
	start := g.cur
	g.right()
	g.line = append(g.line[:start], g.line[g.cur:]...)
	g.cur = start
}

// rubout deletes the whitespace-delimited word before the cursor (readline's
// unix-word-rubout, Ctrl-W).
func (g *lineGate) rubout() {
	i := g.cur
	for i > 0 && (g.line[i-1] == ' ' || g.line[i-1] == '\t') {
		i--
	}
	for i > 0 && g.line[i-1] != ' ' && g.line[i-1] != '\t' {
		i--
	}
	g.line = append(g.line[:i], g.line[g.cur:]...)
	g.cur = i
}

// printableKey names a key byte in a notice.
func printableKey(b byte) string {
	if b < 0x20 || b >= 0x7f {
		return "?"
	}
	return string(rune(b))
}
