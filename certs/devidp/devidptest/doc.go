// Package devidptest runs the development OpenID provider (package devidp)
// on 127.0.0.1 with a random port for tests, and mints tokens with its key.
//
// Start returns a Server that stops when the test ends; Close stops it
// earlier, which tests use to make the issuer unreachable.
package devidptest
