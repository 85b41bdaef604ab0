package policy

import (
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

func TestWithGrants(t *testing.T) {
	cfg := testConfig()
	cfg.Roles[1].Rules = []config.Rule{{Match: "^sudo", Action: "approve", Approvers: []string{"sre"}}}
	base, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	alice := certs.Identity{Issuer: "corp", Subject: "alice-sub", Username: "alice@example.com"}
	web1, _ := base.Lookup("web-1")
	pg, _ := base.Lookup("pg-prod")
	if d := base.Authorize(alice, web1, "ubuntu", 22); d.Allow {
		t.Fatalf("web-1 allowed without a grant: %+v", d)
	}
	grants := map[string][]AccessGrant{
		"corp:alice-sub": {
			{ID: "g-old", Target: "web-1", Expires: time.Now().Add(-time.Minute)},
			{ID: "g1", Target: "web-1", Expires: time.Now().Add(time.Hour)},
			{ID: "g2", Target: "pg-prod", Expires: time.Now().Add(time.Hour)},
		},
	}
	e := base.WithGrants(func(id certs.Identity) []AccessGrant { return grants[id.Key()] })
	if d := base.Authorize(alice, web1, "ubuntu", 22); d.Allow {
		t.Error("WithGrants changed the original engine")
	}
	tests := []struct {
		name   string
		target *Target
		login  string
		port   int
		allow  bool
	}{
		{"granted ssh target, role login", web1, "ubuntu", 22, true},
		{"granted ssh target, any login", web1, "", 22, true},
		{"granted ssh target, foreign login", web1, "root", 22, false},
		{"granted ssh target, wrong port", web1, "ubuntu", 2222, false},
		{"granted tcp target", pg, "", 5432, true},
		{"granted tcp target, wrong port", pg, "", 5433, false},
		{"nil target", nil, "ubuntu", 22, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.Authorize(alice, tt.target, tt.login, tt.port)
			if d.Allow != tt.allow {
				t.Fatalf("Allow = %v; want %v (%+v)", d.Allow, tt.allow, d)
			}
			if !d.Allow {
				if !strings.Contains(d.Reason, "not allowed") {
					t.Errorf("reason %q", d.Reason)
				}
				return
			}
			if d.Code != CodeAllowedByGrant || d.Record != RecordRequired || !strings.HasPrefix(d.Role, "grant:g") ||
				d.MaxSession <= 0 || d.MaxSession > time.Hour || len(d.Rules) != 1 {
				t.Errorf("decision %+v", d)
			}
		})
	}
	// Someone else's grant does not apply; role decisions are unchanged.
	bob := certs.Identity{Issuer: "corp", Subject: "bob-sub", Username: "bob@example.com"}
	if d := e.Authorize(bob, web1, "ubuntu", 22); d.Allow {
		t.Errorf("bob allowed by alice's grant")
	}
	// Nor does alice's grant apply to another issuer's alice.
	other := certs.Identity{Issuer: "other", Subject: "alice-sub", Username: "alice@example.com"}
	if d := e.Authorize(other, web1, "ubuntu", 22); d.Allow {
		t.Errorf("another issuer's alice allowed by corp alice's grant")
	}
	web2, _ := e.Lookup("web-2")
	if d := e.Authorize(alice, web2, "ubuntu", 22); !d.Allow || d.Code != CodeAllowed {
		t.Errorf("role access changed: %+v", d)
	}
}

// TestGrantPassthroughPrincipals: a certificate carries "<target>:<login>"
// for exactly the passthrough targets and logins the roles grant together.
func TestGrantPassthroughPrincipals(t *testing.T) {
	cfg := &config.Config{
		Targets: []config.Target{
			{Name: "pass-1", Kind: config.KindSSH, Address: "10.0.0.1:22", Passthrough: true},
			{Name: "pass-2", Kind: config.KindSSH, Address: "10.0.0.2:22", Passthrough: true},
			{Name: "web-1", Kind: config.KindSSH, Address: "10.0.0.3:22"},
		},
		Roles: []config.Role{
			{Name: "a", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "pass-1"}, {Name: "web-1"}}, Logins: []string{"deploy"}},
			{Name: "b", Match: config.RoleMatch{Groups: []string{"dba"}}, Targets: []config.TargetSelector{{Name: "pass-2"}}, Logins: []string{"postgres", "deploy"}},
		},
	}
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := e.Grant(certs.Identity{Issuer: "corp", Subject: "x", Username: "x", Groups: []string{"ops", "dba"}})
	if want := []string{"pass-1:deploy", "pass-2:postgres", "pass-2:deploy"}; strings.Join(g.Passthrough, ",") != strings.Join(want, ",") {
		t.Errorf("passthrough principals %q; want %q", g.Passthrough, want)
	}
	if g := e.Grant(certs.Identity{Issuer: "corp", Subject: "y", Username: "y", Groups: []string{"ops"}}); strings.Join(g.Passthrough, ",") != "pass-1:deploy" {
		t.Errorf("ops only: %q; want pass-1:deploy", g.Passthrough)
	}
}
