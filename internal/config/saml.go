package config

import (
	"fmt"
	"net/url"
	"strings"
)

// SAML configures postern as a SAML 2.0 service provider (package
// certs/saml): people log in at a SAML identity provider in a browser,
// for `postern login` and the web UI, and get the same identity and
// certificates as from an OIDC issuer. A provider's name is used in role
// matches (roles[].match.issuers) like an OIDC issuer's.
type SAML struct {
	// Key is the service provider's PEM private key (RSA, at least 2048
	// bits), which signs authentication requests and decrypts encrypted
	// assertions, usually "${file:…}"; if empty, an RSA-3072 key is
	// generated once into the state store, shared by every replica.
	Key string `yaml:"key"`
	// Certificate is the PEM certificate of Key that the metadata
	// publishes; required with Key, generated (self-signed, 10 years)
	// beside a generated key.
	Certificate string `yaml:"certificate"`
	// Providers are the SAML identity providers people may log in with;
	// none if empty.
	Providers []SAMLProvider `yaml:"providers"`
}

// SAMLProvider is one SAML identity provider.
type SAMLProvider struct {
	// Name identifies the provider in roles, audit events and URLs
	// (/v1/saml/<name>/…); unique among issuers and providers.
	Name string `yaml:"name"`
	// DisplayName is shown on the web UI's login page; Name if empty.
	DisplayName string `yaml:"display_name"`
	// MetadataURL is where the provider publishes its metadata (https;
	// http only on loopback), fetched at the first login and every 24h.
	MetadataURL string `yaml:"metadata_url"`
	// Metadata is the provider's metadata XML itself, usually
	// "${file:…}"; instead of MetadataURL.
	Metadata string `yaml:"metadata"`
	// EntityID is postern's entity id at this provider (the audience its
	// assertions must name); <public_url>/v1/saml/<name>/metadata if empty.
	EntityID string `yaml:"entity_id"`
	// NameIDFormat is the NameID format requested: persistent (default),
	// email or unspecified. The NameID is the identity's subject; a
	// transient NameID is always refused.
	NameIDFormat string `yaml:"name_id_format"`
	// UsernameAttribute names the attribute (Name or FriendlyName) that
	// holds the username; the NameID if empty.
	UsernameAttribute string `yaml:"username_attribute"`
	// GroupsAttribute names the attribute whose values are the groups;
	// none if empty.
	GroupsAttribute string `yaml:"groups_attribute"`
	// Require lists attributes that must be present with exactly these
	// values.
	Require map[string]string `yaml:"require"`
	// RequireEncryption refuses assertions that are not encrypted to
	// postern's key; plain assertions (signed) are accepted if false.
	RequireEncryption bool `yaml:"require_encryption"`
}

// SAML NameID formats a provider may be asked for.
var samlNameIDFormats = map[string]bool{"": true, "persistent": true, "email": true, "unspecified": true}

// validateSAML checks identity.saml.
func (c *Config) validateSAML(v *validator) {
	s := c.Identity.SAML
	if (s.Key == "") != (s.Certificate == "") {
		v.add("identity.saml.certificate", "set key and certificate together, or neither (postern then generates them)")
	}
	names := map[string]bool{}
	for _, is := range c.Identity.Issuers {
		names[is.Name] = true
	}
	for i, p := range s.Providers {
		path := fmt.Sprintf("identity.saml.providers[%d]", i)
		switch {
		case p.Name == "":
			v.add(path+".name", "missing; give the provider a short name used in roles")
		case !validName.MatchString(p.Name) || strings.Contains(p.Name, "."):
			v.add(path+".name", "use letters, digits, '_' and '-' only")
		case names[p.Name]:
			v.add(path+".name", fmt.Sprintf("%q names another issuer or provider; names must be unique", p.Name))
		case p.Name == "alias":
			v.add(path+".name", `"alias" is reserved for identity aliases; choose another name`)
		}
		names[p.Name] = true
		switch {
		case (p.MetadataURL == "") == (p.Metadata == ""):
			v.add(path+".metadata_url", "set metadata_url or metadata (the provider's metadata XML), not both")
		case p.MetadataURL != "":
			if u, err := url.Parse(p.MetadataURL); err != nil || u.Host == "" || (u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname()))) {
				v.add(path+".metadata_url", "must be an https URL (http only on loopback)")
			}
		}
		if p.EntityID != "" {
			if u, err := url.Parse(p.EntityID); err != nil || u.Scheme == "" {
				v.add(path+".entity_id", "must be a URI such as https://bastion.example.com/saml")
			}
		}
		if !samlNameIDFormats[p.NameIDFormat] {
			v.add(path+".name_id_format", "must be persistent, email or unspecified")
		}
	}
}
