package devidp_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
)

var testUsers = []devidp.User{
	{Username: "dev", Email: "dev@example.com", Groups: []string{"dev", "admins"}},
	{Username: "alice", Email: "alice@example.com", Groups: []string{"sre"}},
}

func TestNewIssuer(t *testing.T) {
	tests := []struct {
		name   string
		issuer string
		ok     bool
	}{
		{"ipv4 loopback", "http://127.0.0.1:8080", true},
		{"other loopback address", "http://127.0.0.2:8080", true},
		{"ipv6 loopback", "http://[::1]:8080", true},
		{"localhost with path", "http://localhost:8080/oidc/", true},
		{"public host", "http://idp.example.com", false},
		{"private address", "http://10.0.0.1:8080", false},
		{"unspecified address", "http://0.0.0.0:8080", false},
		{"not http", "ftp://127.0.0.1/", false},
		{"empty", "", false},
		{"query", "http://127.0.0.1:8080/?a=b", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := devidp.New(devidp.Options{Issuer: tt.issuer})
			if (err == nil) != tt.ok {
				t.Fatalf("New(%q) error = %v; want ok=%v", tt.issuer, err, tt.ok)
			}
			if err != nil && tt.issuer == "http://idp.example.com" && !strings.Contains(err.Error(), "loopback") {
				t.Errorf("error %q does not say why; want it to mention loopback", err)
			}
		})
	}
}

func TestNewUnknownDefaultUser(t *testing.T) {
	_, err := devidp.New(devidp.Options{Issuer: "http://127.0.0.1:1", Users: testUsers, DefaultUser: "mallory"})
	if err == nil {
		t.Fatal("New with an unknown default user succeeded; want an error")
	}
}

// oauthSetup discovers srv with go-oidc and returns the OAuth config for a
// loopback redirect, the ID token verifier and a callback server that
// records the authorization response.
type oauthSetup struct {
	cfg      oauth2.Config
	verifier *oidc.IDTokenVerifier
	callback chan url.Values
}

func setup(t *testing.T, srv *devidptest.Server) *oauthSetup {
	t.Helper()
	ctx := context.Background()
	prov, err := oidc.NewProvider(ctx, srv.Issuer())
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	s := &oauthSetup{callback: make(chan url.Values, 1)}
	cb := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		select {
		case s.callback <- r.URL.Query():
		default:
		}
		io.WriteString(w, "done")
	}))
	t.Cleanup(cb.Close)
	s.cfg = oauth2.Config{
		ClientID:    srv.ClientID(),
		Endpoint:    prov.Endpoint(),
		RedirectURL: cb.URL + "/callback",
		Scopes:      []string{oidc.ScopeOpenID, "email", "profile", "groups"},
	}
	s.verifier = prov.Verifier(&oidc.Config{ClientID: srv.ClientID()})
	return s
}

// authorize follows the authorization redirects like a browser and returns
// the query the callback received.
func (s *oauthSetup) authorize(t *testing.T, authURL string) url.Values {
	t.Helper()
	resp, err := http.Get(authURL)
	if err != nil {
		t.Fatalf("authorize: %v", err)
	}
	resp.Body.Close()
	select {
	case q := <-s.callback:
		return q
	default:
		t.Fatalf("authorize: callback not reached; last status %s at %s", resp.Status, resp.Request.URL)
		return nil
	}
}

type idClaims struct {
	Sub               string   `json:"sub"`
	Email             string   `json:"email"`
	EmailVerified     bool     `json:"email_verified"`
	Name              string   `json:"name"`
	PreferredUsername string   `json:"preferred_username"`
	Groups            []string `json:"groups"`
	Azp               string   `json:"azp"`
}

func (s *oauthSetup) idToken(t *testing.T, tok *oauth2.Token) (*oidc.IDToken, idClaims) {
	t.Helper()
	raw, ok := tok.Extra("id_token").(string)
	if !ok {
		t.Fatal("token response has no id_token")
	}
	idt, err := s.verifier.Verify(context.Background(), raw)
	if err != nil {
		t.Fatalf("verify ID token: %v", err)
	}
	var c idClaims
	if err := idt.Claims(&c); err != nil {
		t.Fatalf("claims: %v", err)
	}
	return idt, c
}

func TestAuthorizationCodePKCE(t *testing.T) {
	srv := devidptest.Start(t, devidp.Options{Users: testUsers})
	s := setup(t, srv)
	ctx := context.Background()

	tests := []struct {
		name       string
		loginHint  string
		wantUser   string
		wantEmail  string
		wantGroups []string
	}{
		{"default user", "", "dev", "dev@example.com", []string{"dev", "admins"}},
		{"login_hint by username", "alice", "alice", "alice@example.com", []string{"sre"}},
		{"login_hint by email", "alice@example.com", "alice", "alice@example.com", []string{"sre"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			verifier := oauth2.GenerateVerifier()
			opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier), oidc.Nonce("n-1")}
			if tt.loginHint != "" {
				opts = append(opts, oauth2.SetAuthURLParam("login_hint", tt.loginHint))
			}
			q := s.authorize(t, s.cfg.AuthCodeURL("state-1", opts...))
			if got := q.Get("state"); got != "state-1" {
				t.Fatalf("state = %q; want state-1", got)
			}
			code := q.Get("code")
			if code == "" {
				t.Fatalf("no code in callback: %v", q)
			}
			tok, err := s.cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			idt, c := s.idToken(t, tok)
			if idt.Nonce != "n-1" {
				t.Errorf("nonce = %q; want n-1", idt.Nonce)
			}
			if !slices.Equal(idt.Audience, []string{srv.ClientID()}) {
				t.Errorf("aud = %v; want [%s]", idt.Audience, srv.ClientID())
			}
			if c.Sub != tt.wantUser || c.PreferredUsername != tt.wantUser || c.Name != tt.wantUser {
				t.Errorf("sub/preferred_username/name = %q/%q/%q; want %q", c.Sub, c.PreferredUsername, c.Name, tt.wantUser)
			}
			if c.Email != tt.wantEmail || !c.EmailVerified {
				t.Errorf("email = %q verified=%v; want %q verified", c.Email, c.EmailVerified, tt.wantEmail)
			}
			if !slices.Equal(c.Groups, tt.wantGroups) {
				t.Errorf("groups = %v; want %v", c.Groups, tt.wantGroups)
			}
			if got := idt.Expiry.Sub(idt.IssuedAt); got != devidp.DefaultTokenTTL {
				t.Errorf("lifetime = %v; want %v", got, devidp.DefaultTokenTTL)
			}
			// userinfo answers for the access token.
			prov, err := oidc.NewProvider(ctx, srv.Issuer())
			if err != nil {
				t.Fatal(err)
			}
			ui, err := prov.UserInfo(ctx, oauth2.StaticTokenSource(tok))
			if err != nil {
				t.Fatalf("userinfo: %v", err)
			}
			if ui.Subject != tt.wantUser {
				t.Errorf("userinfo sub = %q; want %q", ui.Subject, tt.wantUser)
			}
			// A code is good once.
			if _, err := s.cfg.Exchange(ctx, code, oauth2.VerifierOption(verifier)); err == nil {
				t.Error("second exchange of the same code succeeded; want invalid_grant")
			}
		})
	}
}

func TestAuthorizationCodeRefusals(t *testing.T) {
	srv := devidptest.Start(t, devidp.Options{Users: testUsers})
	s := setup(t, srv)
	ctx := context.Background()

	t.Run("without PKCE", func(t *testing.T) {
		q := s.authorize(t, s.cfg.AuthCodeURL("st"))
		if q.Get("code") != "" || q.Get("error") != "invalid_request" {
			t.Fatalf("callback = %v; want error=invalid_request and no code", q)
		}
	})
	t.Run("plain PKCE", func(t *testing.T) {
		q := s.authorize(t, s.cfg.AuthCodeURL("st",
			oauth2.SetAuthURLParam("code_challenge", "abcdefghijabcdefghijabcdefghijabcdefghij123"),
			oauth2.SetAuthURLParam("code_challenge_method", "plain")))
		if q.Get("code") != "" {
			t.Fatalf("callback = %v; want no code", q)
		}
	})
	t.Run("wrong verifier", func(t *testing.T) {
		q := s.authorize(t, s.cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if _, err := s.cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(oauth2.GenerateVerifier())); err == nil {
			t.Fatal("exchange with the wrong code_verifier succeeded")
		}
	})
	t.Run("unknown login_hint", func(t *testing.T) {
		u := s.cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier()), oauth2.SetAuthURLParam("login_hint", "mallory"))
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status = %d; want 400", resp.StatusCode)
		}
		select {
		case q := <-s.callback:
			t.Fatalf("callback reached with %v; want the request refused", q)
		default:
		}
	})
	for _, redirect := range []string{"http://evil.example.com/callback", "http://127.0.0.1:1/other"} {
		t.Run("redirect "+redirect, func(t *testing.T) {
			cfg := s.cfg
			cfg.RedirectURL = redirect
			client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
			resp, err := client.Get(cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if loc := resp.Header.Get("Location"); strings.HasPrefix(loc, redirect) {
				t.Fatalf("redirected to %q; want the unregistered redirect_uri refused", loc)
			}
		})
	}
	t.Run("other client", func(t *testing.T) {
		cfg := s.cfg
		cfg.ClientID = "someone-else"
		client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Get(cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusFound && strings.Contains(resp.Header.Get("Location"), "code=") {
			t.Fatalf("unknown client got a code")
		}
	})
}

func TestDeviceFlow(t *testing.T) {
	srv := devidptest.Start(t, devidp.Options{Users: testUsers})
	s := setup(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tests := []struct {
		name     string
		pick     string // the "user" form field; default user if empty
		complete bool   // visit verification_uri_complete instead of posting the form
		wantUser string
	}{
		{"visit approves default user", "", true, "dev"},
		{"form picks a user", "alice", false, "alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			da, err := s.cfg.DeviceAuth(ctx)
			if err != nil {
				t.Fatalf("device auth: %v", err)
			}
			if !strings.HasPrefix(da.VerificationURI, srv.Issuer()+"/device") {
				t.Fatalf("verification_uri = %q; want under the issuer", da.VerificationURI)
			}
			var resp *http.Response
			if tt.complete {
				resp, err = http.Get(da.VerificationURIComplete)
			} else {
				resp, err = http.PostForm(da.VerificationURI, url.Values{"user_code": {da.UserCode}, "user": {tt.pick}})
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "Approved as "+tt.wantUser) {
				t.Fatalf("verification page: %s %q; want approval as %s", resp.Status, body, tt.wantUser)
			}
			tok, err := s.cfg.DeviceAccessToken(ctx, da)
			if err != nil {
				t.Fatalf("device access token: %v", err)
			}
			_, c := s.idToken(t, tok)
			if c.Sub != tt.wantUser {
				t.Errorf("sub = %q; want %q", c.Sub, tt.wantUser)
			}
			if c.Azp != srv.ClientID() {
				t.Errorf("azp = %q; want %q", c.Azp, srv.ClientID())
			}
		})
	}

	t.Run("page without code shows the form", func(t *testing.T) {
		resp, err := http.Get(srv.Issuer() + "/device")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "<form") {
			t.Fatalf("got %s %q; want the form", resp.Status, body)
		}
	})
	t.Run("unknown code", func(t *testing.T) {
		resp, err := http.Get(srv.Issuer() + "/device?user_code=NOPE-NOPE")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status = %d; want 400", resp.StatusCode)
		}
	})
	t.Run("pending until approved", func(t *testing.T) {
		da, err := s.cfg.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer pcancel()
		if _, err := s.cfg.DeviceAccessToken(pctx, da); err == nil {
			t.Fatal("got a token before approval")
		}
	})
}

func TestIssuerWithPath(t *testing.T) {
	mux := http.NewServeMux()
	hs := httptest.NewUnstartedServer(mux)
	issuer := "http://" + hs.Listener.Addr().String() + "/oidc"
	p, err := devidp.New(devidp.Options{Issuer: issuer + "/"})
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/oidc/", p)
	hs.Start()
	t.Cleanup(hs.Close)

	if p.Issuer() != issuer {
		t.Fatalf("Issuer() = %q; want %q", p.Issuer(), issuer)
	}
	prov, err := oidc.NewProvider(context.Background(), issuer)
	if err != nil {
		t.Fatalf("discover: %v", err)
	}
	if !strings.HasPrefix(prov.Endpoint().TokenURL, issuer+"/") {
		t.Errorf("token endpoint %q is not under the issuer", prov.Endpoint().TokenURL)
	}
	tok, err := p.MintIDToken(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prov.Verifier(&oidc.Config{ClientID: p.ClientID()}).Verify(context.Background(), tok); err != nil {
		t.Fatalf("verify minted token through discovered JWKS: %v", err)
	}
	resp, err := http.Get("http://" + hs.Listener.Addr().String() + "/oidcx/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("path outside the issuer: status %d; want 404", resp.StatusCode)
	}
}

func TestMintIDToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	srv := devidptest.Start(t, devidp.Options{Users: testUsers, Now: func() time.Time { return now }, TokenTTL: time.Minute})
	tok := srv.Mint(t, map[string]any{"email": nil, "repository_owner": "my-org"})
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts; want 3", len(parts))
	}
	var hdr map[string]any
	var claims map[string]any
	decode(t, parts[0], &hdr)
	decode(t, parts[1], &claims)
	if hdr["alg"] != "RS256" || hdr["kid"] != srv.KeyID() {
		t.Errorf("header = %v; want RS256 with kid %s", hdr, srv.KeyID())
	}
	if _, ok := claims["email"]; ok {
		t.Error("email present; a nil override must remove it")
	}
	if claims["repository_owner"] != "my-org" || claims["sub"] != "dev" || claims["iss"] != srv.Issuer() {
		t.Errorf("claims = %v", claims)
	}
	if claims["exp"] != float64(now.Add(time.Minute).Unix()) {
		t.Errorf("exp = %v; want now+1m from the injected clock", claims["exp"])
	}
}

func decode(t *testing.T, seg string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func TestWarnsAtStart(t *testing.T) {
	var buf strings.Builder
	log := slog.New(slog.NewTextHandler(&buf, nil))
	if _, err := devidp.New(devidp.Options{Issuer: "http://127.0.0.1:1", Log: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "level=WARN") || !strings.Contains(buf.String(), "development OIDC issuer: insecure, loopback only") {
		t.Fatalf("start log = %q; want the insecure warning", buf.String())
	}
}

func TestKeySetPublishesVerificationKeys(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srv := devidptest.Start(t, devidp.Options{VerificationKeys: []jose.JSONWebKey{{Key: &ec.PublicKey, KeyID: "ec-1", Algorithm: "ES256"}}})
	resp, err := http.Get(srv.Issuer() + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	if len(set.Key(srv.KeyID())) != 1 || len(set.Key("ec-1")) != 1 || len(set.Keys) != 2 {
		t.Fatalf("JWKS = %+v; want the signing key and ec-1", set.Keys)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			t.Errorf("key %s is not public", k.KeyID)
		}
	}
	// A token minted with the extra key verifies through discovery.
	prov, err := oidc.NewProvider(context.Background(), srv.Issuer())
	if err != nil {
		t.Fatal(err)
	}
	tok := srv.Mint(t, nil, devidp.WithSigner(ec, "ec-1", jose.ES256))
	v := prov.Verifier(&oidc.Config{ClientID: srv.ClientID(), SupportedSigningAlgs: []string{"RS256", "ES256"}})
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("verify ES256 token: %v", err)
	}
}

func TestRefreshTokenRotation(t *testing.T) {
	srv := devidptest.Start(t, devidp.Options{Users: testUsers})
	s := setup(t, srv)
	ctx := context.Background()
	s.cfg.Scopes = append(s.cfg.Scopes, oidc.ScopeOfflineAccess)
	verifier := oauth2.GenerateVerifier()
	q := s.authorize(t, s.cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier), oauth2.SetAuthURLParam("login_hint", "alice")))
	tok, err := s.cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("exchange: %v", err)
	}
	if tok.RefreshToken == "" {
		t.Fatal("no refresh token for offline_access")
	}
	first := tok.RefreshToken
	tok.Expiry = time.Now().Add(-time.Minute) // force a refresh
	fresh, err := s.cfg.TokenSource(ctx, tok).Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if fresh.RefreshToken == "" || fresh.RefreshToken == first {
		t.Fatalf("refresh token not rotated: %q", fresh.RefreshToken)
	}
	if _, c := s.idToken(t, fresh); c.Sub != "alice" || c.Email != "alice@example.com" {
		t.Errorf("refreshed ID token sub/email = %q/%q; want alice", c.Sub, c.Email)
	}
	// The used refresh token is spent.
	old := &oauth2.Token{RefreshToken: first, Expiry: time.Now().Add(-time.Minute)}
	if _, err := s.cfg.TokenSource(ctx, old).Token(); err == nil {
		t.Fatal("a spent refresh token worked again")
	}

	t.Run("none without offline_access", func(t *testing.T) {
		cfg := s.cfg
		cfg.Scopes = []string{oidc.ScopeOpenID}
		verifier := oauth2.GenerateVerifier()
		q := s.authorize(t, cfg.AuthCodeURL("st", oauth2.S256ChallengeOption(verifier)))
		tok, err := cfg.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatal(err)
		}
		if tok.RefreshToken != "" {
			t.Errorf("refresh token issued without offline_access")
		}
	})
}
