// Package scim is postern's SCIM 2.0 service provider (RFC 7643, RFC 7644):
// identity providers (Okta, Microsoft Entra ID, OneLogin, Keycloak with a
// SCIM plugin…) push their users and groups to <public_url>/v1/scim/<name>,
// one endpoint per configured client (identity.scim), each authenticated by
// its own bearer token (compared in constant time, never logged).
//
// # What provisioning does
//
// A client speaks for the identities of some issuers (OIDC issuers and
// SAML providers by name): a provisioned user stands for the identity
// (issuer, subject) of each, its subject being the user's userName, its
// externalId or its primary email, as configured.
//
//   - A user deactivated (active false, or Entra ID's "False") or deleted
//     is deprovisioned: each identity it stands for is locked through the
//     kill switch ([Locker], the lock package's Locker): its live sessions
//     end on every replica, and its certificates, logins, API calls and
//     web sessions are refused. An identity identity.aliases maps to a
//     person has the person's alias locked instead (every identity of
//     theirs, at every issuer). The lock is recorded with the user;
//     reactivating the user, or provisioning the userName of a deleted one
//     anew (for the same identities), removes it. Repeating a change (a
//     client retrying) makes no second lock. A deleted user stays as a
//     tombstone, invisible over SCIM, so postern keeps refusing it.
//   - Groups replace the groups a login carried. [Directory] is every
//     replica's in-memory copy of the provisioned users and groups,
//     reloaded on the state store's announcement of a change and polled as
//     a fallback; the policy asks it for the groups of an identity at every
//     role match (new channels, certificates, API permissions), and the
//     approval broker asks it about every approver before a decision
//     ([Directory.Approver]): a deprovisioned approver is refused — also
//     a Slack user mapped to their identity key or alias — and a known one
//     decides with its provisioned groups.
//     Identities a client does not know keep their login's groups. A
//     session already running when its user leaves a group goes on; its
//     next channel is matched again.
//
// userName and email subjects are matched without case (SCIM's userName is
// case-insensitive), externalId exactly; the identity locks record the
// subject as provisioned, and lock matching is exact, so configure the
// subject attribute whose value the identity provider also puts in its
// tokens or assertions (an Okta app's NameID "Okta username", an ID token's
// email claim).
//
// # Library
//
// The protocol (routing, the resource schemas and their validation, list
// responses, filters, PATCH message parsing, error bodies) is
// elimity-com/scim's: it is the maintained Go SCIM server library, leaves
// storage to the application through its ResourceHandler, and ships the
// core and enterprise schemas. postern adds what it leaves to the
// application: the storage in the state store (state.SCIMUser,
// state.SCIMGroup), applying PATCH operations (including the value-filter
// paths and the shapes Okta and Entra ID send), and what a change means.
//
// This package must not import the bastion, recorder, players, approval,
// guardrails or server packages, nor the lock package, which server wires
// in as the [Locker] (docs/architecture.md).
package scim
