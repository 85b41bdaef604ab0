package server_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/posterntest"
	"github.com/posternhq/postern/internal/sshdtest"
)

// TestPassthroughTargetTakesOnlyItsLogins: a passthrough target sees the
// user certificate itself. With a certificate from /v1/certs (a real
// token from an OIDC provider, the real roles) and stock ssh through the
// bastion, a passthrough sshd configured as docs/security.md says takes
// only the logins the roles grant on it, not a login another role grants
// on another target; and a passthrough sshd without that configuration
// takes none of the granted logins.
func TestPassthroughTargetTakesOnlyItsLogins(t *testing.T) {
	idp := devidptest.Start(t, devidp.Options{Users: []devidp.User{{Username: "alice", Email: "alice@example.com", Groups: []string{"ops"}}},
		DefaultUser: "alice", ClientID: "postern"})
	dataDir := t.TempDir()
	auth := posterntest.Authority(t, dataDir)
	login := testLogin(t)
	pass := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: auth.User.Trusted(),
		Extra: []string{"AuthorizedPrincipalsCommand /bin/echo pass-1:%u", "AuthorizedPrincipalsCommandUser nobody"}})
	legacy := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: auth.User.Trusted()})
	_, web := posterntest.SSHD(t, auth, "web-2")
	cfg := &config.Config{
		DataDir: dataDir, PublicURL: "https://bastion.test",
		Identity: config.Identity{Issuers: []config.Issuer{{Name: "corp", IssuerURL: idp.URL, ClientID: "postern", GroupsClaim: "groups"}}},
		Targets: []config.Target{
			{Name: "pass-1", Kind: config.KindSSH, Address: pass.Addr(), Passthrough: true},
			{Name: "pass-legacy", Kind: config.KindSSH, Address: legacy.Addr(), Passthrough: true},
			web,
		},
		Roles: []config.Role{
			{Name: "deployers", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "pass-*"}},
				Logins: []string{login}},
			{Name: "nobodies", Match: config.RoleMatch{Groups: []string{"ops"}}, Targets: []config.TargetSelector{{Name: "web-2"}},
				Logins: []string{"nobody"}},
		},
	}
	svc := posterntest.Start(t, cfg)

	// A certificate through the issuance pipeline.
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub, _ := ssh.NewPublicKey(key.Public())
	body, _ := json.Marshal(map[string]string{"public_key": string(ssh.MarshalAuthorizedKey(pub))})
	req, _ := http.NewRequest("POST", svc.HTTPURL+"/v1/certs", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+idp.Mint(t, nil))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var issued struct {
		Certificate string   `json:"certificate"`
		Principals  []string `json:"principals"`
	}
	err = json.NewDecoder(resp.Body).Decode(&issued)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /v1/certs: %d %v", resp.StatusCode, err)
	}
	want := []string{"alice@example.com", "pass-1:" + login, "pass-legacy:" + login}
	if !slices.Equal(issued.Principals, want) {
		t.Errorf("principals %q; want %q (no bare logins)", issued.Principals, want)
	}
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(issued.Certificate))
	if err != nil {
		t.Fatal(err)
	}
	u := svc.UserWithCert(key, k.(*ssh.Certificate), login)
	u.TrustHostKey(pass.KnownHostsLine("pass-1"))
	u.TrustHostKey(legacy.KnownHostsLine("pass-legacy"))

	if r := u.SSH(nil, nil, "pass-1", "echo in"); r.Code != 0 || string(r.Stdout) != "in\n" {
		t.Fatalf("%s@pass-1: exit %d stdout %q stderr %q", login, r.Code, r.Stdout, r.Stderr)
	}
	for _, dest := range []string{"nobody@pass-1", "alice@example.com@pass-1", login + "@pass-legacy", "nobody@pass-legacy"} {
		r := u.SSH(nil, nil, dest, "echo in")
		if r.Code == 0 || !strings.Contains(string(r.Stderr), "Permission denied") {
			t.Errorf("%s: exit %d stdout %q stderr %q; want Permission denied from the target", dest, r.Code, r.Stdout, r.Stderr)
		}
	}
	// The inner hop is unaffected: nobody on web-2 still works (postern
	// logs in there with its own target certificate).
	if r := u.SSH(nil, nil, "nobody@web-2", "true"); strings.Contains(string(r.Stderr), "not allowed") {
		t.Errorf("nobody@web-2: %q", r.Stderr)
	}
}
