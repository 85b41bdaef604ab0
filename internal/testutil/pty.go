package testutil

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// PTY is a program (the stock ssh client, usually) running in a pseudo
// terminal, as a person would run it: tests type into it and wait for what
// it prints.
type PTY struct {
	t    testing.TB
	f    *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{}
	done chan struct{}
}

// StartPTY starts name with args in a pty of cols x rows (TERM=xterm); the
// test's cleanup kills it.
func StartPTY(t testing.TB, cols, rows uint16, name string, args ...string) *PTY {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: rows})
	if err != nil {
		t.Fatalf("start ssh in a pty: %v", err)
	}
	c := &PTY{t: t, f: f, cmd: cmd, more: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		buf := make([]byte, 32<<10)
		for {
			n, err := f.Read(buf)
			c.mu.Lock()
			c.out.Write(buf[:n])
			close(c.more)
			c.more = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = f.Close()
		<-c.done
		_ = cmd.Wait()
	})
	return c
}

// Expect waits up to 30 seconds until the output matches re.
func (c *PTY) Expect(re string) {
	c.t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		ok := rx.Match(c.out.Bytes())
		more := c.more
		out := c.out.String()
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-more:
		case <-c.done:
			c.mu.Lock()
			ok := rx.Match(c.out.Bytes())
			c.mu.Unlock()
			if !ok {
				c.t.Fatalf("program ended before %q; output %q", re, out)
			}
			return
		case <-timeout:
			c.t.Fatalf("no %q in %q", re, out)
		}
	}
}

// Resize changes the terminal's size and waits until a shell in it sees the
// new size (it types "stty size" until the answer is the new size). The ssh
// client forwards a size change in its own time, so a line typed right after
// a resize can reach the far side before the change does.
func (c *PTY) Resize(cols, rows uint16) {
	c.t.Helper()
	if err := pty.Setsize(c.f, &pty.Winsize{Cols: cols, Rows: rows}); err != nil {
		c.t.Fatalf("resize the terminal: %v", err)
	}
	answer := regexp.MustCompile(`(?m)(?:^|\r)(\d+ \d+)\r$`)
	want := fmt.Sprintf("%d %d", rows, cols)
	timeout := time.After(30 * time.Second)
	for {
		c.mu.Lock()
		from := c.out.Len()
		c.mu.Unlock()
		c.Send("stty size\r")
		for {
			c.mu.Lock()
			m := answer.FindSubmatch(c.out.Bytes()[from:])
			more, out := c.more, c.out.String()
			c.mu.Unlock()
			if m != nil {
				if string(m[1]) == want {
					return
				}
				break // the old size: ask again
			}
			select {
			case <-more:
			case <-c.done:
				c.t.Fatalf("program ended before the terminal was %s; output %q", want, out)
			case <-timeout:
				c.t.Fatalf("the terminal is not %s after 30s; output %q", want, out)
			}
		}
	}
}

// Send types s.
func (c *PTY) Send(s string) {
	c.t.Helper()
	if _, err := c.f.Write([]byte(s)); err != nil {
		c.t.Fatalf("type %q: %v", s, err)
	}
}

// Wait waits for the program to exit and returns its exit code and all
// output.
func (c *PTY) Wait() (int, string) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("program did not exit")
	}
	err := c.cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return code, c.out.String()
}

// File is the pty's controlling side (to resize it).
func (c *PTY) File() *os.File { return c.f }

// Output returns everything printed so far.
func (c *PTY) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}
