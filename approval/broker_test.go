package approval

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

func submitSudo(t *testing.T, b *Broker, rule config.Rule) state.Approval {
	t.Helper()
	m, ok := mustRules(t, rule).Match("sudo reboot")
	if !ok {
		t.Fatal("rule does not match")
	}
	a, err := b.SubmitCommand(context.Background(), CommandRequest{Requester: alice(), Target: "web-1", Login: "deploy",
		Command: "sudo reboot", Match: m})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestBrokerTimeoutFailsClosed(t *testing.T) {
	st := openStore(t, t.TempDir())
	audit := &auditLog{}
	b := newTestBroker(t, st, audit)
	// The notifier is down: nothing answers on the webhook URL.
	down := newReceiver(t)
	down.srv.Close()
	if _, err := NewWebhook(b, config.Webhook{URL: down.srv.URL, Secret: "s"}, WebhookOptions{Attempts: 2, Backoff: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	rule := sudoRule
	rule.Timeout = config.Duration(300 * time.Millisecond)
	a := submitSudo(t, b, rule)
	start := time.Now()
	got, err := b.Wait(context.Background(), a.ID)
	if err != nil || got.Status != state.ApprovalTimedOut {
		t.Fatalf("Wait = %+v, %v; want timed_out", got, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("timed out after %s; want about 300ms", d)
	}
	// A late approval changes nothing.
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: person("carol"), Approve: true}); !errors.Is(err, ErrDecided) {
		t.Errorf("late approval: %v; want ErrDecided", err)
	}
}

func TestBrokerSeveralApprovals(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	rule := sudoRule
	rule.Approvals = 2
	a := submitSudo(t, b, rule)
	carol := Decision{Approver: person("carol"), Approve: true, Via: "api"}
	got, err := b.Decide(context.Background(), a.ID, carol)
	if err != nil || got.Status != state.ApprovalPending || got.Approvals() != 1 {
		t.Fatalf("first approval: %+v %v", got, err)
	}
	// The same approver twice counts once.
	if got, _ = b.Decide(context.Background(), a.ID, carol); got.Status != state.ApprovalPending {
		t.Fatalf("second vote by carol approved: %+v", got)
	}
	got, err = b.Decide(context.Background(), a.ID, Decision{Approver: person("dave"), Approve: true})
	if err != nil || got.Status != state.ApprovalApproved || got.DecidedBy != "dave (corp)" {
		t.Fatalf("second approver: %+v %v", got, err)
	}
}

// TestBrokerReplicas: two brokers on one store (two replicas); a decision on
// one releases a waiter on the other, and a request survives a restart.
func TestBrokerReplicas(t *testing.T) {
	dir := t.TempDir()
	st1 := openStore(t, dir)
	b1 := newTestBroker(t, st1, nil)
	a := submitSudo(t, b1, sudoRule)
	if err := st1.Close(); err != nil { // restart
		t.Fatal(err)
	}
	st2 := openStore(t, dir)
	b2 := newTestBroker(t, st2, nil)
	st3 := openStore(t, dir)
	b3 := newTestBroker(t, st3, nil)
	got, err := b2.Get(context.Background(), a.ID)
	if err != nil || got.Status != state.ApprovalPending || got.Command != "sudo reboot" {
		t.Fatalf("after restart: %+v %v", got, err)
	}
	waited := make(chan state.Approval, 1)
	go func() {
		w, _ := b2.Wait(context.Background(), a.ID)
		waited <- w
	}()
	if _, err := b3.Decide(context.Background(), a.ID, Decision{Approver: person("dave", "sre"), Approve: false, Reason: "not now"}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waited:
		if w.Status != state.ApprovalDenied || w.Note != "not now" {
			t.Errorf("waiter saw %+v; want denied", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("decision on another replica did not release the waiter")
	}
}

func TestWebhookSignedWithRetries(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	r := newReceiver(t)
	r.status = func(n int) int {
		if n <= 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	}
	if _, err := NewWebhook(b, config.Webhook{URL: r.srv.URL, Secret: "hook-secret"}, WebhookOptions{Backoff: 10 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	a := submitSudo(t, b, sudoRule)
	for range 3 {
		r.next(t)
	}
	r.mu.Lock()
	body, h := r.bodies[2], r.hdrs[2]
	r.mu.Unlock()
	ts := h.Get("X-Postern-Timestamp")
	if sec, err := strconv.ParseInt(ts, 10, 64); err != nil || time.Since(time.Unix(sec, 0)) > time.Minute {
		t.Errorf("timestamp %q", ts)
	}
	if got, want := h.Get("X-Postern-Signature"), WebhookSignature("hook-secret", ts, body); got != want {
		t.Errorf("signature %q; want %q", got, want)
	}
	var m struct {
		Event    string         `json:"event"`
		Approval state.Approval `json:"approval"`
		URL      string         `json:"url"`
	}
	if err := json.Unmarshal(body, &m); err != nil || m.Event != state.EventApprovalRequested || m.Approval.ID != a.ID ||
		m.URL != "https://bastion.example.com/ui/approvals/"+a.ID {
		t.Errorf("body %s (%v)", body, err)
	}
	// The decision is delivered too.
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: person("carol"), Approve: true}); err != nil {
		t.Fatal(err)
	}
	if got := r.next(t); got["event"] != state.EventApprovalDecided {
		t.Errorf("decision event %v", got)
	}
}

func TestAccessRequestCreatesGrant(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	a, err := b.SubmitAccess(context.Background(), AccessRequest{Requester: alice(), Target: "db-1", Duration: time.Hour, Reason: "incident 42"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.SubmitAccess(context.Background(), AccessRequest{Requester: alice(), Target: "db-1", Duration: time.Hour}); err == nil {
		t.Error("access request without a reason accepted")
	}
	if _, err := b.SubmitAccess(context.Background(), AccessRequest{Requester: alice(), Target: "db-1", Duration: 48 * time.Hour, Reason: "x"}); err == nil {
		t.Error("48h access request accepted")
	}
	// Untrusted callers may not approve access requests without approvers.
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: person("bob"), Approve: true}); !errors.Is(err, ErrNotApprover) {
		t.Errorf("untrusted approval: %v", err)
	}
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: alice(), Trusted: true, Approve: true}); !errors.Is(err, ErrSelfApproval) {
		t.Errorf("self approval: %v", err)
	}
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: person("carol"), Trusted: true, Approve: true}); err != nil {
		t.Fatal(err)
	}
	gs, err := b.Grants(context.Background(), "corp:alice")
	if err != nil || len(gs) != 1 || gs[0].Target != "db-1" || gs[0].Approval != a.ID ||
		time.Until(gs[0].Expires) < 59*time.Minute {
		t.Fatalf("grants = %+v, %v", gs, err)
	}
	pg := b.PolicyGrants()(alice())
	if len(pg) != 1 || pg[0].Target != "db-1" || pg[0].ID != a.ID || !pg[0].Expires.Equal(gs[0].Expires) {
		t.Errorf("policy grants = %+v", pg)
	}
	if err := b.RevokeGrant(context.Background(), gs[0].ID, "carol"); err != nil {
		t.Fatal(err)
	}
	if gs, _ := b.Grants(context.Background(), "corp:alice"); len(gs) != 0 {
		t.Errorf("revoked grant still active: %+v", gs)
	}
	if pg := b.PolicyGrants()(alice()); len(pg) != 0 {
		t.Errorf("revoked grant still in the policy: %+v", pg)
	}
}

// pubsub is an in-process stand-in for the state store's Notify/Subscribe
// (PostgreSQL LISTEN/NOTIFY), shared by brokers playing replicas.
type pubsub struct {
	mu   sync.Mutex
	subs []chan string
}

func (p *pubsub) Notify(_ context.Context, _, payload string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.subs {
		select {
		case c <- payload:
		default:
		}
	}
	return nil
}

func (p *pubsub) Subscribe(ctx context.Context, _ string) (<-chan string, error) {
	c := make(chan string, 16)
	p.mu.Lock()
	p.subs = append(p.subs, c)
	p.mu.Unlock()
	out := make(chan string, 16)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s := <-c:
				out <- s
			}
		}
	}()
	return out, nil
}

// TestBrokerDecisionHints: with notifications, a waiter on another replica
// is released at once, not at its next poll (an hour away here).
func TestBrokerDecisionHints(t *testing.T) {
	dir := t.TempDir()
	ps := &pubsub{}
	newReplica := func() *Broker {
		b, err := NewBroker(Options{Store: openStore(t, dir), PollInterval: time.Hour, Groups: directory,
			Notify: ps.Notify, Subscribe: ps.Subscribe})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	b1, b2 := newReplica(), newReplica()
	a := submitSudo(t, b1, sudoRule)
	waited := make(chan state.Approval, 1)
	go func() {
		w, _ := b1.Wait(context.Background(), a.ID)
		waited <- w
	}()
	if _, err := b2.Decide(context.Background(), a.ID, Decision{Approver: person("carol"), Approve: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case w := <-waited:
		if w.Status != state.ApprovalApproved {
			t.Errorf("waiter saw %+v", w)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the hint did not release the waiter")
	}
}

// TestSubmitRateLimited: one identity's requests for one target are limited
// (a burst, then a steady rate) with a clear, retryable error; another
// target or another identity is not held back, and nothing limited is
// stored or notified.
func TestSubmitRateLimited(t *testing.T) {
	st := openStore(t, t.TempDir())
	now := time.Now()
	hook := newReceiver(t)
	b, err := NewBroker(Options{Store: st, Now: func() time.Time { return now }, RateLimit: config.ApprovalRateLimit{PerMinute: 12}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if _, err := NewWebhook(b, config.Webhook{URL: hook.srv.URL, Secret: "s"}, WebhookOptions{}); err != nil {
		t.Fatal(err)
	}
	m, _ := mustRules(t, sudoRule).Match("sudo reboot")
	submit := func(who certs.Identity, target string) error {
		_, err := b.SubmitCommand(context.Background(), CommandRequest{Requester: who, Target: target, Command: "sudo reboot", Match: m})
		return err
	}
	for i := range 5 { // the burst: max(12/6, 5)
		if err := submit(alice(), "web-1"); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
	}
	err = submit(alice(), "web-1")
	ue := usererr.As(err)
	if ue == nil || ue.Code != CodeRateLimited || ue.HTTPStatus() != http.StatusTooManyRequests || ue.RetryAfter <= 0 ||
		!strings.Contains(ue.Msg, "too many approval requests for web-1; try again in 5s") {
		t.Fatalf("sixth request: %v; want approval_rate_limited, 429, retry in 5s", err)
	}
	if err := submit(alice(), "web-2"); err != nil {
		t.Errorf("another target: %v", err)
	}
	if err := submit(person("bob"), "web-1"); err != nil {
		t.Errorf("another identity: %v", err)
	}
	// Another issuer's alice is another identity, not the same bucket.
	other := alice()
	other.Issuer = "other"
	if err := submit(other, "web-1"); err != nil {
		t.Errorf("another issuer's alice: %v", err)
	}
	now = now.Add(5 * time.Second)
	if err := submit(alice(), "web-1"); err != nil {
		t.Errorf("after the wait: %v", err)
	}
	if all, _ := b.List(context.Background(), "", 100); len(all) != 9 {
		t.Errorf("%d requests stored; want 9 (none of the refused)", len(all))
	}
	for range 9 {
		hook.next(t)
	}
	if n := hook.count(); n != 9 {
		t.Errorf("%d notifications; want 9", n)
	}
	limited, _ := NewBroker(Options{Store: st, RateLimit: config.ApprovalRateLimit{Disabled: true}})
	defer limited.Close()
	for range 20 {
		if _, err := limited.SubmitCommand(context.Background(), CommandRequest{Requester: alice(), Target: "web-3", Command: "sudo x", Match: m}); err != nil {
			t.Fatalf("disabled limit: %v", err)
		}
	}
}

// TestHoldCancelsWhenTheRequesterLeaves: a requester that is gone before or
// while it waits leaves no pending request behind, and a decision made
// first stands.
func TestHoldCancelsWhenTheRequesterLeaves(t *testing.T) {
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, &auditLog{})

	// Gone before the wait starts (Ctrl-C right after Enter).
	a := submitSudo(t, b, sudoRule)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, err := b.Hold(ctx, a.ID)
	if !errors.Is(err, context.Canceled) || got.ID != a.ID || got.Status != state.ApprovalCanceled {
		t.Errorf("Hold after cancel = %s %q, %v; want %s canceled", got.ID, got.Status, err, a.ID)
	}

	// Gone while waiting.
	a = submitSudo(t, b, sudoRule)
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan state.Approval)
	go func() {
		got, _ := b.Hold(ctx, a.ID)
		done <- got
	}()
	cancel()
	if got := <-done; got.Status != state.ApprovalCanceled {
		t.Errorf("Hold canceled while waiting: %q; want canceled", got.Status)
	}
	if s, err := st.GetApproval(context.Background(), a.ID); err != nil || s.Status != state.ApprovalCanceled {
		t.Errorf("stored %q, %v; want canceled", s.Status, err)
	}

	// Decided first: the decision stands.
	a = submitSudo(t, b, sudoRule)
	if _, err := b.Decide(context.Background(), a.ID, Decision{Approver: person("carol"), Approve: true}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if got, _ := b.Hold(ctx, a.ID); got.Status != state.ApprovalApproved {
		t.Errorf("Hold of a decided request after cancel: %q; want approved", got.Status)
	}
}

// TestBrokerApproverHook: Options.Approver sees every approver before a
// decision; its refusal refuses the decision (the request stays pending),
// and the groups it gives are the ones the decision is judged on.
func TestBrokerApproverHook(t *testing.T) {
	st := openStore(t, t.TempDir())
	gone := &usererr.Error{Status: http.StatusForbidden, Code: "deprovisioned", Msg: "your account was deprovisioned"}
	b, err := NewBroker(Options{Store: st, PublicURL: "https://bastion.example.com", Groups: directory, PollInterval: 20 * time.Millisecond,
		Approver: func(id certs.Identity) (certs.Identity, error) {
			switch id.Key() {
			case "corp:carol":
				return id, gone
			case "corp:erin": // sre by the directory, not by the configuration
				id.Groups = []string{"sre"}
			case "corp:dave": // no longer sre by the directory
				id.Groups = []string{"dba"}
			}
			return id, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	a := submitSudo(t, b, sudoRule)
	ctx := context.Background()
	if _, err := b.Decide(ctx, a.ID, Decision{Approver: person("carol"), Approve: true, Trusted: true}); !errors.Is(err, gone) {
		t.Errorf("deprovisioned carol: %v; want the hook's refusal", err)
	}
	if _, err := b.Decide(ctx, a.ID, Decision{Approver: person("dave"), Approve: true}); !errors.Is(err, ErrNotApprover) {
		t.Errorf("dave out of sre: %v; want ErrNotApprover", err)
	}
	if _, err := b.CheckApprover(person("carol")); !errors.Is(err, gone) {
		t.Errorf("CheckApprover(carol) = %v", err)
	}
	got, err := b.Decide(ctx, a.ID, Decision{Approver: person("erin"), Approve: true})
	if err != nil || got.Status != state.ApprovalApproved || got.DecidedBy != person("erin").Display() {
		t.Fatalf("erin, sre by the directory: %+v %v", got, err)
	}
}
