package certs

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Kind says whether an identity is a person or a workload.
type Kind string

// The identity kinds. The kind selects the certificate lifetime.
const (
	KindHuman Kind = "human"
	KindAgent Kind = "agent"
)

// Identity is who a verified OIDC token says the caller is. It is carried inside
// every user certificate postern issues (in the IdentityExtension), so the
// bastion can evaluate roles without calling the identity provider again.
type Identity struct {
	// Issuer is the configured name of the issuer that vouched for the token.
	Issuer string `json:"iss"`
	// Subject is the token's sub claim.
	Subject string `json:"sub"`
	// Username is the claim selected by the issuer's username_claim.
	Username string `json:"user"`
	// Kind is human or agent, from the issuer's configuration.
	Kind Kind `json:"kind"`
	// Groups are taken from the issuer's groups_claim; empty if none.
	Groups []string `json:"groups,omitempty"`
	// Claims are the token claims the issuer keeps for role matches (its
	// profile's and its claims list: a GitHub Actions token's repository
	// and ref, a Kubernetes service account's namespace); none if empty.
	Claims map[string]string `json:"claims,omitempty"`
	// Alias is the person identity.aliases says this issuer and subject
	// belong to; empty if none. It makes Key the same for every identity
	// of that person, whichever issuer vouched for it.
	Alias string `json:"alias,omitempty"`
}

// AliasKeyPrefix starts the Key of an identity that identity.aliases maps to
// a person. No issuer may be named "alias", so such keys never collide with
// issuer keys.
const AliasKeyPrefix = "alias:"

// IdentityKey returns the key of the identity issuer vouched for as subject:
// "<issuer>:<subject>". Issuer names contain no ':' (the configuration
// refuses them), so the key names one issuer and one subject.
func IdentityKey(issuer, subject string) string { return issuer + ":" + subject }

// Key returns the identity's canonical key: "alias:<name>" when the
// configuration maps it to a person (Alias), else "<issuer>:<subject>".
// Every decision about who someone is — just-in-time grants, who may see or
// decide an approval request, the self-approval check, locks — compares
// keys, never usernames: two issuers may vouch for the same username for
// two different people. An identity without issuer or subject has the key
// "", which equals no other identity's key as far as callers check for it.
func (id Identity) Key() string {
	if id.Alias != "" {
		return AliasKeyPrefix + id.Alias
	}
	if id.Issuer == "" || id.Subject == "" {
		return ""
	}
	return IdentityKey(id.Issuer, id.Subject)
}

// IdentityFromKey returns an identity with key (an alias key or
// "<issuer>:<subject>"), named by the key, for people the configuration names
// by key only (Slack approvers). It reports false for a string that is not a
// key.
func IdentityFromKey(key string) (Identity, bool) {
	is, rest, ok := strings.Cut(key, ":")
	if !ok || is == "" || rest == "" {
		return Identity{}, false
	}
	if is+":" == AliasKeyPrefix {
		return Identity{Alias: rest, Username: rest}, true
	}
	return Identity{Issuer: is, Subject: rest, Username: rest}, true
}

// Names reports whether entry names id: its key, or the issuer and subject
// of an aliased identity. Lists of people in the configuration (approvers)
// hold keys.
func (id Identity) Names(entry string) bool {
	if entry == "" {
		return false
	}
	if entry == id.Key() {
		return true
	}
	return id.Issuer != "" && id.Subject != "" && entry == IdentityKey(id.Issuer, id.Subject)
}

// SameAs reports whether id and other are the same person: both have a key
// and the keys are equal.
func (id Identity) SameAs(other Identity) bool {
	k := id.Key()
	return k != "" && k == other.Key()
}

// Display returns a readable name for messages and listings: the username
// and, when known, the issuer ("alice@example.com (corp)"). It is not a key:
// two identities may display alike.
func (id Identity) Display() string {
	switch {
	case id.Issuer == "":
		return id.Username
	case id.Username == "":
		return id.Key()
	}
	return id.Username + " (" + id.Issuer + ")"
}

// String returns the username, the form used in messages and audit event
// actors. Decisions use Key.
func (id Identity) String() string { return id.Username }

// InGroup reports whether the identity is a member of any of groups.
func (id Identity) InGroup(groups ...string) bool {
	for _, g := range groups {
		if slices.Contains(id.Groups, g) {
			return true
		}
	}
	return false
}

// IdentityExtension is the certificate extension that carries the JSON-encoded
// Identity. OpenSSH ignores extensions it does not know, so the certificate
// stays valid for stock sshd.
const IdentityExtension = "identity@postern"

// ErrNoIdentity reports a certificate that carries no postern identity.
var ErrNoIdentity = errors.New("certificate carries no postern identity")

// EncodeIdentity returns the extension value for id.
func EncodeIdentity(id Identity) string {
	b, err := json.Marshal(id)
	if err != nil {
		// Identity holds only strings; Marshal cannot fail.
		panic(err)
	}
	return string(b)
}

// IdentityFromCert decodes the identity carried by a user certificate that
// postern issued. The caller must have checked the certificate's signature.
func IdentityFromCert(cert *ssh.Certificate) (Identity, error) {
	v, ok := cert.Extensions[IdentityExtension]
	if !ok {
		return Identity{}, ErrNoIdentity
	}
	var id Identity
	if err := json.Unmarshal([]byte(v), &id); err != nil {
		return Identity{}, fmt.Errorf("decode identity extension: %w", err)
	}
	if id.Username == "" || id.Issuer == "" {
		return Identity{}, errors.New("identity extension lacks username or issuer")
	}
	return id, nil
}
