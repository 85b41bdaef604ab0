//go:build bench

package bench

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
)

// ciphers are the two AEAD ciphers every throughput row is run with, by
// short name. Both sides negotiate the same one; the key exchange is
// always curve25519-sha256 so OpenSSH's default post-quantum exchange does
// not weigh on one side only.
// targetKinds are the ssh target variants: recorded, unrecorded and
// passthrough.
var targetKinds = []string{"rec", "plain", "pass"}

var ciphers = []struct{ short, name string }{
	{"aes", ssh.CipherAES128GCM},
	{"chacha", ssh.CipherChaCha20Poly1305},
}

const kex = ssh.KeyExchangeCurve25519

// env is everything one comparison run starts: the target sshds (one per
// cipher), the OpenSSH jump host, the TCP sources, and postern.
type env struct {
	t     *testing.T
	dir   string
	login string

	auth       *certs.Authority
	caDir      string // holds ca/<name>_ca for every postern instance
	userKey    ed25519.PrivateKey
	plain      ssh.Signer // the user's key, for OpenSSH
	certSigner ssh.Signer // the key with its postern user certificate
	keyFile    string
	certFile   string

	targets map[string]*sshdtest.Server // by "<kind>-<cipher short name>"
	jump    *sshdtest.Server
	sources map[string]string // TCP source address by workload
	idle    *idleTarget

	payloads map[string]string // file on disk by workload, for cat

	postern *postern
	sshCfg  string // ssh_config for the stock client
}

// postern is one running postern binary.
type postern struct {
	proc    *testutil.Proc // nil for a child of this test binary (startChild)
	pid     int
	addr    string
	dataDir string
}

// newEnv starts every server of the comparison.
func newEnv(t *testing.T, bulkSize int) *env {
	t.Helper()
	return newEnvWith(t, bulkSize, true)
}

// newIdentityEnv returns an env with the login user, the CAs and the user's
// key and certificate, and nothing started.
func newIdentityEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), targets: map[string]*sshdtest.Server{}, sources: map[string]string{}}
	u, err := user.Current()
	if err != nil {
		t.Fatalf("current user: %v", err)
	}
	e.login = u.Username
	e.caDir = filepath.Join(e.dir, "shared")
	if e.auth, err = certs.LoadAuthority(config.CAs{}, e.caDir); err != nil {
		t.Fatalf("load authority: %v", err)
	}
	_, e.userKey, _ = ed25519.GenerateKey(rand.Reader)
	e.plain, _ = ssh.NewSignerFromKey(e.userKey)
	e.certSigner, _ = ssh.NewCertSigner(e.userCert(e.plain.PublicKey()), e.plain)
	return e
}

// newEnvWith starts every server of the comparison but postern itself
// unless withPostern.
func newEnvWith(t *testing.T, bulkSize int, withPostern bool) *env {
	t.Helper()
	e := newIdentityEnv(t)
	e.payloads = map[string]string{}
	e.keyFile, e.certFile = sshdtest.WriteClientKey(t, e.userKey, e.certSigner.PublicKey().(*ssh.Certificate))

	// One identical sshd per target kind and cipher: postern's inventory
	// wants a distinct address per target. The OpenSSH side uses the
	// "plain" one.
	for _, c := range ciphers {
		for _, kind := range targetKinds {
			e.targets[kind+"-"+c.short] = sshdtest.Start(t, sshdtest.Options{
				TrustedUserCAKeys: []ssh.PublicKey{e.auth.Target.PublicKey(), e.auth.User.PublicKey()},
				AuthorizedKeys:    []ssh.PublicKey{e.plain.PublicKey()},
				// postern's upstream hop negotiates what the target
				// offers: the cipher under test, like the client's
				// end-to-end hop through OpenSSH.
				Extra: []string{"Ciphers " + c.name, "KexAlgorithms " + kex},
			})
		}
	}
	e.jump = sshdtest.Start(t, sshdtest.Options{AuthorizedKeys: []ssh.PublicKey{e.plain.PublicKey()},
		Extra: []string{"KexAlgorithms " + kex}})
	for _, w := range workloads {
		e.sources[w] = startSource(t, pattern(w), streamSize)
		e.payloads[w] = writePayload(t, filepath.Join(e.dir, w+".txt"), w, bulkSize)
	}
	e.idle = startIdleTarget(t)
	if withPostern {
		e.postern = e.startPostern("main")
		e.sshCfg = e.writeSSHConfig()
	}
	return e
}

// userCert issues alice's postern user certificate from the user CA.
func (e *env) userCert(pub ssh.PublicKey) *ssh.Certificate {
	id := certs.Identity{Issuer: "bench", Subject: "alice-sub", Username: "alice", Kind: certs.KindHuman, Groups: []string{"ops"}}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: pub, CertType: ssh.UserCert, KeyId: "alice", ValidPrincipals: []string{"alice"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(4 * time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", "permit-port-forwarding": "", certs.IdentityExtension: certs.EncodeIdentity(id),
		}},
	}
	if err := cert.SignCert(rand.Reader, e.auth.User.Signer()); err != nil {
		e.t.Fatalf("sign user cert: %v", err)
	}
	return cert
}

// config returns the YAML configuration of a postern instance: recorded
// (web-rec-*), unrecorded (web-plain-*) and passthrough (web-pass-*) ssh
// targets per cipher, tcp sources, a command target running true, and the
// in-process idle target, recorded.
func (e *env) config(dataDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen:\n  ssh: 127.0.0.1:0\n  http: 127.0.0.1:0\ndata_dir: %s\n", dataDir)
	b.WriteString("ca:\n")
	for _, n := range []string{"user", "host", "target"} {
		fmt.Fprintf(&b, "  %s:\n    key_file: %s\n", n, filepath.Join(e.caDir, "ca", n+"_ca"))
	}
	b.WriteString("ssh:\n  max_connections_per_source: 5000\n  max_connections: 20000\n")
	b.WriteString("targets:\n")
	key := func(s *sshdtest.Server) string {
		return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.HostKey())))
	}
	for _, c := range ciphers {
		for _, kind := range targetKinds {
			s := e.targets[kind+"-"+c.short]
			fmt.Fprintf(&b, "  - name: web-%s-%s\n    kind: ssh\n    address: %s\n    host_key: %q\n", kind, c.short, s.Addr(), key(s))
			if kind == "pass" {
				b.WriteString("    passthrough: true\n")
			}
		}
	}
	for _, w := range workloads {
		fmt.Fprintf(&b, "  - name: src-%s\n    kind: tcp\n    address: %s\n", w, e.sources[w])
	}
	b.WriteString("  - name: cmd-true\n    kind: command\n    command: [/bin/true]\n")
	fmt.Fprintf(&b, "  - name: idle-rec\n    kind: ssh\n    address: %s\n    host_key: %q\n", e.idle.addr,
		strings.TrimSpace(string(ssh.MarshalAuthorizedKey(e.idle.hostKey))))
	role := func(name, record string, targets []string, fwd bool) {
		fmt.Fprintf(&b, "  - name: %s\n    match:\n      users: [alice]\n    logins: [%s]\n    record: %s\n    targets: [%s]\n",
			name, e.login, record, strings.Join(targets, ", "))
		if fwd {
			b.WriteString("    forwarding:\n      local: true\n")
		}
	}
	b.WriteString("roles:\n")
	role("recorded", "required", []string{`"web-rec-*"`, "cmd-true", "idle-rec"}, false)
	role("unrecorded", "off", []string{`"web-plain-*"`, `"web-pass-*"`}, false)
	role("sources", "off", []string{`"src-*"`}, true)
	return b.String()
}

// startPostern runs the postern binary with its own data directory and
// waits for its "postern serving" line.
func (e *env) startPostern(name string) *postern {
	e.t.Helper()
	return e.startPosternBin(name, testutil.PosternBinary(e.t))
}

// startPosternBin is startPostern with the binary at bin.
func (e *env) startPosternBin(name, bin string) *postern {
	e.t.Helper()
	p := &postern{dataDir: filepath.Join(e.dir, "postern-"+name)}
	cfg := filepath.Join(e.dir, name+".yaml")
	if err := os.WriteFile(cfg, []byte(e.config(p.dataDir)), 0o600); err != nil {
		e.t.Fatal(err)
	}
	var env []string
	if g := os.Getenv("POSTERN_BENCH_GOGC"); g != "" {
		env = append(env, "GOGC="+g)
	}
	p.proc = testutil.Start(e.t, bin, []string{"serve", "--config", cfg, "--log-format", "json", "--log-level", "warn"},
		testutil.Env(env...))
	p.pid = p.proc.PID()
	// The serving line is logged at info; with warn the port comes from the
	// listening socket instead.
	p.addr = e.awaitListen(p)
	return p
}

// awaitListen finds postern's SSH port: the first TCP listener of the
// process on 127.0.0.1 that answers with an SSH banner.
func (e *env) awaitListen(p *postern) string {
	e.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		for _, addr := range listeningAddrs(p.proc.PID()) {
			if sshBanner(addr) {
				return addr
			}
		}
		select {
		case <-p.proc.Done():
			e.t.Fatalf("postern exited: %v\n%s", p.proc.Err(), p.proc.Output())
		case <-tick.C:
		}
	}
	e.t.Fatalf("postern did not listen within 60s\n%s", p.proc.Output())
	return ""
}

// listeningAddrs lists the 127.0.0.1 TCP listeners whose sockets belong to pid.
func listeningAddrs(pid int) []string {
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/net/tcp", pid))
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		// sl local rem st ... inode(9)
		if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
			continue
		}
		hostPort := strings.Split(fs[1], ":")
		if hostPort[0] != "0100007F" {
			continue
		}
		port, _ := strconv.ParseUint(hostPort[1], 16, 16)
		out = append(out, net.JoinHostPort("127.0.0.1", strconv.FormatUint(port, 10)))
	}
	return out
}

// sshBanner reports whether addr answers with an SSH version line.
func sshBanner(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.HasPrefix(line, "SSH-2.0-")
}

// clientConfig is the x/crypto client configuration of every Go load
// generator: one cipher, curve25519-sha256.
func clientConfig(user string, signer ssh.Signer, hk ssh.HostKeyCallback, cipher string) *ssh.ClientConfig {
	return &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: hk,
		Timeout: 30 * time.Second, Config: ssh.Config{Ciphers: []string{cipher}, KeyExchanges: []string{kex}}}
}

// hostCAChecker accepts host certificates from postern's host CA.
func (e *env) hostCAChecker() ssh.HostKeyCallback {
	ca := e.auth.Host.PublicKey().Marshal()
	return (&ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		return bytes.Equal(k.Marshal(), ca)
	}}).CheckHostKey
}

// hop is a client connection to a target through a jump host.
type hop struct {
	jump  *ssh.Client
	inner *ssh.Client
}

// Close closes both connections.
func (h *hop) Close() {
	if h.inner != nil {
		h.inner.Close()
	}
	h.jump.Close()
}

// dialPostern connects to postern with the user certificate.
func (e *env) dialPostern(p *postern, cipher string) (*ssh.Client, error) {
	c, err := ssh.Dial("tcp", p.addr, clientConfig("alice", e.certSigner, e.hostCAChecker(), cipher))
	if err != nil {
		return nil, fmt.Errorf("dial postern: %w", err)
	}
	return c, nil
}

// viaPostern opens an SSH connection to target (a postern target name)
// through postern, as ssh -J does.
func (e *env) viaPostern(p *postern, cipher, target string) (*hop, error) {
	jc, err := e.dialPostern(p, cipher)
	if err != nil {
		return nil, err
	}
	h := &hop{jump: jc}
	addr := net.JoinHostPort(target, "22")
	nc, err := jc.Dial("tcp", addr)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("direct-tcpip %s: %w", target, err)
	}
	hk, signer := e.hostCAChecker(), e.certSigner
	if strings.HasPrefix(target, "web-pass-") { // the target itself: its own key, the user's plain key
		hk, signer = ssh.FixedHostKey(e.targets[strings.TrimPrefix(target, "web-")].HostKey()), e.plain
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, clientConfig(e.login, signer, hk, cipher))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("inner handshake %s: %w", target, err)
	}
	h.inner = ssh.NewClient(conn, chans, reqs)
	return h, nil
}

// viaOpenSSH opens an SSH connection to the target sshd of cipher through
// the OpenSSH jump host, with the plain user key on both hops.
func (e *env) viaOpenSSH(cipherShort, cipher string) (*hop, error) {
	jc, err := e.dialJump(cipher)
	if err != nil {
		return nil, err
	}
	h := &hop{jump: jc}
	tgt := e.targets["plain-"+cipherShort]
	nc, err := jc.Dial("tcp", tgt.Addr())
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("direct-tcpip %s: %w", tgt.Addr(), err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, tgt.Addr(), clientConfig(e.login, e.plain, ssh.FixedHostKey(tgt.HostKey()), cipher))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("target handshake: %w", err)
	}
	h.inner = ssh.NewClient(conn, chans, reqs)
	return h, nil
}

// dialJump connects to the OpenSSH jump host.
func (e *env) dialJump(cipher string) (*ssh.Client, error) {
	jc, err := ssh.Dial("tcp", e.jump.Addr(), clientConfig(e.login, e.plain, ssh.FixedHostKey(e.jump.HostKey()), cipher))
	if err != nil {
		return nil, fmt.Errorf("dial jump: %w", err)
	}
	return jc, nil
}

// writeSSHConfig writes the stock client's ssh_config. Per cipher C (aes,
// chacha): "pj-C" is postern and every web-*-C name goes through it (cmd-*
// and src-* go through pj-aes); "oj-C" is the OpenSSH jump host and "o-C"
// the plain target through it. Each name pins its cipher, and ProxyJump
// passes this file on, so both hops of a name use the same cipher; every
// hop uses curve25519-sha256.
func (e *env) writeSSHConfig() string { return e.writeSSHConfigFor(e.postern, "ssh_config") }

// writeSSHConfigFor writes the ssh_config of writeSSHConfig for postern p
// to the file name in the env's directory.
func (e *env) writeSSHConfigFor(p *postern, name string) string {
	host, port, _ := net.SplitHostPort(p.addr)
	var b strings.Builder
	for _, c := range ciphers {
		fmt.Fprintf(&b, "Host pj-%s oj-%s web-*-%s o-%s\n  Ciphers %s\n", c.short, c.short, c.short, c.short, c.name)
		fmt.Fprintf(&b, "Host web-*-%s\n  ProxyJump pj-%s\n", c.short, c.short)
		fmt.Fprintf(&b, "Host o-%s\n  HostName 127.0.0.1\n  Port %d\n  ProxyJump oj-%s\n", c.short, e.targets["plain-"+c.short].Port(), c.short)
	}
	fmt.Fprintf(&b, "Host cmd-* src-*\n  ProxyJump pj-aes\n  Ciphers %s\n", ssh.CipherAES128GCM)
	fmt.Fprintf(&b, "Host pj-*\n  HostName %s\n  Port %s\n  User alice\n  IdentityFile %s\n  CertificateFile %s\n", host, port, e.keyFile, e.certFile)
	fmt.Fprintf(&b, "Host web-* cmd-*\n  User %s\n  IdentityFile %s\n  CertificateFile %s\n", e.login, e.keyFile, e.certFile)
	fmt.Fprintf(&b, "Host oj-*\n  HostName 127.0.0.1\n  Port %d\n", e.jump.Port())
	fmt.Fprintf(&b, "Host oj-* o-*\n  User %s\n  IdentityFile %s\n", e.login, e.keyFile)
	known := filepath.Join(e.dir, "known_hosts")
	lines := []string{e.auth.HostCALine(), e.jump.KnownHostsLine()}
	for _, c := range ciphers {
		// passthrough: the client meets the target itself, under its
		// postern name.
		lines = append(lines, e.targets["plain-"+c.short].KnownHostsLine(),
			e.targets["pass-"+c.short].KnownHostsLine("web-pass-"+c.short))
	}
	if err := os.WriteFile(known, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		e.t.Fatal(err)
	}
	fmt.Fprintf(&b, "Host *\n  UserKnownHostsFile %s\n  GlobalKnownHostsFile /dev/null\n  StrictHostKeyChecking yes\n", known)
	fmt.Fprintf(&b, "  KexAlgorithms %s\n", kex)
	b.WriteString("  BatchMode yes\n  IdentitiesOnly yes\n  IdentityAgent none\n  LogLevel ERROR\n  ConnectTimeout 10\n")
	b.WriteString("  ControlMaster no\n  ControlPath none\n  UpdateHostKeys no\n  ForwardAgent no\n")
	cfg := filepath.Join(e.dir, name)
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		e.t.Fatal(err)
	}
	return cfg
}

// workloads: base64 text lines (printable ASCII, the headline) and zeros
// (control bytes, the recorder's worst case).
var workloads = []string{"text", "zeros"}

// streamSize is what each TCP source sends per connection.
const streamSize = 256 << 20

// pattern returns 1 MiB of the workload, repeated to make a stream.
func pattern(workload string) []byte {
	const size = 1 << 20
	if workload == "zeros" {
		return make([]byte, size)
	}
	raw := make([]byte, size)
	_, _ = rand.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	out := make([]byte, 0, size+size/76+80)
	for len(out) < size {
		n := min(76, len(enc))
		out = append(out, enc[:n]...)
		out = append(out, '\n')
		enc = enc[n:]
	}
	return out[:size]
}

// writePayload writes size bytes of the workload to path.
func writePayload(t *testing.T, path, workload string, size int) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := pattern(workload)
	for n := 0; n < size; n += len(p) {
		if _, err := f.Write(p[:min(len(p), size-n)]); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// startSource runs a TCP source on 127.0.0.1 that sends size bytes of p
// (repeated) to every connection and closes it.
func startSource(t *testing.T, p []byte, size int) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				for n := 0; n < size; n += len(p) {
					if _, err := c.Write(p[:min(len(p), size-n)]); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// idleTarget is a minimal in-process x/crypto SSH server used as the
// target of the idle-memory row: it accepts any key, grants pty, shell and
// exec, and keeps sessions open without output until the client closes
// them. A stock sshd would fork two processes per connection, which is
// what the row does not measure.
type idleTarget struct {
	addr    string
	hostKey ssh.PublicKey
}

func startIdleTarget(t *testing.T) *idleTarget {
	t.Helper()
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	hostSigner, _ := ssh.NewSignerFromKey(priv)
	cfg := &ssh.ServerConfig{PublicKeyCallback: func(ssh.ConnMetadata, ssh.PublicKey) (*ssh.Permissions, error) { return nil, nil }}
	cfg.AddHostKey(hostSigner)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, nc)
			mu.Unlock()
			wg.Go(func() {
				defer nc.Close()
				_, chans, reqs, err := ssh.NewServerConn(nc, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs) // ends with the connection
				for nch := range chans {
					if nch.ChannelType() != "session" {
						_ = nch.Reject(ssh.UnknownChannelType, "no")
						continue
					}
					ch, creqs, err := nch.Accept()
					if err != nil {
						continue
					}
					wg.Go(func() {
						defer ch.Close()
						go func() { _, _ = io.Copy(io.Discard, ch) }() // ends when the channel closes
						for r := range creqs {
							_ = r.Reply(true, nil)
						}
					})
				}
			})
		}
	})
	return &idleTarget{addr: ln.Addr().String(), hostKey: hostSigner.PublicKey()}
}

// cpuTime returns the user+system CPU time pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read stat: %w", err)
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat")
	}
	fs := strings.Fields(s[i+2:])
	// fields after the command: state(0) ... utime(11) stime(12)
	ut, _ := strconv.ParseInt(fs[11], 10, 64)
	st, _ := strconv.ParseInt(fs[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

// pss returns the proportional set size of pid in KiB.
func pss(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0, fmt.Errorf("read smaps_rollup: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Pss:") {
			fs := strings.Fields(l)
			v, err := strconv.ParseFloat(fs[1], 64)
			return v, err
		}
	}
	return 0, errors.New("no Pss in smaps_rollup")
}

// countEvents counts audit events of typ in postern's audit file.
func (p *postern) countEvents(typ string) int {
	b, _ := os.ReadFile(filepath.Join(p.dataDir, "audit.jsonl"))
	return bytes.Count(b, []byte(`"type":"`+typ+`"`))
}

// eventCounts counts the events in postern's audit file by type.
func (p *postern) eventCounts() map[string]int {
	b, _ := os.ReadFile(filepath.Join(p.dataDir, "audit.jsonl"))
	counts := map[string]int{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var e struct{ Type string }
		if json.Unmarshal(line, &e) == nil && e.Type != "" {
			counts[e.Type]++
		}
	}
	return counts
}

// awaitEvents waits until postern's audit file holds n events of typ.
func (p *postern) awaitEvents(t *testing.T, typ string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for p.countEvents(typ) < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d %s events after %v", p.countEvents(typ), n, typ, timeout)
		}
		<-tick.C
	}
}
