package server_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/internal/config"
)

// TestSlackMessageEscapesHeldCommand: a command held for approval through
// stock ssh whose text is Slack markup (a channel ping, a fake Approve
// link, a user mention) is posted escaped: it pings nobody and links
// nowhere; only postern's own links are links.
func TestSlackMessageEscapesHeldCommand(t *testing.T) {
	f := newGateEnv(t, []config.Rule{
		{Match: `notify-me`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
	})
	cmd := "echo '<!channel> <!here> <@U0ADMIN> <https://evil.example/approve|Approve>' # notify-me"
	res := f.user.SSHAsync(nil, "web-1", cmd)
	msg := f.slack.NextMessage()
	var raw strings.Builder
	enc := json.NewEncoder(&raw)
	enc.SetEscapeHTML(false) // the texts as Slack reads them
	if err := enc.Encode(msg); err != nil {
		t.Fatal(err)
	}
	text := raw.String()
	for _, bad := range []string{"<!channel>", "<!here>", "<@U0ADMIN>", "<https://evil.example"} {
		if strings.Contains(text, bad) {
			t.Errorf("the Slack message holds %q: %s", bad, text)
		}
	}
	for rest := text; strings.Contains(rest, "<"); {
		rest = rest[strings.Index(rest, "<"):]
		if !strings.HasPrefix(rest, "<https://bastion.test/ui/") {
			t.Errorf("markup in the Slack message: %s", text)
			break
		}
		rest = rest[1:]
	}
	if !strings.Contains(text, "&lt;!channel&gt;") {
		t.Errorf("the held command is not in the message (escaped): %s", text)
	}
	var id string
	// Deny it through the stand-in's click, as Slack would send it.
	blocks, _ := msg["blocks"].([]any)
	for _, bl := range blocks {
		if b, _ := bl.(map[string]any); b["type"] == "actions" {
			els, _ := b["elements"].([]any)
			id, _ = els[0].(map[string]any)["value"].(string)
		}
	}
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionDeny, id)
	if r := waitResult(t, res); r.Code != innerhop.ExitDeniedByApprover {
		t.Errorf("exit %d stderr %q; want %d", r.Code, r.Stderr, innerhop.ExitDeniedByApprover)
	}
	f.sessionEnd()
}
