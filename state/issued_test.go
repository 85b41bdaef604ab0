package state

import (
	"context"
	"testing"
	"time"
)

func TestIssuedCerts(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s, err := Open(ctx, testURL(t), Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	rec := func(serial uint64, key, sub string, vb time.Duration) {
		t.Helper()
		if err := s.RecordIssued(ctx, IssuedCert{Serial: serial, KeyFingerprint: key, Issuer: "ci", Subject: sub,
			Principals: []string{"bot", "deploy"}, ValidBefore: now.Add(vb)}); err != nil {
			t.Fatal(err)
		}
	}
	rec(1, "SHA256:k1", "bot", 5*time.Minute)
	rec(2, "SHA256:k1", "bot", 15*time.Minute)
	rec(3, "SHA256:k1", "bot", 25*time.Minute)
	rec(4, "SHA256:k1", "other", time.Hour)  // another identity's, same key
	rec(5, "SHA256:k2", "bot", time.Hour)    // another key
	rec(6, "SHA256:k1", "bot", -time.Minute) // expired
	if err := s.Revoke(ctx, 3, "test", "ops"); err != nil {
		t.Fatal(err)
	}
	got, err := s.IssuedFor(ctx, "SHA256:k1", "ci", "bot")
	if err != nil || len(got) != 2 || got[0].Serial != 2 || got[1].Serial != 1 ||
		!got[0].ValidBefore.Equal(now.Add(15*time.Minute)) || len(got[0].Principals) != 2 {
		t.Fatalf("issued = %+v, %v; want serials 2 then 1 (3 is revoked, 6 expired)", got, err)
	}
	if got, err := s.IssuedFor(ctx, "SHA256:k9", "ci", "bot"); err != nil || len(got) != 0 {
		t.Errorf("unknown key: %v, %v", got, err)
	}
	if err := s.RecordIssued(ctx, IssuedCert{Serial: 1, KeyFingerprint: "x", Issuer: "ci", Subject: "bot", ValidBefore: now}); err != nil {
		t.Errorf("recording a serial twice: %v", err)
	}
}

func TestSessionJoins(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testURL(t), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.JoinSession(ctx, Join{Session: "01S", Who: "carol", Issuer: "corp", Groups: []string{"sre"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinSession(ctx, Join{Session: "01S"}); err == nil {
		t.Error("a join without who was accepted")
	}
	js, err := s.Joins(ctx, "01S")
	if err != nil || len(js) != 1 || js[0].Who != "carol" || js[0].Groups[0] != "sre" {
		t.Fatalf("joins = %+v, %v", js, err)
	}
	if js, _ := s.Joins(ctx, "01T"); len(js) != 0 {
		t.Errorf("another session's joins: %+v", js)
	}
	evs, _ := s.Events(ctx, 0, 10)
	if len(evs) != 1 || evs[0].Type != EventSessionJoin || evs[0].Session != "01S" || evs[0].Actor != "carol" {
		t.Errorf("audit = %+v", evs)
	}
}
