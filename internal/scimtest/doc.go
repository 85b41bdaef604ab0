// Package scimtest is a SCIM 2.0 client for tests: it provisions users and
// groups at a postern SCIM endpoint with the requests identity providers
// send (Okta's shapes: POST, a PATCH replacing "active", group member adds
// and removals with a value filter), over HTTP with a bearer token, and
// fails the test on any unexpected answer.
//
// This package is for tests only and must not be imported by non-test code.
package scimtest
