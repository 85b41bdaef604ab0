package players

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/term"

	"github.com/posternhq/postern/recorder"
)

// Terminal is the terminal the player runs in. When In is a terminal it is
// put in raw mode for the duration of a Play or Watch, keys become controls,
// and the previous mode is restored on every way out: the end of the cast,
// q, Ctrl-C (a key in raw mode, not a signal), the context ending (SIGTERM
// through the caller's signal.NotifyContext) and a panic.
type Terminal struct {
	// In is where keys come from; without a terminal there, the cast plays
	// straight through and no key is read.
	In *os.File
	// Out receives the cast's output.
	Out io.Writer
}

// interactive reports whether In is a terminal.
func (t Terminal) interactive() bool {
	return t.In != nil && term.IsTerminal(int(t.In.Fd()))
}

// withRaw runs fn with In in raw mode and the keys it sends decoded into
// commands, restoring the terminal afterwards. Without a terminal fn gets a
// nil channel.
func (t Terminal) withRaw(fn func(cmds <-chan Command) error) (err error) {
	if !t.interactive() {
		return fn(nil)
	}
	fd := int(t.In.Fd())
	old, err := term.MakeRaw(fd)
	if err != nil {
		return fmt.Errorf("terminal raw mode: %w", err)
	}
	restore := func() {
		_ = term.Restore(fd, old)
		// Show the cursor and end the line the cast may have left open.
		_, _ = io.WriteString(t.Out, "\x1b[?25h\r\n")
	}
	defer func() {
		if p := recover(); p != nil {
			restore()
			panic(p)
		}
		restore()
	}()
	cmds := make(chan Command, 16)
	// The key reader blocks in Read on the terminal and cannot be
	// interrupted; it is deliberately not waited for. It exits at the next
	// key or when the process ends, and never blocks on a full channel.
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := t.In.Read(buf)
			for _, c := range ParseKeys(buf[:n]) {
				select {
				case cmds <- c:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return fn(cmds)
}

// Play runs p in the terminal until the cast ends or the user quits.
func (t Terminal) Play(ctx context.Context, p *Player) error {
	return t.withRaw(func(cmds <-chan Command) error {
		err := p.Run(ctx, t.Out, cmds)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
}

// Watch copies the output of a live cast stream to the terminal as it
// arrives, until the stream ends (the session finished) or the user quits
// with q or Ctrl-C. Nothing typed reaches the session: watching is
// read-only.
func (t Terminal) Watch(ctx context.Context, r io.ReadCloser) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	return t.withRaw(func(cmds <-chan Command) error {
		go func() {
			for {
				select {
				case c := <-cmds:
					if c == CmdQuit {
						cancel()
						r.Close() // unblocks the decoder
						return
					}
				case <-ctx.Done():
					r.Close()
					return
				}
			}
		}()
		err := Follow(t.Out, r)
		if ctx.Err() != nil {
			return nil
		}
		return err
	})
}

// Follow writes the output events of the cast read from r to w as they
// arrive, without timing: the pace is the live session's own. It returns
// nil at the end of the stream.
func Follow(w io.Writer, r io.Reader) error {
	dec := recorder.NewDecoder(r)
	if _, err := dec.Header(); err != nil {
		return fmt.Errorf("read cast: %w", err)
	}
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read cast: %w", err)
		}
		if ev.Code == recorder.CodeOutput {
			if _, err := io.WriteString(w, ev.Data); err != nil {
				return err
			}
		}
	}
}

// ParseKeys turns bytes read from a raw terminal into controls: space
// (pause/resume), "." (step), ←/→ (seek), "[" and "]" (markers), "+"/"="
// and "-" (speed), q, Q and Ctrl-C (quit). Other bytes are ignored.
func ParseKeys(b []byte) []Command {
	var out []Command
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case ' ':
			out = append(out, CmdPause)
		case '.':
			out = append(out, CmdStep)
		case '[':
			out = append(out, CmdPrevMarker)
		case ']':
			out = append(out, CmdNextMarker)
		case '+', '=':
			out = append(out, CmdFaster)
		case '-', '_':
			out = append(out, CmdSlower)
		case 'q', 'Q', 0x03, 0x04:
			out = append(out, CmdQuit)
		case 0x1b:
			// ESC [ C / ESC O C (→), ESC [ D / ESC O D (←).
			if i+2 < len(b) && (b[i+1] == '[' || b[i+1] == 'O') {
				switch b[i+2] {
				case 'C':
					out = append(out, CmdSeekFwd)
				case 'D':
					out = append(out, CmdSeekBack)
				}
				i += 2
			}
		}
	}
	return out
}
