package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// sec is the security officer of the lock tests: role "sec" with the admin
// permission. mod holds only the moderator permission.
var (
	sec = certs.Identity{Issuer: "https://idp.test", Subject: "sec-sub", Username: "sec", Kind: certs.KindHuman}
	mod = certs.Identity{Issuer: "https://idp.test", Subject: "mod-sub", Username: "mod", Kind: certs.KindHuman}
)

// lockEnv is a whole postern with sshd targets web-1 and web-2, alice in
// role ops on both, and the sec and mod identities.
type lockEnv struct {
	svc        *posterntest.Service
	alice, sec *posterntest.User
	mod        *posterntest.User
}

func newLockEnv(t *testing.T) *lockEnv {
	t.Helper()
	dataDir := t.TempDir()
	login := testLogin(t)
	auth := posterntest.Authority(t, dataDir)
	_, web1 := posterntest.SSHD(t, auth, "web-1")
	_, web2 := posterntest.SSHD(t, auth, "web-2")
	cfg := &config.Config{
		DataDir: dataDir,
		Targets: []config.Target{web1, web2},
		Roles: []config.Role{
			{Name: "ops", Match: config.RoleMatch{Users: []string{"alice"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Record: "required"},
			{Name: "sec", Match: config.RoleMatch{Users: []string{"sec"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Permissions: []string{"admin"}},
			{Name: "mod", Match: config.RoleMatch{Users: []string{"mod"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
				Logins: []string{login}, Permissions: []string{"moderator"}},
		},
	}
	e := &lockEnv{svc: posterntest.Start(t, cfg)}
	e.alice = e.svc.User(alice, login)
	e.sec = e.svc.User(sec, login)
	e.mod = e.svc.User(mod, login)
	return e
}

// runningSession starts a long command of u on target and waits until its
// session has started; it returns the session id and ssh's result channel.
func (e *lockEnv) runningSession(t *testing.T, u *posterntest.User, target, marker string) (string, <-chan testutil.Result) {
	t.Helper()
	ch := u.SSHAsync(nil, target, "echo "+marker+"; exec sleep 120")
	ev := e.svc.WaitEvent(state.EventSessionStart, func(ev state.Event) bool {
		cmd, _ := ev.Details["command"].(string)
		return strings.Contains(cmd, marker)
	})
	return ev.Session, ch
}

// sshAtInfo runs ssh as u at ssh's default log level (INFO; the tests'
// ssh_config says ERROR), on both legs, so that what a user would read —
// the bastion's banner, a channel's refusal — is on stderr.
func sshAtInfo(u *posterntest.User, args ...string) testutil.Result {
	jump := "ssh -F " + u.SSHConfig + " -o LogLevel=INFO -W [%h]:%p bastion"
	return u.SSH(nil, nil, append([]string{"-o", "LogLevel=INFO", "-o", "ProxyCommand=" + jump}, args...)...)
}

// lockVia makes a lock through the API as u and returns it.
func lockVia(t *testing.T, u *posterntest.User, body lock.CreateBody) state.Lock {
	t.Helper()
	var lk state.Lock
	if st := u.API(http.MethodPost, "/v1/locks", body, &lk); st != http.StatusCreated {
		t.Fatalf("POST /v1/locks %+v as %s: status %d", body, u.Identity.Username, st)
	}
	return lk
}

// TestLockIdentityEndsSessionAndRefusesE2E: locking alice ends her running
// session within a second or two with exit 124 and one stderr line naming
// the reason; her next ssh login and her API calls are refused; removing
// the lock lets her back in. Everything is audited.
func TestLockIdentityEndsSessionAndRefusesE2E(t *testing.T) {
	e := newLockEnv(t)
	_, ch := e.runningSession(t, e.alice, "web-1", "identity-lock")

	start := time.Now()
	lk := lockVia(t, e.sec, lock.CreateBody{Kind: "identity", Issuer: alice.Issuer, Subject: alice.Subject,
		Username: alice.Username, Reason: "laptop stolen"})
	r := waitResult(t, ch)
	t.Logf("session ended %s after the lock", time.Since(start).Round(time.Millisecond))
	if r.Code != lock.ExitLocked {
		t.Fatalf("ssh exit %d; want %d\nstdout: %s\nstderr: %s", r.Code, lock.ExitLocked, r.Stdout, r.Stderr)
	}
	want := "postern: your access is locked: laptop stolen (lock " + lk.ID + ")"
	if !strings.Contains(string(r.Stderr), want) {
		t.Errorf("stderr %q lacks %q", r.Stderr, want)
	}
	e.svc.WaitEvent(state.EventLockEnforced, func(ev state.Event) bool { return ev.Details["lock"] == lk.ID })
	e.svc.WaitEvent(state.EventSessionEnd, func(ev state.Event) bool { return ev.Details["ended_by"] == lock.CodeLocked })

	// No new login: the bastion says why before refusing.
	r = sshAtInfo(e.alice, "web-1", "true")
	if r.Code != 255 || !strings.Contains(string(r.Stderr), "your access is locked: laptop stolen") {
		t.Errorf("login while locked: exit %d, stderr %q; want 255 with the lock's reason", r.Code, r.Stderr)
	}
	e.svc.WaitEvent(state.EventAuthFailure, func(ev state.Event) bool { return ev.Details["reason"] == "locked" })
	// No API call.
	var body struct{ Code string }
	if st := e.alice.API(http.MethodGet, "/v1/approvals", nil, &body); st != http.StatusForbidden || body.Code != lock.CodeLocked {
		t.Errorf("API call while locked: %d %q; want 403 locked", st, body.Code)
	}
	// Another identity is untouched.
	if r := e.sec.SSH(nil, nil, "web-1", "echo still-here"); r.Code != 0 {
		t.Errorf("sec's session while alice is locked: exit %d, %s", r.Code, r.Stderr)
	}

	// Only an admin removes the lock; then alice is back.
	if st := e.alice.API(http.MethodDelete, "/v1/locks/"+lk.ID, nil, nil); st != http.StatusForbidden {
		t.Errorf("the locked identity removing its own lock: status %d; want 403", st)
	}
	if st := e.mod.API(http.MethodDelete, "/v1/locks/"+lk.ID, nil, nil); st != http.StatusForbidden {
		t.Errorf("a moderator removing an identity lock: status %d; want 403", st)
	}
	if st := e.sec.API(http.MethodDelete, "/v1/locks/"+lk.ID, nil, nil); st != http.StatusOK {
		t.Fatalf("DELETE /v1/locks/%s: %d", lk.ID, st)
	}
	if r := e.alice.SSH(nil, nil, "web-1", "echo back"); r.Code != 0 || !strings.Contains(string(r.Stdout), "back") {
		t.Errorf("after unlock: exit %d, %s", r.Code, r.Stderr)
	}
	e.svc.WaitEvent(state.EventLockRemoved, func(ev state.Event) bool { return ev.Details["lock"] == lk.ID })
}

// TestLockTargetAndSessionE2E: a moderator terminates one session (a
// session lock) and alice's other session goes on; a target lock ends the
// sessions on that target and refuses new ones with a clear message, while
// another target stays reachable; a moderator may not lock a target.
func TestLockTargetAndSessionE2E(t *testing.T) {
	e := newLockEnv(t)
	id1, ch1 := e.runningSession(t, e.alice, "web-1", "first")
	_, ch2 := e.runningSession(t, e.alice, "web-1", "second")

	if st := e.mod.API(http.MethodPost, "/v1/locks", lock.CreateBody{Kind: "target", Name: "web-1", Reason: "x"}, nil); st != http.StatusForbidden {
		t.Errorf("a moderator locking a target: status %d; want 403", st)
	}
	if st := e.alice.API(http.MethodPost, "/v1/locks", lock.CreateBody{Kind: "session", Name: id1, Reason: "x"}, nil); st != http.StatusForbidden {
		t.Errorf("a plain user terminating a session: status %d; want 403", st)
	}
	lk := lockVia(t, e.mod, lock.CreateBody{Kind: "session", Name: id1, Reason: "wrong database"})
	r := waitResult(t, ch1)
	if r.Code != lock.ExitLocked || !strings.Contains(string(r.Stderr), "postern: session terminated: wrong database (lock "+lk.ID+")") {
		t.Fatalf("terminated session: exit %d, stderr %q", r.Code, r.Stderr)
	}
	select {
	case r := <-ch2:
		t.Fatalf("alice's other session ended too: exit %d, %s", r.Code, r.Stderr)
	default:
	}

	lockVia(t, e.sec, lock.CreateBody{Kind: "target", Name: "web-1", Reason: "restoring backups", For: "1h"})
	r = waitResult(t, ch2)
	if r.Code != lock.ExitLocked || !strings.Contains(string(r.Stderr), "postern: target web-1 is locked: restoring backups") {
		t.Fatalf("session on the locked target: exit %d, stderr %q", r.Code, r.Stderr)
	}
	r = sshAtInfo(e.alice, "web-1", "true")
	if r.Code != 255 || !strings.Contains(string(r.Stderr), "target web-1 is locked: restoring backups") {
		t.Errorf("new session to the locked target: exit %d, stderr %q", r.Code, r.Stderr)
	}
	if r := e.alice.SSH(nil, nil, "web-2", "echo other"); r.Code != 0 {
		t.Errorf("another target while web-1 is locked: exit %d, %s", r.Code, r.Stderr)
	}
	var locks []state.Lock
	if st := e.mod.API(http.MethodGet, "/v1/locks", nil, &locks); st != http.StatusOK || len(locks) != 2 {
		t.Errorf("GET /v1/locks as moderator: %d, %d locks; want 200 and the session and target locks", st, len(locks))
	}
	if st := e.alice.API(http.MethodGet, "/v1/locks", nil, nil); st != http.StatusForbidden {
		t.Errorf("GET /v1/locks as a plain user: %d; want 403", st)
	}
}

// TestSlackTerminateE2E: a command held for approval is terminated from the
// Slack message's Terminate button by a configured approver: ssh exits 124
// with the reason, the request is canceled, and the lock names who did it.
func TestSlackTerminateE2E(t *testing.T) {
	f := newGateEnv(t, []config.Rule{
		{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(time.Minute)},
	})
	ch := f.user.SSHAsync(nil, "web-1", "sudo true")
	id := f.slack.NextRequest()
	f.slack.Click(f.svc, "UCAROL", approval.SlackActionTerminate, id)
	r := waitResult(t, ch)
	if r.Code != lock.ExitLocked || !strings.Contains(string(r.Stderr), "postern: session terminated: terminated from Slack by carol-sub (corp) (request "+id+")") {
		t.Fatalf("ssh: exit %d, stderr %q; want 124 naming the termination", r.Code, r.Stderr)
	}
	f.svc.WaitEvent(state.EventApprovalDecided, func(ev state.Event) bool {
		return ev.Details["request"] == id && ev.Details["status"] == state.ApprovalCanceled
	})
	ev := f.svc.WaitEvent(state.EventLockCreated, nil)
	if ev.Actor != "slack:carol-sub (corp)" || ev.Details["kind"] != state.LockSession {
		t.Errorf("lock.created = %+v; want a session lock by slack:carol-sub (corp)", ev)
	}
}
