package players

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/posternhq/postern/internal/testutil"
)

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Command
	}{
		{name: "controls", in: " .[]+-q", want: []Command{CmdPause, CmdStep, CmdPrevMarker, CmdNextMarker, CmdFaster, CmdSlower, CmdQuit}},
		{name: "arrows", in: "\x1b[C\x1b[D\x1bOC\x1bOD", want: []Command{CmdSeekFwd, CmdSeekBack, CmdSeekFwd, CmdSeekBack}},
		{name: "ctrl-c", in: "\x03", want: []Command{CmdQuit}},
		{name: "other keys ignored", in: "abc\x1b[A\x1b", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseKeys([]byte(tt.in)); !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func FuzzParseKeys(f *testing.F) {
	f.Add([]byte(" .[]+-q\x1b[C\x1b[D"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range ParseKeys(b) {
			if c < CmdPause || c > CmdQuit {
				t.Fatalf("ParseKeys(%q) gave %v", b, c)
			}
		}
	})
}

// TestTerminalRestores plays in a real pseudo-terminal, quits with q and
// checks that the terminal mode is restored.
func TestTerminalRestores(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.Missing(t, "no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	p := newPlayer(t, fileSource(t, "session_v2.cast"), Options{})
	var out bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- Terminal{In: tty, Out: &out}.Play(context.Background(), p) }()
	// "hello " is due at 0.5s; q quits long before the idle gap ends.
	if _, err := ptmx.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Play: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Play did not quit on q")
	}
	if !isCooked(t, tty) {
		t.Error("terminal left in raw mode")
	}
}

// TestTerminalRestoresOnPanic checks the panic path.
func TestTerminalRestoresOnPanic(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.Missing(t, "no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic was swallowed")
			}
		}()
		Terminal{In: tty, Out: io.Discard}.withRaw(func(<-chan Command) error {
			if isCooked(t, tty) {
				t.Error("terminal not in raw mode inside withRaw")
			}
			panic("boom")
		})
	}()
	if !isCooked(t, tty) {
		t.Error("terminal left in raw mode after a panic")
	}
}

func TestTerminalNonTTYPlaysThrough(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "idle_limit.cast"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := newPlayer(t, fileSource(t, "idle_limit.cast"), Options{Speed: 16})
	var out bytes.Buffer
	if err := (Terminal{In: f, Out: &out}).Play(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if out.String() != "abc" {
		t.Errorf("got %q; want abc", out.String())
	}
}

// isCooked reports whether tty echoes and reads lines (not raw mode).
func isCooked(t *testing.T, tty *os.File) bool {
	t.Helper()
	return !isRaw(t, tty)
}

// notifyWriter collects writes and signals each one.
type notifyWriter struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	wrote chan struct{}
}

func (w *notifyWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	select {
	case w.wrote <- struct{}{}:
	default:
	}
	return len(b), nil
}

func (w *notifyWriter) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		w.mu.Lock()
		got := w.buf.String()
		w.mu.Unlock()
		if strings.Contains(got, want) {
			return
		}
		select {
		case <-w.wrote:
		case <-deadline:
			t.Fatalf("output %q never contained %q", got, want)
		}
	}
}

// TestTerminalKeys drives the player with keys typed into a real
// pseudo-terminal: ] jumps over the 10 s idle gap to the next marker, q quits.
func TestTerminalKeys(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		testutil.Missing(t, "no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })
	p := newPlayer(t, fileSource(t, "session_v2.cast"), Options{})
	out := &notifyWriter{wrote: make(chan struct{}, 1)}
	done := make(chan error, 1)
	go func() { done <- Terminal{In: tty, Out: out}.Play(context.Background(), p) }()
	for _, step := range []struct{ key, want string }{
		{"]", "hello world\r\n"}, // to "command: ls"
		{"]", "after idle\r\n"},  // to "approval granted", without waiting 10 s
	} {
		if _, err := ptmx.Write([]byte(step.key)); err != nil {
			t.Fatal(err)
		}
		out.waitFor(t, step.want)
	}
	if _, err := ptmx.Write([]byte("q")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Play: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Play did not quit on q")
	}
	if !strings.HasSuffix(out.buf.String(), "\x1b[?25h\r\n") {
		t.Errorf("output %q does not end by restoring the cursor", out.buf.String())
	}
	if isRaw(t, tty) {
		t.Error("terminal left in raw mode")
	}
}
