package mcpserver

import (
	"bufio"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
)

// Statuses of a RunResult.
const (
	// StatusCompleted: the command ran and ended; see exit_status.
	StatusCompleted = "completed"
	// StatusPendingApproval: a rule holds the command until approvers
	// decide; see approval_id and approval_url, and call wait_approval.
	StatusPendingApproval = "pending_approval"
	// StatusPendingModerator: the role holds the session until a moderator
	// joins it (watches it live); call wait_run.
	StatusPendingModerator = "pending_moderator"
	// StatusRunning: the command is still running after the wait; call
	// wait_run.
	StatusRunning = "running"
	// StatusDenied: a deny rule or an approver refused the command.
	StatusDenied = "denied"
	// StatusTimedOut: nobody decided before the rule's timeout.
	StatusTimedOut = "timed_out"
	// StatusRefused: the policy does not allow it (target, login,
	// interactive use), before anything ran.
	StatusRefused = "refused"
	// StatusLocked: a lock (on the caller, a role, the target or the
	// session) refused or ended it.
	StatusLocked = "locked"
	// StatusFailed: postern could not run it (the target unreachable,
	// recording unavailable) or the connection broke.
	StatusFailed = "failed"
)

// RunResult is the typed result of run and wait_run.
type RunResult struct {
	// RunID names the command in this MCP server, for wait_run.
	RunID string `json:"run_id"`
	// Status is completed, pending_approval, running, denied, timed_out,
	// refused, locked or failed.
	Status string `json:"status" jsonschema:"completed, pending_approval, pending_moderator, running, denied, timed_out, refused, locked or failed"`
	// Target and Command are what ran.
	Target  string `json:"target"`
	Command string `json:"command"`
	// ExitStatus is the command's exit status, once it ended with one.
	ExitStatus *int `json:"exit_status,omitempty"`
	// ExitSignal is the signal that ended the command, if one did.
	ExitSignal string `json:"exit_signal,omitempty"`
	// Stdout and Stderr are the command's output (postern's own notices
	// are taken out of stderr into Error and Code).
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	// Truncated reports that output beyond 1 MiB per stream was dropped.
	Truncated bool `json:"truncated,omitempty"`
	// Masked reports that postern masked secrets in the output (it holds
	// [MASKED:…] markers).
	Masked bool `json:"masked"`
	// SessionID is the session's id: its recording and audit trail.
	SessionID string `json:"session_id,omitempty"`
	// ApprovalID and ApprovalURL name the approval request of a held
	// command.
	ApprovalID  string `json:"approval_id,omitempty"`
	ApprovalURL string `json:"approval_url,omitempty"`
	// Error is postern's one-line reason when it refused, denied or ended
	// the command; Code its stable code (docs/exit-codes.md).
	Error string `json:"error,omitempty"`
	Code  string `json:"code,omitempty"`
	// Moderator is who joined the session as moderator, when its role
	// requires one.
	Moderator string `json:"moderator,omitempty"`
	// Started and Ended bound the command (Ended once it ended).
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
}

// run is one command started by the run tool.
type run struct {
	id, target, command string
	started             time.Time
	stdout, stderr      *limitedBuffer
	cancel              context.CancelFunc

	pending chan struct{} // closed once a held command's approval is known
	done    chan struct{} // closed when the command is over

	mu         sync.Mutex
	session    string
	exit       *int
	signal     string
	approval   notice // the pending notice, if any
	final      notice // postern's last error notice, if any
	err        error  // why postern could not run it, if it could not
	ended      time.Time
	sawPending bool
	moderation string // "waiting" until a moderator joins, "joined" after; "" if not moderated
	moderator  string
	approved   bool // the held command was released
}

func newRun(target, command string) *run {
	return &run{id: ulid.Make().String(), target: target, command: command, started: time.Now().UTC(),
		stdout: &limitedBuffer{}, stderr: &limitedBuffer{}, pending: make(chan struct{}), done: make(chan struct{})}
}

func (r *run) setExit(st int) { r.mu.Lock(); r.exit = &st; r.mu.Unlock() }

func (r *run) setSignal(sig string) { r.mu.Lock(); r.signal = sig; r.mu.Unlock() }

func (r *run) setSession(id string) { r.mu.Lock(); r.session = id; r.mu.Unlock() }

// readStderr copies stderr into r.stderr, taking postern's notices out: a
// pending approval is announced on r.pending at once.
func (r *run) readStderr(rd io.Reader) {
	br := bufio.NewReaderSize(rd, 16<<10)
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			_, _ = r.stderr.Write(line) // a long line is the program's, never a notice
			continue
		}
		if len(line) > 0 {
			if n, ok := parseNotice(line); ok {
				r.notice(n)
			} else {
				_, _ = r.stderr.Write(line)
			}
		}
		if err != nil {
			return
		}
	}
}

// notice takes one of postern's notices.
func (r *run) notice(n notice) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case n.Status == "pending" && n.Request != "":
		r.approval = n
	case n.Status == "waiting" && n.Code == "moderator_required":
		r.moderation = "waiting"
	case n.Status == "moderated":
		r.moderation, r.moderator = "joined", n.Moderator
		return
	case n.Status == "approved":
		r.approved = true
		return
	default:
		r.final = n
		return
	}
	if !r.sawPending {
		r.sawPending = true
		close(r.pending)
	}
}

// finish records the end of the command.
func (r *run) finish(err error) {
	r.mu.Lock()
	r.err, r.ended = err, time.Now().UTC()
	r.mu.Unlock()
	close(r.done)
}

// isDone reports whether the command is over.
func (r *run) isDone() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// result is the command's result as it stands.
func (r *run) result(publicURL string) RunResult {
	out, t1 := r.stdout.String()
	errOut, t2 := r.stderr.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	res := RunResult{RunID: r.id, Target: r.target, Command: r.command, Stdout: out, Stderr: errOut,
		Truncated: t1 || t2, SessionID: r.session, Started: r.started, ExitSignal: r.signal}
	res.Masked = strings.Contains(out, maskedMarker) || strings.Contains(errOut, maskedMarker)
	if r.approval.Request != "" {
		res.ApprovalID, res.ApprovalURL = r.approval.Request, r.approval.URL
		if res.ApprovalURL == "" && publicURL != "" {
			res.ApprovalURL = strings.TrimRight(publicURL, "/") + "/ui/approvals/" + r.approval.Request
		}
	}
	res.Moderator = r.moderator
	if !r.isDone() {
		res.Status = StatusRunning
		switch {
		case r.approval.Request != "" && !r.approved && r.exit == nil:
			res.Status = StatusPendingApproval
		case r.moderation == "waiting":
			res.Status = StatusPendingModerator
		}
		return res
	}
	ended := r.ended
	res.Ended = &ended
	res.ExitStatus = r.exit
	var rf *refusal
	switch {
	case errors.As(r.err, &rf):
		res.Status, res.Error, res.Code = StatusRefused, rf.msg, rf.code
		if rf.code == "locked" {
			res.Status = StatusLocked
		}
	case r.err != nil:
		res.Status, res.Error, res.Code = StatusFailed, "postern: "+r.err.Error(), "failed"
	case r.final.Code != "":
		res.Error, res.Code = "postern: "+r.final.Error, r.final.Code
		res.Status = statusOf(r.final.Code)
	case r.exit == nil && r.signal == "":
		res.Status, res.Error, res.Code = StatusFailed, "postern: the session ended without an exit status", "connection_lost"
	default:
		res.Status = StatusCompleted
	}
	return res
}

// statusOf maps the code of postern's notice to a status.
func statusOf(code string) string {
	switch code {
	case "denied_by_rule", "denied_by_approver":
		return StatusDenied
	case "approval_timeout", "approval_canceled", "moderator_timeout":
		return StatusTimedOut
	case "locked":
		return StatusLocked
	case "interactive_denied", "denied":
		return StatusRefused
	}
	return StatusFailed
}

// runs holds the commands of one caller: running ones, and finished ones
// for keep after they end.
type runs struct {
	mu   sync.Mutex
	byID map[string]*run
}

// keep is how long a finished command's result stays available.
const keep = 15 * time.Minute

// maxRuns bounds the commands kept per caller.
const maxRuns = 256

// add keeps r, forgetting commands finished more than keep ago; it fails
// if maxRuns commands are still running.
func (rs *runs) add(r *run) error {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.byID == nil {
		rs.byID = map[string]*run{}
	}
	now := time.Now()
	for id, o := range rs.byID {
		o.mu.Lock()
		old := !o.ended.IsZero() && now.Sub(o.ended) > keep
		o.mu.Unlock()
		if old {
			delete(rs.byID, id)
		}
	}
	if len(rs.byID) >= maxRuns {
		return errors.New("too many commands are running; wait for some to end")
	}
	rs.byID[r.id] = r
	return nil
}

// get returns run id.
func (rs *runs) get(id string) (*run, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	r, ok := rs.byID[id]
	return r, ok
}

// byApproval returns the run whose command approval id holds.
func (rs *runs) byApproval(id string) (*run, bool) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.byID {
		r.mu.Lock()
		match := r.approval.Request == id
		r.mu.Unlock()
		if match {
			return r, true
		}
	}
	return nil, false
}

// cancelAll ends every running command.
func (rs *runs) cancelAll() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.byID {
		r.cancel()
	}
}
