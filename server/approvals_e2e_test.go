package server_test

import (
	"context"
	"encoding/json"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// alice is the identity of the e2e tests' user; carol (group sre) approves.
var alice = certs.Identity{Issuer: "corp", Subject: "alice-sub", Username: "alice", Kind: certs.KindHuman, Groups: []string{"ops"}}

// testIssuers is the issuer that vouches for the e2e tests' users: corp.
// It is never contacted (the tests' certificates come from the user CA).
var testIssuers = []config.Issuer{{Name: "corp", IssuerURL: "https://idp.test", Audience: "postern", Kind: "agent"}}

// gateEnv is a whole postern with an sshd target web-1, a role for alice
// with rules, approvals posted to a Slack stand-in (Slack users UCAROL =
// carol of group sre, UALICE = alice), and alice's ssh_config.
type gateEnv struct {
	svc   *posterntest.Service
	slack *posterntest.Slack
	user  *posterntest.User
	cfg   *config.Config
	auth  *certs.Authority
	login string
	dir   string // side-effect files
	ended int    // sealed sessions consumed
}

func newGateEnv(t *testing.T, rules []config.Rule) *gateEnv {
	t.Helper()
	return newGateEnvIn(t, t.TempDir(), rules)
}

// newGateEnvIn is newGateEnv with the service's data dir (whose CAs extra
// targets may already trust) and extra targets outside the role.
func newGateEnvIn(t *testing.T, dataDir string, rules []config.Rule, extra ...config.Target) *gateEnv {
	t.Helper()
	return newGateEnvWith(t, dataDir, rules, func(cfg *config.Config) { cfg.Targets = append(cfg.Targets, extra...) })
}

// newGateEnvWith is newGateEnvIn with the configuration changed by mod
// before the service starts.
func newGateEnvWith(t *testing.T, dataDir string, rules []config.Rule, mod func(cfg *config.Config)) *gateEnv {
	t.Helper()
	e := &gateEnv{slack: posterntest.NewSlack(t), login: testLogin(t), dir: t.TempDir()}
	e.auth = posterntest.Authority(t, dataDir)
	_, web := posterntest.SSHD(t, e.auth, "web-1")
	e.cfg = &config.Config{
		DataDir:   dataDir,
		PublicURL: "https://bastion.test",
		Identity:  config.Identity{Issuers: testIssuers},
		Targets:   []config.Target{web},
		Roles: []config.Role{{
			Name:    "ops",
			Match:   config.RoleMatch{Users: []string{"alice"}},
			Targets: []config.TargetSelector{{Name: "web-*"}},
			Logins:  []string{e.login},
			Record:  "required",
			Rules:   rules,
		}},
		Approvals: config.Approvals{
			Slack:  e.slack.Config(map[string]string{"UCAROL": "corp:carol-sub", "UALICE": "corp:alice-sub"}),
			Groups: map[string][]string{"corp:carol-sub": {"sre"}},
		},
	}
	if mod != nil {
		mod(e.cfg)
	}
	e.svc = posterntest.Start(t, e.cfg)
	e.user = e.svc.User(alice, e.login)
	return e
}

// sessionEnd waits until the next session's recording is sealed and
// returns the session's id (every session of these tests is recorded, one
// after the other).
func (e *gateEnv) sessionEnd() string {
	e.ended++
	return e.svc.WaitEvents(state.EventSessionSealed, e.ended)[e.ended-1].Session
}

// approvalStatus reads request id from the state store.
func (e *gateEnv) approvalStatus(t *testing.T, id string) string {
	t.Helper()
	a, err := e.svc.State.GetApproval(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return a.Status
}

// testLogin is the login of the tests' user on the sshd targets: the user
// running the tests (sshd runs as root and logs in as anyone).
func testLogin(t testing.TB) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func waitResult(t *testing.T, ch <-chan testutil.Result) testutil.Result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(90 * time.Second):
		t.Fatal("ssh did not finish")
	}
	return testutil.Result{}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestApprovalGateExec(t *testing.T) {
	f := newGateEnv(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
		{Match: `^\s*slow\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Second)},
		{Match: `\b(reboot|mkfs)\b`, Action: "deny"},
	})
	t.Run("approved", func(t *testing.T) {
		ran := filepath.Join(f.dir, "approved")
		res := f.user.SSHAsync(nil, "web-1", "sudo -n true 2>/dev/null; echo ran > "+ran+"; echo done")
		id := f.slack.NextRequest()
		if exists(ran) {
			t.Fatal("the command ran before it was approved")
		}
		f.slack.Click(f.svc, "UALICE", approval.SlackActionApprove, id) // self-approval: refused
		f.slack.Click(f.svc, "UNOBODY", approval.SlackActionApprove, id)
		if st := f.approvalStatus(t, id); st != state.ApprovalPending || exists(ran) {
			t.Fatalf("after refused clicks: %s, ran %v", st, exists(ran))
		}
		f.slack.Click(f.svc, "UCAROL", approval.SlackActionApprove, id)
		r := waitResult(t, res)
		if r.Code != 0 || string(r.Stdout) != "done\n" || !exists(ran) {
			t.Fatalf("exit %d stdout %q stderr %q ran %v", r.Code, r.Stdout, r.Stderr, exists(ran))
		}
		if want := "postern: approval required: request " + id; !strings.Contains(string(r.Stderr), want) ||
			!strings.Contains(string(r.Stderr), "https://bastion.test/ui/approvals/"+id) || strings.Count(string(r.Stderr), "\n") != 1 {
			t.Errorf("stderr %q; want one line %q… with the URL", r.Stderr, want)
		}
		ms := f.svc.Markers(f.sessionEnd())
		for _, want := range []string{"approval requested " + id, "approval approved " + id + " by carol", "approval outcome " + id + ": released"} {
			if !strings.Contains(ms, want) {
				t.Errorf("markers %q lack %q", ms, want)
			}
		}
	})

	t.Run("denied by approver", func(t *testing.T) {
		ran := filepath.Join(f.dir, "denied")
		res := f.user.SSHAsync(nil, "web-1", "sudo touch "+ran)
		id := f.slack.NextRequest()
		f.slack.Click(f.svc, "UCAROL", approval.SlackActionDeny, id)
		r := waitResult(t, res)
		if r.Code != innerhop.ExitDeniedByApprover || !strings.Contains(string(r.Stderr), "postern: command denied by approver") {
			t.Errorf("exit %d stderr %q; want 121 and the reason", r.Code, r.Stderr)
		}
		if exists(ran) {
			t.Error("a denied command ran")
		}
		ms := f.svc.Markers(f.sessionEnd())
		if !strings.Contains(ms, "approval denied "+id+" by carol") || !strings.Contains(ms, "exit 121") {
			t.Errorf("markers %q", ms)
		}
	})

	t.Run("timed out", func(t *testing.T) {
		res := f.user.SSHAsync(nil, "web-1", "slow echo never")
		f.slack.NextRequest()
		r := waitResult(t, res)
		if r.Code != innerhop.ExitApprovalTimeout || !strings.Contains(string(r.Stderr), "postern: approval timed out") || len(r.Stdout) != 0 {
			t.Errorf("exit %d stdout %q stderr %q; want 122", r.Code, r.Stdout, r.Stderr)
		}
		f.sessionEnd()
	})

	t.Run("deny rule", func(t *testing.T) {
		start := time.Now()
		r := waitResult(t, f.user.SSHAsync(nil, "web-1", "echo x; reboot"))
		if r.Code != innerhop.ExitDeniedByRule || !strings.Contains(string(r.Stderr), "postern: command denied by rule") || len(r.Stdout) != 0 {
			t.Errorf("exit %d stdout %q stderr %q; want 120", r.Code, r.Stdout, r.Stderr)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("deny took %s", d)
		}
		f.sessionEnd()
		r = waitResult(t, f.user.SSHAsync([]string{"POSTERN_JSON_ERRORS=1"}, "web-1", "mkfs /dev/null"))
		var j struct {
			Code string `json:"code"`
			Exit int    `json:"exit"`
		}
		if err := json.Unmarshal(r.Stderr, &j); r.Code != innerhop.ExitDeniedByRule || err != nil || j.Code != "denied_by_rule" || j.Exit != 120 {
			t.Errorf("JSON: exit %d stderr %q", r.Code, r.Stderr)
		}
		f.sessionEnd()
	})

	t.Run("unflagged", func(t *testing.T) {
		r := waitResult(t, f.user.SSHAsync(nil, "web-1", "echo plain"))
		if r.Code != 0 || string(r.Stdout) != "plain\n" || len(r.Stderr) != 0 {
			t.Errorf("exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
		}
		f.sessionEnd()
	})

	for _, typ := range []string{state.EventApprovalRequested, state.EventApprovalDecided, state.EventApprovalOutcome} {
		if len(f.svc.Events(typ)) == 0 {
			t.Errorf("no %s audit event", typ)
		}
	}
}

func TestApprovalGateInteractive(t *testing.T) {
	f := newGateEnv(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
		{Match: `\breboot\b`, Action: "deny"},
	})
	denied, approved := filepath.Join(f.dir, "denied"), filepath.Join(f.dir, "approved")
	c := f.user.PTY(t, 100, 30, "-tt", "web-1")
	c.Send("PS1='$ '; echo MARK-$((40+2))\r")
	c.Expect(`MARK-42`)

	// Typed with a typo, backspaces and a ^U-cleared false start.
	c.Send("echo nothing\x15sudo touc\x7fch " + denied + "\r")
	id := f.slack.NextRequest()
	a, err := f.svc.State.GetApproval(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if a.Command != "sudo touch "+denied {
		t.Errorf("held line %q; want the edited line", a.Command)
	}
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionDeny, id)
	c.Expect(`postern: command denied by approver`)
	c.Send(" echo after-$((1+1))\r") // a key typed while bash handles the Ctrl-C may be lost
	c.Expect(`after-2`)
	if exists(denied) {
		t.Error("a denied line ran")
	}

	c.Send("sudo -n true 2>/dev/null; echo yes > " + approved + "; echo ok-$((2+3))\r")
	id = f.slack.NextRequest()
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionApprove, id)
	c.Expect(`ok-5`)
	if !exists(approved) {
		t.Error("an approved line did not run")
	}

	// A deny rule kills the line at once; a pasted flagged line is caught.
	c.Send("echo x; reboot\r")
	c.Expect(`postern: command denied by rule`)
	c.Send("\x1b[200~sudo touch " + denied + "\x1b[201~\r")
	id = f.slack.NextRequest()
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionDeny, id)
	c.Expect(`(?s)denied by rule.*denied by approver`)
	c.Send("exit 7\r")
	if code, _ := c.Wait(); code != 7 {
		t.Errorf("exit = %d; want 7", code)
	}
	if exists(denied) {
		t.Error("a denied pasted line ran")
	}
	ms := f.svc.Markers(f.sessionEnd())
	for _, want := range []string{"approval requested", "approval denied", "approval approved", "approval denied by rule: echo x; reboot"} {
		if !strings.Contains(ms, want) {
			t.Errorf("markers %q lack %q", ms, want)
		}
	}
}

// TestJITAccess: a target outside the role becomes reachable with stock
// ssh -J once an access request is approved in Slack, and not after the
// grant is revoked.
func TestJITAccess(t *testing.T) {
	dataDir := t.TempDir()
	_, db := posterntest.SSHD(t, posterntest.Authority(t, dataDir), "db-1")
	f := newGateEnvIn(t, dataDir, nil, db)
	if r := f.user.SSH(nil, nil, "db-1", "echo in"); r.Code != 255 {
		t.Fatalf("db-1 without a grant: exit %d stderr %q; want 255", r.Code, r.Stderr)
	}
	// The request is stored through a broker of the test's own on the
	// shared state store, as another replica would; the service sees it.
	b, err := approval.NewBroker(approval.Options{Store: f.svc.State})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	a, err := b.SubmitAccess(context.Background(), approval.AccessRequest{
		Requester: alice, Target: "db-1", Duration: time.Hour, Reason: "incident 7"})
	if err != nil {
		t.Fatal(err)
	}
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionApprove, a.ID)
	if st := f.approvalStatus(t, a.ID); st != state.ApprovalApproved {
		t.Fatalf("request %s", st)
	}
	if r := f.user.SSH(nil, nil, "db-1", "echo in"); r.Code != 0 || string(r.Stdout) != "in\n" {
		t.Fatalf("db-1 with a grant: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	start := f.svc.Events(state.EventSessionStart)
	if d := start[len(start)-1].Details; d["role"] != "grant:"+a.ID || d["recorded"] != true {
		t.Errorf("session.start details %v; want the grant as role, recorded", d)
	}
	if err := b.RevokeGrant(context.Background(), a.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	if r := f.user.SSH(nil, nil, "db-1", "echo in"); r.Code != 255 {
		t.Errorf("db-1 after revocation: exit %d; want 255", r.Code)
	}
}
