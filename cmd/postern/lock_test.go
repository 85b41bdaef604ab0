package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/usererr"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// TestLockCommands drives postern lock against the locks API over a real
// state store, as audra, an admin.
func TestLockCommands(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	locker, err := lock.New(ctx, lock.Options{Store: st, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(locker.Close)
	auth, err := certs.LoadAuthority(config.CAs{}, filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := lock.NewAPI(lock.APIOptions{Locker: locker, Auth: &certs.APIAuth{Authority: auth},
		Permissions: func(certs.Identity) []string { return []string{"admin"} }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/locks", api)
	mux.Handle("/v1/locks/", api)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	profile := "--dir=" + writeAuditorProfile(t, auth, srv.URL)

	out, _, err := runClient(t, newLockCmd, "identity", "--issuer", "corp", "--subject", "u-7", "--username", "eve@example.com",
		"--reason", "phished", profile)
	if err != nil || !strings.Contains(out, "identity eve@example.com (corp/u-7) locked until removed") {
		t.Fatalf("lock identity: %q %v", out, err)
	}
	id := strings.SplitN(out, ":", 2)[0]
	out, _, err = runClient(t, newLockCmd, "target", "db-1", "--reason", "restore", "--for", "30m", "--json", profile)
	var lk state.Lock
	if err != nil || json.Unmarshal([]byte(out), &lk) != nil || lk.Kind != "target" || lk.Name != "db-1" || lk.Expires.IsZero() {
		t.Fatalf("lock target --json: %q %v", out, err)
	}
	if err := locker.Check(lock.Subject{Identity: certs.Identity{Issuer: "corp", Subject: "u-7", Username: "eve"}}); err == nil {
		t.Error("the identity locked through the CLI is not locked")
	}
	_, _, err = runClient(t, newLockCmd, "role", "agents", profile)
	if ue := usererr.As(err); ue == nil || ue.Exit != 2 || !strings.Contains(ue.Msg, "--reason") {
		t.Errorf("lock without --reason: %v", err)
	}
	_, _, err = runClient(t, newLockCmd, "identity", "--issuer", "corp", "--reason", "x", profile)
	if ue := usererr.As(err); ue == nil || ue.Exit != 2 || !strings.Contains(ue.Msg, "--subject") {
		t.Errorf("identity lock without --subject: %v", err)
	}
	_, _, err = runClient(t, newLockCmd, "role", "agents", "--reason", "bad\x07bell", profile)
	if err == nil || !strings.Contains(err.Error(), "control characters") {
		t.Errorf("a reason with control characters: %v", err)
	}

	out, _, err = runClient(t, newLockCmd, "ls", profile)
	if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "phished") || !strings.Contains(out, "db-1") ||
		!strings.Contains(out, "for 30m") {
		t.Fatalf("lock ls: %q %v", out, err)
	}
	out, _, err = runClient(t, newLockCmd, "rm", id, profile)
	if err != nil || strings.TrimSpace(out) != id+": lock removed" {
		t.Fatalf("lock rm: %q %v", out, err)
	}
	if _, _, err = runClient(t, newLockCmd, "rm", id, profile); err == nil || !strings.Contains(err.Error(), "no such lock") {
		t.Errorf("second rm: %v", err)
	}
	out, _, err = runClient(t, newLockCmd, "ls", "--all", profile)
	if err != nil || !strings.Contains(out, "removed by audra@example.com") {
		t.Errorf("lock ls --all: %q %v", out, err)
	}
}
