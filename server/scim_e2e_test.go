package server_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/approval"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/scim"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/scimtest"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// TestSCIMProvisioningE2E: an identity provider provisions users and
// groups over SCIM. Role matches and approver groups follow the provisioned
// groups (not the login's); a deactivated approver's Slack clicks are
// refused; deactivating a user ends her live session, refuses her next
// login and her API calls; reactivating lets her back in.
func TestSCIMProvisioningE2E(t *testing.T) {
	const token = "scim-e2e-token-0123456789abcdefghijkl"
	dataDir := t.TempDir()
	login := testLogin(t)
	auth := posterntest.Authority(t, dataDir)
	_, web := posterntest.SSHD(t, auth, "web-1")
	sl := posterntest.NewSlack(t)
	cfg := &config.Config{
		DataDir:   dataDir,
		PublicURL: "https://bastion.test",
		Targets:   []config.Target{web},
		Roles: []config.Role{{
			Name: "ops", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "web-*"}},
			Logins: []string{login}, Record: "required",
			Rules: []config.Rule{{Match: `^\s*sudo\b`, Action: "approve", Approvers: []string{"sre"}, Timeout: config.Duration(2 * time.Minute)}},
		}},
		// carol and dave approve from Slack; only the directory puts them
		// in sre.
		Approvals: config.Approvals{Slack: sl.Config(map[string]string{"UCAROL": "corp:carol@example.com", "UDAVE": "corp:dave@example.com"})},
	}
	cfg.Identity.Issuers = []config.Issuer{{Name: "corp", IssuerURL: "https://idp.test", ClientID: "postern"}}
	cfg.Identity.SCIM = []config.SCIM{{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{{Issuer: "corp"}}}}
	svc := posterntest.Start(t, cfg)
	// alice's certificate carries no group: her role comes from the
	// directory alone.
	alice := svc.User(certs.Identity{Issuer: "corp", Subject: "alice@example.com", Username: "alice@example.com", Kind: certs.KindHuman}, login)

	c := scimtest.New(t, svc.HTTPURL+scim.PathPrefix+"okta", token)
	aliceID := c.CreateUser("alice@example.com")
	carolID := c.CreateUser("carol@example.com")
	daveID := c.CreateUser("dave@example.com")
	ops := c.CreateGroup("ops", aliceID)
	c.CreateGroup("sre", carolID, daveID)

	if r := alice.SSH(nil, nil, "web-1", "echo in-ops"); r.Code != 0 || !strings.Contains(string(r.Stdout), "in-ops") {
		t.Fatalf("alice in the provisioned group ops: exit %d, %s", r.Code, r.Stderr)
	}
	// Out of the group at the identity provider: no role, whatever her
	// certificate says.
	c.RemoveMember(ops, aliceID)
	if r := alice.SSH(nil, nil, "web-1", "echo still"); r.Code != 255 {
		t.Fatalf("alice removed from ops: exit %d, stdout %q; want 255", r.Code, r.Stdout)
	}
	c.AddMember(ops, aliceID)
	if r := alice.SSH(nil, nil, "web-1", "echo back-in-ops"); r.Code != 0 {
		t.Fatalf("alice back in ops: exit %d, %s", r.Code, r.Stderr)
	}

	// A deactivated approver's clicks are refused, a provisioned one's
	// approve.
	res := alice.SSHAsync(nil, "web-1", "sudo -n true 2>/dev/null; echo approved-done")
	req := sl.NextRequest()
	c.SetActive(carolID, false)
	sl.Click(svc, "UCAROL", approval.SlackActionApprove, req)
	sl.Click(svc, "UCAROL", approval.SlackActionTerminate, req)
	a, err := svc.State.GetApproval(t.Context(), req)
	if err != nil || a.Status != state.ApprovalPending {
		t.Fatalf("after the deactivated approver's clicks: %+v, %v; want pending", a, err)
	}
	if n := strings.Count(svc.Logs(), "slack action refused"); n != 2 {
		t.Errorf("%d refused Slack actions logged; want 2", n)
	}
	select {
	case r := <-res:
		t.Fatalf("alice's command ended on the deactivated approver's clicks: exit %d, %s", r.Code, r.Stderr)
	default:
	}
	sl.Click(svc, "UDAVE", approval.SlackActionApprove, req)
	if r := waitResult(t, res); r.Code != 0 || !strings.Contains(string(r.Stdout), "approved-done") {
		t.Fatalf("approved by dave (sre by the directory): exit %d, %s", r.Code, r.Stderr)
	}

	// Deactivating alice ends her live session and locks her out.
	_, live := (&lockEnv{svc: svc}).runningSession(t, alice, "web-1", "scim-live")
	start := time.Now()
	c.SetActive(aliceID, false)
	r := waitResult(t, live)
	t.Logf("session ended %s after the deactivation", time.Since(start).Round(time.Millisecond))
	if r.Code != lock.ExitLocked || !strings.Contains(string(r.Stderr), "your access is locked: deactivated by the identity provider (SCIM okta)") {
		t.Fatalf("alice's live session: exit %d, stderr %q; want %d with the reason", r.Code, r.Stderr, lock.ExitLocked)
	}
	ev := svc.WaitEvent(state.EventLockCreated, func(ev state.Event) bool { return ev.Details["subject"] == "alice@example.com" })
	if ev.Actor != "scim:okta" {
		t.Errorf("lock.created by %q; want scim:okta", ev.Actor)
	}
	if r := sshAtInfo(alice, "web-1", "true"); r.Code != 255 || !strings.Contains(string(r.Stderr), "your access is locked") {
		t.Errorf("alice's login while deactivated: exit %d, stderr %q", r.Code, r.Stderr)
	}
	var body struct{ Code string }
	if st := alice.API(http.MethodGet, "/v1/approvals", nil, &body); st != http.StatusForbidden || body.Code != lock.CodeLocked {
		t.Errorf("alice's API call while deactivated: %d %q; want 403 locked", st, body.Code)
	}

	// Reactivated, she is back.
	c.SetActive(aliceID, true)
	if r := alice.SSH(nil, nil, "web-1", "echo reactivated"); r.Code != 0 || !strings.Contains(string(r.Stdout), "reactivated") {
		t.Errorf("alice reactivated: exit %d, %s", r.Code, r.Stderr)
	}
	svc.WaitEvent(state.EventLockRemoved, func(ev state.Event) bool { return ev.Actor == "scim:okta" })

	// A wrong token is refused.
	bad := scimtest.New(t, c.BaseURL, token+"x")
	if code, _ := bad.Do(http.MethodGet, "/Users", nil); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d; want 401", code)
	}
}
