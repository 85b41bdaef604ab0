package dextest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

func TestPasswordToken(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		secret string
	}{
		{name: "confidential", secret: "s3cret"},
		{name: "public", secret: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := Start(t, Options{
				ClientID:     "postern-cli",
				ClientSecret: tt.secret,
				Users: []User{
					{Email: "alice@example.com", Password: "alice-pw", Groups: []string{"ops", "dev"}},
					{Email: "bob@example.com", Username: "robert", Password: "bob-pw"},
				},
			})
			raw := d.PasswordToken(t, "alice@example.com", "alice-pw")

			// Verify the signature against Dex's JWKS as a relying party would.
			ctx := context.Background()
			provider, err := oidc.NewProvider(ctx, d.Issuer())
			if err != nil {
				t.Fatalf("discover %s: %v", d.Issuer(), err)
			}
			idt, err := provider.Verifier(&oidc.Config{ClientID: "postern-cli"}).Verify(ctx, raw)
			if err != nil {
				t.Fatalf("verify ID token: %v", err)
			}
			var claims struct {
				Email             string   `json:"email"`
				EmailVerified     bool     `json:"email_verified"`
				Name              string   `json:"name"`
				PreferredUsername string   `json:"preferred_username"`
				Groups            []string `json:"groups"`
			}
			if err := idt.Claims(&claims); err != nil {
				t.Fatal(err)
			}
			if claims.Email != "alice@example.com" || !claims.EmailVerified {
				t.Errorf("email = %q (verified %v); want alice@example.com (verified)", claims.Email, claims.EmailVerified)
			}
			if !slices.Equal(idt.Audience, []string{"postern-cli"}) {
				t.Errorf("aud = %v; want [postern-cli]", idt.Audience)
			}
			if claims.PreferredUsername != "alice" {
				t.Errorf("preferred_username = %q; want alice", claims.PreferredUsername)
			}
			if !slices.Equal(claims.Groups, []string{"ops", "dev"}) {
				t.Errorf("groups = %v; want [ops dev]", claims.Groups)
			}
			if idt.Issuer != d.Issuer() {
				t.Errorf("iss = %q; want %q", idt.Issuer, d.Issuer())
			}

			bob := payload(t, d.PasswordToken(t, "bob@example.com", "bob-pw"))
			if bob["preferred_username"] != "robert" {
				t.Errorf("bob's preferred_username = %v; want robert", bob["preferred_username"])
			}
		})
	}
}

func TestWrongPasswordRefused(t *testing.T) {
	t.Parallel()
	d := Start(t, Options{Users: []User{{Email: "alice@example.com", Password: "alice-pw"}}})
	if _, err := d.Token(context.Background(), "alice@example.com", "not-alice-pw"); err == nil {
		t.Fatal("password grant with a wrong password succeeded")
	}
	if _, err := d.Token(context.Background(), "nobody@example.com", "alice-pw"); err == nil {
		t.Fatal("password grant for an unknown user succeeded")
	}
}

func TestIDTokenTTL(t *testing.T) {
	t.Parallel()
	d := Start(t, Options{IDTokenTTL: 2 * time.Minute, Users: []User{{Email: "a@example.com", Password: "alice-pw"}}})
	p := payload(t, d.PasswordToken(t, "a@example.com", "alice-pw"))
	exp, iat := p["exp"].(float64), p["iat"].(float64)
	if got := time.Duration(exp-iat) * time.Second; got != 2*time.Minute {
		t.Fatalf("exp-iat = %v; want 2m", got)
	}
	if p["aud"] != DefaultClientID {
		t.Fatalf("aud = %v; want %s", p["aud"], DefaultClientID)
	}
}

func TestKill(t *testing.T) {
	t.Parallel()
	d := Start(t, Options{Users: []User{{Email: "a@example.com", Password: "alice-pw"}}})
	d.Kill()
	if _, err := d.Token(context.Background(), "a@example.com", "alice-pw"); err == nil {
		t.Fatal("token after Kill succeeded")
	}
}

// payload decodes a JWT's claims without verifying it.
func payload(t *testing.T, jwt string) map[string]any {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
