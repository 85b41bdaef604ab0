package scim_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/certs/scim"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/scimtest"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

const token = "0123456789abcdef0123456789abcdef-okta"

// env is a SCIM endpoint over a real state store and the real kill switch.
type env struct {
	t     *testing.T
	url   string
	dbURL string
	st    *state.Store
	locks *lock.Locker
	dir   *scim.Directory
}

// locker adapts lock.Locker as server/ does.
type locker struct{ l *lock.Locker }

func (s locker) LockIdentity(ctx context.Context, id certs.Identity, reason, by string) (string, error) {
	lk, err := s.l.Lock(ctx, lock.Spec{Kind: state.LockIdentity, Identity: id, Reason: reason, By: by})
	return lk.ID, err
}

func (s locker) Unlock(ctx context.Context, id, by string) error {
	if err := s.l.Unlock(ctx, id, by); err != nil && !errors.Is(err, lock.ErrNotFound) {
		return err
	}
	return nil
}

func newEnv(t *testing.T, clients ...config.SCIM) *env {
	t.Helper()
	return newEnvWith(t, clients, nil)
}

// newEnvWith is newEnv with the people of identity.aliases.
func newEnvWith(t *testing.T, clients []config.SCIM, aliases []config.Alias) *env {
	t.Helper()
	if len(clients) == 0 {
		clients = []config.SCIM{{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{{Issuer: "okta"}}}}
	}
	ctx := context.Background()
	dbURL := "sqlite://" + filepath.Join(t.TempDir(), "state.db")
	st, err := state.Open(ctx, dbURL, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	locks, err := lock.New(ctx, lock.Options{Store: st, Notify: st.Notify, Subscribe: st.Subscribe})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(locks.Close)
	dir, err := scim.NewDirectory(ctx, st, clients, aliases, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := scim.NewServer(scim.Options{Clients: clients, State: st, Locker: locker{locks}, Directory: dir, Aliases: aliases})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(scim.PathPrefix, srv)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, dbURL: dbURL, st: st, locks: locks, dir: dir}
}

// do sends a SCIM request to client okta and returns the status and the
// decoded answer.
func (e *env) do(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	return e.doAs("okta", token, method, path, body)
}

// doAs sends a request to client with tok.
func (e *env) doAs(client, tok, method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	return scimtest.New(e.t, e.url+scim.PathPrefix+client, tok).Do(method, path, body)
}

// must sends a request and fails the test unless the status is want.
func (e *env) must(want int, method, path string, body any) map[string]any {
	e.t.Helper()
	return scimtest.New(e.t, e.url+scim.PathPrefix+"okta", token).Must(want, method, path, body)
}

// locked returns the refusal of id by the kill switch (read from the
// store), nil if it is not locked.
func (e *env) locked(subject string) error {
	e.t.Helper()
	return e.locks.CheckFresh(context.Background(), lock.Subject{Identity: certs.Identity{Issuer: "okta", Subject: subject}})
}

// activeLocks counts the active locks.
func (e *env) activeLocks() int {
	e.t.Helper()
	ls, err := e.locks.List(context.Background(), false, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ls)
}

// oktaUser is a user as Okta provisions it.
func oktaUser(userName string, active bool) map[string]any { return scimtest.User(userName, active) }

var patch, group = scimtest.Patch, scimtest.Group

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	for _, tt := range []struct {
		name, client, token string
		want                int
	}{
		{"no token", "okta", "", http.StatusUnauthorized},
		{"wrong token", "okta", token + "x", http.StatusUnauthorized},
		{"another client's token", "okta", "0123456789abcdef0123456789abcdef-entra", http.StatusUnauthorized},
		{"unknown client", "entra", token, http.StatusNotFound},
		{"right token", "okta", token, http.StatusOK},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, out := e.doAs(tt.client, tt.token, http.MethodGet, "/Users", nil)
			if code != tt.want {
				t.Fatalf("GET /Users = %d %v; want %d", code, out, tt.want)
			}
			if code != http.StatusOK && out["detail"] == "" {
				t.Errorf("refusal without a SCIM error body: %v", out)
			}
		})
	}
	// A basic-auth header carrying the token is not a bearer token.
	req, _ := http.NewRequest(http.MethodGet, e.url+scim.PathPrefix+"okta/Users", nil)
	req.SetBasicAuth("okta", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("basic auth: %d %q; want 401 with WWW-Authenticate", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// The discovery endpoints answer.
	for _, p := range []string{"/ServiceProviderConfig", "/Schemas", "/ResourceTypes"} {
		e.must(http.StatusOK, http.MethodGet, p, nil)
	}
}

// TestOktaUserLifecycle drives the requests Okta sends: create, look up by
// userName, deactivate and reactivate by PATCH, replace by PUT, delete.
func TestOktaUserLifecycle(t *testing.T) {
	e := newEnv(t)
	// Okta looks the user up first.
	out := e.must(http.StatusOK, http.MethodGet, `/Users?filter=`+urlQuery(`userName eq "alice@example.com"`)+`&startIndex=1&count=100`, nil)
	if out["totalResults"] != 0.0 {
		t.Fatalf("lookup before create: %v", out)
	}
	created := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("alice@example.com", true))
	id, _ := created["id"].(string)
	if id == "" || created["active"] != true || created["userName"] != "alice@example.com" {
		t.Fatalf("created %v", created)
	}
	// userName is unique, ignoring case.
	code, conflict := e.do(http.MethodPost, "/Users", oktaUser("Alice@Example.com", true))
	if code != http.StatusConflict || conflict["scimType"] != "uniqueness" {
		t.Errorf("second alice: %d %v; want 409 uniqueness", code, conflict)
	}
	// The lookup Okta does ignores case too.
	out = e.must(http.StatusOK, http.MethodGet, `/Users?filter=`+urlQuery(`userName eq "ALICE@example.com"`), nil)
	if out["totalResults"] != 1.0 {
		t.Errorf("lookup by userName: %v", out)
	}
	got := e.must(http.StatusOK, http.MethodGet, "/Users/"+id, nil)
	if got["name"].(map[string]any)["givenName"] != "alice" {
		t.Errorf("GET /Users/%s = %v", id, got)
	}
	if err := e.locked("alice@example.com"); err != nil {
		t.Fatalf("alice is locked before any deprovisioning: %v", err)
	}

	// Deactivation locks alice's identity.
	deact := patch(map[string]any{"op": "replace", "value": map[string]any{"active": false}})
	if out := e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, deact); out["active"] != false {
		t.Errorf("after deactivation: %v", out)
	}
	err := e.locked("alice@example.com")
	if ue := usererr.As(err); ue == nil || ue.Code != lock.CodeLocked {
		t.Fatalf("deactivated alice: %v; want locked", err)
	}
	if g, known := e.dir.Groups(certs.Identity{Issuer: "okta", Subject: "alice@example.com"}); !known || g != nil {
		t.Errorf("Groups(deactivated) = %v, %v; want none, known", g, known)
	}
	// A client retrying the same change makes no second lock.
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, deact)
	if n := e.activeLocks(); n != 1 {
		t.Errorf("%d active locks after a repeated deactivation; want 1", n)
	}
	lks, _ := e.locks.List(context.Background(), false, 10)
	if lks[0].CreatedBy != "scim:okta" || !strings.Contains(lks[0].Reason, "deactivated") {
		t.Errorf("lock %+v", lks[0])
	}

	// Reactivation removes the lock.
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "replace", "value": map[string]any{"active": true}}))
	if err := e.locked("alice@example.com"); err != nil {
		t.Errorf("reactivated alice: %v", err)
	}
	if n := e.activeLocks(); n != 0 {
		t.Errorf("%d active locks after reactivation", n)
	}

	// A PUT that says active false deprovisions too.
	u := oktaUser("alice@example.com", false)
	u["id"] = id
	if out := e.must(http.StatusOK, http.MethodPut, "/Users/"+id, u); out["active"] != false {
		t.Errorf("PUT: %v", out)
	}
	if e.locked("alice@example.com") == nil {
		t.Error("alice not locked after PUT active=false")
	}

	// Deletion: the user is gone over SCIM, the lock stays.
	e.must(http.StatusNoContent, http.MethodDelete, "/Users/"+id, nil)
	e.must(http.StatusNotFound, http.MethodGet, "/Users/"+id, nil)
	e.must(http.StatusNotFound, http.MethodDelete, "/Users/"+id, nil)
	e.must(http.StatusNotFound, http.MethodPatch, "/Users/"+id, deact)
	if out := e.must(http.StatusOK, http.MethodGet, "/Users", nil); out["totalResults"] != 0.0 {
		t.Errorf("users after the deletion: %v", out)
	}
	if e.locked("alice@example.com") == nil {
		t.Error("deleted alice is not locked")
	}
	if g, err := e.dir.Approver(slackApprover("okta:alice@example.com")); err == nil {
		t.Errorf("deleted alice approves with %v", g)
	}

	// Provisioned anew, alice may come back.
	again := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("alice@example.com", true))
	if again["id"] == id {
		t.Error("a new user got the deleted one's id")
	}
	if err := e.locked("alice@example.com"); err != nil {
		t.Errorf("alice provisioned again: %v", err)
	}
}

// TestDeleteActiveUser deletes a user that was never deactivated, as some
// clients do.
func TestDeleteActiveUser(t *testing.T) {
	e := newEnv(t)
	id := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("bob@example.com", true))["id"].(string)
	e.must(http.StatusNoContent, http.MethodDelete, "/Users/"+id, nil)
	lks, err := e.locks.List(context.Background(), false, 10)
	if err != nil || len(lks) != 1 || !strings.Contains(lks[0].Reason, "deleted") || lks[0].Subject != "bob@example.com" {
		t.Fatalf("locks after deleting bob: %+v, %v", lks, err)
	}
	// A user created deactivated is locked from the start.
	e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("carol@example.com", false))
	if e.locked("carol@example.com") == nil {
		t.Error("carol, created deactivated, is not locked")
	}
}

// TestEntraUser drives the requests Microsoft Entra ID sends: "active" as
// the string "False", paths with value filters, and sub-attributes named
// with dots.
func TestEntraUser(t *testing.T) {
	e := newEnv(t)
	u := map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"},
		"externalId": "8f1c2a", "userName": "dave@example.com", "active": true,
		"emails": []any{map[string]any{"primary": true, "type": "work", "value": "dave@example.com"}},
		"name":   map[string]any{"formatted": "Dave Example", "familyName": "Example", "givenName": "Dave"},
		"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": map[string]any{"department": "SRE"},
	}
	id := e.must(http.StatusCreated, http.MethodPost, "/Users", u)["id"].(string)
	out := e.must(http.StatusOK, http.MethodGet, `/Users?filter=`+urlQuery(`externalId eq "8f1c2a"`), nil)
	if out["totalResults"] != 1.0 {
		t.Errorf("lookup by externalId: %v", out)
	}
	out = e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(
		map[string]any{"op": "Replace", "path": `emails[type eq "work"].value`, "value": "dave.example@example.com"},
		map[string]any{"op": "Add", "path": `emails[type eq "home"].value`, "value": "dave@home.example"},
		map[string]any{"op": "Replace", "value": map[string]any{"name.givenName": "David"}},
		map[string]any{"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Platform"},
	))
	emails, _ := json.Marshal(out["emails"])
	if !strings.Contains(string(emails), `"dave.example@example.com"`) || !strings.Contains(string(emails), `"dave@home.example"`) ||
		strings.Contains(string(emails), `"dave@example.com"`) {
		t.Errorf("emails after PATCH: %s", emails)
	}
	if out["name"].(map[string]any)["givenName"] != "David" || out["name"].(map[string]any)["familyName"] != "Example" {
		t.Errorf("name after PATCH: %v", out["name"])
	}
	ext, _ := json.Marshal(out)
	if !strings.Contains(string(ext), `"department":"Platform"`) {
		t.Errorf("enterprise extension after PATCH: %s", ext)
	}
	// Entra deactivates with the string "False".
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "Replace", "path": "active", "value": "False"}))
	if e.locked("dave@example.com") == nil {
		t.Error(`dave not locked after active "False"`)
	}
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "Replace", "path": "active", "value": "True"}))
	if err := e.locked("dave@example.com"); err != nil {
		t.Errorf(`dave after active "True": %v`, err)
	}
	// A patch that removes userName is refused and changes nothing.
	code, bad := e.do(http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "remove", "path": "userName"}))
	if code != http.StatusBadRequest {
		t.Errorf("removing userName: %d %v; want 400", code, bad)
	}
	if got := e.must(http.StatusOK, http.MethodGet, "/Users/"+id, nil); got["userName"] != "dave@example.com" {
		t.Errorf("after the refused patch: %v", got)
	}
	// Bad bodies get SCIM errors.
	for _, body := range []any{map[string]any{"active": true}, "not an object"} {
		if code, out := e.do(http.MethodPost, "/Users", body); code != http.StatusBadRequest {
			t.Errorf("POST %v: %d %v; want 400", body, code, out)
		}
	}
}

// TestSubjectMapping locks the identity whose subject is the attribute the
// configuration names: externalId for one issuer, the primary email for
// another.
func TestSubjectMapping(t *testing.T) {
	e := newEnv(t, config.SCIM{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{
		{Issuer: "okta", Subject: config.SCIMSubjectExternalID}, {Issuer: "okta-saml", Subject: config.SCIMSubjectEmail}}})
	u := oktaUser("erin", true)
	u["externalId"] = "00uERIN"
	u["emails"] = []any{map[string]any{"value": "erin.alt@example.com"}, map[string]any{"value": "Erin@Example.com", "primary": true}}
	id := e.must(http.StatusCreated, http.MethodPost, "/Users", u)["id"].(string)
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "replace", "path": "active", "value": false}))
	ctx := context.Background()
	for _, id := range []certs.Identity{{Issuer: "okta", Subject: "00uERIN"}, {Issuer: "okta-saml", Subject: "Erin@Example.com"}} {
		if e.locks.CheckFresh(ctx, lock.Subject{Identity: id}) == nil {
			t.Errorf("%v not locked", id)
		}
	}
	for _, id := range []certs.Identity{{Issuer: "okta", Subject: "erin"}, {Issuer: "okta-saml", Subject: "erin.alt@example.com"}} {
		if err := e.locks.CheckFresh(ctx, lock.Subject{Identity: id}); err != nil {
			t.Errorf("%v locked: %v", id, err)
		}
	}
	// The directory finds identities by these subjects (an email without
	// case, an externalId exactly).
	if _, known := e.dir.Groups(certs.Identity{Issuer: "okta-saml", Subject: "erin@example.com"}); !known {
		t.Error("the directory does not know erin by her email")
	}
	if _, known := e.dir.Groups(certs.Identity{Issuer: "okta", Subject: "00uerin"}); known {
		t.Error("the directory matched an externalId without case")
	}
	if _, known := e.dir.Groups(certs.Identity{Issuer: "github", Subject: "erin"}); known {
		t.Error("the directory speaks for an issuer it was not given")
	}
}

// TestGroups drives group provisioning as Okta and Entra ID do it, and
// checks what the directory makes of it for role matches and approvers.
func TestGroups(t *testing.T) {
	e := newEnv(t)
	alice := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("alice@example.com", true))["id"].(string)
	bob := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("bob@example.com", true))["id"].(string)
	aliceID := certs.Identity{Issuer: "okta", Subject: "alice@example.com", Username: "alice"}
	bobID := certs.Identity{Issuer: "okta", Subject: "bob@example.com", Username: "bob"}
	groupsOf := func(id certs.Identity) []string {
		g, known := e.dir.Groups(id)
		if !known {
			t.Fatalf("directory does not know %v", id)
		}
		return g
	}

	sre := e.must(http.StatusCreated, http.MethodPost, "/Groups", map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "sre",
		"members": []any{map[string]any{"value": alice, "display": "alice@example.com"}, map[string]any{"value": "no-such-user"}},
	})
	sreID := sre["id"].(string)
	if m, _ := sre["members"].([]any); len(m) != 1 || m[0].(map[string]any)["display"] != "alice@example.com" {
		t.Errorf("members of the new group: %v (unknown members are left out)", sre["members"])
	}
	if g := groupsOf(aliceID); !slices.Equal(g, []string{"sre"}) {
		t.Errorf("alice's groups = %v; want [sre]", g)
	}
	if g := groupsOf(bobID); len(g) != 0 {
		t.Errorf("bob's groups = %v; want none", g)
	}
	if code, out := e.do(http.MethodPost, "/Groups", group("sre")); code != http.StatusConflict {
		t.Errorf("second sre: %d %v; want 409", code, out)
	}
	out := e.must(http.StatusOK, http.MethodGet, `/Groups?filter=`+urlQuery(`displayName eq "sre"`), nil)
	if out["totalResults"] != 1.0 {
		t.Errorf("lookup by displayName: %v", out)
	}

	// Okta adds a member with a list of values…
	e.must(http.StatusOK, http.MethodPatch, "/Groups/"+sreID, patch(map[string]any{"op": "add", "path": "members",
		"value": []any{map[string]any{"value": bob, "display": "bob@example.com"}}}))
	if g := groupsOf(bobID); !slices.Equal(g, []string{"sre"}) {
		t.Errorf("bob's groups after add = %v", g)
	}
	// … and removes one with a value filter.
	e.must(http.StatusOK, http.MethodPatch, "/Groups/"+sreID, patch(map[string]any{"op": "remove", "path": fmt.Sprintf(`members[value eq "%s"]`, alice)}))
	if g := groupsOf(aliceID); len(g) != 0 {
		t.Errorf("alice's groups after removal = %v", g)
	}
	// Entra ID removes with a list of values.
	e.must(http.StatusOK, http.MethodPatch, "/Groups/"+sreID, patch(map[string]any{"op": "Remove", "path": "members",
		"value": []any{map[string]any{"value": bob}}}))
	if g := groupsOf(bobID); len(g) != 0 {
		t.Errorf("bob's groups after removal = %v", g)
	}
	// A replace of the members and a rename.
	out = e.must(http.StatusOK, http.MethodPatch, "/Groups/"+sreID, patch(
		map[string]any{"op": "replace", "path": "members", "value": []any{map[string]any{"value": alice}, map[string]any{"value": bob}}},
		map[string]any{"op": "replace", "path": "displayName", "value": "platform"},
	))
	if out["displayName"] != "platform" {
		t.Errorf("after rename: %v", out)
	}
	if g := groupsOf(aliceID); !slices.Equal(g, []string{"platform"}) {
		t.Errorf("alice's groups after rename = %v", g)
	}
	// Approvers known only by key (Slack) get their groups too…
	approver, err := e.dir.Approver(slackApprover("okta:bob@example.com"))
	if err != nil || !slices.Equal(approver.Groups, []string{"platform"}) {
		t.Errorf("Approver(bob by name) = %+v, %v", approver, err)
	}
	// … and so do approvers by identity, in place of their login's groups.
	approver, err = e.dir.Approver(certs.Identity{Issuer: "okta", Subject: "bob@example.com", Groups: []string{"admins"}})
	if err != nil || !slices.Equal(approver.Groups, []string{"platform"}) {
		t.Errorf("Approver(bob) = %+v, %v", approver, err)
	}
	// A deactivated member loses its groups and may approve nothing.
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+bob, patch(map[string]any{"op": "replace", "value": map[string]any{"active": false}}))
	if g := groupsOf(bobID); len(g) != 0 {
		t.Errorf("deactivated bob's groups = %v", g)
	}
	for _, id := range []certs.Identity{slackApprover("okta:bob@example.com"), slackApprover("okta:BOB@example.com"), bobID} {
		if _, err := e.dir.Approver(id); usererr.As(err) == nil || usererr.As(err).Code != scim.CodeDeprovisioned {
			t.Errorf("Approver(%v) of deactivated bob: %v; want deprovisioned", id, err)
		}
	}
	// Someone the directory does not know approves as before.
	stranger := certs.Identity{Issuer: "github", Subject: "zoe", Username: "zoe", Groups: []string{"admins"}}
	if got, err := e.dir.Approver(stranger); err != nil || !slices.Equal(got.Groups, stranger.Groups) {
		t.Errorf("Approver(stranger) = %+v, %v", got, err)
	}
	// Deleting the group takes it from its members.
	e.must(http.StatusNoContent, http.MethodDelete, "/Groups/"+sreID, nil)
	e.must(http.StatusNotFound, http.MethodGet, "/Groups/"+sreID, nil)
	if g := groupsOf(aliceID); len(g) != 0 {
		t.Errorf("alice's groups after the group's deletion = %v", g)
	}
	// PUT replaces a group.
	g := e.must(http.StatusCreated, http.MethodPost, "/Groups", group("dba"))["id"].(string)
	e.must(http.StatusOK, http.MethodPut, "/Groups/"+g, group("dba", alice))
	if g := groupsOf(aliceID); !slices.Equal(g, []string{"dba"}) {
		t.Errorf("alice's groups after PUT = %v", g)
	}
}

// TestDirectoryReplicas checks that another replica's directory follows
// the changes one replica makes.
func TestDirectoryReplicas(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	other, err := state.Open(ctx, e.dbURL, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	clients := []config.SCIM{{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{{Issuer: "okta"}}}}
	dir, err := scim.NewDirectory(ctx, other, clients, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	go dir.Run(ctx, 50*time.Millisecond)
	alice := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("alice@example.com", true))["id"].(string)
	e.must(http.StatusCreated, http.MethodPost, "/Groups", group("sre", alice))
	id := certs.Identity{Issuer: "okta", Subject: "alice@example.com"}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if g, _ := dir.Groups(id); slices.Equal(g, []string{"sre"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other replica's directory never saw alice in sre")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// slackApprover is a Slack approver as approvals.slack.approvers names it:
// by identity key.
func slackApprover(key string) certs.Identity {
	id, ok := certs.IdentityFromKey(key)
	if !ok {
		panic("not a key: " + key)
	}
	return id
}

// TestAliases: a deprovisioned user whose identity identity.aliases maps to
// a person has the person locked, through every issuer the alias names; an
// approver named by the alias is refused.
func TestAliases(t *testing.T) {
	e := newEnvWith(t, []config.SCIM{{Name: "okta", BearerToken: token, Issuers: []config.SCIMIssuer{{Issuer: "okta"}}}},
		[]config.Alias{{Name: "carol", Identities: []string{"okta:carol@example.com", "corp:00u-carol"}}})
	id := e.must(http.StatusCreated, http.MethodPost, "/Users", oktaUser("carol@example.com", true))["id"].(string)
	e.must(http.StatusCreated, http.MethodPost, "/Groups", group("sre", id))
	// Carol by her alias key (Slack) and by her other issuer decides with
	// her provisioned groups.
	for _, who := range []certs.Identity{slackApprover("alias:carol"), {Issuer: "corp", Subject: "00u-carol", Alias: "carol"}} {
		if got, err := e.dir.Approver(who); err != nil || !slices.Equal(got.Groups, []string{"sre"}) {
			t.Errorf("Approver(%v) = %+v, %v; want sre", who, got, err)
		}
	}
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "replace", "value": map[string]any{"active": false}}))
	ctx := context.Background()
	lks, err := e.locks.List(ctx, false, 10)
	if err != nil || len(lks) != 1 || lks[0].Issuer != "alias" || lks[0].Subject != "carol" {
		t.Fatalf("locks after deactivating carol: %+v, %v; want one lock of alias:carol", lks, err)
	}
	// Her identity at another issuer is held by the alias lock.
	if e.locks.CheckFresh(ctx, lock.Subject{Identity: certs.Identity{Issuer: "corp", Subject: "00u-carol", Alias: "carol"}}) == nil {
		t.Error("carol's corp identity is not locked")
	}
	if _, err := e.dir.Approver(slackApprover("alias:carol")); usererr.As(err) == nil || usererr.As(err).Code != scim.CodeDeprovisioned {
		t.Errorf("Approver(alias:carol) after deactivation: %v", err)
	}
	e.must(http.StatusOK, http.MethodPatch, "/Users/"+id, patch(map[string]any{"op": "replace", "value": map[string]any{"active": true}}))
	if n := e.activeLocks(); n != 0 {
		t.Errorf("%d locks after reactivation", n)
	}
}

func urlQuery(s string) string {
	return strings.NewReplacer(" ", "%20", `"`, "%22").Replace(s)
}
