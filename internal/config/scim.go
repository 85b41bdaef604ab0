package config

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SCIM is one SCIM 2.0 client (package certs/scim): an identity provider
// that pushes its users and groups to postern, at
// <public_url>/v1/scim/<name>. Deactivating or deleting a user there locks
// the user's identities here; its groups replace the groups its logins
// carry, in role matches and for approvals.
type SCIM struct {
	// Name identifies the client in the endpoint's path, audit events and
	// locks; unique among SCIM clients.
	Name string `yaml:"name"`
	// BearerToken is what the client sends as "Authorization: Bearer …",
	// usually "${env:…}" or "${file:…}"; at least 32 characters.
	BearerToken string `yaml:"bearer_token"`
	// Issuers are the OIDC issuers and SAML providers whose identities this
	// directory speaks for, each with the SCIM attribute that equals their
	// subject. A plain name means the userName.
	Issuers []SCIMIssuer `yaml:"issuers"`
}

// SCIMIssuer ties an issuer (or SAML provider) to a SCIM directory.
type SCIMIssuer struct {
	// Issuer is the name of an identity.issuers or identity.saml.providers
	// entry.
	Issuer string `yaml:"issuer"`
	// Subject is the SCIM attribute equal to the identities' subject (an ID
	// token's sub, a SAML NameID): userName (default), externalId or email
	// (the primary email).
	Subject string `yaml:"subject"`
}

// UnmarshalYAML accepts a plain issuer name or a mapping.
func (s *SCIMIssuer) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		s.Issuer = n.Value
		return nil
	}
	type plain SCIMIssuer
	return n.Decode((*plain)(s))
}

// SCIM subject attributes.
const (
	SCIMSubjectUserName   = "userName"
	SCIMSubjectExternalID = "externalId"
	SCIMSubjectEmail      = "email"
)

// minSCIMToken is the shortest bearer token accepted.
const minSCIMToken = 32

// validateSCIM checks identity.scim.
func (c *Config) validateSCIM(v *validator) {
	issuers := map[string]bool{}
	for _, is := range c.Identity.Issuers {
		issuers[is.Name] = true
	}
	for _, p := range c.Identity.SAML.Providers {
		issuers[p.Name] = true
	}
	names := map[string]bool{}
	covered := map[string]string{} // issuer → the SCIM client that speaks for it
	for i, s := range c.Identity.SCIM {
		p := fmt.Sprintf("identity.scim[%d]", i)
		switch {
		case s.Name == "":
			v.add(p+".name", "missing; give the SCIM client a short name (it is part of the endpoint's URL)")
		case !validName.MatchString(s.Name) || strings.Contains(s.Name, "."):
			v.add(p+".name", "use letters, digits, '_' and '-' only")
		case names[s.Name]:
			v.add(p+".name", fmt.Sprintf("duplicate SCIM client name %q", s.Name))
		}
		names[s.Name] = true
		if len(s.BearerToken) < minSCIMToken {
			v.add(p+".bearer_token", fmt.Sprintf("must be at least %d characters (generate one: openssl rand -base64 32)", minSCIMToken))
		}
		if len(s.Issuers) == 0 {
			v.add(p+".issuers", "missing; name the issuers or SAML providers whose identities this directory speaks for")
		}
		for j, is := range s.Issuers {
			ip := fmt.Sprintf("%s.issuers[%d]", p, j)
			switch {
			case !issuers[is.Issuer]:
				v.add(ip+".issuer", fmt.Sprintf("unknown issuer %q (define it under identity.issuers or identity.saml.providers)", is.Issuer))
			case covered[is.Issuer] != "":
				v.add(ip+".issuer", fmt.Sprintf("issuer %q is already provisioned by %s; one SCIM client per issuer", is.Issuer, covered[is.Issuer]))
			default:
				covered[is.Issuer] = p
			}
			switch is.Subject {
			case "", SCIMSubjectUserName, SCIMSubjectExternalID, SCIMSubjectEmail:
			default:
				v.add(ip+".subject", "must be userName, externalId or email")
			}
		}
	}
}
