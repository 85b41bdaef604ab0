package state

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

func TestApprovalsStore(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "state.db"), Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	cmd := Approval{ID: "01A", Kind: ApprovalCommand, Requester: "alice", RequesterKey: "corp:a1", Groups: []string{"dev", "ops"}, Target: "web-1",
		Login: "deploy", Command: "sudo reboot", Session: "01S", Rule: "^sudo", Approvers: []string{"sre"}, Required: 2,
		Expires: now.Add(time.Minute)}
	if err := s.CreateApproval(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateApproval(ctx, cmd); err == nil {
		t.Error("duplicate id accepted")
	}
	got, err := s.GetApproval(ctx, "01A")
	if err != nil || got.Status != ApprovalPending || got.Required != 2 || len(got.Groups) != 2 || got.Command != "sudo reboot" ||
		!got.Created.Equal(now) {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if _, err := s.GetApproval(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing: %v", err)
	}
	a, err := s.VoteApproval(ctx, "01A", Vote{By: "carol", Key: "corp:c1", Approve: true, Via: "slack"})
	if err != nil || a.Status != ApprovalPending || a.Approvals() != 1 {
		t.Fatalf("first vote: %+v %v", a, err)
	}
	a, _ = s.VoteApproval(ctx, "01A", Vote{By: "carol (other name)", Key: "corp:c1", Approve: true})
	if a.Approvals() != 1 {
		t.Errorf("same approver counted twice: %+v", a.Votes)
	}
	a, err = s.VoteApproval(ctx, "01A", Vote{By: "dave", Key: "corp:d1", Approve: true})
	if err != nil || a.Status != ApprovalApproved || a.DecidedBy != "dave" || !a.Decided.Equal(now) {
		t.Fatalf("second vote: %+v %v", a, err)
	}
	if _, err := s.VoteApproval(ctx, "01A", Vote{By: "erin", Approve: false}); !errors.Is(err, ErrDecided) {
		t.Errorf("vote after decision: %v", err)
	}

	// Expiry: a vote after the deadline times the request out.
	if err := s.CreateApproval(ctx, Approval{ID: "01B", Kind: ApprovalCommand, Requester: "alice", RequesterKey: "corp:a1", Expires: now.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.ExpireApproval(ctx, "01B", ApprovalTimedOut, false); a.Status != ApprovalPending {
		t.Errorf("expired early: %+v", a)
	}
	now = now.Add(2 * time.Second)
	if a, err := s.VoteApproval(ctx, "01B", Vote{By: "carol", Approve: true}); err != nil || a.Status != ApprovalTimedOut {
		t.Errorf("late vote: %+v %v", a, err)
	}

	// An approved access request carries its grant.
	if err := s.CreateApproval(ctx, Approval{ID: "01C", Kind: ApprovalAccess, Requester: "bob", RequesterKey: "corp:b1", Target: "db-1",
		Duration: time.Hour, Reason: "incident", Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if pend, _ := s.ListApprovals(ctx, ApprovalPending, 0); len(pend) != 1 || pend[0].ID != "01C" || pend[0].Duration != time.Hour {
		t.Errorf("pending = %+v", pend)
	}
	if all, _ := s.ListApprovals(ctx, "", 0); len(all) != 3 {
		t.Errorf("all = %d rows", len(all))
	}
	if _, err := s.VoteApproval(ctx, "01C", Vote{By: "carol", Approve: true}); err != nil {
		t.Fatal(err)
	}
	gs, err := s.ActiveGrants(ctx, "corp:b1")
	if err != nil || len(gs) != 1 || gs[0].Target != "db-1" || gs[0].Identity != "corp:b1" || gs[0].Username != "bob" || !gs[0].Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("grants = %+v %v", gs, err)
	}
	for _, other := range []string{"bob", "other:b1", ""} {
		if gs, _ := s.ActiveGrants(ctx, other); len(gs) != 0 {
			t.Errorf("grants of %q = %+v; want none", other, gs)
		}
	}
	if all, _ := s.ActiveGrants(ctx, AllGrants); len(all) != 1 {
		t.Errorf("all grants = %+v; want one", all)
	}
	now = now.Add(2 * time.Hour)
	if gs, _ := s.ActiveGrants(ctx, "corp:b1"); len(gs) != 0 {
		t.Errorf("expired grant active: %+v", gs)
	}
	if err := s.RevokeGrant(ctx, "01C", "carol"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeGrant(ctx, "01C", "carol"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke twice: %v", err)
	}
	evs, _ := s.Events(ctx, 0, 100)
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	if len(types) != 2 || types[0] != EventGrantCreated || types[1] != EventGrantRevoked {
		t.Errorf("audit events %v", types)
	}
}
