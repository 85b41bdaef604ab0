package state

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLocksStore(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := Open(ctx, testURL(t), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	id := Lock{ID: "01L1", Kind: LockIdentity, Issuer: "corp", Subject: "u-1", Username: "alice@example.com",
		Reason: "leaked token", CreatedBy: "sec@example.com"}
	tgt := Lock{ID: "01L2", Kind: LockTarget, Name: "db-1", Reason: "maintenance", CreatedBy: "ops",
		Expires: now.Add(time.Hour)}
	old := Lock{ID: "01L3", Kind: LockRole, Name: "agents", Reason: "past", CreatedBy: "ops",
		Created: now.Add(-2 * time.Hour), Expires: now.Add(-time.Hour)}
	for _, l := range []Lock{id, tgt, old} {
		if err := s.CreateLock(ctx, l); err != nil {
			t.Fatalf("create %s: %v", l.ID, err)
		}
	}
	if err := s.CreateLock(ctx, id); err == nil {
		t.Error("a duplicate lock id was accepted")
	}
	if err := s.CreateLock(ctx, Lock{Kind: LockRole}); err == nil {
		t.Error("a lock without an id was accepted")
	}
	active, err := s.ActiveLocks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(active) != 2 || active[0].ID != "01L1" || active[1].ID != "01L2" {
		t.Fatalf("active locks = %+v; want 01L1 and 01L2 (01L3 expired)", active)
	}
	if got := active[0]; got.Issuer != "corp" || got.Subject != "u-1" || got.Username != "alice@example.com" ||
		!got.Created.Equal(now) || !got.Expires.IsZero() || !got.Active(now) {
		t.Errorf("identity lock read back as %+v", got)
	}
	if got := active[1]; !got.Expires.Equal(now.Add(time.Hour)) || got.Active(now.Add(time.Hour)) {
		t.Errorf("target lock read back as %+v; want expiry in an hour, inactive then", got)
	}

	if err := s.RemoveLock(ctx, "01L2", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveLock(ctx, "01L2", "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second removal: %v; want ErrNotFound", err)
	}
	if err := s.RemoveLock(ctx, "nope", "ops"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing an unknown lock: %v; want ErrNotFound", err)
	}
	got, err := s.GetLock(ctx, "01L2")
	if err != nil || got.RemovedBy != "ops" || !got.Removed.Equal(now) || got.Active(now) {
		t.Fatalf("removed lock = %+v, %v", got, err)
	}
	if _, err := s.GetLock(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("get unknown: %v", err)
	}
	if active, _ = s.ActiveLocks(ctx); len(active) != 1 {
		t.Errorf("active after removal = %+v; want only 01L1", active)
	}
	all, err := s.ListLocks(ctx, 10)
	if err != nil || len(all) != 3 || all[0].ID != "01L2" {
		t.Errorf("list = %+v, %v; want three, newest first", all, err)
	}

	// Every change is audited, and the chain holds.
	evs, err := s.Events(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	var created, removed int
	for _, e := range evs {
		switch e.Type {
		case EventLockCreated:
			created++
			if e.Details["lock"] == "01L2" && (e.Target != "db-1" || e.Actor != "ops") {
				t.Errorf("target lock event = %+v", e)
			}
		case EventLockRemoved:
			removed++
		}
	}
	if created != 3 || removed != 1 {
		t.Errorf("audited %d lock.created and %d lock.removed; want 3 and 1", created, removed)
	}
	if rep, err := s.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("verify: %+v, %v", rep, err)
	}
}
