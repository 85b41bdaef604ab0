package bastion

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

const gateSlackSecret = "gate-test-signing-secret"

// gateFixture is the inner-hop fixture with command rules, a real state
// store, an approval broker and its Slack channel: a local server stands in
// for Slack's incoming webhook, and decisions arrive as signed callbacks.
type gateFixture struct {
	*hopFixture
	broker  *approval.Broker
	store   *state.Store
	actions string // URL of POST /v1/slack/actions
	slackMu sync.Mutex
	msgs    chan map[string]any
	dir     string // side-effect files
}

func newGateFixture(t *testing.T, rules []config.Rule) *gateFixture {
	t.Helper()
	f := &gateFixture{hopFixture: newHopFixture(t, fixtureOpts{record: "required"}), msgs: make(chan map[string]any, 16),
		dir: t.TempDir()}
	sshd := startSSHD(t, f.auth)
	cfg := *f.cfg
	cfg.Targets = []config.Target{sshTarget("web-1", sshd)}
	role := cfg.Roles[0]
	role.Rules = rules
	cfg.Roles = []config.Role{role}
	eng, err := policy.New(&cfg)
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	f.mu.Lock()
	f.cfg, f.engine = &cfg, eng
	f.mu.Unlock()
	f.server.SetPolicy(eng)

	f.store, err = state.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.store.Close() })
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		f.msgs <- m
	}))
	t.Cleanup(hook.Close)
	responses := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	t.Cleanup(responses.Close)
	f.broker, err = approval.NewBroker(approval.Options{Store: f.store, PublicURL: "https://bastion.test",
		Audit: f.events.add, PollInterval: 50 * time.Millisecond,
		Groups: func(u string) []string {
			if u == "carol" {
				return []string{"sre"}
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.broker.Close)
	slack, err := approval.NewSlack(f.broker, config.Slack{WebhookURL: hook.URL, SigningSecret: gateSlackSecret,
		Approvers: map[string]string{"UCAROL": "carol", "UALICE": "alice"}}, approval.SlackOptions{ResponseURLPrefix: responses.URL})
	if err != nil {
		t.Fatal(err)
	}
	actions := httptest.NewServer(slack)
	t.Cleanup(actions.Close)
	f.actions = actions.URL
	// The inner hop reads its policy under f.mu when it authenticates each
	// connection: setting the approver under f.mu orders it before every
	// session that follows.
	f.mu.Lock()
	f.hop.opts.Approver = NewApprovalGate(f.broker, f.hop.log)
	f.mu.Unlock()
	return f
}

// nextRequest waits for the Slack message of the next request and returns
// the request id its Approve button carries.
func (f *gateFixture) nextRequest(t *testing.T) string {
	t.Helper()
	select {
	case m := <-f.msgs:
		for _, bl := range m["blocks"].([]any) {
			if b := bl.(map[string]any); b["type"] == "actions" {
				return b["elements"].([]any)[0].(map[string]any)["value"].(string)
			}
		}
		t.Fatalf("no buttons in %v", m)
	case <-time.After(30 * time.Second):
		t.Fatal("no Slack message")
	}
	return ""
}

// click sends a Slack interactivity callback, signed as Slack signs it.
func (f *gateFixture) click(t *testing.T, user, action, request string) {
	t.Helper()
	p, _ := json.Marshal(map[string]any{"type": "block_actions", "user": map[string]any{"id": user},
		"response_url": "", "actions": []any{map[string]any{"action_id": action, "value": request}}})
	body := url.Values{"payload": {string(p)}}.Encode()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req, _ := http.NewRequest(http.MethodPost, f.actions, strings.NewReader(body))
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", approval.SignSlack(gateSlackSecret, ts, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: status %d", resp.StatusCode)
	}
}

// runAsync runs ssh in the background.
func (f *gateFixture) runAsync(env []string, args ...string) <-chan sshResult {
	ch := make(chan sshResult, 1)
	go func() {
		r, err := runClientErr("env", nil, append(env, append([]string{"ssh", "-F", f.sshCfg, "-o", "SendEnv=POSTERN_JSON_ERRORS"}, args...)...)...)
		if err != nil {
			r = sshResult{code: -1, stderr: []byte(err.Error())}
		}
		ch <- r
	}()
	return ch
}

func waitResult(t *testing.T, ch <-chan sshResult) sshResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second):
		t.Fatal("ssh did not finish")
	}
	return sshResult{}
}

func (f *gateFixture) markers(t *testing.T, session string) string {
	t.Helper()
	var ms []string
	for _, e := range f.checkCast(session).codes("m") {
		ms = append(ms, e.Data)
	}
	return strings.Join(ms, "\n")
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func TestApprovalGateExec(t *testing.T) {
	f := newGateFixture(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
		{Match: `^\s*slow\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Second)},
		{Match: `\b(reboot|mkfs)\b`, Action: "deny"},
	})
	ended := 0
	sessionEnd := func() string {
		ended++
		return f.waitEvent(state.EventSessionEnd, ended)[ended-1].Session
	}

	t.Run("approved", func(t *testing.T) {
		ran := filepath.Join(f.dir, "approved")
		res := f.runAsync(nil, "web-1", "sudo -n true 2>/dev/null; echo ran > "+ran+"; echo done")
		id := f.nextRequest(t)
		if exists(ran) {
			t.Fatal("the command ran before it was approved")
		}
		f.click(t, "UALICE", approval.SlackActionApprove, id) // self-approval: refused
		f.click(t, "UNOBODY", approval.SlackActionApprove, id)
		if a, _ := f.broker.Get(context.Background(), id); a.Status != state.ApprovalPending || exists(ran) {
			t.Fatalf("after refused clicks: %s, ran %v", a.Status, exists(ran))
		}
		f.click(t, "UCAROL", approval.SlackActionApprove, id)
		r := waitResult(t, res)
		if r.code != 0 || string(r.stdout) != "done\n" || !exists(ran) {
			t.Fatalf("exit %d stdout %q stderr %q ran %v", r.code, r.stdout, r.stderr, exists(ran))
		}
		if want := "postern: approval required: request " + id; !strings.Contains(string(r.stderr), want) ||
			!strings.Contains(string(r.stderr), "https://bastion.test/ui/approvals/"+id) || strings.Count(string(r.stderr), "\n") != 1 {
			t.Errorf("stderr %q; want one line %q… with the URL", r.stderr, want)
		}
		ms := f.markers(t, sessionEnd())
		for _, want := range []string{"approval requested " + id, "approval approved " + id + " by carol", "approval outcome " + id + ": released"} {
			if !strings.Contains(ms, want) {
				t.Errorf("markers %q lack %q", ms, want)
			}
		}
	})

	t.Run("denied by approver", func(t *testing.T) {
		ran := filepath.Join(f.dir, "denied")
		res := f.runAsync(nil, "web-1", "sudo touch "+ran)
		id := f.nextRequest(t)
		f.click(t, "UCAROL", approval.SlackActionDeny, id)
		r := waitResult(t, res)
		if r.code != ExitDeniedByApprover || !strings.Contains(string(r.stderr), "postern: command denied by approver") {
			t.Errorf("exit %d stderr %q; want 121 and the reason", r.code, r.stderr)
		}
		if exists(ran) {
			t.Error("a denied command ran")
		}
		ms := f.markers(t, sessionEnd())
		if !strings.Contains(ms, "approval denied "+id+" by carol") || !strings.Contains(ms, "exit 121") {
			t.Errorf("markers %q", ms)
		}
	})

	t.Run("timed out", func(t *testing.T) {
		res := f.runAsync(nil, "web-1", "slow echo never")
		f.nextRequest(t)
		r := waitResult(t, res)
		if r.code != ExitApprovalTimeout || !strings.Contains(string(r.stderr), "postern: approval timed out") || len(r.stdout) != 0 {
			t.Errorf("exit %d stdout %q stderr %q; want 122", r.code, r.stdout, r.stderr)
		}
		sessionEnd()
	})

	t.Run("deny rule", func(t *testing.T) {
		start := time.Now()
		r := waitResult(t, f.runAsync(nil, "web-1", "echo x; reboot"))
		if r.code != ExitDeniedByRule || !strings.Contains(string(r.stderr), "postern: command denied by rule") || len(r.stdout) != 0 {
			t.Errorf("exit %d stdout %q stderr %q; want 120", r.code, r.stdout, r.stderr)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("deny took %s", d)
		}
		sessionEnd()
		r = waitResult(t, f.runAsync([]string{"POSTERN_JSON_ERRORS=1"}, "web-1", "mkfs /dev/null"))
		var j struct {
			Code string `json:"code"`
			Exit int    `json:"exit"`
		}
		if err := json.Unmarshal(r.stderr, &j); r.code != ExitDeniedByRule || err != nil || j.Code != "denied_by_rule" || j.Exit != 120 {
			t.Errorf("JSON: exit %d stderr %q", r.code, r.stderr)
		}
		sessionEnd()
	})

	t.Run("unflagged", func(t *testing.T) {
		r := waitResult(t, f.runAsync(nil, "web-1", "echo plain"))
		if r.code != 0 || string(r.stdout) != "plain\n" || len(r.stderr) != 0 {
			t.Errorf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
		}
		sessionEnd()
	})

	for _, typ := range []string{state.EventApprovalRequested, state.EventApprovalDecided, state.EventApprovalOutcome} {
		if len(f.events.ofType(typ)) == 0 {
			t.Errorf("no %s audit event", typ)
		}
	}
}

func TestApprovalGateInteractive(t *testing.T) {
	f := newGateFixture(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
		{Match: `\breboot\b`, Action: "deny"},
	})
	denied, approved := filepath.Join(f.dir, "denied"), filepath.Join(f.dir, "approved")
	c := startPTYClient(t, 100, 30, "-F", f.sshCfg, "-tt", "web-1")
	c.send("PS1='$ '; echo MARK-$((40+2))\r")
	c.expect(`MARK-42`)

	// Typed with a typo, backspaces and a ^U-cleared false start.
	c.send("echo nothing\x15sudo touc\x7fch " + denied + "\r")
	id := f.nextRequest(t)
	a, _ := f.broker.Get(context.Background(), id)
	if a.Command != "sudo touch "+denied {
		t.Errorf("held line %q; want the edited line", a.Command)
	}
	f.click(t, "UCAROL", approval.SlackActionDeny, id)
	c.expect(`postern: command denied by approver`)
	c.send("echo after-$((1+1))\r")
	c.expect(`after-2`)
	if exists(denied) {
		t.Error("a denied line ran")
	}

	c.send("sudo -n true 2>/dev/null; echo yes > " + approved + "; echo ok-$((2+3))\r")
	id = f.nextRequest(t)
	f.click(t, "UCAROL", approval.SlackActionApprove, id)
	c.expect(`ok-5`)
	if !exists(approved) {
		t.Error("an approved line did not run")
	}

	// A deny rule kills the line at once; a pasted flagged line is caught.
	c.send("echo x; reboot\r")
	c.expect(`postern: command denied by rule`)
	c.send("\x1b[200~sudo touch " + denied + "\x1b[201~\r")
	id = f.nextRequest(t)
	f.click(t, "UCAROL", approval.SlackActionDeny, id)
	c.expect(`(?s)denied by rule.*denied by approver`)
	c.send("exit 7\r")
	if code, _ := c.wait(); code != 7 {
		t.Errorf("exit = %d; want 7", code)
	}
	if exists(denied) {
		t.Error("a denied pasted line ran")
	}
	f.waitEvent(state.EventSessionEnd, 1)
	ms := f.markers(t, f.lastSession())
	for _, want := range []string{"approval requested", "approval denied", "approval approved", "approval denied by rule: echo x; reboot"} {
		if !strings.Contains(ms, want) {
			t.Errorf("markers %q lack %q", ms, want)
		}
	}
}

// TestJITAccess: a target outside the role becomes reachable with stock
// ssh -J once an access request is approved, and not after revocation.
func TestJITAccess(t *testing.T) {
	f := newGateFixture(t, nil)
	cfg := *f.cfg
	cfg.Targets = append(cfg.Targets, sshTarget("db-1", startSSHD(t, f.auth)))
	role := cfg.Roles[0]
	role.Targets = []config.TargetSelector{{Name: "web-*"}}
	cfg.Roles = []config.Role{role}
	base, err := policy.New(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng := base.WithGrants(f.broker.PolicyGrants())
	f.mu.Lock()
	f.cfg, f.engine = &cfg, eng
	f.mu.Unlock()
	f.server.SetPolicy(eng)

	if r := f.ssh(nil, "db-1", "echo in"); r.code != 255 {
		t.Fatalf("db-1 without a grant: exit %d stderr %q; want 255", r.code, r.stderr)
	}
	a, err := f.broker.SubmitAccess(context.Background(), approval.AccessRequest{
		Requester: identityOf(t, f), Target: "db-1", Duration: time.Hour, Reason: "incident 7"})
	if err != nil {
		t.Fatal(err)
	}
	f.nextRequest(t)
	f.click(t, "UCAROL", approval.SlackActionApprove, a.ID)
	if got, _ := f.broker.Get(context.Background(), a.ID); got.Status != state.ApprovalApproved {
		t.Fatalf("request %s", got.Status)
	}
	if r := f.ssh(nil, "db-1", "echo in"); r.code != 0 || string(r.stdout) != "in\n" {
		t.Fatalf("db-1 with a grant: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	start := f.events.ofType(state.EventSessionStart)
	if d := start[len(start)-1].Details; d["role"] != "grant:"+a.ID || d["recorded"] != true {
		t.Errorf("session.start details %v; want the grant as role, recorded", d)
	}
	if err := f.broker.RevokeGrant(context.Background(), a.ID, "carol"); err != nil {
		t.Fatal(err)
	}
	if r := f.ssh(nil, "db-1", "echo in"); r.code != 255 {
		t.Errorf("db-1 after revocation: exit %d; want 255", r.code)
	}
}

// identityOf is the identity in the fixture's user certificate.
func identityOf(t *testing.T, f *gateFixture) certs.Identity {
	t.Helper()
	id, err := certs.IdentityFromCert(f.userCert)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
