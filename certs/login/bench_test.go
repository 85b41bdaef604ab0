package login_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/certs/login"
	"github.com/posternhq/postern/internal/config"
)

// benchBastion is a development issuer and a bastion without practical
// rate limits.
func benchBastion(b *testing.B, dev bool) (*devidptest.Server, *testBastion) {
	idp := devidptest.Start(b, devidp.Options{})
	tb := startBastion(b, bastionOptions{
		Issuers:   []config.Issuer{devIssuer("dev", idp.URL)},
		Dev:       map[string]bool{"dev": dev},
		RateLimit: config.RateLimit{PerIdentity: 1 << 30, PerSource: 1 << 30},
	})
	return idp, tb
}

// BenchmarkLoginTokenFile measures a forced renewal with a token file: GET
// /v1/config, POST /v1/certs (token verification, signing) and the profile
// written with fsync'd atomic renames.
func BenchmarkLoginTokenFile(b *testing.B) {
	idp, tb := benchBastion(b, false)
	file := filepath.Join(b.TempDir(), "token")
	if err := os.WriteFile(file, []byte(idp.Mint(b, nil)), 0o600); err != nil {
		b.Fatal(err)
	}
	o := login.Options{Bastion: tb.URL, Dir: b.TempDir(), Mode: login.ModeTokenFile, TokenFile: file, Force: true}
	for b.Loop() {
		if _, err := login.Login(b.Context(), o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoginDevBrowser measures the headless browser flow against the
// development issuer: discovery, authorization with PKCE through the
// loopback redirect, code exchange, ID token verification, then issuance.
func BenchmarkLoginDevBrowser(b *testing.B) {
	_, tb := benchBastion(b, true)
	o := login.Options{Bastion: tb.URL, Dir: b.TempDir(), Force: true}
	for b.Loop() {
		if _, err := login.Login(b.Context(), o); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoginStillValid measures the common re-run: the certificate is
// fresh, nothing is fetched.
func BenchmarkLoginStillValid(b *testing.B) {
	_, tb := benchBastion(b, true)
	o := login.Options{Bastion: tb.URL, Dir: b.TempDir()}
	if _, err := login.Login(b.Context(), o); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := login.Login(b.Context(), o); err != nil {
			b.Fatal(err)
		}
	}
}
