package policy

import "github.com/posternhq/postern/certs"

// GroupsFunc returns the groups a directory (SCIM provisioning) holds for
// an identity, and whether the directory knows the identity at all. It is
// called on every role match, so it must be cheap (in memory).
type GroupsFunc func(id certs.Identity) ([]string, bool)

// WithGroups returns a copy of e whose roles match an identity the
// directory knows on the groups the directory holds for it, not on those
// its login carried (a token's or SAML assertion's groups, kept in its
// certificate): a group change at the identity provider changes what the
// identity may do at its next channel, certificate or API call, without
// waiting for its certificate to expire. Identities the directory does not
// know keep their login's groups. e itself is not changed.
func (e *Engine) WithGroups(groups GroupsFunc) *Engine {
	c := *e
	c.groups = groups
	return &c
}

// withDirectoryGroups returns id with the directory's groups, if it has
// them.
func (e *Engine) withDirectoryGroups(id certs.Identity) certs.Identity {
	if e.groups == nil {
		return id
	}
	if g, ok := e.groups(id); ok {
		id.Groups = g
	}
	return id
}
