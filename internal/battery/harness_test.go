package battery

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/testutil"
)

// TestMain removes the postern binary built for the run.
func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemovePosternBinary()
	os.Exit(code)
}

// login is the target login every battery role allows.
const login = "tester"

// service is one running `postern serve`.
type service struct {
	t        testing.TB
	proc     *testutil.Proc
	data     string
	config   string
	auth     *certs.Authority
	SSHAddr  string
	HTTPAddr string
}

// serviceOptions shape the configuration a battery service runs with.
type serviceOptions struct {
	// Data is the data directory; a fresh temporary one if empty. A
	// restarted service passes the previous one.
	Data string
	// Extra is YAML appended to the configuration (top-level keys).
	Extra string
	// SSH is the ssh: section body (flow mapping without braces).
	SSH string
	// Recording is the recording: section body.
	Recording string
}

var servingLine = regexp.MustCompile(`"msg":"postern serving".*`)

// startService writes a configuration with an echo command target ("echo":
// the exec string runs under sh -c; a shell runs cat) and a role for the
// "battery" group, then starts postern and waits until it serves.
func startService(t testing.TB, o serviceOptions) *service {
	t.Helper()
	testutil.PosternBinary(t)
	if o.Data == "" {
		o.Data = t.TempDir()
	}
	cfg := fmt.Sprintf(`listen: {ssh: "127.0.0.1:0", http: "127.0.0.1:0"}
data_dir: %[1]s
storage: file://%[1]s/recordings
state: sqlite://%[1]s/state.db
ssh: {%[2]s}
recording: {%[3]s}
targets:
  - {name: echo, kind: command, command: [sh, -c, "exec cat"], exec: [sh, -c]}
roles:
  - {name: battery, match: {groups: [battery]}, targets: [echo], logins: [%[4]s], record: required}
%[5]s`, o.Data, o.SSH, o.Recording, login, o.Extra)
	cfgFile := filepath.Join(o.Data, "postern.yaml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// The CAs are generated before the service starts so that the test can
	// sign user certificates with the user CA the service loads.
	auth, err := certs.LoadAuthority(config.CAs{}, o.Data)
	if err != nil {
		t.Fatal(err)
	}
	s := &service{t: t, data: o.Data, config: cfgFile, auth: auth}
	s.start()
	return s
}

// start (re)starts the postern process on the service's data directory.
func (s *service) start() {
	t := s.t
	t.Helper()
	s.proc = testutil.Start(t, testutil.PosternBinary(t), []string{"serve", "--config", s.config, "--log-format", "json"})
	line := s.proc.WaitLine(t, servingLine, 60*time.Second)
	var serving struct{ SSH, HTTP string }
	if err := json.Unmarshal([]byte(line), &serving); err != nil {
		t.Fatalf("parse %q: %v", line, err)
	}
	s.SSHAddr, s.HTTPAddr = serving.SSH, serving.HTTP
}

// userSigner returns a fresh key with a user certificate for login, carrying
// an identity in the battery group. mod, if set, edits the certificate before
// it is signed.
func (s *service) userSigner(t testing.TB, username string, mod func(*ssh.Certificate)) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	var serial [8]byte
	_, _ = rand.Read(serial[:])
	now := time.Now()
	id := certs.Identity{Issuer: "battery", Subject: username, Username: username, Kind: certs.KindHuman, Groups: []string{"battery"}}
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), Serial: binary.BigEndian.Uint64(serial[:]), CertType: ssh.UserCert,
		KeyId: "battery:" + username, ValidPrincipals: []string{login},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			"permit-pty": "", certs.IdentityExtension: certs.EncodeIdentity(id),
		}},
	}
	if mod != nil {
		mod(cert)
	}
	if err := cert.SignCert(rand.Reader, s.auth.User.Signer()); err != nil {
		t.Fatal(err)
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// clientConfig trusts only host certificates from the service's host CA.
func (s *service) clientConfig(signer ssh.Signer) *ssh.ClientConfig {
	hostCA := s.auth.Host.Trusted()
	checker := &ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool {
		for _, ca := range hostCA {
			if string(ca.Marshal()) == string(k.Marshal()) {
				return true
			}
		}
		return false
	}}
	return &ssh.ClientConfig{
		User: login, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: checker.CheckHostKey, Timeout: 30 * time.Second,
	}
}

// hop is an outer connection to the bastion and the inner connection to a
// target through it, as `ssh -J` makes them.
type hop struct {
	Outer, Inner *ssh.Client
}

// Close closes the inner, then the outer connection.
func (h *hop) Close() {
	if h.Inner != nil {
		_ = h.Inner.Close()
	}
	_ = h.Outer.Close()
}

// dialHop connects to target through the bastion with signer on both hops.
func (s *service) dialHop(signer ssh.Signer, target string) (*hop, error) {
	cfg := s.clientConfig(signer)
	outer, err := ssh.Dial("tcp", s.SSHAddr, cfg)
	if err != nil {
		return nil, fmt.Errorf("outer: %w", err)
	}
	h := &hop{Outer: outer}
	addr := net.JoinHostPort(target, "22")
	ch, err := outer.Dial("tcp", addr)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("direct-tcpip %s: %w", addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(ch, addr, cfg)
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("inner: %w", err)
	}
	h.Inner = ssh.NewClient(c, chans, reqs)
	return h, nil
}

// castMeta is the part of a recording's metadata JSON the battery checks.
type castMeta struct {
	ID       string `json:"id"`
	Identity string `json:"identity"`
	Status   string `json:"status"`
	SHA256   string `json:"sha256"`
	Size     int64  `json:"size"`
}

// recordings returns the metadata of every stored recording, keyed by the
// path of its cast.
func (s *service) recordings(t testing.TB) map[string]castMeta {
	t.Helper()
	out := map[string]castMeta{}
	root := filepath.Join(s.data, "recordings")
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var m castMeta
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		out[strings.TrimSuffix(p, ".json")+".cast"] = m
		return nil
	})
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return out
}
