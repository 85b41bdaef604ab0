// Package samltest runs a real SAML 2.0 identity provider in the test's
// process: crewjam/saml's samlidp on 127.0.0.1, with users and passwords,
// its login form, signed (and, for service providers that publish an
// encryption key, encrypted) assertions. Tests drive a login through it
// the way a browser would ([IdP.Login]), post its answers as they are or
// altered ([Answer]), make it sign assertions of their choosing
// ([IdP.Tamper]) and sign altered responses with its key ([IdP.Sign]) for
// hostile cases.
//
// This package is for tests only and must not be imported by non-test code.
package samltest
