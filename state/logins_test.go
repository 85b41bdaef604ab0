package state

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestLogins(t *testing.T) {
	s, url := openTest(t, Options{})
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	req := LoginRequest{Relay: "relay-1", Provider: "okta", RequestID: "id-1", RedirectURI: "http://127.0.0.1:5555/callback",
		State: "st", Challenge: "ch", Expires: now.Add(10 * time.Minute)}
	if err := s.PutLoginRequest(ctx, req); err != nil {
		t.Fatal(err)
	}
	// Another replica sees it.
	other, err := Open(ctx, url, Options{Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	got, err := other.GetLoginRequest(ctx, "relay-1")
	if err != nil || got != req {
		t.Fatalf("GetLoginRequest = %+v, %v; want %+v", got, err, req)
	}
	if _, err := s.GetLoginRequest(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown relay: %v", err)
	}
	code := LoginCode{Hash: "h1", Identity: `{"user":"alice"}`, Challenge: "ch", RedirectURI: req.RedirectURI, Expires: now.Add(2 * time.Minute)}
	if err := other.FinishLogin(ctx, "relay-1", "assertion-1", now.Add(5*time.Minute), code); err != nil {
		t.Fatal(err)
	}
	// The request is answered once; the assertion is accepted once, on
	// every replica.
	if err := s.FinishLogin(ctx, "relay-1", "assertion-2", now.Add(5*time.Minute), code); !errors.Is(err, ErrNotFound) {
		t.Errorf("second answer to one request: %v; want ErrNotFound", err)
	}
	if err := s.PutLoginRequest(ctx, LoginRequest{Relay: "relay-2", Provider: "okta", RequestID: "id-2", Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishLogin(ctx, "relay-2", "assertion-1", now.Add(5*time.Minute), LoginCode{Hash: "h2", Expires: now.Add(time.Minute)}); !errors.Is(err, ErrReplayed) {
		t.Errorf("replayed assertion: %v; want ErrReplayed", err)
	}
	if _, err := s.GetLoginRequest(ctx, "relay-2"); err != nil {
		t.Errorf("a refused answer consumed the request: %v", err)
	}
	if err := s.ConsumeAssertion(ctx, "assertion-1", now.Add(time.Minute)); !errors.Is(err, ErrReplayed) {
		t.Errorf("ConsumeAssertion of a used id: %v", err)
	}
	// The code is redeemed once.
	c, err := s.TakeLoginCode(ctx, "h1")
	if err != nil || c.Identity != code.Identity || c.Challenge != "ch" || c.RedirectURI != code.RedirectURI {
		t.Fatalf("TakeLoginCode = %+v, %v", c, err)
	}
	if _, err := other.TakeLoginCode(ctx, "h1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second redemption: %v; want ErrNotFound", err)
	}
	// Expiry: requests, codes and the replay cache's records lapse.
	now = now.Add(11 * time.Minute)
	if _, err := s.GetLoginRequest(ctx, "relay-2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired request: %v", err)
	}
	if err := s.ConsumeAssertion(ctx, "assertion-1", now.Add(time.Minute)); err != nil {
		t.Errorf("an expired replay record still refuses: %v", err)
	}
	if err := s.PutLoginRequest(ctx, LoginRequest{Relay: "relay-3", Expires: now.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishLogin(ctx, "relay-3", "assertion-3", now.Add(time.Minute), LoginCode{Hash: "h3", Expires: now.Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TakeLoginCode(ctx, "h3"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired code: %v", err)
	}
}
