package server

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/state"
)

// TestStatementGateThroughBroker holds statements through the real broker
// over a real state store: one approved, one denied by an approver.
func TestStatementGateThroughBroker(t *testing.T) {
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b, err := approval.NewBroker(approval.Options{Store: st, PublicURL: "https://bastion.test", PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	g := NewStatementGate(b, nil)
	rule, _ := pgproxy.ParseRule("sql:delete-without-where", pgproxy.ActionApprove)
	rule.Approvers, rule.Approvals, rule.Timeout = []string{"dba"}, 1, time.Minute
	for _, approve := range []bool{true, false} {
		res := make(chan error, 1)
		go func() {
			res <- g.ApproveStatement(ctx, pgproxy.StatementRequest{Session: "S1", Identity: "agent",
				Requester: certs.Identity{Issuer: "ci", Subject: "agent-sub", Username: "agent"}, Target: "pg",
				Database: "app", Statement: "DELETE FROM t", Rule: rule})
		}()
		var id string
		for deadline := time.Now().Add(10 * time.Second); id == ""; {
			list, err := b.List(ctx, state.ApprovalPending, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(list) > 0 {
				id = list[0].ID
				if list[0].Command != "DELETE FROM t" || list[0].Rule != "sql:delete-without-where" {
					t.Errorf("request %+v", list[0])
				}
			} else if time.Now().After(deadline) {
				t.Fatal("no pending request")
			} else {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if _, err := b.Decide(ctx, id, approval.Decision{Approver: certs.Identity{Issuer: "corp", Subject: "dora", Username: "dora", Groups: []string{"dba"}},
			Approve: approve, Via: "api"}); err != nil {
			t.Fatal(err)
		}
		err := <-res
		if approve && err != nil {
			t.Errorf("approved statement refused: %v", err)
		}
		if !approve && (err == nil || !strings.Contains(err.Error(), "denied by an approver")) {
			t.Errorf("denied statement: %v", err)
		}
	}
}
