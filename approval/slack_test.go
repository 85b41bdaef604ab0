package approval

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

const testSigningSecret = "8f742231b10e8888abcd99yyyzzz85a5"

// slackCallback builds a block_actions body as Slack sends it.
func slackCallback(user, action, request, responseURL string) []byte {
	p, _ := json.Marshal(map[string]any{
		"type": "block_actions", "user": map[string]any{"id": user, "username": "someone"},
		"response_url": responseURL, "trigger_id": "1.2.3",
		"container": map[string]any{"type": "message"},
		"actions": []any{map[string]any{"action_id": action, "block_id": "postern_decision", "value": request,
			"type": "button", "action_ts": "1700000000.1"}},
	})
	return []byte(url.Values{"payload": {string(p)}}.Encode())
}

// postSigned posts body to the actions endpoint signed at ts with secret.
func postSigned(t *testing.T, endpoint, secret string, ts time.Time, body []byte, mangle func(sig string) string) *http.Response {
	t.Helper()
	tss := strconv.FormatInt(ts.Unix(), 10)
	sig := SignSlack(secret, tss, body)
	if mangle != nil {
		sig = mangle(sig)
	}
	req, _ := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", tss)
	req.Header.Set("X-Slack-Signature", sig)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post callback: %v", err)
	}
	resp.Body.Close()
	return resp
}

func TestSlackApprovalFlow(t *testing.T) {
	st := openStore(t, t.TempDir())
	audit := &auditLog{}
	b := newTestBroker(t, st, audit)
	hook := newReceiver(t)      // Slack's incoming webhook
	responses := newReceiver(t) // response_url
	s, err := NewSlack(b, config.Slack{WebhookURL: hook.srv.URL, SigningSecret: testSigningSecret,
		Approvers: map[string]string{"UALICE": "corp:alice", "UBOB": "corp:bob", "UCAROL": "corp:carol"}},
		SlackOptions{ResponseURLPrefix: responses.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	actions := httptest.NewServer(s)
	t.Cleanup(actions.Close)

	m, _ := mustRules(t, sudoRule).Match("sudo systemctl restart nginx")
	a, err := b.SubmitCommand(context.Background(), CommandRequest{Requester: alice(), Target: "web-1", Login: "deploy",
		Session: "01SESSION", Command: "sudo systemctl restart nginx", Match: m})
	if err != nil {
		t.Fatal(err)
	}

	// The Block Kit message.
	msg := hook.next(t)
	raw, _ := json.Marshal(msg)
	for _, want := range []string{"alice", "web-1", "deploy", "sudo systemctl restart nginx", `^\\s*sudo\\b`,
		"https://bastion.example.com/ui/sessions/01SESSION", "https://bastion.example.com/ui/approvals/" + a.ID} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("message lacks %q: %s", want, raw)
		}
	}
	blocks, _ := msg["blocks"].([]any)
	var buttons []any
	for _, bl := range blocks {
		if m := bl.(map[string]any); m["type"] == "actions" {
			buttons, _ = m["elements"].([]any)
		}
	}
	if len(buttons) != 2 {
		t.Fatalf("want Approve and Deny buttons; blocks %s", raw)
	}
	for i, want := range []string{SlackActionApprove, SlackActionDeny} {
		btn := buttons[i].(map[string]any)
		if btn["action_id"] != want || btn["value"] != a.ID || btn["type"] != "button" {
			t.Errorf("button %d = %v; want %s carrying %s", i, btn, want, a.ID)
		}
	}

	now := time.Now()
	pending := func(when string) {
		t.Helper()
		got, err := b.Get(context.Background(), a.ID)
		if err != nil || got.Status != state.ApprovalPending {
			t.Fatalf("%s: status %q err %v; want still pending", when, got.Status, err)
		}
	}
	ephemeral := func(when, want string) {
		t.Helper()
		r := responses.next(t)
		if r["response_type"] != "ephemeral" || !strings.Contains(fmt.Sprint(r["text"]), want) {
			t.Errorf("%s: response %v; want ephemeral %q", when, r, want)
		}
	}

	// Refused before parsing: bad signature, stale timestamp.
	valid := slackCallback("UCAROL", SlackActionApprove, a.ID, responses.srv.URL+"/r")
	if resp := postSigned(t, actions.URL, "wrong-secret", now, valid, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("bad signature: status %d; want 401", resp.StatusCode)
	}
	if resp := postSigned(t, actions.URL, testSigningSecret, now, valid, flipLast); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("altered signature: status %d; want 401", resp.StatusCode)
	}
	if resp := postSigned(t, actions.URL, testSigningSecret, now.Add(-6*time.Minute), valid, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("stale timestamp: status %d; want 401", resp.StatusCode)
	}
	if resp := postSigned(t, actions.URL, testSigningSecret, now.Add(6*time.Minute), valid, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("future timestamp: status %d; want 401", resp.StatusCode)
	}
	pending("after bad signatures")

	// Signed but refused: unknown user, self-approval, non-approver.
	for _, tc := range []struct{ user, want string }{
		{"UEVE", "not a postern approver"},
		{"UALICE", "your own request"},
		{"UBOB", "not an approver"},
	} {
		resp := postSigned(t, actions.URL, testSigningSecret, now, slackCallback(tc.user, SlackActionApprove, a.ID, responses.srv.URL+"/r"), nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d; want 200", tc.user, resp.StatusCode)
		}
		ephemeral(tc.user, tc.want)
		pending(tc.user)
	}

	// Valid: carol (sre) approves; the message is replaced.
	waited := make(chan state.Approval, 1)
	go func() {
		got, _ := b.Wait(context.Background(), a.ID)
		waited <- got
	}()
	if resp := postSigned(t, actions.URL, testSigningSecret, now, valid, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("valid callback: status %d", resp.StatusCode)
	}
	r := responses.next(t)
	if r["replace_original"] != true || !strings.Contains(fmt.Sprint(r["text"]), "approved by carol") {
		t.Errorf("message update = %v; want replace_original with approved by carol", r)
	}
	select {
	case got := <-waited:
		if got.Status != state.ApprovalApproved || got.DecidedBy != "carol (corp)" {
			t.Errorf("waited: %+v; want approved by carol", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not released")
	}

	// Replay of the valid callback.
	if resp := postSigned(t, actions.URL, testSigningSecret, now, valid, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("replay: status %d; want 401", resp.StatusCode)
	}
	// A fresh click on a decided request is answered ephemerally.
	postSigned(t, actions.URL, testSigningSecret, now.Add(time.Second), slackCallback("UCAROL", SlackActionDeny, a.ID, responses.srv.URL+"/r"), nil)
	ephemeral("decided", "already decided")

	types := strings.Join(audit.types(), ",")
	for _, want := range []string{state.EventApprovalRequested, state.EventApprovalVote, state.EventApprovalDecided} {
		if !strings.Contains(types, want) {
			t.Errorf("audit events %s lack %s", types, want)
		}
	}
}

// flipLast changes the last hex digit of a signature.
func flipLast(s string) string {
	if strings.HasSuffix(s, "0") {
		return s[:len(s)-1] + "1"
	}
	return s[:len(s)-1] + "0"
}

func TestSlackDeny(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	s, err := NewSlack(b, config.Slack{SigningSecret: testSigningSecret, Approvers: map[string]string{"UDAVE": "corp:dave"}}, SlackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	actions := httptest.NewServer(s)
	t.Cleanup(actions.Close)
	m, _ := mustRules(t, sudoRule).Match("sudo rm -rf /tmp/x")
	a, _ := b.SubmitCommand(context.Background(), CommandRequest{Requester: alice(), Target: "web-1", Command: "sudo rm -rf /tmp/x", Match: m})
	// A response_url outside Slack's is never called.
	postSigned(t, actions.URL, testSigningSecret, time.Now(), slackCallback("UDAVE", SlackActionDeny, a.ID, "http://169.254.169.254/"), nil)
	got, _ := b.Get(context.Background(), a.ID)
	if got.Status != state.ApprovalDenied || got.DecidedBy != "dave (corp)" {
		t.Errorf("got %+v; want denied by dave", got)
	}
}

func TestParseSlackPayload(t *testing.T) {
	a, err := ParseSlackPayload(slackCallback("U1", SlackActionDeny, "01ABC", "https://hooks.slack.com/actions/x"))
	if err != nil || a.UserID != "U1" || a.ActionID != SlackActionDeny || a.Request != "01ABC" {
		t.Errorf("parse = %+v, %v", a, err)
	}
	for _, bad := range []string{"", "payload=", "payload=%7B%7D", "payload=" + url.QueryEscape(`{"type":"view_submission","user":{"id":"U"}}`),
		"payload=" + url.QueryEscape(`{"type":"block_actions","user":{"id":"U"},"actions":[{"action_id":"other","value":"x"}]}`)} {
		if _, err := ParseSlackPayload([]byte(bad)); err == nil {
			t.Errorf("ParseSlackPayload(%q) accepted", bad)
		}
	}
}

func FuzzSlackPayload(f *testing.F) {
	f.Add(slackCallback("U1", SlackActionApprove, "01ABC", "https://hooks.slack.com/x"))
	f.Add([]byte("payload=%7B%22type%22%3A%22block_actions%22%7D"))
	f.Add([]byte("a=b&payload=%00"))
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := ParseSlackPayload(body)
		if err != nil {
			return
		}
		if a.UserID == "" || a.Request == "" || len(a.Request) > 64 ||
			(a.ActionID != SlackActionApprove && a.ActionID != SlackActionDeny && a.ActionID != SlackActionTerminate) {
			t.Errorf("accepted an unusable action %+v", a)
		}
	})
}

// TestSlackTerminate: with a Terminate hook, a command's message carries a
// Terminate button (behind a confirmation); a configured approver's click
// terminates the session the command belongs to and replaces the message;
// an unknown Slack user's click changes nothing; a request without a
// session gets no button.
func TestSlackTerminate(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	hook, responses := newReceiver(t), newReceiver(t)
	type call struct {
		a  state.Approval
		by string
	}
	calls := make(chan call, 4)
	s, err := NewSlack(b, config.Slack{WebhookURL: hook.srv.URL, SigningSecret: testSigningSecret,
		Approvers: map[string]string{"UCAROL": "corp:carol"}},
		SlackOptions{ResponseURLPrefix: responses.srv.URL, Terminate: func(_ context.Context, a state.Approval, by string) error {
			calls <- call{a, by}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	actions := httptest.NewServer(s)
	t.Cleanup(actions.Close)
	m, _ := mustRules(t, sudoRule).Match("sudo reboot")
	a, err := b.SubmitCommand(context.Background(), CommandRequest{Requester: alice(), Target: "web-1",
		Session: "01SESSION", Command: "sudo reboot", Match: m})
	if err != nil {
		t.Fatal(err)
	}
	msg := hook.next(t)
	raw, _ := json.Marshal(msg)
	if !strings.Contains(string(raw), `"action_id":"`+SlackActionTerminate+`","confirm"`) ||
		!strings.Contains(string(raw), "Terminate session") {
		t.Fatalf("message lacks a confirmed Terminate button: %s", raw)
	}

	now := time.Now()
	postSigned(t, actions.URL, testSigningSecret, now, slackCallback("UEVE", SlackActionTerminate, a.ID, responses.srv.URL+"/r"), nil)
	if r := responses.next(t); r["response_type"] != "ephemeral" || !strings.Contains(fmt.Sprint(r["text"]), "not a postern approver") {
		t.Errorf("unknown user's click: %v", r)
	}
	select {
	case c := <-calls:
		t.Fatalf("an unknown user terminated %+v", c)
	default:
	}
	postSigned(t, actions.URL, testSigningSecret, now, slackCallback("UCAROL", SlackActionTerminate, a.ID, responses.srv.URL+"/r"), nil)
	c := <-calls
	if c.by != "carol (corp)" || c.a.ID != a.ID || c.a.Session != "01SESSION" {
		t.Errorf("terminate called with %+v; want carol on the request's session", c)
	}
	if r := responses.next(t); r["replace_original"] != true || !strings.Contains(fmt.Sprint(r["text"]), "session 01SESSION terminated by carol") {
		t.Errorf("message update: %v", r)
	}

	// A command without a session (a SQL statement on a pgproxy target has
	// one; an access request never does) gets no button.
	acc, err := b.SubmitAccess(context.Background(), AccessRequest{Requester: alice(), Target: "db-1", Duration: time.Hour, Reason: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if raw, _ := json.Marshal(hook.next(t)); strings.Contains(string(raw), SlackActionTerminate) {
		t.Errorf("an access request's message has a Terminate button: %s", raw)
	}
	postSigned(t, actions.URL, testSigningSecret, now, slackCallback("UCAROL", SlackActionTerminate, acc.ID, responses.srv.URL+"/r"), nil)
	if r := responses.next(t); !strings.Contains(fmt.Sprint(r["text"]), "no session to terminate") {
		t.Errorf("terminate on an access request: %v", r)
	}
}

// slackStrings returns every string value of a Slack message, however deep.
func slackStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case map[string]any:
		var out []string
		for _, e := range v {
			out = append(out, slackStrings(e)...)
		}
		return out
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, slackStrings(e)...)
		}
		return out
	}
	return nil
}

// assertNoSlackMarkup fails unless every '<' in msg's texts starts one of
// postern's own links (prefix): anything a requester typed is escaped.
func assertNoSlackMarkup(t *testing.T, what string, msg map[string]any, prefix string) {
	t.Helper()
	for _, s := range slackStrings(msg) {
		rest := s
		for i := strings.IndexByte(rest, '<'); i >= 0; i = strings.IndexByte(rest, '<') {
			rest = rest[i:]
			if !strings.HasPrefix(rest, "<"+prefix) {
				t.Errorf("%s: unescaped markup in %q", what, s)
				break
			}
			rest = rest[1:]
		}
		for _, bad := range []string{"<!channel>", "<!here>", "<@U666>", "<https://evil.example|"} {
			if strings.Contains(s, bad) {
				t.Errorf("%s: %q reaches Slack in %q", what, bad, s)
			}
		}
	}
}

// TestSlackEscapesEveryField: markup in a held command, a requester's name,
// a target, a reason or a Slack approver's name never reaches Slack as
// markup — not in the request message, its fallback text, the decision
// that replaces it, or an ephemeral answer.
func TestSlackEscapesEveryField(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	hook, responses := newReceiver(t), newReceiver(t)
	s, err := NewSlack(b, config.Slack{WebhookURL: hook.srv.URL, SigningSecret: testSigningSecret,
		Approvers: map[string]string{"UCAROL": "corp:carol", "UEVIL": "alias:<!here>"}},
		SlackOptions{ResponseURLPrefix: responses.srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	actions := httptest.NewServer(s)
	t.Cleanup(actions.Close)
	markup := "sudo echo <!channel> <!here> <@U666> <https://evil.example|Approve> &amp; ```"
	requester := person("<!here> mallory")
	m, _ := mustRules(t, sudoRule).Match(markup)
	cmd, err := b.SubmitCommand(context.Background(), CommandRequest{Requester: requester, Target: "web-<!channel>",
		Login: "<@U666>", Session: "01SESSION", Command: markup, Match: m})
	if err != nil {
		t.Fatal(err)
	}
	assertNoSlackMarkup(t, "command request", hook.next(t), "https://bastion.example.com/ui/")
	if _, err := b.SubmitAccess(context.Background(), AccessRequest{Requester: requester, Target: "db-1",
		Duration: time.Hour, Reason: "<https://evil.example|Approve> <!channel>"}); err != nil {
		t.Fatal(err)
	}
	assertNoSlackMarkup(t, "access request", hook.next(t), "https://bastion.example.com/ui/")

	post := func(user string) map[string]any {
		body := slackCallback(user, SlackActionApprove, cmd.ID, responses.srv.URL+"/r")
		if resp := postSigned(t, actions.URL, testSigningSecret, time.Now(), body, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("callback: %d", resp.StatusCode)
		}
		return responses.next(t)
	}
	assertNoSlackMarkup(t, "ephemeral answer", post("UEVIL"), "-")
	assertNoSlackMarkup(t, "decision", post("UCAROL"), "-")
}
