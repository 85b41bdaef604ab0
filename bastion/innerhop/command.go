package innerhop

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/posternhq/postern/internal/usererr"
)

// Command targets.
//
// A command target (kind: command) is a program postern runs itself, for
// example psql with a stored password, reached exactly like an ssh target:
// `ssh -J bastion psql-prod`. The inner hop serves SSH on the channel with a
// host certificate for the target's name and the same-key authentication, and
// runs one program per session channel:
//
//   - shell (ssh -J bastion psql-prod): the configured command, in a pty when
//     the client asked for one (creack/pty; window-change resizes it);
//   - exec (ssh -J bastion psql-prod 'select 1'): the target's exec command
//     (its command if exec is empty) with the exec string appended as one
//     final argument, so a target with exec [psql, --no-psqlrc, -c] runs
//     `psql --no-psqlrc -c 'select 1'`. The string is never split; it reaches
//     a shell only if the exec command is one (the demo target's bash -c).
//
// The program runs in its own process group (its own session with a pty),
// as RunAs when set, in Dir or a fresh temporary directory removed at the
// end, with an environment of PATH, HOME, USER, LOGNAME, SHELL, the client's
// allowed env requests (LANG, LC_*, TERM, COLORTERM) and the target's Env
// (secrets; never logged). At session end the whole process group is killed.
// Its exit status or signal is returned to the client, and the session is
// recorded like an ssh session. A program that cannot start ends the session
// with ExitCommandFailed.

// ExitCommandFailed is the exit status when a command target's program could
// not be started.
const ExitCommandFailed = 127

// commandDrainTimeout bounds how long output is drained after the program
// exits while other processes still hold its pty or pipes.
const commandDrainTimeout = 2 * time.Second

// serveCommand serves the inner connection of a command target.
func (c *hopConn) serveCommand(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.Prohibited, "postern: "+c.t.Name+" is a command target; only sessions are allowed")
			continue
		}
		c.sessions.Add(1)
		go func() {
			defer c.sessions.Done()
			c.commandSession(nc)
		}()
	}
}

// commandSession runs the program of one session channel.
func (c *hopConn) commandSession(nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	s := c.newSession(ch)
	defer c.untrack(s)
	started := make(chan *hopProcess, 1)
	reqsDone := make(chan struct{})
	var proc atomic.Pointer[hopProcess]
	go func() {
		defer close(reqsDone)
		for req := range reqs {
			switch req.Type {
			case "pty-req":
				ok := c.decision.Interactive && proc.Load() == nil && s.handlePty(req) == nil
				if req.WantReply {
					_ = req.Reply(ok, nil)
				}
			case "env":
				if s.handleEnv(req) && req.WantReply {
					_ = req.Reply(true, nil)
				}
			case "shell", "exec", "subsystem":
				if s.hasBegun() {
					_ = req.Reply(false, nil)
					continue
				}
				command := ""
				if req.Type != kindShell {
					var p struct{ Value string }
					if err := ssh.Unmarshal(req.Payload, &p); err != nil {
						_ = req.Reply(false, nil)
						continue
					}
					command = p.Value
				}
				var argv []string
				if req.Type == kindSubsystem {
					if argv = c.t.Subsystems[command]; len(argv) == 0 {
						// Accepted so that the client shows why, rather than
						// "subsystem request failed".
						_ = req.Reply(true, nil)
						s.abort(noSubsystem(c.t.Name, command))
						started <- nil
						continue
					}
					if command == "sftp" {
						s.sftp.Store(newSFTPAudit(s.c, s.id))
					}
				}
				if ue := s.begin(req.Type, command); ue != nil {
					_ = req.Reply(true, nil)
					s.abort(ue)
					started <- nil
					continue
				}
				p, err := c.startProcess(s, command, argv)
				_ = req.Reply(true, nil)
				if err != nil {
					s.abort(&usererr.Error{Msg: "the command could not start", Code: "command_failed", Exit: ExitCommandFailed, Err: err})
					started <- nil
					continue
				}
				proc.Store(p)
				started <- p
			case "window-change":
				cols, rows, ok := s.handleResize(req)
				if p := proc.Load(); ok && p != nil {
					p.resize(cols, rows)
				}
				if req.WantReply {
					_ = req.Reply(ok, nil)
				}
			case "signal":
				var sig struct{ Name string }
				ok := ssh.Unmarshal(req.Payload, &sig) == nil
				if p := proc.Load(); ok && p != nil {
					ok = p.signal(sig.Name) == nil
				}
				if req.WantReply {
					_ = req.Reply(ok, nil)
				}
			default:
				if req.WantReply {
					_ = req.Reply(false, nil)
				}
			}
		}
	}()

	var p *hopProcess
	select {
	case p = <-started:
	case <-reqsDone:
		select {
		case p = <-started:
		default:
		}
	}
	if p != nil {
		// The client closing its channel ends the program.
		stop := make(chan struct{})
		go func() {
			select {
			case <-reqsDone:
				p.kill()
			case <-stop:
			}
		}()
		p.wait()
		close(stop)
	}
	s.endChannel()
	<-reqsDone
	if p != nil {
		p.cleanup()
	}
	s.seal()
}

// hopProcess is the running program of a command session.
type hopProcess struct {
	s      *hopSession
	cmd    *exec.Cmd
	pty    *os.File // nil without a pty
	tmpDir string   // removed by cleanup
	pgid   int
	io     sync.WaitGroup // output copies
	in     sync.WaitGroup // input copy
	killed atomic.Bool
	flush  func() // sends output held back by stream masking; nil with a pty
}

// runAs describes the OS user a program runs as.
type runAs struct {
	cred                  *syscall.Credential // nil: postern's own user
	uid, gid              int
	home, name, shellPath string
}

func lookupRunAs(name string) (runAs, error) {
	var u *user.User
	var err error
	if name == "" {
		u, err = user.Current()
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return runAs{}, fmt.Errorf("look up run_as user %q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err := errors.Join(err1, err2); err != nil {
		return runAs{}, fmt.Errorf("run_as user %q: %w", name, err)
	}
	r := runAs{uid: uid, gid: gid, home: u.HomeDir, name: u.Username, shellPath: "/bin/sh"}
	if uid != os.Getuid() {
		gids, _ := u.GroupIds()
		var groups []uint32
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil {
				groups = append(groups, uint32(n))
			}
		}
		r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}
	}
	return r, nil
}

// commandEnv builds the program's environment.
func (s *hopSession) commandEnv(ra runAs) []string {
	path := "/usr/local/bin:/usr/bin:/bin"
	if p := os.Getenv("PATH"); p != "" && ra.cred == nil {
		path = p
	}
	env := []string{"PATH=" + path, "HOME=" + ra.home, "USER=" + ra.name, "LOGNAME=" + ra.name, "SHELL=" + ra.shellPath}
	for _, k := range slices.Sorted(maps.Keys(s.env)) {
		if k != "POSTERN_JSON_ERRORS" {
			env = append(env, k+"="+s.env[k])
		}
	}
	if s.pty && s.term != "" {
		env = append(env, "TERM="+s.term)
	}
	t := s.c.t
	for _, k := range slices.Sorted(maps.Keys(t.Env)) {
		env = append(env, k+"="+t.Env[k])
	}
	return env
}

// noSubsystem is the refusal of a subsystem (sftp, the SFTP mode of scp)
// that a command target does not configure.
func noSubsystem(target, name string) *usererr.Error {
	msg := fmt.Sprintf("%s is a command target without a %q subsystem; it runs only its own program", target, name)
	if name == "sftp" {
		msg += " (its subsystems.sftp setting names an sftp-server program; scp -O uses the legacy protocol instead)"
	}
	return &usererr.Error{Msg: msg, Code: "no_subsystem", Exit: ExitCommandFailed}
}

// startProcess starts the program for a shell (command ""), an exec request,
// or a subsystem (argv: the target's program for it, run without a pty).
func (c *hopConn) startProcess(s *hopSession, command string, argv []string) (*hopProcess, error) {
	subsystem := argv != nil
	if subsystem {
		argv = slices.Clone(argv)
	} else {
		argv = slices.Clone(c.t.Command)
		if command != "" {
			if len(c.t.Exec) > 0 {
				argv = slices.Clone(c.t.Exec)
			}
			argv = append(argv, command)
		}
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("target %s has no command", c.t.Name)
	}
	ra, err := lookupRunAs(c.t.RunAs)
	if err != nil {
		return nil, err
	}
	p := &hopProcess{s: s}
	dir := c.t.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "postern-"+safeName(c.t.Name)+"-"); err != nil {
			return nil, fmt.Errorf("command working directory: %w", err)
		}
		p.tmpDir = dir
		if ra.cred != nil {
			if err := os.Chown(dir, ra.uid, ra.gid); err != nil {
				p.cleanup()
				return nil, fmt.Errorf("command working directory: %w", err)
			}
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = s.commandEnv(ra)
	p.cmd = cmd
	if s.pty && !subsystem {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Credential: ra.cred}
		f, err := pty.StartWithAttrs(cmd, &pty.Winsize{Cols: uint16(s.cols), Rows: uint16(s.rows)}, cmd.SysProcAttr)
		if err != nil {
			p.cleanup()
			return nil, fmt.Errorf("start %s in a pty: %w", argv[0], err)
		}
		p.pty = f
		p.pgid = cmd.Process.Pid
		s.tap.Load().setEchoOff(p.echoOff)
		s.setOnAbort(p.kill)
		p.io.Go(func() {
			w, flush := s.maskStream(s.ch)
			defer flush()
			_, err := copyPooled(w, f, s.countOut(s.outputTap))
			if errors.Is(err, errTapStop) {
				// The tap refuses data only when a required recording
				// failed: end with that cause (exit 125 and its notice),
				// not with the killed program's signal.
				s.abort(recordingUnavailable(err))
				p.kill()
			}
		})
		p.in.Go(func() {
			// A pty has no half-close: EOF from the client is ignored.
			_, _ = copyPooled(s.gateInput(f), s.ch, s.countIn(s.inputTap))
		})
		return p, nil
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: ra.cred}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		p.cleanup()
		return nil, fmt.Errorf("stdin pipe: %w", err)
	}
	var stdout, stderr io.Writer = s.ch, s.ch.Stderr()
	if !subsystem {
		// A subsystem speaks a binary protocol (SFTP) that masking would
		// corrupt; its operations are audited instead (sftpaudit.go).
		var flushOut, flushErr func()
		stdout, flushOut = s.maskStream(s.ch)
		stderr, flushErr = s.maskStream(s.ch.Stderr())
		p.flush = func() { flushOut(); flushErr() }
	}
	// The tap refuses data only when a required recording failed: the
	// session ends with that cause, not with the killed program's signal.
	refused := func(err error) {
		s.abort(recordingUnavailable(err))
		p.kill()
	}
	cmd.Stdout = &tapWriter{w: stdout, tap: s.countOut(s.outputTap), stop: refused}
	cmd.Stderr = &tapWriter{w: stderr, tap: s.countOut(s.outputTap), stop: refused}
	cmd.WaitDelay = commandDrainTimeout
	if err := cmd.Start(); err != nil {
		p.cleanup()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	p.pgid = cmd.Process.Pid
	s.setOnAbort(p.kill)
	p.in.Go(func() {
		_, _ = copyPooled(stdin, s.ch, s.countIn(s.inputTap))
		_ = stdin.Close()
	})
	return p, nil
}

// safeName keeps a target name usable in a file name.
func safeName(name string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, name)
}

// tapWriter hands output to the recording tap before writing it.
type tapWriter struct {
	w    io.Writer
	tap  func([]byte) error
	stop func(error) // called with the tap's error when it refuses data
}

func (t *tapWriter) Write(p []byte) (int, error) {
	if err := t.tap(p); err != nil {
		t.stop(err)
		return 0, err
	}
	return t.w.Write(p)
}

// wait waits for the program to exit and its output to drain, kills what is
// left of its process group and records the exit status or signal.
func (p *hopProcess) wait() {
	err := p.cmd.Wait()
	if p.flush != nil {
		p.flush()
	}
	if p.pty != nil {
		drained := make(chan struct{})
		go func() {
			p.io.Wait()
			close(drained)
		}()
		select {
		case <-drained:
		case <-time.After(commandDrainTimeout):
			p.kill()
			_ = p.pty.Close()
			<-drained
		}
	}
	p.kill()
	st := p.cmd.ProcessState
	if st == nil {
		p.s.log.Info("command wait failed", "err", err)
		return
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		name := strings.TrimPrefix(unix.SignalName(ws.Signal()), "SIG")
		p.s.setExitSignal(name, ssh.Marshal(exitSignalMsg{Signal: name, CoreDumped: ws.CoreDump()}))
		return
	}
	p.s.setExitStatus(st.ExitCode())
}

// kill kills the program's process group.
func (p *hopProcess) kill() {
	if p.pgid > 0 {
		p.killed.Store(true)
		_ = syscall.Kill(-p.pgid, syscall.SIGKILL)
	}
}

// signal delivers a client "signal" request (RFC 4254 §6.9) to the group.
func (p *hopProcess) signal(name string) error {
	sig := unix.SignalNum("SIG" + name)
	if sig == 0 {
		return fmt.Errorf("unknown signal %q", name)
	}
	return syscall.Kill(-p.pgid, sig)
}

// resize sets the pty size.
func (p *hopProcess) resize(cols, rows int) {
	if p.pty != nil {
		_ = pty.Setsize(p.pty, &pty.Winsize{Cols: uint16(cols), Rows: uint16(rows)})
	}
}

// echoOff reports whether the pty is at a no-echo prompt: ECHO off in
// canonical mode, as getpass, sudo and `read -s` set it. Line editors
// (readline, vim) turn ECHO off too, but also leave canonical mode and echo
// themselves, so a pty with ICANON off is not treated as a secret prompt.
func (p *hopProcess) echoOff() bool {
	rc, err := p.pty.SyscallConn()
	if err != nil {
		return false
	}
	off := false
	_ = rc.Control(func(fd uintptr) {
		t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
		off = err == nil && t.Lflag&unix.ECHO == 0 && t.Lflag&unix.ICANON != 0
	})
	return off
}

// cleanup closes the pty, waits for the input copy and removes the temporary
// directory. It runs after the client channel is closed.
func (p *hopProcess) cleanup() {
	if p.pty != nil {
		_ = p.pty.Close()
	}
	p.in.Wait()
	if p.tmpDir != "" {
		if err := os.RemoveAll(p.tmpDir); err != nil {
			p.s.log.Warn("remove command directory", "err", err)
		}
	}
}
