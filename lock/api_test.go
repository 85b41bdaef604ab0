package lock

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
)

// TestAPIRefusals: bad bodies, unknown fields, bad durations, unsigned and
// unprivileged requests are refused with the right status and code.
func TestAPIRefusals(t *testing.T) {
	dir := t.TempDir()
	l := newLocker(t, openStore(t, filepath.Join(dir, "s.db")), nil, time.Hour)
	auth, err := certs.LoadAuthority(config.CAs{}, filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	perms := map[string][]string{"root": {PermAdmin}, "mod": {PermModerator}}
	api, err := NewAPI(APIOptions{Locker: l, Auth: &certs.APIAuth{Authority: auth},
		Permissions: func(id certs.Identity) []string { return perms[id.Username] }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	send := func(user, method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if user != "" {
			_, priv, _ := ed25519.GenerateKey(rand.Reader)
			signer, _ := ssh.NewSignerFromKey(priv)
			now := time.Now()
			id := certs.Identity{Issuer: "corp", Subject: user, Username: user}
			cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.UserCert, ValidPrincipals: []string{user},
				ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
				Permissions: ssh.Permissions{Extensions: map[string]string{certs.IdentityExtension: certs.EncodeIdentity(id)}}}
			if err := cert.SignCert(rand.Reader, auth.User.Signer()); err != nil {
				t.Fatal(err)
			}
			if err := certs.SignAPIRequest(req, cert, signer, now); err != nil {
				t.Fatal(err)
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e struct{ Code string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return resp.StatusCode, e.Code
	}
	tests := []struct {
		name, user, method, path, body string
		status                         int
		code                           string
	}{
		{"unsigned", "", "GET", "/v1/locks", "", 401, "auth_required"},
		{"no permission", "alice", "GET", "/v1/locks", "", 403, "forbidden"},
		{"not json", "root", "POST", "/v1/locks", "kind=role", 400, "bad_request"},
		{"unknown field", "root", "POST", "/v1/locks", `{"kind":"role","name":"a","reason":"r","user":"x"}`, 400, "bad_request"},
		{"bad duration", "root", "POST", "/v1/locks", `{"kind":"role","name":"a","reason":"r","for":"soon"}`, 400, "bad_request"},
		{"negative duration", "root", "POST", "/v1/locks", `{"kind":"role","name":"a","reason":"r","for":"-1h"}`, 400, "bad_request"},
		{"no reason", "root", "POST", "/v1/locks", `{"kind":"role","name":"a"}`, 400, "bad_request"},
		{"moderator locks a role", "mod", "POST", "/v1/locks", `{"kind":"role","name":"a","reason":"r"}`, 403, "forbidden"},
		{"moderator terminates a session", "mod", "POST", "/v1/locks", `{"kind":"session","name":"01S","reason":"r"}`, 201, ""},
		{"moderator removes", "mod", "DELETE", "/v1/locks/01X", "", 403, "forbidden"},
		{"remove unknown", "root", "DELETE", "/v1/locks/01X", "", 404, "not_found"},
		{"get unknown", "root", "GET", "/v1/locks/01X", "", 404, "not_found"},
		{"unknown path", "root", "POST", "/v1/locks/01X/extend", "", 404, "not_found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, code := send(tt.user, tt.method, tt.path, tt.body)
			if st != tt.status || code != tt.code {
				t.Fatalf("got %d %q; want %d %q", st, code, tt.status, tt.code)
			}
		})
	}
	if ls, _ := l.List(context.Background(), true, 10); len(ls) != 1 {
		t.Errorf("stored %d locks; want only the moderator's session lock", len(ls))
	}
}
