package state

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

func TestSCIMUsers(t *testing.T) {
	s, url := openTest(t, Options{})
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	hints, err := s.Subscribe(ctx, NotifySCIM)
	if err != nil {
		t.Fatal(err)
	}

	u, err := s.PutSCIMUser(ctx, SCIMUser{Directory: "okta", ID: "u1", UserName: "Alice@example.com", ExternalID: "00u1",
		Active: true, Attributes: `{"userName":"Alice@example.com"}`}, map[string]any{"op": "create"})
	if err != nil {
		t.Fatal(err)
	}
	if u.Version != 1 || !u.Created.Equal(now) || !u.Modified.Equal(now) {
		t.Errorf("created user = %+v; want version 1 created and modified now", u)
	}
	select {
	case <-hints:
	case <-time.After(10 * time.Second):
		t.Fatal("no announcement of the change")
	}
	// userName is unique without case among live users of a directory…
	if _, err := s.PutSCIMUser(ctx, SCIMUser{Directory: "okta", ID: "u2", UserName: "alice@EXAMPLE.com", Active: true,
		Attributes: `{}`}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("second alice: %v; want ErrConflict", err)
	}
	// … not across directories.
	if _, err := s.PutSCIMUser(ctx, SCIMUser{Directory: "entra", ID: "u2", UserName: "alice@example.com", Active: true,
		Attributes: `{}`}, nil); err != nil {
		t.Errorf("alice in another directory: %v", err)
	}

	now = now.Add(time.Hour)
	u.Active = false
	u2, err := s.PutSCIMUser(ctx, u, map[string]any{"op": "patch"})
	if err != nil {
		t.Fatal(err)
	}
	if u2.Version != 2 || !u2.Created.Equal(u.Created) || !u2.Modified.Equal(now) {
		t.Errorf("changed user = %+v; want version 2, created kept, modified now", u2)
	}
	// Another replica reads what this one wrote.
	other, err := Open(ctx, url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got, err := other.GetSCIMUser(ctx, "okta", "u1")
	if err != nil || got.Active || got.UserName != "Alice@example.com" || got.ExternalID != "00u1" || got.Version != 2 {
		t.Errorf("GetSCIMUser = %+v, %v", got, err)
	}
	if _, err := s.GetSCIMUser(ctx, "okta", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown user: %v; want ErrNotFound", err)
	}

	// A deleted user is a tombstone: its userName is free again.
	u2.Deleted = true
	if _, err := s.PutSCIMUser(ctx, u2, map[string]any{"op": "delete"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSCIMUser(ctx, SCIMUser{Directory: "okta", ID: "u3", UserName: "alice@example.com", Active: true,
		Attributes: `{}`}, nil); err != nil {
		t.Errorf("alice again after the deletion: %v", err)
	}
	all, err := s.SCIMUsers(ctx, "okta")
	if err != nil || len(all) != 2 || all[0].ID != "u1" || !all[0].Deleted || all[1].ID != "u3" {
		t.Errorf("SCIMUsers(okta) = %+v, %v", all, err)
	}
	if every, err := s.SCIMUsers(ctx, ""); err != nil || len(every) != 3 {
		t.Errorf("SCIMUsers() = %d users, %v; want 3", len(every), err)
	}

	// Every change is audited.
	evs, err := s.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var ops []any
	for _, e := range evs {
		if e.Type == EventSCIMUser && e.Details["directory"] == "okta" {
			ops = append(ops, e.Details["op"])
			if e.Actor != "scim:okta" {
				t.Errorf("actor %q; want scim:okta", e.Actor)
			}
		}
	}
	if !slices.Equal(ops, []any{"create", "patch", "delete", nil}) {
		t.Errorf("audited ops %v", ops)
	}
}

func TestSCIMGroups(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	g, err := s.PutSCIMGroup(ctx, SCIMGroup{Directory: "okta", ID: "g1", DisplayName: "sre", Members: []string{"u1", "u2"},
		Attributes: `{}`}, map[string]any{"op": "create"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutSCIMGroup(ctx, SCIMGroup{Directory: "okta", ID: "g2", DisplayName: "sre", Attributes: `{}`}, nil); !errors.Is(err, ErrConflict) {
		t.Errorf("second sre: %v; want ErrConflict", err)
	}
	if _, err := s.PutSCIMGroup(ctx, SCIMGroup{Directory: "okta", ID: "g2", DisplayName: "dba", Attributes: `{}`}, nil); err != nil {
		t.Fatal(err)
	}
	g.Members = []string{"u2"}
	if g, err = s.PutSCIMGroup(ctx, g, nil); err != nil || g.Version != 2 {
		t.Fatalf("PutSCIMGroup = %+v, %v", g, err)
	}
	got, err := s.GetSCIMGroup(ctx, "okta", "g1")
	if err != nil || !slices.Equal(got.Members, []string{"u2"}) || got.DisplayName != "sre" {
		t.Errorf("GetSCIMGroup = %+v, %v", got, err)
	}
	// No members is an empty list, not null.
	if dba, err := s.GetSCIMGroup(ctx, "okta", "g2"); err != nil || dba.Members == nil || len(dba.Members) != 0 {
		t.Errorf("GetSCIMGroup(dba) = %+v, %v", dba, err)
	}
	if err := s.DeleteSCIMGroup(ctx, "okta", "g1"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSCIMGroup(ctx, "okta", "g1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v; want ErrNotFound", err)
	}
	if _, err := s.GetSCIMGroup(ctx, "okta", "g1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted group: %v; want ErrNotFound", err)
	}
	gs, err := s.SCIMGroups(ctx, "")
	if err != nil || len(gs) != 1 || gs[0].DisplayName != "dba" {
		t.Errorf("SCIMGroups = %+v, %v", gs, err)
	}
}

func TestSCIMLocks(t *testing.T) {
	s, _ := openTest(t, Options{})
	ctx := context.Background()
	if err := s.AddSCIMLocks(ctx, "okta", "u1", []string{"L2", "L1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSCIMLocks(ctx, "okta", "u2", []string{"L3"}); err != nil {
		t.Fatal(err)
	}
	got, err := s.SCIMLocks(ctx, "okta", "u1")
	if err != nil || !slices.Equal(got, []string{"L1", "L2"}) {
		t.Errorf("SCIMLocks = %v, %v", got, err)
	}
	if err := s.ForgetSCIMLocks(ctx, "okta", "u1", []string{"L1"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.SCIMLocks(ctx, "okta", "u1"); !slices.Equal(got, []string{"L2"}) {
		t.Errorf("after forgetting L1: %v", got)
	}
	if got, _ := s.SCIMLocks(ctx, "okta", "u2"); !slices.Equal(got, []string{"L3"}) {
		t.Errorf("u2's locks: %v", got)
	}
	if got, _ := s.SCIMLocks(ctx, "entra", "u1"); len(got) != 0 {
		t.Errorf("another directory's locks: %v", got)
	}
}
