package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/state"
)

// TestIdentityIsIssuerAndSubject: two issuers vouch for a "bob" each; they
// are two people. The other issuer's bob neither sees corp bob's access
// request nor gets the grant its approval creates, and stock ssh to the
// granted target fails for him. A person known to two issuers under two
// usernames is one person only where identity.aliases says so, and then
// cannot approve their own request from the other issuer.
// twoIssuers is the identity configuration of two issuers, corp and other,
// that vouch for people by the same usernames, with aliases.
func twoIssuers(aliases ...config.Alias) config.Identity {
	return config.Identity{
		Issuers: []config.Issuer{
			{Name: "corp", IssuerURL: "https://idp.test", Audience: "postern", Kind: "agent"},
			{Name: "other", IssuerURL: "https://other.test", Audience: "postern", Kind: "agent"},
		},
		Aliases: aliases,
	}
}

func TestIdentityIsIssuerAndSubject(t *testing.T) {
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	_, web := posterntest.SSHD(t, auth, "web-1")
	login := testLogin(t)
	cfg := &config.Config{
		DataDir: dataDir, PublicURL: "https://bastion.test",
		Identity: twoIssuers(config.Alias{Name: "bob", Identities: []string{"corp:bob-corp", "other:bob-gh"}}),
		Targets:  []config.Target{web},
		Roles: []config.Role{
			{Name: "dev", Match: config.RoleMatch{Issuers: []string{"corp", "other"}, Groups: []string{"dev"}},
				Targets: []config.TargetSelector{{Name: "none"}}, Logins: []string{login}},
			{Name: "approvers", Match: config.RoleMatch{Issuers: []string{"corp", "other"}, Groups: []string{"sre"}},
				Permissions: []string{"approver"}},
		},
	}
	svc := posterntest.Start(t, cfg)
	bobCorp := svc.User(certs.Identity{Issuer: "corp", Subject: "bob-corp", Username: "bob", Groups: []string{"dev"}, Alias: "bob"}, login)
	bobOther := svc.User(certs.Identity{Issuer: "other", Subject: "bob-other", Username: "bob", Groups: []string{"dev"}}, login)
	bobGH := svc.User(certs.Identity{Issuer: "other", Subject: "bob-gh", Username: "robert", Groups: []string{"sre"}, Alias: "bob"}, login)
	carol := svc.User(certs.Identity{Issuer: "corp", Subject: "carol", Username: "carol", Groups: []string{"sre"}}, login)

	var req state.Approval
	if code := bobCorp.API("POST", "/v1/approvals", map[string]string{"target": "web-1", "login": login, "for": "1h", "reason": "incident"}, &req); code != http.StatusCreated {
		t.Fatalf("access request: %d", code)
	}
	if req.RequesterKey != "alias:bob" || req.Requester != "bob (corp)" {
		t.Errorf("requester %q key %q; want bob (corp), alias:bob", req.Requester, req.RequesterKey)
	}
	// The other issuer's bob does not see it.
	var list []state.Approval
	if code := bobOther.API("GET", "/v1/approvals", nil, &list); code != http.StatusOK || len(list) != 0 {
		t.Errorf("other issuer's bob lists %d requests (%d); want none", len(list), code)
	}
	if code := bobOther.API("GET", "/v1/approvals/"+req.ID, nil, nil); code != http.StatusNotFound {
		t.Errorf("other issuer's bob reads the request: %d; want 404", code)
	}
	if code := bobCorp.API("GET", "/v1/approvals/"+req.ID, nil, nil); code != http.StatusOK {
		t.Errorf("requester reads the request: %d; want 200", code)
	}
	// bob under his other issuer and username is still bob: no self-approval.
	var e struct{ Code string }
	if code := bobGH.API("POST", "/v1/approvals/"+req.ID+"/approve", map[string]string{}, &e); code != http.StatusForbidden || e.Code != "self_approval" {
		t.Fatalf("bob approving his own request from another issuer: %d %q; want 403 self_approval", code, e.Code)
	}
	if code := carol.API("POST", "/v1/approvals/"+req.ID+"/approve", map[string]string{}, nil); code != http.StatusOK {
		t.Fatalf("carol approves: %d", code)
	}

	// The grant is corp bob's (and his alias's), not the other issuer's bob's.
	if r := bobCorp.SSH(nil, nil, "web-1", "echo granted"); r.Code != 0 || !strings.Contains(string(r.Stdout), "granted") {
		t.Fatalf("granted bob: exit %d, stderr %q", r.Code, r.Stderr)
	}
	r := bobOther.SSH(nil, nil, "web-1", "echo granted")
	if r.Code == 0 || strings.Contains(string(r.Stdout), "granted") {
		t.Fatalf("other issuer's bob: exit %d, stdout %q, stderr %q; want refused", r.Code, r.Stdout, r.Stderr)
	}
	svc.WaitEvent(state.EventChannelDeny, func(e state.Event) bool {
		return e.Target == "web-1" && e.Details["code"] == "target_not_allowed"
	})
}
