package deploy_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/devidp"
	"github.com/posternhq/postern/certs/devidp/devidptest"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// agentSub is the subject of the agent of the lock tests: a GitHub Actions
// workflow on main, as its OIDC token names it.
const agentSub = "repo:acme/app:ref:refs/heads/main"

// lockCluster is a cluster whose replicas trust an in-process issuer
// ("ci") for agents in group ha, and an admin who locks.
type lockCluster struct {
	*cluster
	idp                *devidptest.Server
	adminCert          *ssh.Certificate
	adminKey           ssh.Signer
	replicaA, replicaB *replica
}

func newLockCluster(t *testing.T) *lockCluster {
	t.Helper()
	c := newCluster(t)
	idp := devidptest.Start(t, devidp.Options{})
	c.identity = fmt.Sprintf(`identity:
  issuers:
    - {name: ci, issuer_url: %q, audience: postern, kind: agent, username_claim: sub, groups_claim: groups}`, idp.URL)
	lc := &lockCluster{cluster: c, idp: idp}
	_, lc.adminCert, lc.adminKey = c.userCert(t, "sec@example.com", "admins")
	lc.replicaA, lc.replicaB = c.start(t, "A"), c.start(t, "B")
	return lc
}

// agentToken is a valid OIDC token of the agent, as the issuer mints it.
func (lc *lockCluster) agentToken(t *testing.T) string {
	return lc.idp.Mint(t, map[string]any{"sub": agentSub, "groups": []string{"ha"}, "email": nil, "email_verified": nil})
}

// mint exchanges token at r for a certificate of a fresh key; it returns
// the signer, or the HTTP status and error code of a refusal.
func mint(t *testing.T, r *replica, token string) (ssh.Signer, int, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ssh.NewSignerFromKey(priv)
	body, _ := json.Marshal(map[string]string{"public_key": string(ssh.MarshalAuthorizedKey(key.PublicKey()))})
	req, _ := http.NewRequest(http.MethodPost, "http://"+r.HTTPAddr+"/v1/certs", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Certificate string `json:"certificate"`
		Code        string `json:"code"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode, out.Code
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(out.Certificate))
	if err != nil {
		t.Fatalf("certificate from %s: %v", r.name, err)
	}
	signer, err := ssh.NewCertSigner(pub.(*ssh.Certificate), key)
	if err != nil {
		t.Fatal(err)
	}
	return signer, http.StatusOK, ""
}

// api sends a signed API request as the admin to r.
func (lc *lockCluster) api(t *testing.T, r *replica, method, path string, body any, out any) int {
	t.Helper()
	var rd io.Reader = http.NoBody
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+r.HTTPAddr+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if err := certs.SignAPIRequest(req, lc.adminCert, lc.adminKey, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

// TestReplicasLockOnAEndsSessionOnB: an agent logs in with its workload
// token and opens a recorded session on replica B; an admin locks the
// agent's identity (issuer + subject) through replica A's API. B ends the
// session (LISTEN/NOTIFY on the shared PostgreSQL: `make bench-locks`
// measures how fast) with exit status 124, and neither replica lets the agent's still-valid
// token mint a certificate while the lock holds; after it is removed, it
// can again.
func TestReplicasLockOnAEndsSessionOnB(t *testing.T) {
	lc := newLockCluster(t)
	a, b := lc.replicaA, lc.replicaB
	token := lc.agentToken(t)
	signer, st, code := mint(t, b, token)
	if signer == nil {
		t.Fatalf("mint on B before the lock: %d %s\n%s", st, code, b.proc.Output())
	}
	cs := b.dialCat(t, signer)
	if err := cs.echo("alive on B"); err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- cs.sess.Wait() }()

	start := time.Now()
	var lk state.Lock
	if st := lc.api(t, a, http.MethodPost, "/v1/locks", lock.CreateBody{Kind: "identity", Issuer: "ci", Subject: agentSub,
		Reason: "runaway agent"}, &lk); st != http.StatusCreated {
		t.Fatalf("lock on A: status %d\n%s", st, a.proc.Output())
	}
	var err error
	select {
	case err = <-ended:
	case <-time.After(10 * time.Second):
		t.Fatalf("B's session still running 10s after the lock on A; B's log:\n%s", b.proc.Output())
	}
	took := time.Since(start)
	t.Logf("lock on A to session end on B: %s", took.Round(time.Millisecond))
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != lock.ExitLocked {
		t.Fatalf("B's session ended with %v; want exit %d", err, lock.ExitLocked)
	}

	for _, r := range []*replica{a, b} {
		if s, st, code := mint(t, r, token); s != nil || st != http.StatusForbidden || code != lock.CodeLocked {
			t.Errorf("mint on %s while locked: status %d code %q; want 403 locked", r.name, st, code)
		}
		if err := r.canLogIn(signer); err == nil {
			t.Errorf("%s let the locked agent's certificate log in", r.name)
		}
	}
	if st := lc.api(t, b, http.MethodDelete, "/v1/locks/"+lk.ID, nil, nil); st != http.StatusOK {
		t.Fatalf("unlock on B: %d", st)
	}
	if s, st, code := mint(t, a, token); s == nil {
		t.Errorf("mint on A after the lock was removed on B: %d %s", st, code)
	}
	rep, err := openState(t, lc.cluster).Verify(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("shared audit chain: %+v, %v", rep, err)
	}
	evs, _ := openState(t, lc.cluster).Events(context.Background(), 0, 10000)
	var enforced, denied bool
	for _, e := range evs {
		enforced = enforced || e.Type == state.EventLockEnforced && e.Details["lock"] == lk.ID
		denied = denied || e.Type == state.EventCertDenied && e.Details["code"] == lock.CodeLocked
	}
	if !enforced || !denied {
		t.Errorf("audit: lock.enforced %v, cert.denied (locked) %v; want both", enforced, denied)
	}
	if !strings.Contains(b.proc.Output(), "ending a live session: locked") {
		t.Errorf("B did not log the enforcement")
	}
}
