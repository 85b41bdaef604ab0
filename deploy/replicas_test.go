package deploy_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

// The tests below run two `postern serve` processes (the built binary) as
// replicas of one deployment: the same CA keys, one PostgreSQL state store
// (internal/pgtest) and one recording store directory, each with its own
// data directory (spool, audit file). They check what HA promises: a
// revocation made through one replica holds on the other; killing one
// replica leaves the other's sessions alone, and the killed one recovers its
// own interrupted recording on restart.

func TestMain(m *testing.M) {
	code := pgtest.RunMain(m)
	testutil.RemovePosternBinary()
	os.Exit(code)
}

// cluster is the shared part of a deployment.
type cluster struct {
	stateURL string
	storage  string // recording store directory
	caDir    string
	auth     *certs.Authority
	// identity is the identity: section of every replica's configuration
	// (issuers); none if empty.
	identity string
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("starts PostgreSQL and two postern replicas")
	}
	testutil.PosternBinary(t)
	srv := pgtest.Shared(t)
	c := &cluster{stateURL: srv.PasswordDSN(srv.NewDB(t)), storage: t.TempDir(), caDir: t.TempDir()}
	// The CA keys are made once, as an operator would, and given to every replica.
	auth, err := certs.LoadAuthority(config.CAs{}, c.caDir)
	if err != nil {
		t.Fatal(err)
	}
	c.auth = auth
	return c
}

// replica is one `postern serve` process of a cluster.
type replica struct {
	t        *testing.T
	c        *cluster
	name     string
	data     string
	config   string
	env      []string
	proc     *testutil.Proc
	SSHAddr  string
	HTTPAddr string
}

const login = "tester"

// start runs a replica; env is extra KEY=VALUE environment.
func (c *cluster) start(t *testing.T, name string, env ...string) *replica {
	t.Helper()
	data := t.TempDir()
	cfg := fmt.Sprintf(`listen: {ssh: "127.0.0.1:0", http: "127.0.0.1:0"}
data_dir: %[1]s
storage: file://%[2]s
state: %[3]s
ca:
  user: {key_file: %[4]s/ca/user_ca}
  host: {key_file: %[4]s/ca/host_ca}
  target: {key_file: %[4]s/ca/target_ca}
  audit: {key_file: %[4]s/ca/audit_key}
audit: {checkpoint_interval: 1s}
recording: {fsync_interval: 100ms}
targets:
  - {name: echo, kind: command, command: [sh, -c, "exec cat"], exec: [sh, -c]}
roles:
  - name: ha
    match: {groups: [ha]}
    targets: [echo]
    logins: [%[5]s]
    record: required
    rules: [{match: 'held-then-ran', action: approve, approvers: [approvers], timeout: 2m}]
  - {name: approvers, match: {groups: [approvers]}, targets: [echo], logins: [%[5]s], permissions: [approver]}
  - {name: auditors, match: {groups: [auditors]}, targets: [echo], logins: [%[5]s], permissions: [auditor]}
  - {name: admins, match: {groups: [admins]}, targets: [echo], logins: [%[5]s], permissions: [admin]}
%[6]s
`, data, c.storage, c.stateURL, c.caDir, login, c.identity)
	path := filepath.Join(data, "postern.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r := &replica{t: t, c: c, name: name, data: data, config: path, env: env}
	r.run()
	return r
}

var servingLine = regexp.MustCompile(`"msg":"postern serving".*`)

// run (re)starts the process and waits until it serves.
func (r *replica) run() {
	t := r.t
	t.Helper()
	r.proc = testutil.Start(t, testutil.PosternBinary(t), []string{"serve", "--config", r.config, "--log-format", "json"},
		testutil.Env(r.env...))
	line := r.proc.WaitLine(t, servingLine, 60*time.Second)
	var serving struct{ SSH, HTTP string }
	if err := json.Unmarshal([]byte(line), &serving); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	r.SSHAddr, r.HTTPAddr = serving.SSH, serving.HTTP
}

// user returns a key with a user certificate (in group ha) and its serial.
func (c *cluster) user(t *testing.T, username string) (ssh.Signer, uint64) {
	t.Helper()
	cs, cert, _ := c.userCert(t, username, "ha")
	return cs, cert.Serial
}

// userCert returns a user certificate in groups, its key, and both as one
// SSH signer.
func (c *cluster) userCert(t *testing.T, username string, groups ...string) (ssh.Signer, *ssh.Certificate, ssh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	serial := binary.BigEndian.Uint64(b[:]) >> 1 // positive as a signed column too
	now := time.Now()
	id := certs.Identity{Issuer: "ha", Subject: username, Username: username, Kind: certs.KindHuman, Groups: groups}
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: serial, CertType: ssh.UserCert,
		KeyId: "ha:" + username, ValidPrincipals: []string{login, username},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", certs.IdentityExtension: certs.EncodeIdentity(id),
		}},
	}
	if err := cert.SignCert(rand.Reader, c.auth.User.Signer()); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	return cs, cert, signer
}

func (r *replica) clientConfig(signer ssh.Signer) *ssh.ClientConfig {
	hostCA := r.c.auth.Host.Trusted()
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		for _, ca := range hostCA {
			if bytes.Equal(ca.Marshal(), k.Marshal()) {
				return true
			}
		}
		return false
	}}
	// The bastion login is the certificate's username (its first
	// principal); a certificate from /v1/certs names no target login.
	user := login
	if cert, ok := signer.PublicKey().(*ssh.Certificate); ok {
		if id, err := certs.IdentityFromCert(cert); err == nil {
			user = id.Username
		}
	}
	return &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: checker.CheckHostKey, Timeout: 30 * time.Second}
}

// innerConfig is clientConfig for the inner hop: it logs in to the target
// as login.
func (r *replica) innerConfig(signer ssh.Signer) *ssh.ClientConfig {
	cfg := r.clientConfig(signer)
	cfg.User = login
	return cfg
}

// catSession is a recorded `cat` on the echo target through one replica.
type catSession struct {
	outer, inner *ssh.Client
	sess         *ssh.Session
	stdin        io.Writer
	stdout       io.Reader
	seen         bytes.Buffer
}

func (r *replica) dialCat(t *testing.T, signer ssh.Signer) *catSession {
	t.Helper()
	cfg := r.clientConfig(signer)
	outer, err := ssh.Dial("tcp", r.SSHAddr, cfg)
	if err != nil {
		t.Fatalf("%s: outer: %v", r.name, err)
	}
	cs := &catSession{outer: outer}
	t.Cleanup(cs.close)
	ch, err := outer.Dial("tcp", net.JoinHostPort("echo", "22"))
	if err != nil {
		t.Fatalf("%s: direct-tcpip: %v", r.name, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(ch, "echo:22", r.innerConfig(signer))
	if err != nil {
		t.Fatalf("%s: inner: %v", r.name, err)
	}
	cs.inner = ssh.NewClient(c, chans, reqs)
	if cs.sess, err = cs.inner.NewSession(); err != nil {
		t.Fatal(err)
	}
	cs.stdin, _ = cs.sess.StdinPipe()
	cs.stdout, _ = cs.sess.StdoutPipe()
	if err := cs.sess.Start("exec cat"); err != nil {
		t.Fatal(err)
	}
	return cs
}

// echo writes line and waits for it to come back.
func (cs *catSession) echo(line string) error {
	if _, err := io.WriteString(cs.stdin, line+"\n"); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	buf := make([]byte, 4096)
	for !bytes.Contains(cs.seen.Bytes(), []byte(line+"\n")) {
		n, err := cs.stdout.Read(buf)
		if err != nil {
			return fmt.Errorf("read echo of %q: %w", line, err)
		}
		cs.seen.Write(buf[:n])
	}
	return nil
}

func (cs *catSession) close() {
	if cs.inner != nil {
		cs.inner.Close()
	}
	cs.outer.Close()
}

// canLogIn reports whether signer passes authentication on r.
func (r *replica) canLogIn(signer ssh.Signer) error {
	c, err := ssh.Dial("tcp", r.SSHAddr, r.clientConfig(signer))
	if err != nil {
		return err
	}
	return c.Close()
}

func openState(t *testing.T, c *cluster) *state.Store {
	t.Helper()
	st, err := state.Open(context.Background(), c.stateURL, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestReplicasRevocationOnBBlocksA: a certificate revoked through replica
// B's configuration (`postern ca revoke`, which writes the shared store) is
// refused by replica A from the next login on; nothing is cached.
func TestReplicasRevocationOnBBlocksA(t *testing.T) {
	c := newCluster(t)
	a, b := c.start(t, "A"), c.start(t, "B")
	signer, serial := c.user(t, "revoked@example.com")
	other, _ := c.user(t, "other@example.com")
	if err := a.canLogIn(signer); err != nil {
		t.Fatalf("login on A before revocation: %v", err)
	}
	out, err := exec.Command(testutil.PosternBinary(t), "ca", "revoke", strconv.FormatUint(serial, 10),
		"--reason", "ha test", "--config", b.config).CombinedOutput()
	if err != nil {
		t.Fatalf("postern ca revoke through B's config: %v\n%s", err, out)
	}
	if err := a.canLogIn(signer); err == nil {
		t.Fatal("replica A accepted a certificate revoked through replica B")
	}
	if err := b.canLogIn(signer); err == nil {
		t.Fatal("replica B accepted a revoked certificate")
	}
	if err := a.canLogIn(other); err != nil {
		t.Fatalf("another user's login on A: %v", err)
	}
	rep, err := openState(t, c).Verify(context.Background())
	if err != nil || !rep.OK() {
		t.Fatalf("shared audit chain: %+v, %v", rep, err)
	}
}

// TestReplicasKillOneMidSession: A and B each record a session; A is
// SIGKILLed. B's session keeps working and stays running in the shared
// index. A restarted on its data directory recovers its own recording as
// interrupted into the shared recording store, and leaves B's alone; B's
// session then ends normally; the shared audit chain is intact.
func TestReplicasKillOneMidSession(t *testing.T) {
	c := newCluster(t)
	a, b := c.start(t, "A"), c.start(t, "B")
	sa, _ := c.user(t, "alice@example.com")
	sb, _ := c.user(t, "bob@example.com")
	ca, cb := a.dialCat(t, sa), b.dialCat(t, sb)
	for i := range 5 {
		if err := ca.echo(fmt.Sprintf("A line %d", i)); err != nil {
			t.Fatal(err)
		}
		if err := cb.echo(fmt.Sprintf("B line %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	st := openState(t, c)
	ctx := context.Background()
	idOf := func(user string) string {
		t.Helper()
		rows, err := st.ListSessions(ctx, state.SessionFilter{Status: state.StatusRunning})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Identity == user {
				return r.ID
			}
		}
		t.Fatalf("no running session of %s in the shared index (%d running)", user, len(rows))
		return ""
	}
	idA, idB := idOf("alice@example.com"), idOf("bob@example.com")
	waitFile(t, filepath.Join(a.data, "spool"), "A line 4")

	a.proc.Stop() // SIGKILL, with its process group
	ca.close()
	for i := range 5 {
		if err := cb.echo(fmt.Sprintf("B line after the kill %d", i)); err != nil {
			t.Fatalf("B's session broke when A died: %v", err)
		}
	}

	a.run()
	a.proc.WaitLine(t, regexp.MustCompile(`recovered interrupted recording`), 30*time.Second)
	rowA, err := st.GetSession(ctx, idA)
	if err != nil {
		t.Fatal(err)
	}
	if rowA.Status != state.StatusInterrupted || rowA.Object == "" || rowA.SHA256 == "" {
		t.Fatalf("A's session after recovery: status %q object %q sha %q; want interrupted and stored",
			rowA.Status, rowA.Object, rowA.SHA256)
	}
	if !fileContains(c.storage, "A line 4") {
		t.Error("A's recovered recording is not in the shared recording store with its last line")
	}
	rowB, err := st.GetSession(ctx, idB)
	if err != nil {
		t.Fatal(err)
	}
	if rowB.Status != state.StatusRunning {
		t.Fatalf("B's live session is %q in the index after A's recovery; want running (A must recover only its own)", rowB.Status)
	}
	// Stricter, once the service names its replica in the index
	// (recorder.Options.Replica = server.ReplicaID(data_dir)): A's recovery
	// must not even try B's session.
	if out := a.proc.Output(); rowA.Replica != "" && strings.Contains(out, idB) {
		t.Errorf("restarted A tried to recover B's live session %s:\n%s", idB, grepLines(out, idB))
	}
	if rowA.Replica == "" {
		t.Logf("the sessions index names no replica: A's recovery also tried B's session:\n%s", grepLines(a.proc.Output(), idB))
	}
	if err := cb.echo("B still here after A restarted"); err != nil {
		t.Fatal(err)
	}
	cb.stdin.(io.Closer).Close()
	if err := cb.sess.Wait(); err != nil {
		t.Fatalf("B's session exit: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rowB, err = st.GetSession(ctx, idB)
		if err == nil && rowB.Status != state.StatusRunning {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's session not sealed 30s after it ended: %+v, %v", rowB, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the shared index; no event to wait on
	}
	if rowB.Status != state.StatusFinished {
		t.Errorf("B's session status %q; want finished", rowB.Status)
	}
	rep, err := st.Verify(ctx)
	if err != nil || !rep.OK() {
		t.Fatalf("shared audit chain after the kill: %+v, %v", rep, err)
	}
}

// waitFile waits until a file under dir contains text.
func waitFile(t *testing.T, dir, text string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !fileContains(dir, text) {
		if time.Now().After(deadline) {
			t.Fatalf("no file under %s holds %q after 10s", dir, text)
		}
		time.Sleep(10 * time.Millisecond) // polling a file; there is no event to wait on
	}
}

func fileContains(dir, text string) bool {
	found := false
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte(text)) {
			found = true
		}
		return nil
	})
	return found
}

// grepLines returns the lines of out that contain s.
func grepLines(out, s string) string {
	var b strings.Builder
	for line := range strings.Lines(out) {
		if strings.Contains(line, s) {
			b.WriteString(line)
		}
	}
	return b.String()
}
