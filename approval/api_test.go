package approval

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/state"
)

// apiUser signs API requests the way postern's CLI does.
type apiUser struct {
	cert   *ssh.Certificate
	signer ssh.Signer
}

func newAPIUser(t *testing.T, auth *certs.Authority, id certs.Identity) apiUser {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	signer, _ := ssh.NewSignerFromKey(priv)
	now := time.Now()
	cert := &ssh.Certificate{Key: signer.PublicKey(), CertType: ssh.UserCert, KeyId: id.Username,
		ValidPrincipals: []string{id.Username}, ValidAfter: uint64(now.Add(-time.Minute).Unix()),
		ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{certs.IdentityExtension: certs.EncodeIdentity(id)}}}
	if err := cert.SignCert(rand.Reader, auth.User.Signer()); err != nil {
		t.Fatal(err)
	}
	return apiUser{cert: cert, signer: signer}
}

func (u apiUser) do(t *testing.T, method, url string, body any, out any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, url, rd)
	if u.cert != nil {
		if err := certs.SignAPIRequest(req, u.cert, u.signer, time.Now()); err != nil {
			t.Errorf("sign: %v", err) // do runs in goroutines too: no Fatal
			return 0
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Errorf("%s %s: %v", method, url, err)
		return 0
	}
	defer resp.Body.Close()
	if out != nil {
		_ = json.NewDecoder(resp.Body).Decode(out)
	}
	return resp.StatusCode
}

func TestAPI(t *testing.T) {
	auth, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, st, nil)
	perms := func(id certs.Identity) []string {
		if id.InGroup("sre") {
			return []string{"approver"}
		}
		return nil
	}
	api, err := NewAPI(APIOptions{Broker: b, Auth: &certs.APIAuth{Authority: auth}, Permissions: perms,
		TargetExists: func(_ certs.Identity, t string) bool { return t == "web-1" || t == "db-1" }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	al := newAPIUser(t, auth, alice())
	bob := newAPIUser(t, auth, person("bob", "dev"))
	carol := newAPIUser(t, auth, person("carol", "sre"))

	if code := (apiUser{}).do(t, "GET", srv.URL+"/v1/approvals", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous list: %d", code)
	}
	a := submitSudo(t, b, sudoRule)
	other, _ := b.SubmitAccess(context.Background(), AccessRequest{Requester: person("bob"), Target: "db-1", Duration: time.Hour, Reason: "r"})

	var list []state.Approval
	if code := al.do(t, "GET", srv.URL+"/v1/approvals?status=pending", nil, &list); code != 200 || len(list) != 1 || list[0].ID != a.ID {
		t.Errorf("alice sees %d %+v; want only her request", code, list)
	}
	if code := carol.do(t, "GET", srv.URL+"/v1/approvals", nil, &list); code != 200 || len(list) != 2 {
		t.Errorf("approver sees %d %d requests; want 2", code, len(list))
	}
	if code := bob.do(t, "GET", srv.URL+"/v1/approvals/"+a.ID, nil, nil); code != http.StatusNotFound {
		t.Errorf("bob reads alice's request: %d; want 404", code)
	}
	var e struct{ Error, Code string }
	if code := bob.do(t, "POST", srv.URL+"/v1/approvals/"+a.ID+"/approve", nil, &e); code != http.StatusForbidden || e.Code != "forbidden" {
		t.Errorf("non-approver approves: %d %+v", code, e)
	}
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+other.ID+"/deny", map[string]string{"reason": "no"}, nil); code != 200 {
		t.Errorf("carol denies access request: %d", code)
	}

	// Long-poll: alice waits, carol approves.
	type res struct {
		code int
		a    state.Approval
	}
	done := make(chan res, 1)
	go func() {
		var got state.Approval
		code := al.do(t, "GET", srv.URL+"/v1/approvals/"+a.ID+"?wait=20s", nil, &got)
		done <- res{code, got}
	}()
	var decided state.Approval
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+a.ID+"/approve", map[string]string{"reason": "ok"}, &decided); code != 200 || decided.Status != state.ApprovalApproved {
		t.Fatalf("approve: %d %+v", code, decided)
	}
	select {
	case r := <-done:
		if r.code != 200 || r.a.Status != state.ApprovalApproved || !slices.ContainsFunc(r.a.Votes, func(v state.Vote) bool { return v.Key == "corp:carol" && v.Via == "api" }) {
			t.Errorf("long poll: %d %+v", r.code, r.a)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long poll not released")
	}
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+a.ID+"/deny", nil, &e); code != http.StatusConflict {
		t.Errorf("decide twice: %d", code)
	}

	// Access requests through the API.
	var created state.Approval
	if code := al.do(t, "POST", srv.URL+"/v1/approvals", map[string]string{"target": "db-1", "for": "1h", "reason": "incident"}, &created); code != http.StatusCreated || created.Kind != state.ApprovalAccess {
		t.Errorf("access request: %d %+v", code, created)
	}
	if code := al.do(t, "POST", srv.URL+"/v1/approvals", map[string]string{"target": "secret-1", "for": "1h", "reason": "x"}, nil); code != http.StatusForbidden {
		t.Errorf("access request for an unknown target: %d", code)
	}
	if code := al.do(t, "POST", srv.URL+"/v1/approvals/"+created.ID+"/approve", nil, nil); code != http.StatusForbidden {
		t.Errorf("self approval through the API: %d", code)
	}
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+created.ID+"/approve", nil, nil); code != 200 {
		t.Errorf("approve access: %d", code)
	}
	if code := al.do(t, "POST", srv.URL+"/v1/approvals/"+created.ID+"/revoke", nil, nil); code != http.StatusForbidden {
		t.Errorf("non-approver revokes: %d", code)
	}
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+created.ID+"/revoke", nil, nil); code != 200 {
		t.Errorf("revoke: %d", code)
	}
	if code := carol.do(t, "POST", srv.URL+"/v1/approvals/"+created.ID+"/revoke", nil, &e); code != http.StatusNotFound {
		t.Errorf("revoke twice: %d %+v", code, e)
	}
}

// failingStore is a state store whose every write fails with an error that
// names internals (a path, a driver message).
type failingStore struct{ Store }

var errStoreInternal = errors.New(`sqlite: disk I/O error (10) writing /var/lib/postern/state.db: pq: relation "approvals"`)

func (failingStore) CreateApproval(context.Context, state.Approval) error { return errStoreInternal }
func (failingStore) VoteApproval(context.Context, string, state.Vote) (state.Approval, error) {
	return state.Approval{}, errStoreInternal
}

// TestAPIHidesStoreErrors: a failing store yields a 500 with a generic
// message and a request id to quote, never the store's error text; a
// refusal of the request itself (a user error) is still shown.
func TestAPIHidesStoreErrors(t *testing.T) {
	auth, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	st := openStore(t, t.TempDir())
	b := newTestBroker(t, failingStore{st}, nil)
	api, err := NewAPI(APIOptions{Broker: b, Auth: &certs.APIAuth{Authority: auth},
		Permissions:  func(certs.Identity) []string { return []string{"approver"} },
		TargetExists: func(_ certs.Identity, t string) bool { return t == "db-1" }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(httpx.WithRequestID(api))
	t.Cleanup(srv.Close)
	al := newAPIUser(t, auth, alice())

	for _, tc := range []struct {
		name     string
		body     map[string]string
		status   int
		code     string
		internal bool
	}{
		{"store fails", map[string]string{"target": "db-1", "for": "1h", "reason": "incident"}, http.StatusInternalServerError, "internal", true},
		{"user error", map[string]string{"target": "db-1", "for": "1h"}, http.StatusBadRequest, "bad_request", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e httpx.ErrorBody
			code := al.do(t, "POST", srv.URL+"/v1/approvals", tc.body, &e)
			if code != tc.status || e.Code != tc.code {
				t.Fatalf("got %d %+v; want %d %s", code, e, tc.status, tc.code)
			}
			for _, leak := range []string{"sqlite", "disk I/O", "state.db", "relation", "store approval"} {
				if strings.Contains(e.Error, leak) {
					t.Errorf("the answer %q shows %q", e.Error, leak)
				}
			}
			if tc.internal && e.RequestID == "" {
				t.Error("a server failure without a request id to quote")
			}
			if !tc.internal && e.Error != "a reason is required" {
				t.Errorf("user error %q; want the broker's message", e.Error)
			}
		})
	}
}
