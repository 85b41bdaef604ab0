package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/players"
	"github.com/posternhq/postern/state"
)

// TestSessionsBelongToIdentityKeysE2E: three identities named alice (two
// subjects of one issuer, and a subject of another issuer) record sessions
// through stock ssh; each lists, replays and searches only their own,
// through the API and the postern CLI, and every session row carries its
// identity key. A moderator with the requester's username but another
// subject releases a moderated session; the requester's own person under
// another issuer (identity.aliases) does not.
func TestSessionsBelongToIdentityKeysE2E(t *testing.T) {
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	_, web1 := posterntest.SSHD(t, auth, "web-1")
	_, web2 := posterntest.SSHD(t, auth, "web-2")
	_, web3 := posterntest.SSHD(t, auth, "web-3")
	login := testLogin(t)
	issuers := []string{"corp", "other"}
	const quick = 8 * time.Second
	cfg := &config.Config{
		DataDir: dataDir, PublicURL: "https://bastion.test",
		Identity: twoIssuers(config.Alias{Name: "carl", Identities: []string{"corp:carl-corp", "other:carl-gh"}}),
		Targets:  []config.Target{web1, web2, web3},
		Roles: []config.Role{
			{Name: "dev", Match: config.RoleMatch{Issuers: issuers, Groups: []string{"dev"}},
				Targets: []config.TargetSelector{{Name: "web-1"}}, Logins: []string{login}, Record: "required"},
			{Name: "moderated", Match: config.RoleMatch{Issuers: issuers, Groups: []string{"dev"}},
				Targets: []config.TargetSelector{{Name: "web-2"}}, Logins: []string{login},
				Moderation: config.Moderation{Required: true, Timeout: config.Duration(time.Minute)}},
			{Name: "moderated-quick", Match: config.RoleMatch{Issuers: issuers, Groups: []string{"dev"}},
				Targets: []config.TargetSelector{{Name: "web-3"}}, Logins: []string{login},
				Moderation: config.Moderation{Required: true, Timeout: config.Duration(quick)}},
			{Name: "mods", Match: config.RoleMatch{Issuers: issuers, Groups: []string{"sre"}},
				Targets: []config.TargetSelector{{Name: "none"}}, Logins: []string{login}, Permissions: []string{"moderator"}},
		},
	}
	svc := posterntest.Start(t, cfg)
	alices := []*posterntest.User{
		svc.User(certs.Identity{Issuer: "corp", Subject: "a1", Username: "alice", Groups: []string{"dev"}}, login),
		svc.User(certs.Identity{Issuer: "corp", Subject: "a2", Username: "alice", Groups: []string{"dev", "sre"}}, login),
		svc.User(certs.Identity{Issuer: "other", Subject: "a1", Username: "alice", Groups: []string{"dev"}}, login),
	}
	ctx := context.Background()
	own := make([]string, len(alices))
	for i, u := range alices {
		if r := u.SSH(nil, nil, "web-1", "echo needle-"+u.Identity.Subject); r.Code != 0 {
			t.Fatalf("%s: exit %d, stderr %q", u.Identity.Key(), r.Code, r.Stderr)
		}
		rows, err := svc.State.ListSessions(ctx, state.SessionFilter{IdentityKey: u.Identity.Key()})
		if err != nil || len(rows) != 1 || rows[0].Identity != "alice" || rows[0].Issuer != u.Identity.Issuer {
			t.Fatalf("%s's session rows: %+v, %v; want one, keyed", u.Identity.Key(), rows, err)
		}
		own[i] = rows[0].ID
		svc.WaitEvent(state.EventSessionSealed, func(e state.Event) bool { return e.Session == own[i] })
	}
	(&searchEnv{svc: svc}).waitIndexed(t, int64(len(alices)))

	bin := testutil.PosternBinary(t)
	for i, u := range alices {
		key := u.Identity.Key()
		var rows []state.Session
		if code := u.API("GET", "/v1/sessions", nil, &rows); code != http.StatusOK || len(rows) != 1 || rows[0].ID != own[i] || rows[0].IdentityKey != key {
			t.Errorf("%s lists %d (%+v); want only %s", key, code, rows, own[i])
		}
		var hits []players.SearchHit
		if code := u.API("GET", "/v1/sessions/search?q=needle", nil, &hits); code != http.StatusOK || len(hits) == 0 {
			t.Errorf("%s searching: %d, %d hits; want the own recording", key, code, len(hits))
		}
		for _, h := range hits {
			if h.Session != own[i] {
				t.Errorf("%s's search finds %s (%s)", key, h.Session, h.IdentityKey)
			}
		}
		for j, other := range own {
			want := http.StatusNotFound
			if i == j {
				want = http.StatusOK
			}
			for _, p := range []string{"/v1/sessions/" + other, "/v1/sessions/" + other + "/cast"} {
				if code := u.API("GET", p, nil, nil); code != want {
					t.Errorf("%s GET %s (%s's): %d; want %d", key, p, alices[j].Identity.Key(), code, want)
				}
			}
		}
		// The CLI, with the user's login profile.
		profile := u.Profile(svc)
		r, err := testutil.Run(nil, nil, bin, "sessions", "ls", "--dir", profile, "--json")
		if err != nil || r.Code != 0 || json.Unmarshal(r.Stdout, &rows) != nil || len(rows) != 1 || rows[0].ID != own[i] {
			t.Errorf("%s: postern sessions ls: exit %d, %v, %s %s; want only %s", key, r.Code, err, r.Stdout, r.Stderr, own[i])
		}
		r, err = testutil.Run(nil, nil, bin, "sessions", "search", "needle", "--dir", profile, "--json")
		if err != nil || r.Code != 0 || json.Unmarshal(r.Stdout, &hits) != nil || len(hits) == 0 {
			t.Errorf("%s: postern sessions search: exit %d, %v, %s %s", key, r.Code, err, r.Stdout, r.Stderr)
		}
		for _, h := range hits {
			if h.Session != own[i] {
				t.Errorf("%s: postern sessions search finds %s", key, h.Session)
			}
		}
		other := own[(i+1)%len(own)]
		if r, _ := testutil.Run(nil, nil, bin, "sessions", "show", other, "--dir", profile); r.Code == 0 || !strings.Contains(string(r.Stderr), "no such session") {
			t.Errorf("%s: postern sessions show (another alice's): exit %d, stderr %q; want no such session", key, r.Code, r.Stderr)
		}
		if code := u.API("GET", "/v1/sessions?identity_key="+url.QueryEscape(alices[(i+1)%len(alices)].Identity.Key()), nil, nil); code != http.StatusForbidden {
			t.Errorf("%s listing another alice's by key: %d; want 403", key, code)
		}
	}

	// Moderation: corp's alice a2 (a moderator) shares a1's username and
	// counts for a1's session.
	requester, moderator := alices[0], alices[1]
	ch := requester.SSHAsync(nil, "web-2", "echo moderated run")
	id := svc.WaitEvent(state.EventSessionStart, func(e state.Event) bool { return e.Target == "web-2" }).Session
	stop, _ := follow(t, svc, moderator, id)
	r := waitResult(t, ch)
	stop()
	if r.Code != 0 || strings.TrimSpace(string(r.Stdout)) != "moderated run" || !strings.Contains(string(r.Stderr), "postern: alice joined as moderator") {
		t.Fatalf("moderated by another alice: exit %d stdout %q stderr %q", r.Code, r.Stdout, r.Stderr)
	}
	ev := svc.WaitEvent(state.EventSessionModerated, func(e state.Event) bool { return e.Session == id })
	if ev.Details["moderator_key"] != moderator.Identity.Key() {
		t.Errorf("session.moderated %+v; want moderator_key %s", ev.Details, moderator.Identity.Key())
	}

	// carl under the other issuer, mapped to the same person, moderates
	// nothing of carl's.
	carl := svc.User(certs.Identity{Issuer: "corp", Subject: "carl-corp", Username: "carl", Groups: []string{"dev"}, Alias: "carl"}, login)
	carlGH := svc.User(certs.Identity{Issuer: "other", Subject: "carl-gh", Username: "carl-gh", Groups: []string{"sre"}, Alias: "carl"}, login)
	ch = carl.SSHAsync(nil, "web-3", "echo never")
	start := svc.WaitEvent(state.EventSessionStart, func(e state.Event) bool { return e.Target == "web-3" })
	stop, _ = follow(t, svc, carlGH, start.Session)
	defer stop()
	join := svc.WaitEvent(state.EventSessionJoin, func(e state.Event) bool { return e.Session == start.Session })
	if join.Details["identity_key"] != "alias:carl" {
		t.Errorf("session.join %+v; want identity_key alias:carl", join.Details)
	}
	if d := join.Time.Sub(start.Time); d > quick-2*time.Second {
		t.Fatalf("the join came %s after the start, too late to show it does not count (the machine is slow)", d)
	}
	r = waitResult(t, ch)
	if r.Code != lock.ExitNoModerator || strings.Contains(string(r.Stdout), "never") {
		t.Errorf("carl moderated by himself under another issuer: exit %d stdout %q stderr %q; want %d", r.Code, r.Stdout, r.Stderr, lock.ExitNoModerator)
	}
}
