package testutil

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Proc is a child process started by [Start] or [Launch]. Its stdout and
// stderr are captured together in memory. The process runs in its own
// process group; [Proc.Stop] kills the group and every descendant, so
// helpers it forked (sshd's per-connection children, which start their own
// sessions, and PostgreSQL backends) go with it.
type Proc struct {
	// Cmd is the running command. Read it; do not call Wait on it.
	Cmd *exec.Cmd

	name string
	out  *outBuffer
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result; read only after done is closed

	stopOnce sync.Once
}

// Option changes how [Start] and [Launch] run a process.
type Option func(*exec.Cmd)

// Env adds environment variables ("KEY=value") on top of the test's own
// environment.
func Env(kv ...string) Option {
	return func(c *exec.Cmd) {
		if c.Env == nil {
			c.Env = os.Environ()
		}
		c.Env = append(c.Env, kv...)
	}
}

// Dir sets the working directory of the process.
func Dir(dir string) Option {
	return func(c *exec.Cmd) { c.Dir = dir }
}

// As runs the process with the given user and group IDs. The caller must be
// root. The parent-death signal is applied after the identity change, so the
// process still dies with the test binary.
func As(uid, gid uint32) Option {
	return func(c *exec.Cmd) {
		c.SysProcAttr.Credential = &syscall.Credential{Uid: uid, Gid: gid}
	}
}

// Start runs name with args and, when the test ends, stops it as
// [Proc.Stop] does. If the test failed, the process output is logged.
func Start(t testing.TB, name string, args []string, opts ...Option) *Proc {
	t.Helper()
	p, err := Launch(name, args, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, p.Output())
		}
	})
	return p
}

// Launch runs name with args without tying it to a test. The caller must
// call [Proc.Stop]. If the test binary dies first, the kernel kills the
// process (parent-death signal).
func Launch(name string, args []string, opts ...Option) (*Proc, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	for _, o := range opts {
		o(cmd)
	}
	out := newOutBuffer()
	cmd.Stdout = out
	cmd.Stderr = out
	// A grandchild that outlives the leader keeps the output pipe open;
	// don't let that hold up Wait for long.
	cmd.WaitDelay = 5 * time.Second
	if err := startLocked(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Cmd: cmd, name: shortName(name), out: out, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.close()
		close(p.done)
	}()
	return p, nil
}

// The parent-death signal fires when the forking OS *thread* exits, not the
// process. Go may end a thread (a goroutine that exits while locked to its
// thread takes the thread with it), which would kill a healthy child mid
// test. So every child is forked from one goroutine locked to its thread
// for the life of the test binary.
var (
	spawnOnce sync.Once
	spawnReq  chan spawnCall
)

type spawnCall struct {
	cmd  *exec.Cmd
	done chan error
}

func startLocked(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnReq = make(chan spawnCall)
		// Deliberately never ends: its thread is the parent of every child.
		go func() {
			runtime.LockOSThread()
			for c := range spawnReq {
				c.done <- c.cmd.Start()
			}
		}()
	})
	c := spawnCall{cmd: cmd, done: make(chan error, 1)}
	spawnReq <- c
	return <-c.done
}

func shortName(name string) string {
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		return name[i+1:]
	}
	return name
}

// PID returns the process ID.
func (p *Proc) PID() int { return p.Cmd.Process.Pid }

// Done returns a channel closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the process's exit error once it has exited (nil for exit
// status 0), and nil while it runs.
func (p *Proc) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// Output returns everything the process printed so far.
func (p *Proc) Output() string { return p.out.String() }

// Signal sends sig to the process group.
func (p *Proc) Signal(sig syscall.Signal) error {
	err := syscall.Kill(-p.PID(), sig)
	if errors.Is(err, syscall.ESRCH) {
		return nil
	}
	return err
}

// Stop kills the process, its process group and all its descendants with
// SIGKILL, and waits for the process to exit. It is safe to call more than
// once and after the process exited.
func (p *Proc) Stop() {
	p.StopWith(syscall.SIGKILL, 0)
}

// StopWith sends sig to the process group and waits up to grace for the
// process to exit; then it kills whatever is left as [Proc.Stop] does. It
// is safe to call more than once.
func (p *Proc) StopWith(sig syscall.Signal, grace time.Duration) {
	p.stopOnce.Do(func() {
		if sig != syscall.SIGKILL {
			_ = p.Signal(sig)
			select {
			case <-p.done:
			case <-time.After(grace):
			}
		}
		select {
		case <-p.done:
			// The leader is reaped and its PID may be reused: only its
			// group, which lives while any member does, is still its own.
			_ = p.Signal(syscall.SIGKILL)
		default:
			killTree(p.PID())
		}
		<-p.done
	})
}

// WaitLine waits until the process prints a line matching re and returns
// that line. It searches all output since the start, so a line printed
// before the call is found too. The test fails if the process exits or
// timeout passes first; the output so far is in the failure message.
func (p *Proc) WaitLine(t testing.TB, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	line, err := p.AwaitLine(re, timeout)
	if err != nil {
		t.Fatalf("%v\noutput of %s:\n%s", err, p.name, p.Output())
	}
	return line
}

// AwaitLine is the test-free form of [Proc.WaitLine].
func (p *Proc) AwaitLine(re *regexp.Regexp, timeout time.Duration) (string, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		changed, closed := p.out.watch()
		if line, ok := p.out.find(re); ok {
			return line, nil
		}
		if closed {
			<-p.done
			return "", fmt.Errorf("%s exited (%v) before printing a line matching %q", p.name, p.err, re)
		}
		select {
		case <-changed:
		case <-timer.C:
			return "", fmt.Errorf("%s printed no line matching %q within %v", p.name, re, timeout)
		}
	}
}

// outBuffer collects output and lets readers wait for more.
type outBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on every write
	closed  bool
}

func newOutBuffer() *outBuffer { return &outBuffer{changed: make(chan struct{})} }

func (b *outBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

func (b *outBuffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	close(b.changed)
	b.changed = make(chan struct{})
}

// watch returns a channel closed on the next change, and whether the
// output is complete.
func (b *outBuffer) watch() (<-chan struct{}, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed, b.closed
}

// find returns the first line matching re. A final line without a newline
// counts only once the output is complete.
func (b *outBuffer) find(re *regexp.Regexp) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	data := b.buf.Bytes()
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 && !b.closed {
			return "", false
		}
		line := data
		if i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if re.Match(line) {
			return string(bytes.TrimRight(line, "\r")), true
		}
	}
	return "", false
}

func (b *outBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Need skips the test if any of bins is not installed. Skipping is only for
// machines genuinely without the binary; CI installs everything.
func Need(t testing.TB, bins ...string) {
	t.Helper()
	var missing []string
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		Missing(t, "%s not installed; run .ci/run or apt-get install the package providing it", strings.Join(missing, ", "))
	}
}

// Missing says that something a test needs is not on this machine (a
// program, a package, root, a pseudo-terminal): the test is skipped where
// that can happen, and fails in CI (CI set in the environment, as .ci/run
// does), where every real component is installed and a skip would hide a
// broken install.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI installs everything the tests need, but: "+format, args...)
	}
	t.Skipf(format, args...)
}
