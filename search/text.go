package search

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Terminal text.
//
// The recording holds what the terminal was sent: text mixed with escape
// sequences (colours, cursor movement, window titles) and control
// characters. screenText turns that into lines of plain text the way a
// reader of the screen would see them, without emulating a terminal: it
// drops escape sequences (ECMA-48 CSI, OSC, DCS/SOS/PM/APC strings, two- and
// three-byte escapes) and control characters, applies backspace, starts a
// new line at a line feed, at a carriage return that is not followed by a
// line feed (progress meters redraw their line), at cursor movement to
// another row, at erasing the display and at a switch of screen, and turns a cursor-forward or a tab into a space. Full-screen
// programs (vim, top) are therefore indexed as the text they draw, row by
// row, not as screen states. A hand-written scanner because no Go library
// strips escape sequences from a stream split at arbitrary points; it
// keeps its state between events.

// escState is where screenText is inside an escape sequence.
type escState uint8

const (
	escNone    escState = iota
	escStart            // after ESC
	escCSI              // ESC [ … final byte
	escString           // OSC, DCS, SOS, PM, APC: until BEL or ST
	escStrEsc           // ESC inside a string (ST is ESC \)
	escCharset          // ESC ( ) * + - . /: one more byte
)

// screenText assembles terminal output into lines.
type screenText struct {
	line    []byte        // the line being assembled
	at      time.Duration // when its first character arrived
	state   escState
	csi     []byte // parameters of the CSI sequence being read
	pending bool   // a carriage return was seen: a line feed or a new line follows
	emit    func(line string, at time.Duration)
}

// write consumes terminal output that arrived at time at.
func (s *screenText) write(p string, at time.Duration) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch s.state {
		case escStart:
			switch {
			case c == '[':
				s.state, s.csi = escCSI, s.csi[:0]
			case c == ']' || c == 'P' || c == 'X' || c == '^' || c == '_':
				s.state = escString
			case c >= '(' && c <= '/':
				s.state = escCharset
			default:
				s.state = escNone // a two-byte escape
			}
			continue
		case escCSI:
			if c >= 0x40 && c <= 0x7e {
				s.state = escNone
				s.csiFinal(c, at)
			} else if len(s.csi) < 32 {
				s.csi = append(s.csi, c)
			}
			continue
		case escString:
			switch c {
			case 0x07:
				s.state = escNone
			case 0x1b:
				s.state = escStrEsc
			}
			continue
		case escStrEsc:
			if c == '\\' {
				s.state = escNone
			} else {
				s.state = escString
			}
			continue
		case escCharset:
			s.state = escNone
			continue
		}
		if s.pending && c != '\n' {
			s.pending = false
			s.flush()
		}
		switch {
		case c == 0x1b:
			s.state = escStart
		case c == '\n':
			s.pending = false
			s.flush()
		case c == '\r':
			s.pending = true
		case c == '\b':
			s.backspace()
		case c == '\t':
			s.add(" ", at)
		case c < 0x20 || c == 0x7f:
			// other control characters draw nothing
		default:
			// Runs of plain text are copied at once.
			j := i + 1
			for j < len(p) && p[j] >= 0x20 && p[j] != 0x7f {
				j++
			}
			s.add(p[i:j], at)
			i = j - 1
		}
	}
}

// csiFinal applies a CSI sequence that ended with final: movement to
// another row, erasing the display and switching to or from the alternate
// screen end the line; movement forward separates words.
func (s *screenText) csiFinal(final byte, at time.Duration) {
	switch final {
	case 'A', 'B', 'E', 'F', 'H', 'f', 'd': // up, down, next/previous line, position, row
		s.flush()
	case 'J': // erase the display
		s.flush()
	case 'h', 'l': // the alternate screen begins or ends
		switch string(s.csi) {
		case "?1049", "?1047", "?47":
			s.flush()
		}
	case 'C', 'G', '`': // forward, column
		if len(s.line) > 0 && s.line[len(s.line)-1] != ' ' {
			s.add(" ", at)
		}
	}
}

// add appends text to the line, noting when the line started.
func (s *screenText) add(text string, at time.Duration) {
	for text != "" {
		if len(s.line) == 0 {
			s.at = at
		}
		n := min(len(text), maxLine-len(s.line))
		s.line = append(s.line, text[:n]...)
		text = text[n:]
		if len(s.line) >= maxLine {
			s.flush()
		}
	}
}

// backspace removes the last character of the line.
func (s *screenText) backspace() {
	if len(s.line) == 0 {
		return
	}
	_, n := utf8.DecodeLastRune(s.line)
	s.line = s.line[:len(s.line)-n]
}

// flush emits the line if it has any text.
func (s *screenText) flush() {
	if text := strings.TrimSpace(string(s.line)); text != "" {
		s.emit(text, s.at)
	}
	s.line = s.line[:0]
}

// tail returns the line being assembled (the prompt the cursor is on).
func (s *screenText) tail() string { return string(s.line) }

// close emits the last line.
func (s *screenText) close() { s.flush() }

// maxLine bounds one line; a longer one is cut into several.
const maxLine = 1024

// Typed input.
//
// lineEditor turns keystrokes into the command lines a shell would run: it
// applies the editing keys readline and the kernel line discipline share
// (backspace, ^U kill line, ^W erase word), drops ^C'd lines and escape
// sequences (arrow keys, function keys, the bracketed-paste markers), and
// ends a line at Enter. Lines typed at a password prompt are dropped: the
// recording holds them as '*' (the bastion masks input at no-echo
// prompts), and a line typed after a prompt that asks for a password,
// passphrase or PIN is dropped whatever it holds. History recall and
// completion are not replayed: a line recalled with the up arrow is indexed
// through the output that echoes it.
type lineEditor struct {
	line   []byte
	at     time.Duration
	secret bool // the line was started at a password prompt
	state  escState
	emit   func(line string, at time.Duration)
	// prompt returns the text the cursor is on when a line starts.
	prompt func() string
}

// write consumes input typed at time at.
func (e *lineEditor) write(p string, at time.Duration) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch e.state {
		case escStart:
			switch {
			case c == '[' || c == 'O':
				e.state = escCSI
			default:
				e.state = escNone
			}
			continue
		case escCSI:
			if c >= 0x40 && c <= 0x7e && c != '[' {
				e.state = escNone
			}
			continue
		}
		switch c {
		case 0x1b:
			e.state = escStart
		case '\r', '\n':
			e.commit()
		case 0x7f, '\b':
			if len(e.line) > 0 {
				_, n := utf8.DecodeLastRune(e.line)
				e.line = e.line[:len(e.line)-n]
			}
		case 0x15: // ^U
			e.line = e.line[:0]
		case 0x17: // ^W
			t := strings.TrimRight(string(e.line), " ")
			e.line = e.line[:strings.LastIndexByte(t, ' ')+1]
		case 0x03, 0x04: // ^C, ^D: the line is abandoned
			e.line, e.secret = e.line[:0], false
		case '\t':
			e.add(" ", at)
		default:
			if c >= 0x20 {
				e.add(p[i:i+1], at)
			}
		}
	}
}

func (e *lineEditor) add(text string, at time.Duration) {
	if len(e.line) == 0 {
		e.at = at
		if e.prompt != nil && isPasswordPrompt(e.prompt()) {
			e.secret = true
		}
	}
	if len(e.line) < maxLine {
		e.line = append(e.line, text...)
	}
}

// commit ends the line.
func (e *lineEditor) commit() {
	text := strings.TrimSpace(string(e.line))
	secret := e.secret || strings.Trim(text, "*") == ""
	e.line, e.secret = e.line[:0], false
	if !secret {
		e.emit(text, e.at)
	}
}

// isPasswordPrompt reports whether the text the cursor sits on asks for a
// secret: it names a password, passphrase or PIN and ends with a colon.
func isPasswordPrompt(prompt string) bool {
	p := strings.ToLower(strings.TrimSpace(prompt))
	if !strings.HasSuffix(p, ":") {
		return false
	}
	for _, w := range []string{"password", "passphrase", "passcode", "pin"} {
		i := strings.Index(p, w)
		if i >= 0 && (i == 0 || !isLetter(p[i-1])) && (i+len(w) == len(p) || !isLetter(p[i+len(w)])) {
			return true
		}
	}
	return false
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' }
