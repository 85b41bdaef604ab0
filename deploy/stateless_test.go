// The stateless replicas test: two `postern serve` processes behind a TCP
// load balancer share PostgreSQL (state, secrets, web sessions, the
// recording journal) and an S3 bucket (versitygw) and nothing else; one is
// SIGKILLed mid-session and the other keeps serving and completes its
// recordings.

package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	proxyproto "github.com/pires/go-proxyproto"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/dextest"
	"github.com/posternhq/postern/internal/pgtest"
	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// lb is a TCP load balancer in front of the replicas: every new
// connection goes to the current backend. It connects from 127.0.0.2 (the
// address the replicas trust as a proxy) and, with proxy set, begins each
// connection with a PROXY protocol v2 header naming a client address from
// 203.0.113.0/24, as a cloud load balancer would.
type lb struct {
	ln      net.Listener
	backend atomic.Pointer[string]
	proxy   bool
	wg      sync.WaitGroup
}

func newLB(t *testing.T, proxy bool) *lb {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &lb{ln: ln, proxy: proxy}
	l.wg.Go(l.serve)
	t.Cleanup(func() { ln.Close(); l.wg.Wait() })
	return l
}

func (l *lb) addr() string { return l.ln.Addr().String() }

func (l *lb) to(backend string) { l.backend.Store(&backend) }

func (l *lb) serve() {
	for n := 1; ; n++ {
		c, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Go(func() { l.relay(c, n) })
	}
}

func (l *lb) relay(c net.Conn, n int) {
	defer c.Close()
	b := l.backend.Load()
	if b == nil {
		return
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	up, err := d.Dial("tcp", *b)
	if err != nil {
		return
	}
	defer up.Close()
	if l.proxy {
		src := &net.TCPAddr{IP: net.IPv4(203, 0, 113, byte(n%250+1)), Port: 40000 + n}
		if _, err := proxyproto.HeaderProxyFromAddrs(2, src, up.RemoteAddr()).WriteTo(up); err != nil {
			return
		}
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// node is one `postern serve` replica of the stateless test.
type node struct {
	t         *testing.T
	name      string
	data      string
	config    string
	proc      *testutil.Proc
	ssh, http string
}

func (n *node) run(t *testing.T, env []string) {
	t.Helper()
	n.proc = testutil.Start(t, testutil.PosternBinary(t), []string{"serve", "--config", n.config, "--log-format", "json"}, testutil.Env(env...))
	line := n.proc.WaitLine(t, servingLine, 60*time.Second)
	var serving struct{ SSH, HTTP string }
	if err := json.Unmarshal([]byte(line), &serving); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	n.ssh, n.http = serving.SSH, serving.HTTP
}

// TestStatelessReplicas: N replicas share PostgreSQL and S3 and nothing
// else. Through the load balancer and stock OpenSSH: both replicas serve
// recorded sessions to a real sshd with one host key and generated CAs
// from the state store; a web login made through one replica works on the
// other; a command held on one is approved through the other; a session on
// one is watched live through the other. Then replica A is SIGKILLed with
// a session streaming: B keeps serving (its own session, new logins), takes
// A for dead after replicas.dead_after and completes A's recording from
// the checkpoints, with everything A checkpointed before the kill in it;
// the audit chain and every recording verify, and the metrics show the
// build and the latency histograms.
func TestStatelessReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, versitygw, Dex, sshd and two postern replicas")
	}
	testutil.Need(t, "ssh")
	bin := testutil.PosternBinary(t)
	pg := pgtest.Shared(t)
	stateURL := pg.PasswordDSN(pg.NewDB(t))
	s3 := s3test.Start(t)
	s3.CreateBucket(t, "recordings")
	storage := fmt.Sprintf("s3://recordings/rec?endpoint=%s&path_style=true&region=%s", url.QueryEscape(s3.Endpoint()), s3.Region())
	sshLB, httpLB := newLB(t, true), newLB(t, false)
	publicURL := "http://" + httpLB.addr()
	dex := dextest.Start(t, dextest.Options{
		RedirectURIs: []string{publicURL + "/ui/callback"},
		Users: []dextest.User{
			{Email: "alice@example.com", Password: "alice-pw", Groups: []string{"ha", "auditors"}},
			{Email: "bob@example.com", Password: "bob-pw", Groups: []string{"approvers", "auditors"}},
			{Email: "carol@example.com", Password: "carol-pw", Groups: []string{"ha"}},
		},
	})
	work := t.TempDir()
	knownHosts := filepath.Join(work, "web_known_hosts") // written once sshd runs
	env := []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKey(), "AWS_SECRET_ACCESS_KEY=" + s3.SecretKey(), "AWS_REGION=" + s3.Region(),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"POSTERN_ADVERTISE_HOST=127.0.0.1"}
	config := func(data, target string) string {
		return fmt.Sprintf(`listen: {ssh: "127.0.0.1:0", http: "127.0.0.1:0"}
public_url: %[1]s
ssh_address: %[2]s
data_dir: %[3]s
state: %[4]s
storage: %[5]s
identity:
  issuers:
    - {name: corp, issuer_url: %[6]s, client_id: %[7]s, kind: human, username_claim: email, groups_claim: groups}
ssh:
  trusted_proxies: [127.0.0.2]
recording: {checkpoint_interval: 300ms, fsync_interval: 100ms}
replicas: {heartbeat: 300ms, dead_after: 3s}
targets:
  - {name: web, kind: ssh, address: "%[8]s", known_hosts: %[9]s}
roles:
  - name: ha
    match: {groups: [ha]}
    targets: [web]
    logins: [%[10]s]
    rules: [{match: 'held-then-ran', action: approve, approvers: [approvers], timeout: 2m}]
  - {name: approvers, match: {groups: [approvers]}, targets: [web], logins: [%[10]s], permissions: [approver, auditor]}
  - {name: auditors, match: {groups: [auditors]}, targets: [web], logins: [%[10]s], permissions: [auditor]}
`, publicURL, sshLB.addr(), data, stateURL, storage, dex.Issuer(), dex.ClientID(), target, knownHosts, sshUser(t))
	}
	// The target's address is known once sshd runs, which needs the target
	// CA, which the first replica generates into the state store.
	nodes := map[string]*node{}
	mk := func(name string) *node {
		n := &node{t: t, name: name, data: t.TempDir()}
		n.config = filepath.Join(n.data, "postern.yaml")
		nodes[name] = n
		return n
	}
	a, b := mk("A"), mk("B")
	writeCfg := func(n *node, targetAddr string) {
		if err := os.WriteFile(n.config, []byte(config(n.data, targetAddr)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg(a, "127.0.0.1:1")
	a.run(t, env)
	targetCA, err := os.ReadFile(filepath.Join(a.data, "ca", "target_ca.pub"))
	if err != nil {
		t.Fatalf("A wrote no target CA public key: %v", err)
	}
	if _, err := os.Stat(filepath.Join(a.data, "ca", "target_ca")); !os.IsNotExist(err) {
		t.Errorf("a CA private key is on A's disk (%v); it belongs in the state store", err)
	}
	caKey, _, _, _, err := ssh.ParseAuthorizedKey(targetCA)
	if err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{caKey}})
	if err := os.WriteFile(knownHosts, []byte(sshd.KnownHostsLine("web", sshd.Addr())+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A restarts on its config with the real target, B starts: same CAs
	// (from the state store), same host key.
	a.proc.StopWith(syscall.SIGTERM, 30*time.Second)
	writeCfg(a, sshd.Addr())
	writeCfg(b, sshd.Addr())
	a.run(t, env)
	b.run(t, env)
	if ka, kb := hostKeyOf(t, a.ssh), hostKeyOf(t, b.ssh); !bytes.Equal(ka.Marshal(), kb.Marshal()) {
		t.Error("the replicas present different SSH host keys")
	}
	st, err := state.Open(context.Background(), stateURL, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()

	// Logins through the load balancer (token files, as agents do).
	login := func(email, pw string) string {
		t.Helper()
		dir := t.TempDir()
		tok := filepath.Join(dir, "token")
		if err := os.WriteFile(tok, []byte(dex.PasswordToken(t, email, pw)), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "login", "--bastion", publicURL, "--token-file", tok, "--dir", filepath.Join(dir, "p")).CombinedOutput()
		if err != nil {
			t.Fatalf("postern login as %s: %v\n%s", email, err, out)
		}
		return filepath.Join(dir, "p")
	}
	httpLB.to(a.http)
	sshLB.to(a.ssh)
	alice, bob, carol := login("alice@example.com", "alice-pw"), login("bob@example.com", "bob-pw"), login("carol@example.com", "carol-pw")
	sshCmd := func(profile string, args ...string) *exec.Cmd {
		host, _, _ := net.SplitHostPort(sshLB.addr())
		return exec.Command("ssh", append([]string{"-F", filepath.Join(profile, "ssh_config"), "-o", "BatchMode=yes", "-J", host, sshUser(t) + "@web"}, args...)...)
	}
	run := func(profile, command string) string {
		t.Helper()
		out, err := sshCmd(profile, command).CombinedOutput()
		if err != nil {
			t.Fatalf("ssh %q: %v\n%s\nA:\n%s\nB:\n%s", command, err, out, a.proc.Output(), b.proc.Output())
		}
		return string(out)
	}
	// Both replicas serve recorded sessions.
	if out := run(alice, "echo served-by-A"); !strings.Contains(out, "served-by-A") {
		t.Errorf("through A: %q", out)
	}
	sshLB.to(b.ssh)
	if out := run(alice, "echo served-by-B"); !strings.Contains(out, "served-by-B") {
		t.Errorf("through B: %q", out)
	}
	// The replicas saw the clients' addresses from the PROXY headers.
	b.proc.WaitLine(t, regexp.MustCompile(`"msg":"connection start".*"remote":"203\.0\.113\.`), 10*time.Second)

	// A web login through A (the load balancer's current HTTP backend)
	// works on B.
	web := webLogin(t, publicURL, "alice@example.com", "alice-pw")
	httpLB.to(b.http)
	if code, body := webGet(t, web, publicURL+"/ui/"); code != http.StatusOK || !strings.Contains(body, "alice@example.com") {
		t.Errorf("the web session on the other replica: %d", code)
	}

	// A command held on A is approved through B.
	sshLB.to(a.ssh)
	held := sshCmd(alice, "echo held-then-ran")
	var heldOut bytes.Buffer
	held.Stdout, held.Stderr = &heldOut, &heldOut
	if err := held.Start(); err != nil {
		t.Fatal(err)
	}
	heldDone := make(chan error, 1)
	go func() { heldDone <- held.Wait() }()
	var req state.Approval
	waitUntil(t, 30*time.Second, "a pending approval", func() bool {
		list, err := st.ListApprovals(ctx, state.ApprovalPending, 10)
		if err == nil && len(list) > 0 {
			req = list[0]
			return true
		}
		return false
	})
	if out, err := exec.Command(bin, "approvals", "approve", req.ID, "--bastion", "http://"+b.http, "--dir", bob).CombinedOutput(); err != nil {
		t.Fatalf("approve on B: %v\n%s", err, out)
	}
	select {
	case err := <-heldDone:
		if err != nil || !strings.Contains(heldOut.String(), "held-then-ran") {
			t.Errorf("held command after B's approval: %v\n%s", err, heldOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("A did not run the command B approved:\n%s", heldOut.String())
	}

	// idOf finds the running session of user whose command contains cmd
	// (an earlier session of the user may not be sealed yet).
	idOf := func(user, cmd string) state.Session {
		t.Helper()
		var row state.Session
		waitUntil(t, 30*time.Second, "the running session of "+user, func() bool {
			rows, err := st.ListSessions(ctx, state.SessionFilter{Status: state.StatusRunning, User: user})
			for _, r := range rows {
				if err == nil && strings.Contains(r.Command, cmd) {
					row = r
					return true
				}
			}
			return false
		})
		return row
	}
	// Long sessions: alice's ticks on A, carol's cat on B.
	sshLB.to(a.ssh)
	ticks := sshCmd(alice, `i=0; while :; do i=$((i+1)); echo "tick $i"; sleep 0.1; done`)
	tickOut, err := ticks.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := ticks.Start(); err != nil {
		t.Fatal(err)
	}
	defer ticks.Process.Kill()
	var lastTick atomic.Int64 // the last tick the client saw
	var lastTickAt atomic.Int64
	go func() {
		sc := bufio.NewScanner(tickOut)
		for sc.Scan() {
			if n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "tick ")); err == nil {
				lastTick.Store(int64(n))
				lastTickAt.Store(time.Now().UnixNano())
			}
		}
	}()
	aliceRow := idOf("alice@example.com", "tick") // connected through A: the balancer may switch
	sshLB.to(b.ssh)
	cat := sshCmd(carol, "cat")
	catIn, _ := cat.StdinPipe()
	catOut, _ := cat.StdoutPipe()
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	defer cat.Process.Kill()
	catLines := bufio.NewScanner(catOut)
	echo := func(line string) {
		t.Helper()
		if _, err := io.WriteString(catIn, line+"\n"); err != nil {
			t.Fatalf("carol's session on B: %v", err)
		}
		for catLines.Scan() {
			if catLines.Text() == line {
				return
			}
		}
		t.Fatalf("carol's session on B ended before %q came back: %v", line, catLines.Err())
	}
	echo("carol before the kill")

	carolRow := idOf("carol@example.com", "cat")
	if aliceRow.Replica != "http://"+a.http || carolRow.Replica != "http://"+b.http {
		t.Fatalf("sessions indexed under %q and %q; want A and B", aliceRow.Replica, carolRow.Replica)
	}

	// Live watch across replicas: carol's session on B, followed through A.
	watch := testutil.Start(t, bin, []string{"watch", carolRow.ID, "--bastion", "http://" + a.http, "--dir", alice})
	echo("carol while watched")
	watch.WaitLine(t, regexp.MustCompile(`carol while watched`), 30*time.Second)

	// Wait until A has checkpointed some ticks, then kill it.
	var checkpointed int64
	waitUntil(t, 30*time.Second, "ticks in A's checkpoints", func() bool {
		j, err := st.Journal(ctx, aliceRow.ID)
		if err != nil || len(j) == 0 {
			return false
		}
		m := regexp.MustCompile(`tick (\d+)`).FindAllSubmatch(j[len(j)-1].Data, -1)
		if len(m) == 0 {
			return false
		}
		n, _ := strconv.ParseInt(string(m[len(m)-1][1]), 10, 64)
		checkpointed = n
		return n >= 10
	})
	// Kill at a moment unrelated to the checkpoints: some ticks later.
	waitUntil(t, 30*time.Second, "more ticks", func() bool { return lastTick.Load() >= checkpointed+7 })
	a.proc.Stop() // SIGKILL, with its process group
	killedAt := time.Now()
	clientLast, clientLastAt := lastTick.Load(), time.Unix(0, lastTickAt.Load())

	// B keeps serving: carol's session, and new logins.
	echo("carol after the kill")
	httpLB.to(b.http)
	carol = login("carol@example.com", "carol-pw") // a certificate from B
	if out := run(carol, "echo new-session-after-the-kill"); !strings.Contains(out, "new-session-after-the-kill") {
		t.Errorf("a new session through B after the kill: %q", out)
	}
	if code, _ := webGet(t, web, publicURL+"/ui/"); code != http.StatusOK {
		t.Errorf("the web session after the kill: %d", code)
	}

	// B completes A's recording from the checkpoints.
	var recovered state.Session
	waitUntil(t, 60*time.Second, "A's session completed by B", func() bool {
		row, err := st.GetSession(ctx, aliceRow.ID)
		if err == nil && row.Status != state.StatusRunning {
			recovered = row
			return true
		}
		return false
	})
	if recovered.Status != state.StatusInterrupted || recovered.Replica != "http://"+b.http || recovered.SealSeq == 0 {
		t.Fatalf("A's session after recovery: %+v", recovered)
	}
	b.proc.WaitLine(t, regexp.MustCompile(`completed the recording of a dead replica`), 10*time.Second)
	castText := objectText(t, s3, "recordings", "rec/"+recovered.Object)
	m := regexp.MustCompile(`tick (\d+)`).FindAllStringSubmatch(castText, -1)
	if len(m) == 0 {
		t.Fatalf("the recovered cast has no ticks:\n%s", castText)
	}
	castLast, _ := strconv.ParseInt(m[len(m)-1][1], 10, 64)
	if castLast < checkpointed {
		t.Errorf("the recovered cast ends at tick %d; tick %d was checkpointed before the kill", castLast, checkpointed)
	}
	if !strings.Contains(castText, `"interrupted"`) {
		t.Error("the recovered cast has no interrupted marker")
	}
	// The measured window (ticks are 100 ms apart): what the client saw but
	// the recording lost.
	lost := time.Duration(clientLast-castLast) * 100 * time.Millisecond
	t.Logf("kill at %s: the client saw tick %d (at %s), the recording keeps tick %d: %v of the session lost (checkpoint interval 300ms); B completed it %v after the kill",
		killedAt.Format(time.StampMilli), clientLast, clientLastAt.Format(time.StampMilli), castLast, lost, time.Since(killedAt).Round(100*time.Millisecond))

	// Carol's session ends normally on B and is sealed; the watch ends.
	catIn.Close()
	if err := cat.Wait(); err != nil {
		t.Errorf("carol's session: %v", err)
	}
	select {
	case <-watch.Done():
	case <-time.After(30 * time.Second):
		t.Error("the watch through A did not end with the session")
	}
	waitUntil(t, 30*time.Second, "carol's session sealed", func() bool {
		row, err := st.GetSession(ctx, carolRow.ID)
		return err == nil && row.Status == state.StatusFinished
	})

	// The audit chain, its signed checkpoints and every recording verify,
	// cluster-wide: B's configuration with A's audit file too (A's was
	// written up to its death).
	vcmd := exec.Command(bin, "audit", "verify", "--config", b.config, "--audit-file", filepath.Join(a.data, "audit.jsonl"))
	vcmd.Env = append(os.Environ(), env...)
	out, err := vcmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "intact") {
		t.Errorf("postern audit verify: %v\n%s", err, out)
	}
	t.Logf("postern audit verify: %s", out)
	if j, _ := st.Journal(ctx, aliceRow.ID); len(j) != 0 {
		t.Errorf("%d checkpoints of A's session left after its recovery", len(j))
	}

	// The metrics of B: the build, and the latency histograms.
	_, metrics := webGet(t, http.DefaultClient, "http://"+b.http+"/metrics")
	for _, want := range []string{
		`postern_build_info{commit="`, `postern_ssh_handshake_seconds_count{result="ok"}`,
		`postern_cert_issue_seconds_count{result="issued"}`, `postern_approval_wait_seconds_count{status="approved"}`,
		`postern_s3_part_upload_seconds_count{op="put"}`, `postern_recording_checkpoint_seconds_count`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("B's metrics lack %s", want)
		}
	}
}

// sshUser is the OS user the test sshd logs in.
func sshUser(t *testing.T) string {
	t.Helper()
	u := os.Getenv("USER")
	if u == "" {
		u = "root"
	}
	return u
}

// hostKeyOf returns the host key an SSH server at addr presents.
func hostKeyOf(t *testing.T, addr string) ssh.PublicKey {
	t.Helper()
	var key ssh.PublicKey
	cfg := &ssh.ClientConfig{User: "x", Timeout: 10 * time.Second,
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			if c, ok := k.(*ssh.Certificate); ok {
				k = c.Key
			}
			key = k
			return fmt.Errorf("got it")
		}}
	ssh.Dial("tcp", addr, cfg)
	if key == nil {
		t.Fatalf("no host key from %s", addr)
	}
	return key
}

// waitUntil polls cond every 50 ms until it holds.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling the shared stores; they have no event to wait on
	}
}

// objectText returns the text of an object in versitygw's posix backend.
func objectText(t *testing.T, s3 *s3test.Server, bucket, key string) string {
	t.Helper()
	b, err := os.ReadFile(s3.ObjectPath(bucket, key))
	if err != nil {
		t.Fatal(err)
	}
	dec := recorder.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Header(); err != nil {
		t.Fatalf("%s is not a cast: %v", key, err)
	}
	return string(b)
}

// webLogin logs a browser in to the web UI at base through Dex's password
// form and returns it.
func webLogin(t *testing.T, base, email, password string) *http.Client {
	t.Helper()
	p, err := dextest.Browse(base+"/ui/login", email, password, "/ui")
	if err != nil {
		t.Fatal(err)
	}
	if p.Status != http.StatusOK || !strings.HasPrefix(p.URL.Path, "/ui") {
		t.Fatalf("web login ended on %s (%d):\n%s", p.URL, p.Status, p.Body)
	}
	return p.Client
}

// webGet returns the status and body of a GET.
func webGet(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
