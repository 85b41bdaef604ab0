package deploy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/state"
)

// TestReplicasApprovalOnBReleasesA: a command held for approval on replica
// A is approved through replica B's API; A hears the decision (LISTEN/NOTIFY
// on the shared PostgreSQL, polling as the fallback) and runs the command.
func TestReplicasApprovalOnBReleasesA(t *testing.T) {
	c := newCluster(t)
	a := c.start(t, "A")
	b := c.start(t, "B")
	alice, _ := c.user(t, "alice@example.com")

	cfg := a.clientConfig(alice)
	outer, err := ssh.Dial("tcp", a.SSHAddr, cfg)
	if err != nil {
		t.Fatalf("A: outer: %v", err)
	}
	defer outer.Close()
	ch, err := outer.Dial("tcp", "echo:22")
	if err != nil {
		t.Fatalf("A: direct-tcpip: %v", err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(ch, "echo:22", a.innerConfig(alice))
	if err != nil {
		t.Fatalf("A: inner: %v", err)
	}
	inner := ssh.NewClient(cc, chans, reqs)
	defer inner.Close()
	sess, err := inner.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	sess.Stdout, sess.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	go func() { done <- sess.Run("echo held-then-ran") }()

	// The request appears in the shared store while A holds the command.
	st := openState(t, c)
	var pending state.Approval
	deadline := time.Now().Add(30 * time.Second)
	for pending.ID == "" {
		list, err := st.ListApprovals(context.Background(), state.ApprovalPending, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) > 0 {
			pending = list[0]
			break
		}
		select {
		case err := <-done:
			t.Fatalf("command finished before approval: %v; stdout %q stderr %q", err, stdout.String(), stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pending approval in the store; A's log:\n%s", a.proc.Output())
		}
	}
	if pending.RequesterKey != "ha:alice@example.com" || pending.Requester != "alice@example.com (ha)" || pending.Target != "echo" {
		t.Errorf("pending request = %+v; want alice's on echo", pending)
	}

	// Bob approves on B.
	_, cert, key := c.userCert(t, "bob@example.com", "approvers")
	req, err := http.NewRequest(http.MethodPost, "http://"+b.HTTPAddr+"/v1/approvals/"+pending.ID+"/approve",
		strings.NewReader(`{"reason":"looks fine"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := certs.SignAPIRequest(req, cert, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("approve on B: %s %s", resp.Status, body)
	}

	select {
	case err := <-done:
		if err != nil || !strings.Contains(stdout.String(), "held-then-ran") {
			t.Fatalf("command after approval: %v; stdout %q stderr %q", err, stdout.String(), stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("A did not release the command after B's approval; A's log:\n%s", a.proc.Output())
	}
	if !strings.Contains(stderr.String(), pending.ID) {
		t.Errorf("stderr %q does not name the request %s", stderr.String(), pending.ID)
	}
}
