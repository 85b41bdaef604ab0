package bastion

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/posternhq/postern/state"
)

// ptyClient is the stock ssh client running in a pty, as a person would
// run it.
type ptyClient struct {
	t    *testing.T
	f    *os.File
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	more chan struct{}
	done chan struct{}
}

func startPTYClient(t *testing.T, cols, rows uint16, args ...string) *ptyClient {
	t.Helper()
	cmd := exec.Command("ssh", args...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	f, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: cols, Rows: rows})
	if err != nil {
		t.Fatalf("start ssh in a pty: %v", err)
	}
	c := &ptyClient{t: t, f: f, cmd: cmd, more: make(chan struct{}), done: make(chan struct{})}
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

// expect waits until the output matches re.
func (c *ptyClient) expect(re string) {
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
				c.t.Fatalf("ssh ended before %q; output %q", re, out)
			}
			return
		case <-timeout:
			c.t.Fatalf("no %q in %q", re, out)
		}
	}
}

func (c *ptyClient) send(s string) {
	c.t.Helper()
	if _, err := c.f.Write([]byte(s)); err != nil {
		c.t.Fatalf("type %q: %v", s, err)
	}
}

// wait waits for ssh to exit and returns its exit code and all output.
func (c *ptyClient) wait() (int, string) {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Fatalf("ssh did not exit")
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

func TestInnerHopInteractiveShell(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required"})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	c := startPTYClient(t, 90, 30, "-F", f.sshCfg, "-tt", "web-1")
	// The login shell's prompt varies; drive it with markers instead.
	c.send("PS1='$ '; echo MARK-$((40+2))\r")
	c.expect(`MARK-42`)
	c.send("stty size\r")
	c.expect(`30 90`)
	if err := pty.Setsize(c.f, &pty.Winsize{Cols: 132, Rows: 43}); err != nil {
		t.Fatal(err)
	}
	c.send("stty size\r")
	c.expect(`43 132`)
	// The prompt is spelled so that the echo of this line does not match.
	c.send("printf '%s: ' Password; stty -echo; read -r secret; stty echo; echo; echo got-${#secret}\r")
	c.expect(`Password: `)
	c.send("hunter2\r")
	c.expect(`got-7`)
	c.send("exit 5\r")
	code, out := c.wait()
	if code != 5 {
		t.Errorf("exit = %d; want 5", code)
	}
	f.waitEvent(state.EventSessionEnd, 1)
	cast := f.checkCast(f.lastSession())
	if cast.header.Width != 90 || cast.header.Height != 30 || cast.header.Term != "xterm" {
		t.Errorf("header %+v; want 90x30 xterm", cast.header)
	}
	var resized bool
	for _, e := range cast.codes("r") {
		resized = resized || e.Data == "132x43"
	}
	if !resized {
		t.Errorf("no r event 132x43 in %v", cast.codes("r"))
	}
	// What the client's terminal showed contains what was recorded, byte
	// for byte (ssh's raw mode passes output through untouched).
	if !strings.Contains(out, string(cast.output)) {
		t.Errorf("recorded output is not what the client received:\nrecorded %q\nreceived %q", cast.output, out)
	}
	if strings.Contains(string(cast.input), "hunter2") {
		t.Errorf("the password was recorded in clear: %q", cast.input)
	}
	if !strings.Contains(string(cast.input), "*******") {
		t.Errorf("input %q; want the password masked", cast.input)
	}
	if !strings.Contains(string(cast.input), "stty size") {
		t.Errorf("input %q; want ordinary typing recorded", cast.input)
	}
}
