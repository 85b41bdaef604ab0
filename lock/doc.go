// Package lock is postern's kill switch: locks on an identity (issuer +
// subject), a role, a target or a single session. While a lock is active
// (made, not removed, not past its expiry) the sessions it matches end on
// every replica, and the identities it matches get no new certificate, no
// SSH login, no API call and no web session.
//
// # Locker
//
// [New] returns a [*Locker] over the state store. It keeps the active locks
// in memory and reloads them when another replica says they changed (a hint
// on the store's notification channel, LISTEN/NOTIFY on PostgreSQL) and,
// as a fallback for a lost hint, every Options.Poll. [Locker.Lock] and
// [Locker.Unlock] write the store, audit (lock.created, lock.removed),
// reload at once and publish the hint. [Locker.Close] stops the listener
// and the poller.
//
// Lock(ctx, Spec) is the Go entry point other parts of postern (SCIM
// deprovisioning, the Slack Terminate button, the web UI) call; [API] is the
// HTTP API (/v1/locks) that `postern lock` speaks.
//
// # Checks
//
// [Locker.Check] answers from memory, for every API request and web page.
// [Locker.CheckFresh] reads the store first; certificate issuance and SSH
// authentication use it, so a lock made on another replica a moment ago is
// already seen there. A refusal is a *usererr.Error with code "locked",
// HTTP status 403 and exit status [ExitLocked], whose message names the
// lock's reason.
//
// # Live sessions
//
// Whatever lives for a while and must end on a lock — an outer SSH
// connection, a channel to a target, an inner-hop session — registers with
// [Locker.Track], giving the [Subject] it serves and a function that ends
// it with a cause. Every time the active locks change (here or on another
// replica), the Locker ends the tracked entries that an active lock now
// matches, once each, and audits lock.enforced. Role locks match the roles
// Options.Roles gives an identity under the current policy.
//
// # Imports
//
// lock imports the state store, the identity type (certs) and the
// user-visible error; it never imports the bastion, the inner hop, the
// approvals, the players or server: they call it.
package lock
