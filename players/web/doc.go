// Package web is postern's browser UI, served at /ui/: a sessions list with
// the filters of `postern sessions ls`, a replay page built on
// asciinema-player (with the metadata panel, the integrity status and a
// marker list that seeks the player), and a live view of running sessions.
//
// # Login
//
// Users log in with the configured OIDC issuer: authorization code flow
// with PKCE (S256), state and nonce, kept between the redirect and the
// callback in a short-lived cookie sealed (AES-256-GCM) with a key every
// replica shares through the state store (CookieKey). The ID token is
// verified by the same verifier as POST /v1/certs, and the resulting
// identity is kept server-side, in the state store's web sessions: the
// session cookie holds only a random token (HttpOnly, SameSite=Lax, Secure
// and __Host- prefixed when the public URL is https), the row is keyed by its
// SHA-256. Any replica serves any request of the session; logout deletes the
// row (a captured cookie stops working at once, everywhere), and so does the
// revocation of a certificate of the same identity (state.Store.Revoke) or
// state.Store.EndWebSessions (issuer + subject), the hook identity locks use.
// Permissions are evaluated on every request from the identity's roles: only
// auditors and admins see sessions; anyone else gets a 403 page.
//
// # Browser security
//
// Every answer carries a Content-Security-Policy without 'unsafe-inline':
// scripts and styles are files (static/app.js mounts the player),
// 'wasm-unsafe-eval' lets the player compile its WebAssembly terminal.
// State-changing requests (POST: logout and approval decisions) need the session's CSRF
// token and, when the browser sends them, a same-origin Origin and
// Sec-Fetch-Site.
//
// # Assets
//
// asciinema-player comes from npm (package.json, package-lock.json); `make
// web` runs npm ci and build.mjs, which copies its bundle into assets/,
// embedded with go:embed. Without them the pages still load and the replay
// page says "player assets not built: run make web".
//
// # Live view
//
// A running session is streamed to asciinema-player's eventsource driver as
// server-sent events: a {"cols","rows"} reset, then [time, code, data]
// events as the recorder writes them, then a "done" event.
//
// # Approvals
//
// With Options.Approvals set, identities with the approver or admin
// permission get /ui/approvals (pending requests first, then recently
// decided ones) and /ui/approvals/{id}, the page the bastion's request
// links point at, with Approve and Deny forms. A decision is a POST with
// the CSRF token to /ui/approvals/{id}/approve or /deny, made as the
// logged-in identity; the answer redirects back to the request, with the
// outcome (or the broker's refusal, such as a self-approval) in a
// one-minute sealed flash cookie. The web UI does not import the bastion:
// the bastion adapts its approval broker to the Approvals interface.
//
// # Imports
//
// web imports players, the recorder, the state store and certs; it never
// imports the bastion, approvals (it is given an Approvals), guardrails or
// server.
package web
