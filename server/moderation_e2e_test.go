package server_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// follow starts following session id live as u through the sessions API
// (what postern watch does) and returns a function that stops.
func follow(t *testing.T, svc *posterntest.Service, u *posterntest.User, id string) (stop func(), status <-chan int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st := make(chan int, 1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, svc.HTTPURL+"/v1/sessions/"+id+"/cast?follow=1", nil)
	if err := certs.SignAPIRequest(req, u.Cert, u.Signer, time.Now()); err != nil {
		t.Fatal(err)
	}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			st <- 0
			return
		}
		st <- resp.StatusCode
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}()
	return cancel, st
}

// TestModeratedSessionE2E: an agent's session on a moderated role waits,
// saying so on stderr with the session id, until a moderator watches it;
// an auditor watching, or the agent itself, does not count; the moderator's
// watch releases it and it runs, recorded with who moderated. Nobody
// joining ends it with exit 119.
func TestModeratedSessionE2E(t *testing.T) {
	dataDir := t.TempDir()
	login := testLogin(t)
	auth := posterntest.Authority(t, dataDir)
	_, web1 := posterntest.SSHD(t, auth, "web-1")
	_, web2 := posterntest.SSHD(t, auth, "web-2")
	cfg := &config.Config{
		DataDir: dataDir,
		Targets: []config.Target{web1, web2},
		Roles: []config.Role{
			{Name: "agents", Match: config.RoleMatch{Users: []string{"bot"}}, Targets: []config.TargetSelector{{Name: "web-1"}},
				Logins: []string{login}, Permissions: []string{"moderator"}, // its own watch must not count
				Moderation: config.Moderation{Required: true, Timeout: config.Duration(time.Minute), Moderators: []string{"sre"}}},
			{Name: "agents-quick", Match: config.RoleMatch{Users: []string{"bot"}}, Targets: []config.TargetSelector{{Name: "web-2"}},
				Logins: []string{login}, Moderation: config.Moderation{Required: true, Timeout: config.Duration(time.Second)}},
			{Name: "mods", Match: config.RoleMatch{Groups: []string{"sre"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Permissions: []string{"moderator"}},
			{Name: "auditors", Match: config.RoleMatch{Users: []string{"audra"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Permissions: []string{"auditor"}},
		},
	}
	svc := posterntest.Start(t, cfg)
	bot := svc.User(certs.Identity{Issuer: "ci", Subject: "bot-sub", Username: "bot", Kind: certs.KindAgent}, login)
	mod := svc.User(certs.Identity{Issuer: "corp", Subject: "mod-sub", Username: "mod", Groups: []string{"sre"}}, login)
	audra := svc.User(certs.Identity{Issuer: "corp", Subject: "audra-sub", Username: "audra"}, login)

	ch := bot.SSHAsync(nil, "web-1", "echo moderated run")
	id := svc.WaitEvent(state.EventSessionStart, nil).Session
	for _, u := range []*posterntest.User{audra, bot} {
		stop, st := follow(t, svc, u, id)
		if code := <-st; code != http.StatusOK {
			t.Fatalf("%s following: status %d", u.Identity.Username, code)
		}
		stop()
	}
	select {
	case r := <-ch:
		t.Fatalf("the session ran without a moderator: exit %d, %s %s", r.Code, r.Stdout, r.Stderr)
	case <-time.After(1500 * time.Millisecond): // two polls of the waiting side
	}
	stop, _ := follow(t, svc, mod, id)
	defer stop()
	r := waitResult(t, ch)
	if r.Code != 0 || strings.TrimSpace(string(r.Stdout)) != "moderated run" {
		t.Fatalf("moderated session: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	want := "postern: waiting up to 1m0s for a moderator to join session " + id + " (postern watch " + id + ")"
	if !strings.Contains(string(r.Stderr), want) || !strings.Contains(string(r.Stderr), "postern: mod joined as moderator") {
		t.Errorf("stderr %q; want the waiting line and who joined", r.Stderr)
	}
	ev := svc.WaitEvent(state.EventSessionModerated, func(e state.Event) bool { return e.Session == id })
	if ev.Details["moderator"] != "mod" {
		t.Errorf("session.moderated = %+v", ev)
	}
	svc.WaitEvent(state.EventSessionSealed, func(e state.Event) bool { return e.Session == id })
	if m := svc.Markers(id); !strings.Contains(m, "moderator required") || !strings.Contains(m, "moderator joined: mod") {
		t.Errorf("markers %q", m)
	}

	r = bot.SSH(nil, nil, "web-2", "echo never")
	if r.Code != lock.ExitNoModerator || strings.Contains(string(r.Stdout), "never") ||
		!strings.Contains(string(r.Stderr), "postern: no moderator joined within 1s; session not started") {
		t.Errorf("unmoderated session: exit %d stdout %q stderr %q; want %d", r.Code, r.Stdout, r.Stderr, lock.ExitNoModerator)
	}
}
