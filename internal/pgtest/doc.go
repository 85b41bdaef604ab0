// Package pgtest starts a real PostgreSQL 15 server on 127.0.0.1 for tests.
//
// [Start] gives a test its own server, killed in t.Cleanup. Since initdb
// takes seconds, the first start on a machine builds a pristine cluster
// once (a template under the system temporary directory, keyed by the
// PostgreSQL binary) and every later start copies it, which takes a
// fraction of a second. Clusters live in /dev/shm when it exists. [Shared] goes further: one server per test binary,
// started on first use and stopped by [RunMain] from TestMain; tests
// sharing it take a private database each with [Server.NewDB].
//
// The server runs with fsync off and small buffers: durability does not
// matter for tests. Authentication: the superuser "postgres" is trusted on
// the unix socket and on 127.0.0.1; the role [PasswordUser] must give
// [Password] (scram-sha-256) over TCP, for tests of password handling.
//
// PostgreSQL refuses to run as root, so when the test runs as root the
// server runs as the "postgres" OS user the Debian package creates.
//
// This package is for tests only and must not be imported by non-test code.
package pgtest
