// Package dextest starts a real Dex OpenID Connect provider on 127.0.0.1
// for tests, with static users and one static client, and fetches ID tokens
// from it through the OAuth 2.0 password grant.
//
// The Dex binary comes from the tools/dex module (Dex as a Go tool); it is
// found through $POSTERN_DEX or <repo>/bin/dex and built there once if
// missing ("make tools" builds it ahead of time). Dex keeps everything in
// memory (storage type memory), so each [Start] is a clean provider; it is
// killed in t.Cleanup.
//
// Static passwords are stored as bcrypt hashes generated here. The password
// grant goes through Dex's local password database (enablePasswordDB with
// oauth2.passwordConnector "local"), so a test gets a real, signed ID token
// without a browser.
//
// This package is for tests only and must not be imported by non-test code.
package dextest
