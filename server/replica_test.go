package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/state"
)

func TestReplicaID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := ReplicaID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !validReplicaID(a) || len(a) != 18 {
		t.Fatalf("id %q", a)
	}
	b, err := ReplicaID(dir)
	if err != nil || b != a {
		t.Fatalf("second call = %q, %v; want the stable %q", b, err, a)
	}
	fi, err := os.Stat(filepath.Join(dir, replicaIDFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replica_id file: %v %v", fi, err)
	}
	other, err := ReplicaID(t.TempDir())
	if err != nil || other == a {
		t.Fatalf("another data directory got %q (%v); want a different id", other, err)
	}
}

func TestReplicaIDConcurrentStart(t *testing.T) {
	dir := t.TempDir()
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, err := ReplicaID(dir)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids differ: %v", ids)
		}
	}
}

func TestReplicaIDMalformed(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, replicaIDFile), []byte("bad id/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReplicaID(dir); err == nil {
		t.Fatal("malformed replica id accepted")
	}
}

func TestReplicaName(t *testing.T) {
	dir := t.TempDir()
	for in, want := range map[string]string{
		"http://10.0.0.5:8080":   "http://10.0.0.5:8080",
		"https://p-0.svc:8443/":  "https://p-0.svc:8443",
		"http://127.0.0.1:40000": "http://127.0.0.1:40000",
	} {
		if got, err := ReplicaName(in, dir); err != nil || got != want {
			t.Errorf("ReplicaName(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"10.0.0.5:8080", "ftp://x:1", "http://u:p@x:1", "http://x:1/path", "http://x:1/?q=1"} {
		if _, err := ReplicaName(bad, dir); err == nil {
			t.Errorf("ReplicaName(%q) accepted", bad)
		}
	}
	id, err := ReplicaName("", dir)
	if err != nil || !strings.HasPrefix(id, "r-") {
		t.Errorf("ReplicaName without address = %q, %v; want the replica id", id, err)
	}
}

// TestFollowAcrossReplicas: a follow asked on a replica that does not record
// the session is streamed from the owner named in the sessions index, with
// the client's own Authorization and request URI.
func TestFollowAcrossReplicas(t *testing.T) {
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	var gotAuth, gotURI, gotFwd string
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotURI, gotFwd = r.Header.Get("Authorization"), r.URL.RequestURI(), r.Header.Get(forwardedHeader)
		if gotAuth != "Postern-SSH sig" {
			http.Error(w, "unauthorised", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "{\"version\": 2}\n[0.1, \"o\", \"live\"]\n")
	}))
	defer owner.Close()
	self := "http://127.0.0.1:1"
	for id, replica := range map[string]string{"remote": owner.URL, "mine": self, "unnamed": "r-0123456789abcdef"} {
		if err := st.PutSession(ctx, state.Session{ID: id, Start: time.Now(), Status: state.StatusRunning, Replica: replica}); err != nil {
			t.Fatal(err)
		}
	}
	errLocal := errors.New("session is recorded by another replica")
	local := func(ctx context.Context, id string) (io.ReadCloser, error) {
		if id == "here" {
			return io.NopCloser(strings.NewReader("local")), nil
		}
		return nil, errLocal
	}
	follow := FollowAcrossReplicas(local, st, self, owner.Client())
	// The API handler stand-in: it calls follow with the request's context.
	api := WithForwarding(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/v1/sessions/"), "/cast")
		rc, err := follow(r.Context(), id)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer rc.Close()
		io.Copy(w, rc)
	}))
	get := func(id, auth string, hdr map[string]string) (int, string) {
		req := httptest.NewRequest(http.MethodGet, "/v1/sessions/"+id+"/cast?follow=1", nil)
		req.Header.Set("Authorization", auth)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		api.ServeHTTP(rec, req)
		return rec.Code, rec.Body.String()
	}

	code, body := get("remote", "Postern-SSH sig", nil)
	if code != http.StatusOK || !strings.Contains(body, `"live"`) {
		t.Fatalf("remote follow = %d %q", code, body)
	}
	if gotURI != "/v1/sessions/remote/cast?follow=1" || gotFwd != "1" {
		t.Errorf("owner saw URI %q forwarded %q", gotURI, gotFwd)
	}
	if code, _ := get("remote", "Postern-SSH wrong", nil); code != http.StatusServiceUnavailable {
		t.Errorf("owner refusal gave %d; want the follow refused", code)
	}
	if code, body := get("here", "", nil); code != http.StatusOK || body != "local" {
		t.Errorf("local follow = %d %q", code, body)
	}
	for _, id := range []string{"mine", "unnamed", "missing"} {
		if code, body := get(id, "Postern-SSH sig", nil); code != http.StatusServiceUnavailable || !strings.Contains(body, errLocal.Error()) {
			t.Errorf("%s: %d %q; want the local error", id, code, body)
		}
	}
	// A request another replica forwarded is never forwarded again.
	if code, _ := get("remote", "Postern-SSH sig", map[string]string{forwardedHeader: "1"}); code != http.StatusServiceUnavailable {
		t.Errorf("forwarded request was forwarded again: %d", code)
	}
}
