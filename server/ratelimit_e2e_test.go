package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/bastion/innerhop"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
)

// TestApprovalRequestsRateLimited: held commands through stock ssh make
// approval requests (and Slack posts) only up to approvals.rate_limit per
// identity and target; the next one is refused at once with a clear
// notice and exit 123, and is neither stored nor posted.
func TestApprovalRequestsRateLimited(t *testing.T) {
	e := newGateEnvWith(t, t.TempDir(), []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
	}, func(cfg *config.Config) {
		cfg.Roles[0].Record = "off"
		cfg.Approvals.RateLimit = config.ApprovalRateLimit{PerMinute: 6} // a burst of 5
	})

	var held []<-chan testutil.Result
	var ids []string
	for range 5 {
		held = append(held, e.user.SSHAsync(nil, "web-1", "sudo -n true"))
		ids = append(ids, e.slack.NextRequest())
	}
	start := time.Now()
	r := e.user.SSH(nil, nil, "web-1", "sudo -n true")
	if r.Code != innerhop.ExitDenied || !strings.Contains(string(r.Stderr), "postern: too many approval requests for web-1; try again in") {
		t.Errorf("sixth request: exit %d stderr %q; want %d and the rate limit notice", r.Code, r.Stderr, innerhop.ExitDenied)
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("the refusal took %s", d)
	}
	if all, err := e.svc.State.ListApprovals(context.Background(), "", 100); err != nil || len(all) != 5 {
		t.Errorf("%d requests stored (%v); want 5", len(all), err)
	}
	for _, id := range ids {
		e.slack.Click(e.svc, "UCAROL", approval.SlackActionDeny, id)
	}
	for _, h := range held {
		if r := waitResult(t, h); r.Code != innerhop.ExitDeniedByApprover {
			t.Errorf("held command: exit %d; want %d", r.Code, innerhop.ExitDeniedByApprover)
		}
	}
}
