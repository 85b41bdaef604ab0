package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// approvalsFixture serves the approvals API over a real state store and
// writes a login profile for audra, an approver.
type approvalsFixture struct {
	broker   *approval.Broker
	profile  string
	requests chan state.Approval // every new request, as a notifier sees it
}

// chanNotifier hands new requests to a test.
type chanNotifier chan state.Approval

func (chanNotifier) Name() string { return "test" }

func (c chanNotifier) Notify(_ context.Context, a state.Approval) error {
	if a.Status == state.ApprovalPending {
		c <- a
	}
	return nil
}

func newApprovalsFixture(t *testing.T) *approvalsFixture {
	t.Helper()
	dir := t.TempDir()
	st, err := state.Open(context.Background(), "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b, err := approval.NewBroker(approval.Options{Store: st, PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	auth, err := certs.LoadAuthority(config.CAs{}, filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := approval.NewAPI(approval.APIOptions{Broker: b, Auth: &certs.APIAuth{Authority: auth},
		Permissions: func(certs.Identity) []string { return []string{"approver"} }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/approvals", api)
	mux.Handle("/v1/approvals/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	reqs := make(chan state.Approval, 16)
	b.AddNotifier(chanNotifier(reqs))
	return &approvalsFixture{broker: b, profile: writeAuditorProfile(t, auth, srv.URL), requests: reqs}
}

func TestApprovalsCommands(t *testing.T) {
	f := newApprovalsFixture(t)
	rules, _ := approval.CompileRules([]config.Rule{{Match: "^sudo", Action: "approve", Approvers: []string{"corp:audra"}}})
	m, _ := rules.Match("sudo reboot")
	a, err := f.broker.SubmitCommand(context.Background(), approval.CommandRequest{
		Requester: certs.Identity{Issuer: "corp", Subject: "alice", Username: "alice"}, Target: "web-1", Command: "sudo reboot", Match: m})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := runClient(t, newApprovalsCmd, "ls", "--dir", f.profile)
	if err != nil || !strings.Contains(out, a.ID) || !strings.Contains(out, "sudo reboot") || !strings.Contains(out, "pending") {
		t.Fatalf("ls: %q %v", out, err)
	}
	out, _, err = runClient(t, newApprovalsCmd, "approve", a.ID, "--reason", "ok", "--dir", f.profile)
	if err != nil || strings.TrimSpace(out) != a.ID+": approved" {
		t.Fatalf("approve: %q %v", out, err)
	}
	_, _, err = runClient(t, newApprovalsCmd, "deny", a.ID, "--dir", f.profile)
	if err == nil || !strings.Contains(err.Error(), "already decided") {
		t.Errorf("deny after approve: %v", err)
	}
	out, _, err = runClient(t, newApprovalsCmd, "ls", "--dir", f.profile)
	if err != nil || strings.TrimSpace(out) != "no approval requests" {
		t.Errorf("ls after the decision: %q %v", out, err)
	}
}

func TestRequestCommand(t *testing.T) {
	f := newApprovalsFixture(t)
	out, _, err := runClient(t, newRequestCmd, "db-1", "--for", "1h", "--reason", "incident 7", "--no-wait", "--json", "--dir", f.profile)
	if err != nil || !strings.Contains(out, `"kind": "access"`) || !strings.Contains(out, `"status": "pending"`) {
		t.Fatalf("request --no-wait: %q %v", out, err)
	}
	if _, _, err := runClient(t, newRequestCmd, "db-1", "--for", "1h", "--dir", f.profile); err == nil {
		t.Error("request without --reason accepted")
	}

	// Waiting: another approver decides while the command waits.
	decide := func(approve bool) {
		for r := range f.requests {
			if r.Target == "db-2" {
				_, _ = f.broker.Decide(context.Background(), r.ID, approval.Decision{
					Approver: certs.Identity{Issuer: "corp", Subject: "carol", Username: "carol"}, Trusted: true, Approve: approve})
				return
			}
		}
	}
	go decide(true)
	out, stderr, err := runClient(t, newRequestCmd, "db-2", "--for", "30m", "--reason", "deploy", "--dir", f.profile)
	if err != nil || !strings.Contains(out, "approved by carol") || !strings.Contains(stderr, "waiting for approval") {
		t.Fatalf("request approved: %q %q %v", out, stderr, err)
	}
	gs, _ := f.broker.Grants(context.Background(), "corp:audra")
	if len(gs) != 1 || gs[0].Target != "db-2" {
		t.Errorf("grants %+v", gs)
	}
	out, _, err = runClient(t, newApprovalsCmd, "revoke", gs[0].ID, "--dir", f.profile)
	if err != nil || !strings.Contains(out, "access revoked") {
		t.Errorf("revoke: %q %v", out, err)
	}
	if gs, _ := f.broker.Grants(context.Background(), "corp:audra"); len(gs) != 0 {
		t.Errorf("grants after revoke: %+v", gs)
	}
	go decide(false)
	_, _, err = runClient(t, newRequestCmd, "db-2", "--for", "30m", "--reason", "again", "--dir", f.profile)
	ee := usererr.As(err)
	if ee == nil || ee.Exit != exitRequestDenied {
		t.Errorf("request denied: %v; want exit %d", err, exitRequestDenied)
	}
}
