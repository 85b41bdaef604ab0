package certs

import "testing"

func TestIdentityKey(t *testing.T) {
	corp := Identity{Issuer: "corp", Subject: "00u1", Username: "alice"}
	other := Identity{Issuer: "github", Subject: "00u1", Username: "alice"}
	aliased := Identity{Issuer: "github", Subject: "42", Username: "alice-gh", Alias: "alice"}
	tests := []struct {
		name    string
		id      Identity
		key     string
		display string
	}{
		{"issuer and subject", corp, "corp:00u1", "alice (corp)"},
		{"same username, other issuer", other, "github:00u1", "alice (github)"},
		{"alias", aliased, "alias:alice", "alice-gh (github)"},
		{"no subject", Identity{Issuer: "corp", Username: "bob"}, "", "bob (corp)"},
		{"subject with colons", Identity{Issuer: "gh", Subject: "repo:o/r:ref:main"}, "gh:repo:o/r:ref:main", "gh:repo:o/r:ref:main"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id.Key(); got != tt.key {
				t.Errorf("Key() = %q; want %q", got, tt.key)
			}
			if got := tt.id.Display(); got != tt.display {
				t.Errorf("Display() = %q; want %q", got, tt.display)
			}
		})
	}
	if corp.SameAs(other) {
		t.Error("one username from two issuers is one person")
	}
	if !corp.SameAs(corp) {
		t.Error("an identity is not itself")
	}
	if (Identity{Username: "x"}).SameAs(Identity{Username: "x"}) {
		t.Error("identities without keys are the same person")
	}
	if !aliased.SameAs(Identity{Issuer: "corp", Subject: "9", Alias: "alice"}) {
		t.Error("two identities with one alias are two people")
	}
}
