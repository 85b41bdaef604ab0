package config

import (
	"strings"
	"testing"
)

// TestSAMLSCIMSearchConfig: the SAML, SCIM and search sections parse, and
// every invalid value is refused naming its key.
func TestSAMLSCIMSearchConfig(t *testing.T) {
	const token = "0123456789abcdef0123456789abcdef"
	c, err := Parse([]byte(`
identity:
  issuers: [{name: corp, issuer_url: 'https://idp.example.com', client_id: postern}]
  saml:
    providers:
      - {name: okta, metadata_url: 'https://corp.okta.com/app/x/sso/saml/metadata', groups_attribute: groups}
  scim:
    - name: okta
      bearer_token: ` + token + `
      issuers: [okta, {issuer: corp, subject: externalId}]
search: {max_output_text: -1}
`))
	if err != nil {
		t.Fatal(err)
	}
	s := c.Identity.SCIM[0]
	if s.Name != "okta" || len(s.Issuers) != 2 || s.Issuers[0] != (SCIMIssuer{Issuer: "okta"}) ||
		s.Issuers[1] != (SCIMIssuer{Issuer: "corp", Subject: SCIMSubjectExternalID}) {
		t.Errorf("identity.scim = %+v", c.Identity.SCIM)
	}
	if c.Identity.SAML.Providers[0].GroupsAttribute != "groups" || c.Search.MaxOutputText != -1 {
		t.Errorf("saml provider %+v, search %+v", c.Identity.SAML.Providers[0], c.Search)
	}

	const saml = "identity: {saml: {providers: ["
	const scim = "identity: {issuers: [{name: corp, issuer_url: 'https://idp', client_id: c}], scim: ["
	tests := []struct{ name, src, want string }{
		{"saml key alone", "identity: {saml: {key: k}}", "identity.saml.certificate: set key and certificate together"},
		{"saml name missing", saml + "{metadata_url: 'https://idp/m'}]}}", "identity.saml.providers[0].name: missing"},
		{"saml name characters", saml + "{name: 'a.b', metadata_url: 'https://idp/m'}]}}", "identity.saml.providers[0].name: use letters"},
		{"saml name taken by an issuer", "identity: {issuers: [{name: x, issuer_url: 'https://idp', client_id: c}], saml: {providers: [{name: x, metadata_url: 'https://idp/m'}]}}",
			"identity.saml.providers[0].name: \"x\" names another issuer"},
		{"saml no metadata", saml + "{name: a}]}}", "identity.saml.providers[0].metadata_url: set metadata_url or metadata"},
		{"saml both metadata", saml + "{name: a, metadata_url: 'https://idp/m', metadata: '<x/>'}]}}", "identity.saml.providers[0].metadata_url: set metadata_url or metadata"},
		{"saml http metadata", saml + "{name: a, metadata_url: 'http://idp.example.com/m'}]}}", "identity.saml.providers[0].metadata_url: must be an https URL"},
		{"saml entity id", saml + "{name: a, metadata_url: 'https://idp/m', entity_id: 'not a uri'}]}}", "identity.saml.providers[0].entity_id: must be a URI"},
		{"saml name alias", saml + "{name: alias, metadata_url: 'https://idp/m'}]}}", `identity.saml.providers[0].name: "alias" is reserved`},
		{"saml name id format", saml + "{name: a, metadata_url: 'https://idp/m', name_id_format: transient}]}}", "identity.saml.providers[0].name_id_format: must be persistent"},
		{"scim name missing", scim + "{bearer_token: " + token + ", issuers: [corp]}]}", "identity.scim[0].name: missing"},
		{"scim name characters", scim + "{name: 'a/b', bearer_token: " + token + ", issuers: [corp]}]}", "identity.scim[0].name: use letters"},
		{"scim name duplicate", scim + "{name: a, bearer_token: " + token + ", issuers: [corp]}, {name: a, bearer_token: " + token + ", issuers: [corp]}]}",
			`identity.scim[1].name: duplicate SCIM client name "a"`},
		{"scim short token", scim + "{name: a, bearer_token: short, issuers: [corp]}]}", "identity.scim[0].bearer_token: must be at least 32 characters"},
		{"scim no issuers", scim + "{name: a, bearer_token: " + token + "}]}", "identity.scim[0].issuers: missing"},
		{"scim unknown issuer", scim + "{name: a, bearer_token: " + token + ", issuers: [nope]}]}", `identity.scim[0].issuers[0].issuer: unknown issuer "nope"`},
		{"scim issuer twice", scim + "{name: a, bearer_token: " + token + ", issuers: [corp]}, {name: b, bearer_token: " + token + ", issuers: [corp]}]}",
			`identity.scim[1].issuers[0].issuer: issuer "corp" is already provisioned by identity.scim[0]`},
		{"scim subject", scim + "{name: a, bearer_token: " + token + ", issuers: [{issuer: corp, subject: phone}]}]}", "identity.scim[0].issuers[0].subject: must be userName, externalId or email"},
		{"search output", "search: {max_output_text: -2}", "search.max_output_text: must be a number of bytes"},
		{"search output huge", "search: {max_output_text: 1000000000}", "search.max_output_text: must be a number of bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%q) = %v; want an error containing %q", tt.src, err, tt.want)
			}
		})
	}
	// The bearer token never shows in an error.
	_, err = Parse([]byte(scim + "{name: a, bearer_token: " + token + ", issuers: [nope]}]}"))
	if err == nil || strings.Contains(err.Error(), token) {
		t.Errorf("error %v shows the token", err)
	}
}

// TestSAMLProvidersAreIssuers: a SAML provider's name is an issuer for
// aliases and Slack approver keys, like an OIDC issuer's.
func TestSAMLProvidersAreIssuers(t *testing.T) {
	c, err := Parse([]byte(`
identity:
  issuers: [{name: corp, issuer_url: 'https://idp.example.com', client_id: postern}]
  saml: {providers: [{name: okta, metadata_url: 'https://example.okta.com/app/x/sso/saml/metadata'}]}
  aliases: [{name: alice, identities: ['corp:00u1', 'okta:alice@example.com']}]
approvals:
  slack: {signing_secret: s, approvers: {U1: 'okta:bob@example.com'}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.AliasOf("okta", "alice@example.com") != "alice" || !c.IsPersonKey("okta:bob@example.com") {
		t.Errorf("SAML identities: alias %q, person key %v", c.AliasOf("okta", "alice@example.com"), c.IsPersonKey("okta:bob@example.com"))
	}
}
