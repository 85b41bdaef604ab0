package innerhop

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Session kinds, as recorded in Meta.Kind.
const (
	kindShell     = "shell"
	kindExec      = "exec"
	kindSubsystem = "subsystem"
)

// ptyModeEcho is the ECHO opcode of the pty-req terminal modes (RFC 4254 §8).
const ptyModeEcho = 53

// hopSession is one session channel on the inner hop. It owns the client
// channel ch, and ends it exactly once in endChannel: exit status (or signal),
// then EOF, then close.
type hopSession struct {
	c     *hopConn
	id    string
	ch    ssh.Channel
	log   *slog.Logger
	start time.Time
	done  chan struct{} // closed by untrack

	// Set by the request goroutine before the program starts.
	pty        bool
	term       string
	cols, rows int
	modes      []byte
	env        map[string]string
	jsonErrors atomic.Bool
	kind       string
	command    string // as the client sent it: what runs and what rules match
	stored     string // command with the recording masks applied: what is stored
	begun      bool   // under mu

	tap  atomic.Pointer[hopTap]
	sftp atomic.Pointer[sftpAudit]
	rec  *recorder.Session // set by begin under mu

	bytesIn, bytesOut atomic.Int64

	gate atomic.Pointer[lineGate] // armed for a shell whose lines are gated (gate.go)

	// startReplied is closed once the client has its answer to the shell,
	// exec or subsystem request relayed to the target; nil until such a
	// request arrives. endChannel waits for it (see there).
	startReplied atomic.Pointer[chan struct{}]

	notifyMu   sync.Mutex // held by abort while it tells the user; endChannel waits for it
	mu         sync.Mutex
	ended      bool
	aborted    *usererr.Error
	exitStatus *int
	exitSignal []byte // raw exit-signal payload
	signalName string
	onAbort    func() // stops the program or upstream side; set before begin
	unlock     func() // ends the lock registration of a begun session; nil if none
}

// newSession starts tracking a session on the client channel ch; the caller
// calls c.untrack(s) when the session is over.
func (c *hopConn) newSession(ch ssh.Channel) *hopSession {
	id := c.nextSessionID()
	s := &hopSession{
		c: c, id: id, ch: ch, start: c.h.now(), cols: 80, rows: 24,
		log: c.log.With("session", id), env: map[string]string{}, done: make(chan struct{}),
	}
	c.track(s)
	return s
}

// hasBegun reports whether the program (shell, exec, subsystem) was started.
func (s *hopSession) hasBegun() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.begun
}

// setOnAbort sets what abort stops; if the session was aborted already, fn
// runs now.
func (s *hopSession) setOnAbort(fn func()) {
	s.mu.Lock()
	s.onAbort = fn
	aborted := s.aborted != nil
	s.mu.Unlock()
	if aborted {
		fn()
	}
}

// envAllowed reports whether a client env request may pass.
func envAllowed(name string) bool {
	switch name {
	case "LANG", "TERM", "COLORTERM", "POSTERN_JSON_ERRORS":
		return true
	}
	return strings.HasPrefix(name, "LC_")
}

// handleEnv keeps an allowed env request and reports whether it was allowed.
// It replies only when the request was refused.
func (s *hopSession) handleEnv(req *ssh.Request) bool {
	var kv struct{ Name, Value string }
	if err := ssh.Unmarshal(req.Payload, &kv); err != nil || !envAllowed(kv.Name) {
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
		return false
	}
	s.env[kv.Name] = kv.Value
	if kv.Name == "POSTERN_JSON_ERRORS" {
		s.jsonErrors.Store(kv.Value == "1" || kv.Value == "true")
	}
	return true
}

// ptyRequest is the pty-req payload (RFC 4254 §6.2).
type ptyRequest struct {
	Term          string
	Cols, Rows    uint32
	Width, Height uint32
	Modes         string
}

// handlePty records a pty request.
func (s *hopSession) handlePty(req *ssh.Request) error {
	var p ptyRequest
	if err := ssh.Unmarshal(req.Payload, &p); err != nil {
		return fmt.Errorf("parse pty-req: %w", err)
	}
	s.pty = true
	s.term = p.Term
	if p.Cols > 0 && p.Rows > 0 {
		s.cols, s.rows = int(p.Cols), int(p.Rows)
	}
	s.modes = []byte(p.Modes)
	return nil
}

// echoOffInModes reports whether the pty-req modes turn ECHO off.
func echoOffInModes(modes []byte) bool {
	for len(modes) >= 1 {
		op := modes[0]
		if op == 0 || op >= 160 || len(modes) < 5 {
			return false
		}
		arg := binary.BigEndian.Uint32(modes[1:5])
		if op == ptyModeEcho {
			return arg == 0
		}
		modes = modes[5:]
	}
	return false
}

// windowChange is the window-change payload (RFC 4254 §6.7).
type windowChange struct {
	Cols, Rows    uint32
	Width, Height uint32
}

// handleResize records a window change and returns the new size.
func (s *hopSession) handleResize(req *ssh.Request) (cols, rows int, ok bool) {
	var w windowChange
	if err := ssh.Unmarshal(req.Payload, &w); err != nil || w.Cols == 0 || w.Rows == 0 {
		return 0, 0, false
	}
	s.cols, s.rows = int(w.Cols), int(w.Rows)
	if err := s.tap.Load().resize(s.cols, s.rows); err != nil {
		s.abort(recordingUnavailable(err))
	}
	return s.cols, s.rows, true
}

// policyRefusal reports whether a session's end cause is a refusal by
// policy (a rule, an approver, an approval that timed out or could not be
// asked for, an exec-only role), not an interruption.
func policyRefusal(ue *usererr.Error) bool {
	switch ue.Exit {
	case ExitDeniedByRule, ExitDeniedByApprover, ExitDenied:
		return true
	case ExitApprovalTimeout:
		return ue.Code == "approval_timeout"
	}
	return false
}

// storedCommand returns command as it may be stored — in the recording's
// header, markers and metadata, the sessions index, audit events, approval
// requests and logs — with the recording masks of the connection's roles
// applied, and whether anything was masked.
func (c *hopConn) storedCommand(command string) (string, bool) {
	m := c.h.opts.Masking.For(c.decision.Role).Recording
	if m == nil || command == "" {
		return command, false
	}
	out, n := m.Mask([]byte(command))
	return string(out), n > 0
}

// recordingUnavailable is the session end cause when record: required fails.
func recordingUnavailable(err error) *usererr.Error {
	return &usererr.Error{Msg: "recording unavailable; session ended", Code: "recording_unavailable",
		Exit: ExitRecordingUnavailable, Global: true, Err: err}
}

// begin checks and records the start of the program (shell, exec or
// subsystem). A non-nil result ends the session with its message.
func (s *hopSession) begin(kind, command string) *usererr.Error {
	c := s.c
	if c.ctx.Err() != nil {
		return asHopUserError(context.Cause(c.ctx))
	}
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return &usererr.Error{Msg: "session closed", Code: "closed", Exit: ExitUpstreamFailed}
	}
	s.begun = true
	s.mu.Unlock()
	s.kind, s.command = kind, command
	var masked bool
	s.stored, masked = c.storedCommand(command)
	c.h.metrics.sessions.WithLabelValues(kind, c.t.Kind).Inc()
	c.h.metrics.active.Inc()
	if ue := s.trackLocks(); ue != nil {
		return ue
	}
	if kind == kindShell && !c.decision.Interactive {
		return &usererr.Error{Msg: "interactive sessions are not allowed; run a command", Code: "interactive_denied", Exit: ExitDenied}
	}
	details := map[string]any{
		"kind": kind, "command": s.stored, "login": c.login, "role": c.decision.Role,
		"record": c.decision.Record, "recorded": true, "conn": c.ci.ID, "pty": s.pty,
	}
	c.upstreamDetails(details) // innerhop.go
	start := state.Event{Type: state.EventSessionStart, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Session: s.id, Details: details}
	// start is appended with the recording's index row when it can be
	// (startRecording), else here.
	joined, ue := s.startRecording(start)
	if ue != nil {
		return ue
	}
	if masked {
		s.tap.Load().noteMasked()
	}
	if !joined {
		details["recorded"] = s.recording() != nil
		c.h.audit(c.ctx, start)
	}
	s.log.Info("session start", "kind", kind, "command", s.stored, "recorded", s.recording() != nil)
	s.announce()
	if ue := s.awaitModerator(); ue != nil {
		return ue
	}
	return s.approve(kind, command) // gate.go
}

// awaitModerator holds a session whose role requires a moderator until one
// joins it (watches it live), telling the user on stderr, and marks the
// recording.
func (s *hopSession) awaitModerator() *usererr.Error {
	c := s.c
	m := c.decision.Moderation
	if !m.Required {
		return nil
	}
	if c.h.opts.Moderation == nil {
		return &usererr.Error{Msg: "moderation unavailable; session not started", Code: "moderation_unavailable",
			Exit: lock.ExitNoModerator, Global: true}
	}
	if s.jsonErrors.Load() {
		b, _ := json.Marshal(map[string]any{"status": "waiting", "code": "moderator_required", "session": s.id,
			"timeout": m.Timeout.String(), "moderators": m.Moderators})
		_, _ = s.ch.Stderr().Write(append(b, '\r', '\n'))
	} else {
		_, _ = fmt.Fprintf(s.ch.Stderr(), "postern: waiting up to %s for a moderator to join session %s (postern watch %s)\r\n",
			m.Timeout, s.id, s.id)
	}
	_ = s.tap.Load().marker("moderator required")
	j, err := c.h.opts.Moderation.WaitModerator(c.ctx, lock.ModerationWait{Session: s.id, Requester: c.ci.Identity,
		Moderators: m.Moderators, Timeout: m.Timeout})
	if err != nil {
		_ = s.tap.Load().marker("no moderator")
		if ue := usererr.As(err); ue != nil {
			return ue
		}
		return asHopUserError(context.Cause(c.ctx))
	}
	who := j.Who
	_ = s.tap.Load().marker("moderator joined: " + who)
	if s.jsonErrors.Load() {
		b, _ := json.Marshal(map[string]any{"status": "moderated", "code": "moderator_joined", "session": s.id, "moderator": who})
		_, _ = s.ch.Stderr().Write(append(b, '\r', '\n'))
	} else {
		_, _ = fmt.Fprintf(s.ch.Stderr(), "postern: %s joined as moderator\r\n", policy.Printable(who))
	}
	c.h.audit(c.ctx, state.Event{Type: state.EventSessionModerated, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Session: s.id, Details: map[string]any{"moderator": who, "moderator_key": j.Key}})
	s.log.Info("moderator joined", "moderator", who, "moderator_key", j.Key)
	return nil
}

// SessionIDRequest is the channel request the inner hop sends the client
// when a session starts (before any approval wait), carrying the session
// id — the id of its recording, its audit events and its approvals — as
// one SSH string. want_reply is false: OpenSSH and x/crypto clients ignore
// a request they do not know; postern's own clients (the MCP server) read
// it.
const SessionIDRequest = "session-id@postern"

// announce tells the client the session's id.
func (s *hopSession) announce() {
	_, _ = s.ch.SendRequest(SessionIDRequest, false, ssh.Marshal(struct{ ID string }{s.id}))
}

// trackLocks registers the session with the kill switch: a session that a
// lock already matches does not start, and one that a lock comes to match
// is aborted with the lock's message and exit status.
func (s *hopSession) trackLocks() *usererr.Error {
	c := s.c
	l := c.h.opts.Locks
	if l == nil {
		return nil
	}
	untrack, err := l.Track(lock.Subject{Identity: c.ci.Identity, Target: c.t.Name, Session: s.id, Conn: c.ci.ID},
		func(cause error) { go s.endLocked(cause) }) // abort may wait on the client's window
	if err != nil {
		return asHopUserError(err)
	}
	s.mu.Lock()
	s.unlock = untrack
	s.mu.Unlock()
	return nil
}

// lockUpstreamGrace is how long a target has to end a session a lock
// aborted before postern closes the whole login to the target. OpenSSH's
// sshd keeps a session channel open until its program exits, whatever the
// client says, so closing the channel alone does not end a running command.
const lockUpstreamGrace = 250 * time.Millisecond

// endLocked aborts the session because a lock came to match it. An ssh
// target that does not end it at once loses its login: every channel on it
// ends, and with them this session, with the lock's notice and exit status.
func (s *hopSession) endLocked(cause error) {
	s.abort(asHopUserError(cause))
	up := s.c.up
	if up == nil {
		return
	}
	t := time.NewTimer(lockUpstreamGrace)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		s.log.Info("target kept a locked session open; closing the login to it")
		_ = up.Close()
	}
}

// beginOffStack runs begin on a goroutine of its own and waits for it.
// begin's call chain is deep (the recording's start, the state store, the
// approver); run on the request goroutine, which idles for the life of the
// session, it would leave that goroutine with a stack grown for it.
func (s *hopSession) beginOffStack(kind, command string) *usererr.Error {
	res := make(chan *usererr.Error, 1)
	go func() { res <- s.begin(kind, command) }()
	return <-res
}

// startRecording starts the recording as the decision's record mode says.
// It reports whether the recording's first state write appended start, the
// session's session.start event (Options.RecordingAudit).
func (s *hopSession) startRecording(start state.Event) (joined bool, _ *usererr.Error) {
	c := s.c
	mode := c.decision.Record
	if mode == "" {
		mode = recordRequired
	}
	if mode == recordOff {
		return false, nil
	}
	var err error
	if c.h.opts.Recorder == nil {
		err = errors.New("no recorder configured")
	} else {
		env := map[string]string{}
		for k, v := range s.env {
			if k == "TERM" || k == "COLORTERM" || k == "LANG" || strings.HasPrefix(k, "LC_") {
				env[k] = v
			}
		}
		term := s.term
		if term == "" {
			term = s.env["TERM"]
		}
		if term != "" {
			env["TERM"] = term
		}
		meta := recorder.Meta{
			ID: s.id, Identity: c.ci.Identity.Username, Issuer: c.ci.Identity.Issuer, IdentityKey: c.ci.Identity.Key(),
			Role:   c.decision.Role,
			Target: c.t.Name, Login: c.login, Kind: s.recordKind(), Command: s.stored, Term: term,
			Width: s.cols, Height: s.rows, Env: env,
		}
		if c.h.auditsWithRecording() {
			meta.Events = []state.Event{c.h.event(start)}
		}
		var rec *recorder.Session
		rec, err = c.h.opts.Recorder.Start(c.ctx, meta)
		if err == nil {
			s.mu.Lock()
			s.rec = rec
			s.mu.Unlock()
			joined = len(meta.Events) > 0
		}
	}
	if err != nil {
		c.h.metrics.recErr.Inc()
		c.h.audit(c.ctx, state.Event{Type: state.EventRecordingError, Actor: c.ci.Identity.String(), Target: c.t.Name,
			Session: s.id, Details: map[string]any{"record": mode, "phase": "start", "error": "recording could not start"}})
		s.log.Error("recording could not start", "err", err, "record", mode)
		if mode == recordRequired {
			return false, recordingUnavailable(err)
		}
		return false, nil
	}
	required := mode == recordRequired
	tap := newHopTap(s.recording(), required, func(err error) {
		// Abort first: the copy loops stop as soon as the tap has failed,
		// and the program may exit at once; the session must end with
		// the recording's cause, not with the exit status of a program
		// whose input was cut (see also endChannel).
		if required {
			s.abort(recordingUnavailable(err))
		}
		c.h.metrics.recErr.Inc()
		s.log.Error("recording failed", "err", err, "record", mode)
		c.h.audit(c.ctx, state.Event{Type: state.EventRecordingError, Actor: c.ci.Identity.String(), Target: c.t.Name,
			Session: s.id, Details: map[string]any{"record": mode, "phase": "session", "error": "recording failed"}})
	})
	if s.pty && echoOffInModes(s.modes) {
		s.recording().SetEcho(false)
	}
	switch s.kind {
	case kindExec:
		_ = tap.marker("exec: " + s.stored)
	case kindSubsystem:
		_ = tap.marker("subsystem: " + s.stored)
	}
	tap.setMask(c.h.opts.Masking.For(c.decision.Role).Recording)
	s.tap.Store(tap)
	return joined, nil
}

// recording returns the session's recording, nil if none.
func (s *hopSession) recording() *recorder.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec
}

// recordKind is Meta.Kind: command for a command target's program.
func (s *hopSession) recordKind() string {
	if s.c.t.Kind == "command" {
		return "command"
	}
	return s.kind
}

// outputTap is the tap for program output (nil when not recording).
func (s *hopSession) outputTap(p []byte) error {
	if a := s.sftp.Load(); a != nil {
		a.fromServer(p)
		return nil
	}
	return s.tap.Load().output(p)
}

// inputTap is the tap for client input.
func (s *hopSession) inputTap(p []byte) error {
	if a := s.sftp.Load(); a != nil {
		a.fromClient(p)
		return nil
	}
	return s.tap.Load().input(p)
}

// userLine formats ue as the one-line stderr notice.
func (s *hopSession) userLine(ue *usererr.Error) string {
	if s.jsonErrors.Load() {
		b, _ := json.Marshal(map[string]any{"error": ue.Msg, "code": ue.Code, "target": s.c.t.Name, "exit": ue.Exit})
		return string(b) + "\r\n"
	}
	if ue.Global {
		return "postern: " + ue.Msg + "\r\n"
	}
	return "postern: " + s.c.t.Name + ": " + ue.Msg + "\r\n"
}

// notify writes ue's notice to the client's stderr.
func (s *hopSession) notify(ue *usererr.Error) {
	_, _ = s.ch.Stderr().Write([]byte(s.userLine(ue)))
}

// abort ends the session early with ue: the user is told, the program or
// upstream side is stopped, and endChannel reports ue's exit status. Only the
// first call counts, and none after endChannel.
func (s *hopSession) abort(ue *usererr.Error) {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	s.mu.Lock()
	if s.ended || s.aborted != nil {
		s.mu.Unlock()
		return
	}
	s.aborted = ue
	stop := s.onAbort
	s.mu.Unlock()
	s.log.Info("session aborted", "reason", ue.Code, "err", ue.Err)
	s.notify(ue)
	if stop != nil {
		stop()
	}
}

// sendExit sends exit-status to the client.
func (s *hopSession) sendExit(status int) {
	_, _ = s.ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(status)}))
}

// setExitStatus records the program's exit status.
func (s *hopSession) setExitStatus(st int) {
	s.mu.Lock()
	s.exitStatus = &st
	s.mu.Unlock()
}

// exitSignalMsg is the exit-signal payload (RFC 4254 §6.10).
type exitSignalMsg struct {
	Signal     string
	CoreDumped bool
	Error      string
	Lang       string
}

// setExitSignal records the signal that ended the program.
func (s *hopSession) setExitSignal(name string, payload []byte) {
	s.mu.Lock()
	s.signalName = name
	s.exitSignal = payload
	s.mu.Unlock()
}

// endChannel ends the session towards the client: exit status (or signal),
// then EOF, then close. It returns the exit status sent, if any.
func (s *hopSession) endChannel() {
	// The target may answer the start request, run the program and close
	// its channel before the request goroutine has relayed that answer: the
	// client must get its answer before the close, or it takes its exec as
	// failed (x/crypto: EOF) and never reads the output or exit status.
	if p := s.startReplied.Load(); p != nil {
		select {
		case <-*p:
		case <-time.After(endGrace):
		}
	}
	// A required recording that failed ends the session with its cause even
	// if the failure callback has not run yet (abort is idempotent).
	if t := s.tap.Load(); t != nil {
		if err := t.stopped(); err != nil {
			s.abort(recordingUnavailable(err))
		}
	}
	s.notifyMu.Lock() // an abort in progress finishes its notice first
	defer s.notifyMu.Unlock()
	s.mu.Lock()
	s.ended = true
	ab, st, sigPayload := s.aborted, s.exitStatus, s.exitSignal
	s.mu.Unlock()
	switch {
	case ab != nil:
		s.sendExit(ab.Exit)
	case sigPayload != nil:
		_, _ = s.ch.SendRequest("exit-signal", false, sigPayload)
	case st != nil:
		s.sendExit(*st)
	}
	_ = s.ch.CloseWrite()
	_ = s.ch.Close()
}

// seal finishes the recording and writes the end line and audit event. It
// runs after endChannel, once no goroutine of the session is left.
func (s *hopSession) seal() {
	s.mu.Lock()
	ab, st, sigName, begun, rec := s.aborted, s.exitStatus, s.signalName, s.begun, s.rec
	s.mu.Unlock()
	if !begun {
		return
	}
	var exit *int
	switch {
	case ab != nil:
		e := ab.Exit
		exit = &e
	case sigName != "":
	case st != nil:
		exit = st
	}
	c := s.c
	c.h.metrics.active.Dec()
	if a := s.sftp.Load(); a != nil {
		a.close()
	}
	details := map[string]any{
		"kind": s.kind, "login": c.login, "bytes_in": s.bytesIn.Load(), "bytes_out": s.bytesOut.Load(),
		"duration_ms": c.h.now().Sub(s.start).Milliseconds(), "recorded": rec != nil,
	}
	if exit != nil {
		details["exit_status"] = *exit
	}
	if sigName != "" {
		details["exit_signal"] = sigName
	}
	if ab != nil {
		details["ended_by"] = ab.Code
	}
	end := state.Event{Type: state.EventSessionEnd, Actor: c.ci.Identity.String(), Target: c.t.Name, Session: s.id, Details: details}
	joined := false // end was appended in the recording's seal
	var recErr error
	if rec != nil {
		tap := s.tap.Load()
		switch {
		case exit != nil:
			_ = tap.endMarker(fmt.Sprintf("exit %d", *exit))
		case sigName != "":
			_ = tap.endMarker("exit signal " + sigName)
		}
		_ = tap.close() // its failure was reported when it happened
		res := recorder.Result{ExitStatus: exit, ExitSignal: sigName,
			BytesIn: s.bytesIn.Load(), BytesOut: s.bytesOut.Load(), Interrupted: ab != nil, Denied: ab != nil && policyRefusal(ab)}
		if ab != nil {
			res.Error = ab.Msg
		}
		if c.h.auditsWithRecording() {
			res.Events = []state.Event{c.h.event(end)}
		}
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx), 30*time.Second)
		_, recErr = rec.Finish(ctx, res)
		cancel()
		joined = recErr == nil && len(res.Events) > 0
		if errors.Is(recErr, recorder.ErrSealPending) {
			// The recording store is down: the spool is complete and the
			// recorder seals it in the background once the store answers.
			s.log.Warn("recording stored later: the recording store is unreachable", "err", recErr)
			recErr = nil
		}
		if recErr != nil {
			c.h.metrics.recErr.Inc()
			s.log.Error("recording could not be sealed", "err", recErr)
			c.h.audit(context.WithoutCancel(c.ctx), state.Event{Type: state.EventRecordingError, Actor: c.ci.Identity.String(), Target: c.t.Name,
				Session: s.id, Details: map[string]any{"record": c.decision.Record, "phase": "finish", "error": "recording could not be sealed"}})
		}
	}
	if !joined {
		details["recorded"] = rec != nil && recErr == nil
		c.h.audit(context.WithoutCancel(c.ctx), end)
	}
	attrs := []any{"duration", c.h.now().Sub(s.start), "bytes_in", s.bytesIn.Load(), "bytes_out", s.bytesOut.Load()}
	if exit != nil {
		attrs = append(attrs, "exit", *exit)
	}
	if sigName != "" {
		attrs = append(attrs, "signal", sigName)
	}
	if ab != nil {
		attrs = append(attrs, "ended_by", ab.Code)
	}
	s.log.Info("session end", attrs...)
}

// proxySession relays one session channel to the ssh target, recording it.
func (c *hopConn) proxySession(nc ssh.NewChannel, up ssh.Conn) {
	upCh, upReqs, err := up.OpenChannel("session", nil)
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			_ = nc.Reject(oce.Reason, oce.Message)
		} else {
			_ = nc.Reject(ssh.ConnectionFailed, "postern: "+c.t.Name+": connection lost")
		}
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		upCh.Close()
		return
	}
	s := c.newSession(ch)
	defer c.untrack(s)
	s.setOnAbort(func() { upCh.Close() })

	var out sync.WaitGroup
	out.Go(func() {
		w, flush := s.maskStream(ch)
		_, err := copyPooled(w, upCh, s.countOut(s.outputTap))
		flush()
		if errors.Is(err, errTapStop) {
			upCh.Close()
		}
	})
	out.Go(func() {
		w, flush := s.maskStream(ch.Stderr())
		_, err := copyPooled(w, upCh.Stderr(), s.countOut(s.outputTap))
		flush()
		if errors.Is(err, errTapStop) {
			upCh.Close()
		}
	})
	var side sync.WaitGroup
	side.Go(func() {
		_, err := copyPooled(s.gateInput(upCh), ch, s.countIn(s.inputTap))
		if err == nil {
			_ = upCh.CloseWrite()
		} else if errors.Is(err, errTapStop) {
			upCh.Close()
		}
	})
	side.Go(func() {
		for req := range reqs {
			s.fromClient(req, upCh)
		}
		// The client closed the channel: close the upstream side too.
		upCh.Close()
	})

	// The target's requests are served by this goroutine while the copies
	// run: an idle session needs no goroutine of its own for them. They end
	// when the upstream channel closes.
	for req := range upReqs {
		s.fromUpstream(req)
	}
	out.Wait()
	s.mu.Lock()
	noExit := s.exitStatus == nil && s.exitSignal == nil && s.aborted == nil && s.begun
	s.mu.Unlock()
	if noExit {
		// The target closed without an exit status: find out whether the
		// connection is gone, to tell the user so.
		if _, _, err := up.SendRequest("keepalive@openssh.com", true, nil); err != nil {
			s.abort(s.lostCause(err))
		}
	}
	s.endChannel()
	side.Wait()
	s.seal()
}

// lostCause is why a session whose target went away ends: the reason
// postern ended the inner hop, if it did (a lock, an expiry: the login was
// closed because of it), else "connection lost".
func (s *hopSession) lostCause(err error) *usererr.Error {
	if s.c.ctx.Err() != nil {
		if ue := usererr.As(context.Cause(s.c.ctx)); ue != nil && ue.Code != "connection_lost" {
			return asHopUserError(ue)
		}
	}
	return &usererr.Error{Msg: "connection lost", Code: "connection_lost", Exit: ExitUpstreamFailed, Err: err}
}

// countOut wraps an output tap with byte counting.
func (s *hopSession) countOut(tap func([]byte) error) func([]byte) error {
	return func(p []byte) error {
		s.bytesOut.Add(int64(len(p)))
		s.c.h.metrics.bytesOut.Add(float64(len(p)))
		return tap(p)
	}
}

// countIn wraps an input tap with byte counting.
func (s *hopSession) countIn(tap func([]byte) error) func([]byte) error {
	return func(p []byte) error {
		s.bytesIn.Add(int64(len(p)))
		s.c.h.metrics.bytesIn.Add(float64(len(p)))
		return tap(p)
	}
}

// fromUpstream handles a request the target sent on the session channel.
// exit-status and exit-signal are held for endChannel, which sends them after all
// output and before EOF and close.
func (s *hopSession) fromUpstream(req *ssh.Request) {
	switch req.Type {
	case "exit-status":
		var st struct{ Status uint32 }
		if err := ssh.Unmarshal(req.Payload, &st); err == nil {
			s.setExitStatus(int(st.Status))
		}
		if req.WantReply {
			_ = req.Reply(true, nil)
		}
	case "exit-signal":
		var sig exitSignalMsg
		if err := ssh.Unmarshal(req.Payload, &sig); err == nil {
			s.setExitSignal(sig.Signal, req.Payload)
		}
		if req.WantReply {
			_ = req.Reply(true, nil)
		}
	default:
		// eow@openssh.com, keepalive@openssh.com and the rest.
		ok, err := s.ch.SendRequest(req.Type, req.WantReply, req.Payload)
		if req.WantReply {
			_ = req.Reply(ok && err == nil, nil)
		}
	}
}

// forward relays req to the target and its answer back.
func forward(req *ssh.Request, upCh ssh.Channel) {
	ok, err := upCh.SendRequest(req.Type, req.WantReply, req.Payload)
	if req.WantReply {
		_ = req.Reply(ok && err == nil, nil)
	}
}

// fromClient handles a request the client sent on the session channel.
func (s *hopSession) fromClient(req *ssh.Request, upCh ssh.Channel) {
	f := s.c.decision.Forwarding
	switch req.Type {
	case "pty-req":
		if !s.c.decision.Interactive {
			_ = req.Reply(false, nil)
			return
		}
		if err := s.handlePty(req); err != nil {
			_ = req.Reply(false, nil)
			return
		}
		forward(req, upCh)
	case "env":
		if s.handleEnv(req) {
			forward(req, upCh)
		}
	case "shell", "exec", "subsystem":
		if s.begun {
			_ = req.Reply(false, nil)
			return
		}
		kind, command := req.Type, ""
		if kind != kindShell {
			var p struct{ Value string }
			if err := ssh.Unmarshal(req.Payload, &p); err != nil {
				_ = req.Reply(false, nil)
				return
			}
			command = p.Value
		}
		if kind == kindSubsystem && command == "sftp" {
			s.sftp.Store(newSFTPAudit(s.c, s.id))
		}
		if ue := s.beginOffStack(kind, command); ue != nil {
			_ = req.Reply(true, nil)
			s.abort(ue)
			return
		}
		replied := make(chan struct{})
		s.startReplied.Store(&replied)
		defer close(replied)
		ok, err := upCh.SendRequest(req.Type, req.WantReply, req.Payload)
		if err != nil {
			// The target is gone: say so rather than "request failed".
			_ = req.Reply(true, nil)
			s.abort(s.lostCause(err))
			return
		}
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
	case "window-change":
		if _, _, ok := s.handleResize(req); ok {
			forward(req, upCh)
		} else if req.WantReply {
			_ = req.Reply(false, nil)
		}
	case "signal", "break", "keepalive@openssh.com", "eow@openssh.com":
		forward(req, upCh)
	case "auth-agent-req@openssh.com":
		if !f.Agent {
			_ = req.Reply(false, nil)
			return
		}
		forward(req, upCh)
	case "x11-req":
		if !f.X11 {
			_ = req.Reply(false, nil)
			return
		}
		forward(req, upCh)
	default:
		if req.WantReply {
			_ = req.Reply(false, nil)
		}
	}
}
