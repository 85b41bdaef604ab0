package certs

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

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
}

// String returns the username, the form used in messages and audit events.
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
