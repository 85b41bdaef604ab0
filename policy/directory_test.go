package policy

import (
	"slices"
	"testing"

	"github.com/posternhq/postern/certs"
)

// TestWithGroups: an identity the directory knows is matched on the
// directory's groups, not its login's; others keep their login's groups;
// the original engine is unchanged.
func TestWithGroups(t *testing.T) {
	base, err := New(testConfig())
	if err != nil {
		t.Fatal(err)
	}
	bot := certs.Identity{Issuer: "github", Subject: "repo:acme/app", Username: "bot", Kind: certs.KindAgent, Groups: []string{"agents"}}
	newBot := certs.Identity{Issuer: "github", Subject: "repo:acme/new", Username: "new-bot", Kind: certs.KindAgent}
	if !slices.Contains(base.Roles(bot), "agents") || slices.Contains(base.Roles(newBot), "agents") {
		t.Fatalf("roles without a directory: bot %v, new-bot %v", base.Roles(bot), base.Roles(newBot))
	}
	dir := map[string][]string{
		"repo:acme/app": nil,        // known, in no group any more
		"repo:acme/new": {"agents"}, // known, in agents
	}
	e := base.WithGroups(func(id certs.Identity) ([]string, bool) {
		g, ok := dir[id.Subject]
		return g, ok
	})
	if slices.Contains(e.Roles(bot), "agents") {
		t.Errorf("bot out of agents by the directory still has role agents: %v", e.Roles(bot))
	}
	if !slices.Contains(e.Roles(newBot), "agents") {
		t.Errorf("new-bot in agents by the directory: roles %v", e.Roles(newBot))
	}
	web1, _ := e.Lookup("web-1")
	if d := base.Authorize(bot, web1, "deploy", 22); !d.Allow {
		t.Fatalf("bot on web-1 without a directory: %+v", d)
	}
	if d := e.Authorize(bot, web1, "deploy", 22); d.Allow {
		t.Errorf("bot reaches web-1 on its login's groups: %+v", d)
	}
	other := certs.Identity{Issuer: "github", Subject: "repo:acme/other", Username: "other", Kind: certs.KindAgent, Groups: []string{"agents"}}
	if !slices.Contains(e.Roles(other), "agents") {
		t.Errorf("an identity the directory does not know lost its login's groups: %v", e.Roles(other))
	}
	if !slices.Contains(base.Roles(bot), "agents") {
		t.Error("WithGroups changed the original engine")
	}
}
