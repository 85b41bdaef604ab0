package server_test

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// TestLineGateFailsClosed drives a shell through stock ssh in a pty against
// a real sshd, with a deny rule and an approve rule, and types the outside
// battery's cases and their relatives: a fake bracketed paste (Ctrl-V
// ESC[200~ Ctrl-U), a line entered with Ctrl-O, a denied line whose cursor
// was at column 0, history recall and completion. None runs a refused
// command; lines the gate cannot follow are not run and say so; a held line
// is abandoned with Ctrl-C (its request canceled).
func TestLineGateFailsClosed(t *testing.T) {
	f := newGateEnv(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
		{Match: `\bdanger\b`, Action: "deny"},
	})
	file := func(name string) string { return filepath.Join(f.dir, name) }
	c := f.user.PTY(t, 120, 30, "-tt", "web-1")
	c.Send("PS1='$ '; echo MARK-$((40+2))\r")
	c.Expect(`MARK-42`)
	mark := 0
	alive := func() { // the shell still answers, and every line before has been read
		t.Helper()
		mark++
		m := strings.Repeat("x", mark)
		// The leading space may be lost: bash can drop a key typed while it
		// handles Ctrl-C or a completion (see docs/approvals.md).
		c.Send(" echo ALIVE-" + m + "-$((6*7))\r")
		c.Expect(`ALIVE-` + m + `-42`)
	}

	// (a) Ctrl-V ESC[200~ Ctrl-U: no paste opens; the lines after it are
	// still checked.
	c.Send("\x16\x1b[200~\x15")
	c.Send("echo danger > " + file("a1") + "\r")
	c.Expect(`postern: line not run: it was edited with Ctrl-V`)
	c.Send("echo danger > " + file("a2") + "\r")
	c.Expect(`postern: command denied by rule`)
	alive()

	// (b) A line entered with Ctrl-O (operate-and-get-next) is checked.
	c.Send("echo danger > " + file("b") + "\x0f")
	c.Expect(`(?s)denied by rule.*denied by rule`)
	alive()

	// (c) A denied line whose cursor went to column 0 is gone: the next
	// Enter runs nothing.
	c.Send("echo danger > " + file("c") + "\x01\r")
	c.Expect(`(?s)(denied by rule.*){3}`)
	c.Send("\r")
	alive()

	// History recall and completion: the line does not run.
	c.Send("echo danger > " + file("h") + "\x03")
	c.Send("\x1b[A\r")
	c.Expect(`line not run: it was edited with history`)
	c.Send("echo safe > " + file("tab") + "\t\r")
	c.Expect(`line not run: it was edited with Tab`)
	alive()

	// A held line abandoned with Ctrl-C: the request is canceled, the line
	// discarded, the shell goes on.
	c.Send("sudo touch " + file("held") + "\r")
	id := f.slack.NextRequest()
	c.Send("\x03")
	c.Expect(`postern: line abandoned; its approval request was canceled`)
	deadline := time.Now().Add(30 * time.Second)
	for f.approvalStatus(t, id) != state.ApprovalCanceled {
		if time.Now().After(deadline) {
			t.Fatalf("request %s is %s; want canceled", id, f.approvalStatus(t, id))
		}
		time.Sleep(20 * time.Millisecond)
	}
	alive()
	c.Send("exit\r")
	_, out := c.Wait()
	t.Logf("terminal:\n%q", out)
	for _, name := range []string{"a1", "a2", "b", "c", "h", "tab", "held"} {
		if exists(file(name)) {
			t.Errorf("the line writing %s ran", name)
		}
	}
	ms := f.svc.Markers(f.sessionEnd())
	for _, want := range []string{"line not run: Ctrl-V (quoted insert)", "approval denied by rule", "approval canceled " + id} {
		if !strings.Contains(ms, want) {
			t.Errorf("markers %q lack %q", ms, want)
		}
	}
}

// TestDeniedCommandTellsWhy: an approver's reason for a denial reaches the
// agent that ran the command (stderr, and the JSON line), and the session
// is listed as denied, not interrupted.
func TestDeniedCommandTellsWhy(t *testing.T) {
	e := newGateEnvWith(t, t.TempDir(), []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
	}, func(cfg *config.Config) {
		cfg.Roles = append(cfg.Roles, config.Role{Name: "approvers", Match: config.RoleMatch{Groups: []string{"sre"}}, Permissions: []string{"approver"}})
	})
	carol := e.svc.User(certs.Identity{Issuer: "corp", Subject: "carol-sub", Username: "carol", Groups: []string{"sre"}}, e.login)
	for _, asJSON := range []bool{false, true} {
		var env []string
		if asJSON {
			env = []string{"POSTERN_JSON_ERRORS=1"}
		}
		res := e.user.SSHAsync(env, "web-1", "sudo reboot")
		id := e.slack.NextRequest()
		if code := carol.API("POST", "/v1/approvals/"+id+"/deny", map[string]string{"reason": "change freeze until Monday"}, nil); code != http.StatusOK {
			t.Fatalf("deny: %d", code)
		}
		r := waitResult(t, res)
		if r.Code != innerhop.ExitDeniedByApprover || !strings.Contains(string(r.Stderr), "denied by approver (request "+id+"): change freeze until Monday") {
			t.Errorf("exit %d stderr %q; want %d with the approver's reason", r.Code, r.Stderr, innerhop.ExitDeniedByApprover)
		}
		sid := e.sessionEnd()
		s, err := e.svc.State.GetSession(context.Background(), sid)
		if err != nil || s.Status != state.StatusDenied {
			t.Errorf("session %s status %q (%v); want denied", sid, s.Status, err)
		}
	}
}
