package bastion

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails/pgproxy"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/testutil"
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
			res <- g.ApproveStatement(ctx, pgproxy.StatementRequest{Session: "S1", Identity: "agent", Target: "pg",
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
		if _, err := b.Decide(ctx, id, approval.Decision{Approver: certs.Identity{Username: "dora", Groups: []string{"dba"}},
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

// TestPostgresDropApprovedViaSlack runs psql against a real PostgreSQL
// through the pgproxy with the broker as approver: one DROP TABLE is held
// and approved by a signed Slack callback, another is denied there, and the
// session stays usable.
func TestPostgresDropApprovedViaSlack(t *testing.T) {
	if _, err := os.Stat("/usr/bin/psql"); err != nil {
		testutil.Need(t, "psql")
	}
	f := newGateFixture(t, nil)
	pg := pgtest.Start(t)
	pg.Exec(t, "CREATE TABLE a (v int); CREATE TABLE b (v int)")
	px, err := pgproxy.New(pgproxy.Options{Approver: NewStatementGate(f.broker, nil)})
	if err != nil {
		t.Fatal(err)
	}
	rule, _ := pgproxy.ParseRule("sql:drop", pgproxy.ActionApprove)
	rule.Approvers, rule.Approvals, rule.Timeout = []string{"sre"}, 1, time.Minute
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			cc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer cc.Close()
				up, err := net.Dial("tcp", pg.Addr())
				if err != nil {
					return
				}
				defer up.Close()
				_ = px.Serve(context.Background(), cc, up, pgproxy.Session{Identity: "alice", Target: "pg", Record: "off",
					Rules: []pgproxy.Rule{rule}})
			})
		}
	})
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	done := make(chan bxResult, 1)
	go func() {
		cmd := exec.Command("psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", port, "-U", pgtest.Superuser, "-d", "postgres", "-f", "-")
		cmd.Stdin = strings.NewReader("DROP TABLE a;\nDROP TABLE b;\nSELECT count(*) FROM b;\n")
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		_ = cmd.Run()
		done <- bxResult{stdout: out.String(), stderr: errb.String()}
	}()
	f.click(t, "UCAROL", approval.SlackActionApprove, f.nextRequest(t))
	f.click(t, "UCAROL", approval.SlackActionDeny, f.nextRequest(t))
	var r bxResult
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("psql did not finish")
	}
	if !strings.Contains(r.stderr, "denied by an approver") || !strings.HasPrefix(r.stdout, "DROP TABLE\n") || !strings.HasSuffix(r.stdout, "\n0\n") {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	if got := pg.Exec(t, "SELECT count(*) FROM pg_tables WHERE tablename IN ('a', 'b')"); got != "1" {
		t.Errorf("%s of the tables left; want b only", got)
	}
}
