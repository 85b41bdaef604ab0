// Package battery holds postern's cross-cutting reliability and security
// tests: hostile input and faults that need the whole service, driven through
// the real postern binary, and the soak and connection-storm runs behind
// `make soak` (build tag soak).
//
// Every test builds cmd/postern once, writes a configuration file, starts
// `postern serve` on 127.0.0.1 port 0 and waits for its "postern serving" log
// line. The test owns the process: it is killed (with its process group) at
// cleanup, or on purpose mid-session by the fault tests. Clients are
// golang.org/x/crypto/ssh: user certificates are signed here with the user CA
// that the test generated into the data directory before the service started,
// and the inner hop is dialled through a direct-tcpip channel exactly as
// `ssh -J` does.
//
// docs/security.md maps each claim of postern's threat model to the test
// that backs it; the tests of this package are named there.
//
// This package contains tests only and is never imported.
package battery
