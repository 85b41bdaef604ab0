// Package saml makes postern a SAML 2.0 service provider, so that people
// whose company signs them in with SAML (Okta, Entra ID, ADFS, Keycloak,
// Google Workspace…) log in to postern — `postern login` in a browser, and
// the web UI — and get the same identity, roles and certificates as from an
// OIDC issuer.
//
// # Flow
//
// A login is started by a client with an OAuth-like request: GET
// /v1/saml/NAME/login with redirect_uri (postern login's loopback listener,
// http://127.0.0.1:PORT/callback, or the web UI's callback), state and an
// S256 PKCE code_challenge. The [SP] stores the request in the state store
// (under a random RelayState), and sends the browser to the identity
// provider with an AuthnRequest signed with postern's key (HTTP-Redirect
// binding, or HTTP-POST if the provider offers only that). The provider
// answers with an HTTP-POST to /v1/saml/NAME/acs; the SP validates the
// answer, maps it to a [certs.Identity] and redirects the browser to the
// client's redirect_uri with a one-time code (two minutes). The client
// redeems the code with its PKCE verifier: postern login sends
// [certs.LoginCodeToken] as the bearer token of POST /v1/certs, where
// [certs.LoginCodes] routes it to [SP.Verify], so the certificate comes
// from the one issuance pipeline (policy, limits, Authority.Sign, audit);
// the web UI calls [SP.Redeem] and opens its session. Every piece of a
// login — the request, the replay cache of assertion ids, the code — lives
// in the state store, so the three requests may reach three replicas.
//
// # What an answer must be
//
// The response or the assertion (or both) must be signed by a signing key
// of the provider's metadata, with RSA or ECDSA over SHA-256 or better
// (SHA-1 is refused); the response must be addressed to the ACS URL and
// come from the provider's entity id; it must answer the very request the
// RelayState names (InResponseTo; IdP-initiated logins are refused); the
// assertion's audience must be postern's entity id, its bearer
// confirmation's recipient the ACS URL; NotBefore and NotOnOrAfter hold
// with three minutes of clock skew; an assertion is accepted once (its id
// is kept until it would expire anyway, in the same write that ends the
// login, so two replicas cannot both accept it). An encrypted assertion
// is decrypted with postern's key; a provider can be made to require
// encryption. The artifact binding is refused (postern never calls the
// provider). The NameID is the identity's subject and must not be
// transient; the username comes from an attribute or the NameID, the
// groups from an attribute, and required attributes must carry their
// values. Provider metadata comes inline or from an https URL (refreshed
// daily, kept on failure).
//
// # Library
//
// The XML signature and encryption handling is crewjam/saml's (with
// russellhaering/goxmldsig underneath), not postern's: XML signature
// wrapping, comment injection and canonicalisation are where SAML
// implementations fail, and a library that has been through those attacks
// (and whose own tests now cover them) is the safer base. crewjam/saml was
// chosen over russellhaering/gosaml2 because it validates InResponseTo,
// destination, recipient, audience and times itself rather than leaving
// them to the caller, produces the service provider's metadata, signs
// AuthnRequests for both bindings, and comes with an identity provider
// (samlidp) that the tests run in-process as a real counterpart; gosaml2
// is a service provider only. Its samlsp package is used only for parsing
// metadata.
//
// # Imports
//
// saml imports certs (the identity and token verifier types), the state
// store and the configuration; it never imports the bastion, the recorder,
// approvals, players, guardrails or server.
package saml
