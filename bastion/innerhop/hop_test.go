package innerhop

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/state"
)

func TestInnerHopExec(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	tests := []struct {
		name       string
		cmd        string
		wantOut    string
		wantErr    string
		wantStatus int
	}{
		{name: "echo", cmd: "echo hello", wantOut: "hello\n"},
		{name: "exit code", cmd: "exit 3", wantStatus: 3},
		{name: "stderr", cmd: "echo oops >&2; exit 1", wantErr: "oops\n", wantStatus: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.ssh(nil, "web-1", tt.cmd)
			if r.Code != tt.wantStatus {
				t.Errorf("exit = %d; want %d (stderr %q)", r.Code, tt.wantStatus, r.Stderr)
			}
			if string(r.Stdout) != tt.wantOut {
				t.Errorf("stdout = %q; want %q", r.Stdout, tt.wantOut)
			}
			if tt.wantErr != "" && !strings.Contains(string(r.Stderr), tt.wantErr) {
				t.Errorf("stderr = %q; want %q", r.Stderr, tt.wantErr)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		in := bytes.Repeat([]byte("abc\n"), 1000)
		r := f.ssh(in, "web-1", "cat")
		if !bytes.Equal(r.Stdout, in) {
			t.Errorf("cat returned %d bytes; want %d (stderr %q)", len(r.Stdout), len(in), r.Stderr)
		}
	})
	t.Run("signal", func(t *testing.T) {
		r := f.ssh(nil, "web-1", "kill -TERM $$")
		if r.Code != 255 && r.Code != 128+15 {
			t.Errorf("exit = %d; want a signal exit (stderr %q)", r.Code, r.Stderr)
		}
	})
	t.Run("several sessions on one connection", func(t *testing.T) {
		// ssh -W gives a raw channel; a second session needs multiplexing,
		// which x/crypto does: drive the inner hop with it.
		c := f.innerClient(t, "web-1")
		for i := range 3 {
			s, err := c.NewSession()
			if err != nil {
				t.Fatalf("session %d: %v", i, err)
			}
			out, err := s.Output("echo s" + string(rune('0'+i)))
			if err != nil || string(out) != "s"+string(rune('0'+i))+"\n" {
				t.Errorf("session %d: out %q err %v", i, out, err)
			}
		}
	})
}

func TestInnerHopRefusesOtherKey(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	// A second key with its own valid certificate for alice: the outer hop
	// accepts it, but the inner hop accepts only the key of the outer
	// connection.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _ := ssh.NewPublicKey(other.Public())
	otherKey, otherCert := sshdtest.WriteClientKey(t, other, f.signUser(otherPub))
	cfg := f.writeSSHConfigKeys(f.keyFile, f.certFile, otherKey, otherCert)
	r := runClient(t, "ssh", nil, "-F", cfg, "web-1", "echo hello")
	if r.Code != 255 || len(r.Stdout) != 0 {
		t.Fatalf("ssh with another key on the inner hop: exit %d stdout %q stderr %q; want refusal", r.Code, r.Stdout, r.Stderr)
	}
	if ev := f.events.ofType(state.EventSessionStart); len(ev) != 0 {
		t.Errorf("session started with a foreign key: %+v", ev)
	}
}

func TestInnerHopPolicyDeniesLogin(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	// The denial is a banner, which ssh shows at LogLevel INFO (its default).
	r := f.ssh(nil, "-o", "LogLevel=INFO", "-l", "nobody-else", "web-1", "echo hello")
	if r.Code != 255 {
		t.Fatalf("exit = %d; want 255", r.Code)
	}
	if !strings.Contains(string(r.Stderr), "postern: web-1: not allowed for alice") {
		t.Errorf("stderr = %q; want the policy's denial", r.Stderr)
	}
	f.waitEvent(state.EventChannelDeny, 1)
}

func TestInnerHopHostKeyMismatch(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	tg := sshTarget("web-1", sshd)
	_, wrong, _ := ed25519.GenerateKey(rand.Reader)
	wrongPub, _ := ssh.NewPublicKey(wrong.Public())
	tg.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(wrongPub)))
	f.setTargets(tg)
	r := f.ssh(nil, "web-1", "echo hello")
	if r.Code != ExitUpstreamFailed {
		t.Errorf("exit = %d; want %d", r.Code, ExitUpstreamFailed)
	}
	if !strings.Contains(string(r.Stderr), "postern: web-1: host key verification failed") {
		t.Errorf("stderr = %q; want the host key message", r.Stderr)
	}
	if len(r.Stdout) != 0 {
		t.Errorf("stdout = %q; want nothing", r.Stdout)
	}
	ev := f.waitEvent(state.EventChannelDeny, 1)
	if ev[0].Details["code"] != "host_key_mismatch" {
		t.Errorf("audit event %+v; want code host_key_mismatch", ev[0])
	}
}

func TestInnerHopHostVerification(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	// A target whose host certificate comes from its own host CA.
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	ca, _ := ssh.NewSignerFromKey(caKey)
	_, hk, _ := ed25519.GenerateKey(rand.Reader)
	hs, _ := ssh.NewSignerFromKey(hk)
	cert := &ssh.Certificate{Key: hs.PublicKey(), CertType: ssh.HostCert, ValidPrincipals: []string{"web-ca"},
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	sshd := sshdtest.Start(t, sshdtest.Options{TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()}, HostKey: hs, HostCert: cert})
	caLine := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ca.PublicKey())))
	known := sshd.WriteKnownHosts(t)
	for _, tt := range []struct {
		target config.Target
		want   int
	}{
		{config.Target{Name: "web-ca", Kind: config.KindSSH, Address: sshd.Addr(), HostCA: caLine}, 0},
		{config.Target{Name: "web-kh", Kind: config.KindSSH, Address: sshd.Addr(), KnownHosts: known}, 0},
		{config.Target{Name: "web-wrongca", Kind: config.KindSSH, Address: sshd.Addr(),
			HostCA: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(f.auth.Host.PublicKey())))}, ExitUpstreamFailed},
	} {
		t.Run(tt.target.Name, func(t *testing.T) {
			f.setTargets(tt.target)
			r := f.ssh(nil, tt.target.Name, "echo ok")
			if r.Code != tt.want {
				t.Errorf("exit = %d; want %d (stderr %q)", r.Code, tt.want, r.Stderr)
			}
		})
	}
}

func TestInnerHopRecordingUnavailable(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required", noRecorder: true})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	r := f.ssh(nil, "web-1", "echo should-not-run")
	if r.Code != ExitRecordingUnavailable {
		t.Errorf("exit = %d; want %d", r.Code, ExitRecordingUnavailable)
	}
	if !strings.Contains(string(r.Stderr), "postern: recording unavailable; session ended") {
		t.Errorf("stderr = %q; want the recording message", r.Stderr)
	}
	if len(r.Stdout) != 0 {
		t.Errorf("stdout = %q; want nothing", r.Stdout)
	}
	f.waitEvent(state.EventRecordingError, 1)
}

func TestInnerHopJSONErrors(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{record: "required", noRecorder: true})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	r := runClient(t, "env", nil, "POSTERN_JSON_ERRORS=1", "ssh", "-F", f.sshCfg, "-o", "SendEnv=POSTERN_JSON_ERRORS", "web-1", "true")
	if r.Code != ExitRecordingUnavailable || !strings.Contains(string(r.Stderr), `"code":"recording_unavailable"`) {
		t.Errorf("exit %d stderr %q; want a JSON error", r.Code, r.Stderr)
	}
}

func TestInnerHopConnectionLost(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	proxy := startCutProxy(t, sshd.Addr())
	tg := sshTarget("web-1", sshd)
	tg.Address = proxy.addr
	f.setTargets(tg)
	type result struct {
		r   sshResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := runClientErr("ssh", nil, "-F", f.sshCfg, "web-1", "echo started; exec sleep 60")
		done <- result{r, err}
	}()
	f.waitEvent(state.EventSessionStart, 1)
	proxy.cut()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	if r.Code != ExitUpstreamFailed {
		t.Errorf("exit = %d; want %d", r.Code, ExitUpstreamFailed)
	}
	if !strings.Contains(string(r.Stderr), "postern: web-1: connection lost") {
		t.Errorf("stderr = %q; want the connection lost message", r.Stderr)
	}
}

func TestInnerHopLocalForward(t *testing.T) {
	echo := testutil.EchoServer(t)
	for _, allowed := range []bool{true, false} {
		t.Run(map[bool]string{true: "allowed", false: "denied"}[allowed], func(t *testing.T) {
			f := newHopFixture(t, fixtureOpts{forwarding: config.Forwarding{Local: allowed, TargetAllow: []string{echo}}})
			sshd := startSSHD(t, f.auth)
			f.setTargets(sshTarget("web-1", sshd))
			in := []byte("ping through the target\n")
			r := f.ssh(in, "-W", echo, "web-1")
			if allowed && !bytes.Equal(r.Stdout, in) {
				t.Errorf("-W through web-1: got %q (exit %d, stderr %q); want %q", r.Stdout, r.Code, r.Stderr, in)
			}
			if !allowed {
				if r.Code == 0 || len(r.Stdout) != 0 {
					t.Errorf("-W without forwarding rights: exit %d stdout %q; want refusal", r.Code, r.Stdout)
				}
				f.waitEvent(state.EventChannelDeny, 1)
			} else {
				f.waitEvent(state.EventForwardEnd, 1)
			}
		})
	}
}

func TestInnerHopSFTP(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	dir := t.TempDir()
	src := filepath.Join(dir, "up.bin")
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	writeTestFile(t, src, string(data))
	remote := filepath.Join(t.TempDir(), "remote.bin")
	back := filepath.Join(dir, "down.bin")

	batch := filepath.Join(dir, "batch")
	writeTestFile(t, batch, "put "+src+" "+remote+"\nget "+remote+" "+back+"\nrename "+remote+" "+remote+".2\nrm "+remote+".2\n")
	r := runClient(t, "sftp", nil, "-F", f.sshCfg, "-b", batch, "web-1")
	if r.Code != 0 {
		t.Fatalf("sftp: exit %d stderr %q", r.Code, r.Stderr)
	}
	got, _ := os.ReadFile(back)
	if !bytes.Equal(got, data) {
		t.Errorf("sftp round trip: got %d bytes; want %d", len(got), len(data))
	}
	f.waitEvent(state.EventSessionEnd, 1)
	ops := map[string]map[string]any{}
	for _, e := range f.events.ofType(state.EventSFTP) {
		op := e.Details["op"].(string)
		if op == "close" {
			op += ":" + e.Details["flags"].(string)
		}
		ops[op] = e.Details
	}
	if d := ops["close:write|creat|trunc"]; d == nil || d["bytes_written"] != int64(len(data)) || d["path"] != remote {
		t.Errorf("upload audit = %v; want %d bytes written to %s (all: %v)", d, len(data), remote, ops)
	}
	if d := ops["close:read"]; d == nil || d["bytes_read"] != int64(len(data)) {
		t.Errorf("download audit = %v; want %d bytes read (all: %v)", d, len(data), ops)
	}
	if ops["rename"] == nil || ops["remove"] == nil {
		t.Errorf("rename/remove not audited: %v", ops)
	}

	// scp speaks SFTP in OpenSSH 9; the legacy protocol is an exec.
	for _, legacy := range []bool{false, true} {
		args := []string{"-F", f.sshCfg, "-q"}
		if legacy {
			args = append(args, "-O")
		}
		dst := filepath.Join(t.TempDir(), "scp.bin")
		if r := runClient(t, "scp", nil, append(args, src, "web-1:"+dst)...); r.Code != 0 {
			t.Fatalf("scp up (legacy %v): exit %d stderr %q", legacy, r.Code, r.Stderr)
		}
		down := filepath.Join(t.TempDir(), "scp-back.bin")
		if r := runClient(t, "scp", nil, append(args, "web-1:"+dst, down)...); r.Code != 0 {
			t.Fatalf("scp down (legacy %v): exit %d stderr %q", legacy, r.Code, r.Stderr)
		}
		if got, _ := os.ReadFile(down); !bytes.Equal(got, data) {
			t.Errorf("scp round trip (legacy %v): got %d bytes; want %d", legacy, len(got), len(data))
		}
	}
}

var _ = regexp.MustCompile

// TestInnerHopCertificateExpiry: a session ends a second before its
// certificate expires, and the user reads why. The certificate lives 8
// seconds: the session must be open when the inner hop's deadline comes (a
// hop still being set up then is just closed), and under -race on a busy
// machine setting up both hops and the upstream login can take over 3.
func TestInnerHopCertificateExpiry(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	keyFile, certFile := sshdtest.WriteClientKey(t, f.userKey, f.signUserFor(f.userPub, 8*time.Second))
	cfg := f.writeSSHConfig(keyFile, certFile)
	start := time.Now()
	r := runClient(t, "ssh", nil, "-F", cfg, "web-1", "echo started; exec sleep 60")
	if took := time.Since(start); took > 30*time.Second {
		t.Errorf("session lasted %v after its certificate expired", took)
	}
	if r.Code != ExitUpstreamFailed || !strings.Contains(string(r.Stderr), "postern: web-1: session expired") {
		t.Errorf("exit %d stderr %q; want 255 and the expiry message", r.Code, r.Stderr)
	}
	ev := f.waitEvent(state.EventSessionEnd, 1)
	if ev[0].Details["ended_by"] != "session_expired" {
		t.Errorf("session.end %v; want ended_by session_expired", ev[0].Details)
	}
}
