package posterntest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/internal/config"
)

// Slack stands in for Slack: an incoming webhook on 127.0.0.1 that captures
// the approval messages postern posts, and a sender of button clicks signed
// the way Slack signs them.
type Slack struct {
	// Secret is the signing secret.
	Secret string
	// WebhookURL is the incoming webhook's address.
	WebhookURL string

	t    testing.TB
	msgs chan map[string]any
}

// NewSlack starts the webhook; the test's cleanup stops it.
func NewSlack(t testing.TB) *Slack {
	sl := &Slack{Secret: "posterntest-slack-signing-secret", t: t, msgs: make(chan map[string]any, 64)}
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err == nil {
			sl.msgs <- m
		}
	}))
	t.Cleanup(hook.Close)
	sl.WebhookURL = hook.URL
	return sl
}

// Config is the approvals.slack section that posts to this webhook, with
// approvers mapping Slack user ids to postern usernames.
func (sl *Slack) Config(approvers map[string]string) config.Slack {
	return config.Slack{WebhookURL: sl.WebhookURL, SigningSecret: sl.Secret, Approvers: approvers}
}

// NextMessage waits up to 30 seconds for the next message postern posts.
func (sl *Slack) NextMessage() map[string]any {
	sl.t.Helper()
	select {
	case m := <-sl.msgs:
		return m
	case <-time.After(30 * time.Second):
		sl.t.Fatal("posterntest: no Slack message")
	}
	return nil
}

// NextRequest waits for the next approval message and returns the request
// id its buttons carry.
func (sl *Slack) NextRequest() string {
	sl.t.Helper()
	m := sl.NextMessage()
	blocks, _ := m["blocks"].([]any)
	for _, bl := range blocks {
		if b, _ := bl.(map[string]any); b["type"] == "actions" {
			if els, _ := b["elements"].([]any); len(els) > 0 {
				if v, _ := els[0].(map[string]any)["value"].(string); v != "" {
					return v
				}
			}
		}
	}
	sl.t.Fatalf("posterntest: no buttons in the Slack message %v", m)
	return ""
}

// Click sends the interactivity callback of Slack user clicking action
// (approval.SlackActionApprove or SlackActionDeny) on request to s, signed
// with the secret; it fails the test unless postern answers 200.
func (sl *Slack) Click(s *Service, user, action, request string) {
	sl.t.Helper()
	p, _ := json.Marshal(map[string]any{"type": "block_actions", "user": map[string]any{"id": user},
		"response_url": "", "actions": []any{map[string]any{"action_id": action, "value": request}}})
	body := url.Values{"payload": {string(p)}}.Encode()
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req, err := http.NewRequest(http.MethodPost, s.HTTPURL+"/v1/slack/actions", strings.NewReader(body))
	if err != nil {
		sl.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", approval.SignSlack(sl.Secret, ts, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		sl.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		sl.t.Fatalf("posterntest: Slack callback: status %d", resp.StatusCode)
	}
}
