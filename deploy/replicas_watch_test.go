// The live watch across replicas: each replica is named by its advertised
// HTTP address (POSTERN_ADVERTISE_HOST here stands for the pod IP the Helm
// chart sets), and a follow asked on a replica that does not record the
// session is forwarded to the one that does.

package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/state"
)

// TestReplicasWatchThroughB: a session recorded on A is followed live with
// ?follow=1 asked on B; the follower sees what the user types on A as it
// happens, and the stream ends when the session does.
func TestReplicasWatchThroughB(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "A", "POSTERN_ADVERTISE_HOST=127.0.0.1")
	b := c.start(t, "B", "POSTERN_ADVERTISE_HOST=127.0.0.1")
	sa, _ := c.user(t, "alice@example.com")
	cs := a.dialCat(t, sa)
	if err := cs.echo("typed before the watch"); err != nil {
		t.Fatal(err)
	}
	st := openState(t, c)
	rows, err := st.ListSessions(context.Background(), state.SessionFilter{Status: state.StatusRunning})
	if err != nil || len(rows) != 1 {
		t.Fatalf("running sessions: %v, %v", rows, err)
	}
	id := rows[0].ID
	if !strings.HasPrefix(rows[0].Replica, "http://127.0.0.1:") || strings.HasSuffix(rows[0].Replica, b.HTTPAddr) {
		t.Fatalf("session %s is indexed under replica %q; want A's advertised address", id, rows[0].Replica)
	}

	_, cert, key := c.userCert(t, "auditor@example.com", "auditors")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.HTTPAddr+"/v1/sessions/"+id+"/cast?follow=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.SignAPIRequest(req, cert, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("follow on B: %d %s", resp.StatusCode, body)
	}
	var seen bytes.Buffer
	buf := make([]byte, 4096)
	waitFor := func(text string) {
		t.Helper()
		for !bytes.Contains(seen.Bytes(), []byte(text)) {
			n, err := resp.Body.Read(buf)
			seen.Write(buf[:n])
			if err != nil && !bytes.Contains(seen.Bytes(), []byte(text)) {
				t.Fatalf("follow stream ended before %q: %v\n%s", text, err, seen.String())
			}
		}
	}
	waitFor("typed before the watch")
	for i := range 3 {
		line := fmt.Sprintf("typed during the watch %d", i)
		if err := cs.echo(line); err != nil {
			t.Fatal(err)
		}
		waitFor(line)
	}
	cs.stdin.(io.Closer).Close()
	if err := cs.sess.Wait(); err != nil {
		t.Fatalf("session exit: %v", err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatalf("follow stream after the session ended: %v", err)
	}
}
