package login

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// TestWaitIndicatorTerminal checks the spinner on a real terminal: frames
// redrawn in place with \r, and the line cleared when the wait ends.
func TestWaitIndicatorTerminal(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	t.Cleanup(func() { ptmx.Close(); tty.Close() })

	chunks := make(chan string)
	go func() {
		defer close(chunks)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			if n > 0 {
				chunks <- string(buf[:n])
			}
			if err != nil { // EIO once tty is closed
				return
			}
		}
	}()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		waitIndicator(ctx, tty, "Waiting")
	}()
	var out string
	frames := func() int { return strings.Count(out, " Waiting (") }
	timeout := time.After(10 * time.Second)
	for frames() < 3 || !strings.HasSuffix(out, "\r\x1b[K") {
		select {
		case c, ok := <-chunks:
			if !ok {
				t.Fatalf("pty closed early: %q", out)
			}
			out += c
		case <-timeout:
			t.Fatalf("got %q; want three frames, then the line cleared", out)
		}
		if frames() >= 3 {
			cancel() // the wait is over: the indicator must clear its line
		}
	}
	<-done
	for _, f := range []string{"\r| Waiting", "\r/ Waiting", "\r- Waiting"} {
		if !strings.Contains(out, f) {
			t.Errorf("output lacks frame %q: %q", f, out)
		}
	}
}

// TestWaitIndicatorPlain checks that a non-terminal gets one plain line.
func TestWaitIndicatorPlain(t *testing.T) {
	var b bytes.Buffer
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	waitIndicator(ctx, &b, "Waiting")
	if b.String() != "Waiting...\n" {
		t.Errorf("got %q; want %q", b.String(), "Waiting...\n")
	}
}
