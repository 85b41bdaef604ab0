package mcpserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/mcpserver"
	"github.com/posternhq/postern/state"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemovePosternBinary()
	os.Exit(code)
}

// bot is the agent of these tests; carol (group sre, Slack user UCAROL)
// approves; sec (admin) locks.
var (
	bot = certs.Identity{Issuer: "ci", Subject: "repo:acme/app:ref:refs/heads/main", Username: "acme-app",
		Kind: certs.KindAgent, Groups: []string{"agents"}}
	sec = certs.Identity{Issuer: "corp", Subject: "sec-1", Username: "sec", Kind: certs.KindHuman}
)

const awsKey = "AKIAIOSFODNN7EXAMPLE"

// mcpEnv is a whole postern with sshd targets web-1 (the agents' role
// reaches it, with rules and masking) and web-2 (it does not), approvals
// through a Slack stand-in.
type mcpEnv struct {
	svc   *posterntest.Service
	slack *posterntest.Slack
	bot   *posterntest.User
	sec   *posterntest.User
	login string
}

func newMCPEnv(t *testing.T) *mcpEnv {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	e := &mcpEnv{slack: posterntest.NewSlack(t), login: u.Username}
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	_, web1 := posterntest.SSHD(t, auth, "web-1")
	_, web2 := posterntest.SSHD(t, auth, "web-2")
	cfg := &config.Config{
		DataDir:   dataDir,
		PublicURL: "https://bastion.test",
		Targets:   []config.Target{web1, web2},
		Roles: []config.Role{
			{Name: "agents", Match: config.RoleMatch{Groups: []string{"agents"}}, Targets: []config.TargetSelector{{Name: "web-1"}},
				Logins: []string{e.login}, Record: "required", Interactive: "deny",
				Rules: []config.Rule{
					{Match: `\bdeploy\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
					{Match: `\bshutdown\b`, Action: "deny"},
				},
				Masking: config.Masking{Rules: []config.MaskRule{{Detector: "aws_key"}}}},
			{Name: "sec", Match: config.RoleMatch{Users: []string{"sec"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{e.login}, Permissions: []string{"admin"}},
		},
		Identity: config.Identity{Issuers: []config.Issuer{{Name: "corp", IssuerURL: "https://idp.test", Audience: "postern", Kind: "agent"}}},
		Approvals: config.Approvals{
			Slack:  e.slack.Config(map[string]string{"UCAROL": "corp:carol"}),
			Groups: map[string][]string{"corp:carol": {"sre"}},
		},
	}
	e.svc = posterntest.Start(t, cfg)
	e.bot = e.svc.User(bot, e.login)
	e.sec = e.svc.User(sec, e.login)
	return e
}

// signingTransport signs every request with a user certificate, as
// postern's clients do (the Postern-SSH scheme).
type signingTransport struct {
	cert *ssh.Certificate
	key  ssh.Signer
}

func (s signingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if err := certs.SignAPIRequest(r, s.cert, s.key, time.Now()); err != nil {
		return nil, err
	}
	return http.DefaultTransport.RoundTrip(r)
}

// connectHTTP connects an MCP client from the SDK to the bastion's /v1/mcp
// as u.
func connectHTTP(t *testing.T, e *mcpEnv, u *posterntest.User) *sdk.ClientSession {
	t.Helper()
	tr := &sdk.StreamableClientTransport{Endpoint: e.svc.HTTPURL + "/v1/mcp", DisableStandaloneSSE: true, MaxRetries: -1,
		HTTPClient: &http.Client{Transport: signingTransport{cert: u.Cert, key: u.Signer}}}
	return connect(t, tr)
}

// connectStdio launches `postern mcp` with u's profile and connects to it.
func connectStdio(t *testing.T, e *mcpEnv, u *posterntest.User) *sdk.ClientSession {
	t.Helper()
	cmd := exec.Command(testutil.PosternBinary(t), "mcp", "--dir", u.Profile(e.svc), "--log-format", "json")
	return connect(t, &sdk.CommandTransport{Command: cmd})
}

func connect(t *testing.T, tr sdk.Transport) *sdk.ClientSession {
	t.Helper()
	c := sdk.NewClient(&sdk.Implementation{Name: "postern-test", Version: "v0"}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := c.Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("connect an MCP client: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls tool with args and decodes its structured result into out;
// it returns the tool error's text, if the tool failed.
func call(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any, out any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("call %s: %v", tool, err)
	}
	if res.IsError {
		var b strings.Builder
		for _, c := range res.Content {
			if tc, ok := c.(*sdk.TextContent); ok {
				b.WriteString(tc.Text)
			}
		}
		return b.String()
	}
	raw, err := json.Marshal(res.StructuredContent)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		t.Fatalf("%s result %s: %v", tool, raw, err)
	}
	return ""
}

func runTool(t *testing.T, cs *sdk.ClientSession, args map[string]any) mcpserver.RunResult {
	t.Helper()
	var r mcpserver.RunResult
	if msg := call(t, cs, "run", args, &r); msg != "" {
		t.Fatalf("run %v failed: %s", args, msg)
	}
	return r
}

// TestMCPOverHTTP drives the bastion's MCP endpoint with the SDK's client:
// what the agent may reach; a command's result with its session; masked
// output; a command held for approval returning pending_approval at once
// and released by a signed Slack approval; one denied by an approver, one
// denied by a rule; a policy refusal; its own sessions and their output;
// a just-in-time access request.
func TestMCPOverHTTP(t *testing.T) {
	e := newMCPEnv(t)
	cs := connectHTTP(t, e, e.bot)

	var inf bastion.Info
	if msg := call(t, cs, "list_targets", nil, &inf); msg != "" {
		t.Fatal(msg)
	}
	if inf.User != "acme-app" || len(inf.Targets) != 1 || inf.Targets[0].Name != "web-1" || inf.Targets[0].Interactive ||
		len(inf.Targets[0].Rules) != 2 || inf.Targets[0].Rules[0].Action != "approve" {
		t.Fatalf("list_targets = %+v; want web-1 only, exec-only, with its two rules", inf)
	}

	r := runTool(t, cs, map[string]any{"target": "web-1", "command": "echo hello; echo key=" + awsKey + "; echo oops >&2; exit 3"})
	if r.Status != mcpserver.StatusCompleted || r.ExitStatus == nil || *r.ExitStatus != 3 ||
		!strings.Contains(r.Stdout, "hello") || r.Stderr != "oops\n" || r.SessionID == "" {
		t.Fatalf("run = %+v; want completed, exit 3, its output and session", r)
	}
	if !r.Masked || strings.Contains(r.Stdout, awsKey) || !strings.Contains(r.Stdout, "[MASKED:aws_key]") {
		t.Errorf("stdout %q: want the key masked and masked=true", r.Stdout)
	}
	e.svc.WaitEvent(state.EventSessionSealed, func(ev state.Event) bool { return ev.Session == r.SessionID })
	if ev := e.svc.WaitEvent(state.EventSessionStart, func(ev state.Event) bool { return ev.Session == r.SessionID }); ev.Actor != "acme-app" {
		t.Errorf("session.start actor %q; want the agent", ev.Actor)
	}
	issued := e.svc.WaitEvent(state.EventCertIssued, nil)
	if issued.Details["via"] != "mcp" || issued.Actor != "acme-app" {
		t.Errorf("cert.issued = %+v; want the agent's, via mcp", issued)
	}

	// Held: pending_approval at once, released by a signed Slack click.
	start := time.Now()
	held := runTool(t, cs, map[string]any{"target": "web-1", "command": "echo deploy done"})
	if held.Status != mcpserver.StatusPendingApproval || held.ApprovalID == "" ||
		held.ApprovalURL != "https://bastion.test/ui/approvals/"+held.ApprovalID || held.SessionID == "" {
		t.Fatalf("held run = %+v; want pending_approval with the approval's id, URL and session", held)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("run of a held command took %s; want it to return at once", d)
	}
	if id := e.slack.NextRequest(); id != held.ApprovalID {
		t.Fatalf("Slack was asked about %s; want %s", id, held.ApprovalID)
	}
	var ar mcpserver.ApprovalResult
	if msg := call(t, cs, "wait_approval", map[string]any{"approval_id": held.ApprovalID, "wait_seconds": 0}, &ar); msg != "" || ar.Status != "pending" {
		t.Fatalf("wait_approval before the decision = %+v %s; want pending", ar, msg)
	}
	e.slack.Click(e.svc, "UCAROL", approval.SlackActionApprove, held.ApprovalID)
	if msg := call(t, cs, "wait_approval", map[string]any{"approval_id": held.ApprovalID, "wait_seconds": 30}, &ar); msg != "" {
		t.Fatal(msg)
	}
	if ar.Status != "approved" || ar.DecidedBy != "carol (corp)" || ar.Run == nil || ar.Run.Status != mcpserver.StatusCompleted ||
		ar.Run.ExitStatus == nil || *ar.Run.ExitStatus != 0 || !strings.Contains(ar.Run.Stdout, "deploy done") {
		t.Fatalf("wait_approval after the approval = %+v (run %+v); want approved by carol with the command's output", ar, ar.Run)
	}

	// Denied by an approver.
	held = runTool(t, cs, map[string]any{"target": "web-1", "command": "echo deploy again"})
	if held.Status != mcpserver.StatusPendingApproval {
		t.Fatalf("second held run = %+v", held)
	}
	e.slack.NextRequest()
	e.slack.Click(e.svc, "UCAROL", approval.SlackActionDeny, held.ApprovalID)
	var rr mcpserver.RunResult
	if msg := call(t, cs, "wait_run", map[string]any{"run_id": held.RunID, "wait_seconds": 30}, &rr); msg != "" {
		t.Fatal(msg)
	}
	if rr.Status != mcpserver.StatusDenied || rr.Code != "denied_by_approver" || rr.ExitStatus == nil || *rr.ExitStatus != 121 ||
		strings.Contains(rr.Stdout, "deploy again") || !strings.Contains(rr.Error, "denied by approver") {
		t.Fatalf("denied run = %+v; want denied_by_approver, exit 121, nothing run", rr)
	}

	// Denied by a rule, at once.
	r = runTool(t, cs, map[string]any{"target": "web-1", "command": "shutdown -h now"})
	if r.Status != mcpserver.StatusDenied || r.Code != "denied_by_rule" || r.ExitStatus == nil || *r.ExitStatus != 120 {
		t.Errorf("rule-denied run = %+v", r)
	}
	// Refused by the policy: a target the role does not reach, a login it
	// does not have.
	r = runTool(t, cs, map[string]any{"target": "web-2", "command": "true", "login": e.login})
	if r.Status != mcpserver.StatusRefused || !strings.Contains(r.Error, "web-2: not allowed for acme-app") || r.SessionID != "" {
		t.Errorf("run on a target the role does not reach = %+v", r)
	}
	r = runTool(t, cs, map[string]any{"target": "web-1", "command": "true", "login": "someone-else"})
	if r.Status != mcpserver.StatusRefused || !strings.Contains(r.Error, "not allowed") {
		t.Errorf("run with a login the role does not have = %+v", r)
	}
	if msg := call(t, cs, "run", map[string]any{"target": "web-1"}, &r); !strings.Contains(msg, "command") {
		t.Errorf("run without a command: %q", msg)
	}

	// Its own sessions, and what they printed (masked as recorded).
	var sl mcpserver.SessionList
	if msg := call(t, cs, "list_sessions", map[string]any{"limit": 50}, &sl); msg != "" || len(sl.Sessions) < 4 {
		t.Fatalf("list_sessions = %d sessions, %s", len(sl.Sessions), msg)
	}
	for _, s := range sl.Sessions {
		if s.Identity != "acme-app" {
			t.Errorf("list_sessions shows %s's session", s.Identity)
		}
	}
	first := sl.Sessions[len(sl.Sessions)-1].ID
	var so mcpserver.SessionOutput
	if msg := call(t, cs, "session_output", map[string]any{"session_id": first}, &so); msg != "" {
		t.Fatal(msg)
	}
	if !strings.Contains(so.Output, "hello") || strings.Contains(so.Output, awsKey) || so.Session.Status == state.StatusRunning ||
		!strings.Contains(strings.Join(so.Markers, "\n"), "exit 3") {
		t.Errorf("session_output = %+v; want the first command's masked output and its exit marker", so)
	}
	// Another's session is not there for it.
	other := e.sec.SSH(nil, nil, "web-1", "echo secret of sec")
	if other.Code != 0 {
		t.Fatalf("sec's session: %d %s", other.Code, other.Stderr)
	}
	secSession := e.svc.WaitEvent(state.EventSessionSealed, func(ev state.Event) bool {
		s, err := e.svc.State.GetSession(context.Background(), ev.Session)
		return err == nil && s.Identity == "sec"
	}).Session
	if msg := call(t, cs, "session_output", map[string]any{"session_id": secSession}, &so); !strings.Contains(msg, "no such session") {
		t.Errorf("session_output of another's session: %q; want no such session", msg)
	}

	// Just-in-time access.
	if msg := call(t, cs, "request_access", map[string]any{"target": "web-2", "for": "30m", "reason": "incident 9"}, &ar); msg != "" ||
		ar.Status != "pending" || ar.Kind != "access" || ar.ApprovalID == "" {
		t.Fatalf("request_access = %+v %s", ar, msg)
	}
}

// TestMCPOverStdio runs `postern mcp` with the agent's profile: the same
// tools through the bastion's SSH listener and API; a lock on the agent
// ends a running command with status locked, and refuses the next.
func TestMCPOverStdio(t *testing.T) {
	e := newMCPEnv(t)
	cs := connectStdio(t, e, e.bot)
	r := runTool(t, cs, map[string]any{"target": "web-1", "command": "echo from stdio"})
	if r.Status != mcpserver.StatusCompleted || !strings.Contains(r.Stdout, "from stdio") || r.SessionID == "" {
		t.Fatalf("run over stdio = %+v", r)
	}
	long := runTool(t, cs, map[string]any{"target": "web-1", "command": "echo started; exec sleep 120", "wait_seconds": 1})
	if long.Status != mcpserver.StatusRunning {
		t.Fatalf("long run = %+v; want running after its wait", long)
	}
	if st := e.sec.API(http.MethodPost, "/v1/locks", lock.CreateBody{Kind: "identity", Issuer: bot.Issuer, Subject: bot.Subject,
		Reason: "runaway agent"}, nil); st != http.StatusCreated {
		t.Fatalf("lock: %d", st)
	}
	var rr mcpserver.RunResult
	if msg := call(t, cs, "wait_run", map[string]any{"run_id": long.RunID, "wait_seconds": 30}, &rr); msg != "" {
		t.Fatal(msg)
	}
	if rr.Status != mcpserver.StatusLocked || rr.Code != lock.CodeLocked || rr.ExitStatus == nil || *rr.ExitStatus != lock.ExitLocked ||
		!strings.Contains(rr.Error, "your access is locked: runaway agent") {
		t.Fatalf("the running command after the lock: status %s, code %q, error %q, exit %v, stderr %q", rr.Status, rr.Code, rr.Error,
			rr.ExitStatus, rr.Stderr)
	}
	r = runTool(t, cs, map[string]any{"target": "web-1", "command": "true"})
	if r.Status != mcpserver.StatusLocked || !strings.Contains(r.Error, "your access is locked: runaway agent") {
		t.Errorf("a new command while locked = %+v", r)
	}
}
