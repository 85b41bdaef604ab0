package login

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
)

// writeTestProfile writes a profile directory whose certificate is signed
// by ca for user, valid from now-1m to now+validFor.
func writeTestProfile(t *testing.T, ca *certs.CA, bastion, user string, now time.Time, validFor time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	blk, err := ssh.MarshalPrivateKey(priv, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, KeyFileName), pem.EncodeToMemory(blk), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := ssh.NewSignerFromKey(priv)
	id := certs.Identity{Issuer: "corp", Subject: "s", Username: user, Kind: certs.KindHuman}
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: 7, CertType: ssh.UserCert, KeyId: "test",
		ValidPrincipals: []string{user},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(validFor).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{certs.IdentityExtension: certs.EncodeIdentity(id)}},
	}
	if err := cert.SignCert(rand.Reader, ca.Signer()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFileName), ssh.MarshalAuthorizedKey(cert), 0o644); err != nil {
		t.Fatal(err)
	}
	pf := profileFile{Bastion: bastion, BastionHost: "127.0.0.1", SSHAddress: "127.0.0.1:2222", Username: user,
		Principals: []string{user}, ValidAfter: now.Add(-time.Minute), ValidBefore: now.Add(validFor)}
	b, _ := json.Marshal(pf)
	if err := os.WriteFile(filepath.Join(dir, ProfileFileName), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestAPIClientSignsRequests(t *testing.T) {
	auth, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	api := &certs.APIAuth{Authority: auth}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := api.Authenticate(r)
		if err != nil {
			httpx.WriteError(w, r, nil, err)
			return
		}
		if r.URL.Path == "/v1/forbidden" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			w.Write([]byte(`{"error":"auditor permission required","code":"forbidden"}`))
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"user": id.Username, "q": r.URL.Query().Get("user")})
	}))
	t.Cleanup(srv.Close)

	now := time.Now()
	dir := writeTestProfile(t, auth.User, srv.URL, "alice@example.com", now, time.Hour)
	c, err := OpenAPIClient("", dir, APIClientOptions{})
	if err != nil {
		t.Fatalf("OpenAPIClient: %v", err)
	}
	var got map[string]string
	path := Query("/v1/sessions", url.Values{"user": {"bob x&y"}, "target": {""}})
	if err := c.GetJSON(context.Background(), path, &got); err != nil {
		t.Fatalf("GetJSON: %v", err)
	}
	if got["user"] != "alice@example.com" || got["q"] != "bob x&y" {
		t.Errorf("got %v; want user alice@example.com and q %q", got, "bob x&y")
	}

	err = c.GetJSON(context.Background(), "/v1/forbidden", &got)
	var se *ServerError
	if !errors.As(err, &se) || se.Status != http.StatusForbidden || se.Code != "forbidden" {
		t.Errorf("got %v; want a 403 forbidden ServerError", err)
	}

	// A profile signed by another CA is refused by the server.
	other, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := OpenAPIClient("", writeTestProfile(t, other.User, srv.URL, "mallory", now, time.Hour), APIClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = foreign.GetJSON(context.Background(), "/v1/sessions", &got)
	if !errors.As(err, &se) || se.Status != http.StatusUnauthorized || se.Code != certs.CodeAuthInvalid {
		t.Errorf("foreign CA: got %v; want 401 %s", err, certs.CodeAuthInvalid)
	}

	// An expired profile is refused before anything is sent.
	expired, err := OpenAPIClient("", writeTestProfile(t, auth.User, srv.URL, "alice", now.Add(-2*time.Hour), time.Hour), APIClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := expired.GetJSON(context.Background(), "/v1/sessions", &got); err == nil {
		t.Error("expired profile: request succeeded")
	}
}

func TestAPIClientBastionOverride(t *testing.T) {
	auth, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := writeTestProfile(t, auth.User, "http://127.0.0.1:1", "alice", time.Now(), time.Hour)
	tests := []struct {
		name, flag, env, want string
	}{
		{name: "profile", want: "http://127.0.0.1:1"},
		{name: "env", env: "http://127.0.0.1:2/", want: "http://127.0.0.1:2"},
		{name: "flag beats env", flag: "https://127.0.0.1:3", env: "http://127.0.0.1:2", want: "https://127.0.0.1:3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(BastionEnv, tt.env)
			c, err := OpenAPIClient(tt.flag, dir, APIClientOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if c.Base != tt.want {
				t.Errorf("got base %q; want %q", c.Base, tt.want)
			}
		})
	}
}
