package players

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/players/internal/playtest"
	"github.com/posternhq/postern/state"
)

// TestAPIOwnershipIsIdentityKey: a recording belongs to the identity key
// it was recorded under, never to a username. Three identities named
// alice — two subjects of one issuer and one of another issuer — each list,
// show, replay, follow and search only their own recordings; a row recorded
// before sessions had keys is visible to auditors only.
func TestAPIOwnershipIsIdentityKey(t *testing.T) {
	f := newAPIFixture(t)
	people := map[string]certs.Identity{
		"alice-1":  {Issuer: "corp", Subject: "a1", Username: "alice", Kind: certs.KindHuman},
		"alice-2":  {Issuer: "corp", Subject: "a2", Username: "alice", Kind: certs.KindHuman},
		"alice-gh": {Issuer: "github", Subject: "a1", Username: "alice", Kind: certs.KindHuman},
	}
	done := map[string]string{}
	for name, id := range people {
		f.users.Add(t, name, id)
		done[name] = f.env.RecordAs(t, id, "web-1", "cat secret-of-"+name, playtest.Step{Output: "token of " + name + "\r\n"})
		f.env.Index(t, done[name])
	}
	live := f.env.StartAs(t, people["alice-1"], "web-1", "top")
	playtest.Play(t, live, playtest.Step{Output: "live\r\n"})
	defer playtest.Finish(t, live)
	// A row from before the migration: alice's username and corp's issuer,
	// but no key.
	legacy := state.Session{ID: "01ARZ3NDEKTSV4RRFFQ69G5FAV", Identity: "alice", Issuer: "corp", Role: "ops", Target: "web-1",
		Login: "deploy", Kind: state.KindShell, Start: time.Now().Add(-time.Hour), Status: state.StatusFinished}
	if err := f.env.State.PutSession(context.Background(), legacy); err != nil {
		t.Fatal(err)
	}

	list := func(t *testing.T, user, query string) (int, []state.Session) {
		t.Helper()
		resp := f.get(t, user, "/v1/sessions"+query)
		var rows []state.Session
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(readAll(t, resp), &rows); err != nil {
				t.Fatal(err)
			}
		}
		return resp.StatusCode, rows
	}
	for name, id := range people {
		t.Run(name, func(t *testing.T) {
			code, rows := list(t, name, "")
			want := map[string]bool{done[name]: true}
			if name == "alice-1" {
				want[live.ID()] = true
			}
			if code != http.StatusOK || len(rows) != len(want) {
				t.Fatalf("list: %d, %d rows; want 200 and %d", code, len(rows), len(want))
			}
			for _, r := range rows {
				if !want[r.ID] || r.IdentityKey != id.Key() {
					t.Errorf("lists %s (key %q); want only %s's", r.ID, r.IdentityKey, id.Key())
				}
			}
			// Filtering by the shared username lists no one else's.
			if code, rows := list(t, name, "?user=alice"); code != http.StatusOK || len(rows) != len(want) {
				t.Errorf("?user=alice: %d, %d rows; want %d", code, len(rows), len(want))
			}
			for other, oid := range people {
				if other == name {
					continue
				}
				if code, _ := list(t, name, "?identity_key="+url.QueryEscape(oid.Key())); code != http.StatusForbidden {
					t.Errorf("listing %s's sessions by key: %d; want 403", other, code)
				}
				for _, p := range []string{"/v1/sessions/" + done[other], "/v1/sessions/" + done[other] + "/cast"} {
					if resp := f.get(t, name, p); resp.StatusCode != http.StatusNotFound {
						t.Errorf("GET %s (%s's): %d; want 404", p, other, resp.StatusCode)
					}
				}
			}
			for _, p := range []string{"/v1/sessions/" + done[name], "/v1/sessions/" + done[name] + "/cast"} {
				if resp := f.get(t, name, p); resp.StatusCode != http.StatusOK {
					t.Errorf("GET %s (own): %d; want 200", p, resp.StatusCode)
				}
			}
			wantLive := http.StatusNotFound
			if name == "alice-1" {
				wantLive = http.StatusOK
			}
			if resp := f.get(t, name, "/v1/sessions/"+live.ID()); resp.StatusCode != wantLive {
				t.Errorf("showing alice-1's running session: %d; want %d", resp.StatusCode, wantLive)
			}
			if wantLive == http.StatusNotFound {
				if resp := f.get(t, name, "/v1/sessions/"+live.ID()+"/cast?follow=1"); resp.StatusCode != http.StatusNotFound {
					t.Errorf("following alice-1's running session: %d; want 404", resp.StatusCode)
				}
			}
			for _, p := range []string{"/v1/sessions/" + legacy.ID, "/v1/sessions/" + legacy.ID + "/cast"} {
				if resp := f.get(t, name, p); resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s (recorded without a key): %d; want 404", p, resp.StatusCode)
				}
			}
			// Search: "token" is in every recording; only one's own answers.
			for _, q := range []url.Values{{"q": {"token"}}, {"q": {"token"}, "identity": {"alice"}}} {
				resp := f.get(t, name, "/v1/sessions/search?"+q.Encode())
				var hits []SearchHit
				if err := json.Unmarshal(readAll(t, resp), &hits); err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("search %v: %d, %v", q, resp.StatusCode, err)
				}
				if len(hits) == 0 {
					t.Errorf("search %v finds nothing; want the own recording", q)
				}
				for _, h := range hits {
					if h.Session != done[name] || h.IdentityKey != id.Key() {
						t.Errorf("search %v finds %s (key %q)", q, h.Session, h.IdentityKey)
					}
				}
			}
			for other, oid := range people {
				if other != name {
					q := url.Values{"q": {"token"}, "identity_key": {oid.Key()}}
					if resp := f.get(t, name, "/v1/sessions/search?"+q.Encode()); resp.StatusCode != http.StatusForbidden {
						t.Errorf("searching %s's recordings by key: %d; want 403", other, resp.StatusCode)
					}
				}
			}
		})
	}
	t.Run("auditor", func(t *testing.T) {
		code, rows := list(t, auditor, "")
		if code != http.StatusOK || len(rows) != 5 {
			t.Fatalf("auditor lists %d rows (%d); want all 5", len(rows), code)
		}
		if resp := f.get(t, auditor, "/v1/sessions/"+legacy.ID); resp.StatusCode != http.StatusOK {
			t.Errorf("auditor showing the row without a key: %d; want 200", resp.StatusCode)
		}
		key := people["alice-gh"].Key()
		if code, rows := list(t, auditor, "?identity_key="+url.QueryEscape(key)); code != http.StatusOK || len(rows) != 1 || rows[0].ID != done["alice-gh"] {
			t.Errorf("auditor listing by key: %d %+v; want alice-gh's one", code, rows)
		}
		resp := f.get(t, auditor, "/v1/sessions/search?"+url.Values{"q": {"token"}, "identity_key": {key}}.Encode())
		var hits []SearchHit
		if err := json.Unmarshal(readAll(t, resp), &hits); err != nil || len(hits) != 1 || hits[0].Session != done["alice-gh"] {
			t.Errorf("auditor searching by key: %d %+v, %v; want alice-gh's one", resp.StatusCode, hits, err)
		}
	})
}
