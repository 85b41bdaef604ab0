package innerhop

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/sshdtest"
)

// benchPayload writes size bytes of base64 text lines (the text workload of
// PERFORMANCE.md) to a file and returns its path.
func benchPayload(b *testing.B, size int) string {
	b.Helper()
	raw := make([]byte, size*3/4)
	_, _ = rand.Read(raw)
	enc := base64.StdEncoding.EncodeToString(raw)
	out := make([]byte, 0, size+size/76+1)
	for len(enc) > 0 {
		n := min(76, len(enc))
		out = append(out, enc[:n]...)
		out = append(out, '\n')
		enc = enc[n:]
	}
	p := filepath.Join(b.TempDir(), "payload.txt")
	if err := os.WriteFile(p, out, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

// catThrough runs `cat path` in a session on c and returns the bytes read.
func catThrough(b *testing.B, c *ssh.Client, path string) int64 {
	s, err := c.NewSession()
	if err != nil {
		b.Fatalf("session: %v", err)
	}
	defer s.Close()
	out, err := s.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start("cat " + path); err != nil {
		b.Fatalf("start: %v", err)
	}
	n, err := io.Copy(io.Discard, out)
	if err != nil {
		b.Fatalf("read: %v", err)
	}
	if err := s.Wait(); err != nil {
		b.Fatalf("wait: %v", err)
	}
	return n
}

// BenchmarkRecordedThroughput measures bulk output (base64 text, cat of a
// file) reaching an x/crypto client through three middles: a stock sshd as
// a -J jump host (the baseline), postern's inner hop without recording, and
// with recording. Cipher aes128-gcm on every hop. Each iteration runs the
// three in turn, so that they share whatever else loads the machine; the
// MB/s of each is reported, with the ratios to the baseline.
func BenchmarkRecordedThroughput(b *testing.B) {
	const size = 64 << 20
	payload := benchPayload(b, size)
	modes := []string{"openssh-jump", "innerhop-unrecorded", "innerhop-recorded"}
	clients := map[string]*ssh.Client{}
	for _, mode := range modes {
		record := "off"
		if mode == "innerhop-recorded" {
			record = "required"
		}
		f := newHopFixture(b, fixtureOpts{record: record, quiet: true})
		target := sshdtest.Start(b, sshdtest.Options{
			TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()},
			AuthorizedKeys:    []ssh.PublicKey{f.userPub},
		})
		f.setTargets(sshTarget("web-1", target))
		if mode == "openssh-jump" {
			jump := sshdtest.Start(b, sshdtest.Options{AuthorizedKeys: []ssh.PublicKey{f.userPub}})
			clients[mode] = jumpClient(b, f, jump.Addr(), target)
		} else {
			clients[mode] = f.innerClient(b, "web-1")
		}
	}
	spent := map[string]time.Duration{}
	var bytes int64
	b.ResetTimer()
	for b.Loop() {
		for _, mode := range modes {
			start := time.Now()
			n := catThrough(b, clients[mode], payload)
			spent[mode] += time.Since(start)
			if n < size {
				b.Fatalf("%s: read %d bytes; want %d", mode, n, size)
			}
			if mode == modes[0] {
				bytes += n
			}
		}
	}
	mbps := func(mode string) float64 { return float64(bytes) / 1e6 / spent[mode].Seconds() }
	for _, mode := range modes {
		b.ReportMetric(mbps(mode), mode+"-MB/s")
	}
	b.ReportMetric(mbps("innerhop-unrecorded")/mbps("openssh-jump"), "unrecorded/jump")
	b.ReportMetric(mbps("innerhop-recorded")/mbps("openssh-jump"), "recorded/jump")
}

// jumpClient connects an x/crypto client to target through a stock sshd
// used as a jump host (ssh -J), with the user's plain key on both.
func jumpClient(b *testing.B, f *hopFixture, jumpAddr string, target *sshdtest.Server) *ssh.Client {
	b.Helper()
	signer, _ := ssh.NewSignerFromKey(f.userKey)
	cfg := func(hostKey ssh.PublicKey) *ssh.ClientConfig {
		return &ssh.ClientConfig{User: f.login, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
			HostKeyCallback: ssh.FixedHostKey(hostKey), Config: ssh.Config{Ciphers: []string{ssh.CipherAES128GCM}}}
	}
	jumpKey := hostKeyOf(b, jumpAddr)
	jc, err := ssh.Dial("tcp", jumpAddr, cfg(jumpKey))
	if err != nil {
		b.Fatalf("dial jump: %v", err)
	}
	b.Cleanup(func() { jc.Close() })
	nc, err := jc.Dial("tcp", target.Addr())
	if err != nil {
		b.Fatalf("direct-tcpip: %v", err)
	}
	conn, chans, reqs, err := ssh.NewClientConn(nc, target.Addr(), cfg(target.HostKey()))
	if err != nil {
		b.Fatalf("target handshake: %v", err)
	}
	c := ssh.NewClient(conn, chans, reqs)
	b.Cleanup(func() { c.Close() })
	return c
}

// hostKeyOf learns a test sshd's host key by a first handshake.
func hostKeyOf(b *testing.B, addr string) ssh.PublicKey {
	var key ssh.PublicKey
	_, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "x", HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
		key = k
		return fmt.Errorf("learned")
	}})
	if key == nil {
		b.Fatalf("no host key from %s: %v", addr, err)
	}
	return key
}

// BenchmarkRecordedThroughputOpenSSH is BenchmarkRecordedThroughput with the
// stock ssh client (a process of its own, as users run it) instead of an
// in-process x/crypto client, whose decryption would otherwise compete with
// the inner hop for the same CPU: ssh -J through a stock sshd, and ssh -J
// through postern's inner hop unrecorded and recorded. Output goes to
// /dev/null; aes128-gcm on every hop.
func BenchmarkRecordedThroughputOpenSSH(b *testing.B) {
	const size = 64 << 20
	payload := benchPayload(b, size)
	modes := []string{"openssh-jump", "innerhop-unrecorded", "innerhop-recorded"}
	configs := map[string]string{}
	for _, mode := range modes {
		record := "off"
		if mode == "innerhop-recorded" {
			record = "required"
		}
		f := newHopFixture(b, fixtureOpts{record: record, quiet: true})
		target := sshdtest.Start(b, sshdtest.Options{
			TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()},
			AuthorizedKeys:    []ssh.PublicKey{f.userPub},
		})
		f.setTargets(sshTarget("web-1", target))
		cfg := f.sshCfg
		if mode == "openssh-jump" {
			jump := sshdtest.Start(b, sshdtest.Options{AuthorizedKeys: []ssh.PublicKey{f.userPub}})
			cfg = jumpSSHConfig(b, f, jump, target)
		}
		data, _ := os.ReadFile(cfg)
		writeTestFile(b, cfg, "Ciphers aes128-gcm@openssh.com\n"+string(data))
		configs[mode] = cfg
	}
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer devnull.Close()
	spent := map[string]time.Duration{}
	var n int
	b.ResetTimer()
	for b.Loop() {
		for _, mode := range modes {
			cmd := exec.Command("ssh", "-F", configs[mode], "web-1", "cat "+payload)
			var stderr strings.Builder
			cmd.Stdout, cmd.Stderr = devnull, &stderr
			start := time.Now()
			if err := cmd.Run(); err != nil {
				b.Fatalf("%s: %v: %s", mode, err, stderr.String())
			}
			spent[mode] += time.Since(start)
		}
		n++
	}
	mbps := func(mode string) float64 { return float64(n) * float64(size+size/76) / 1e6 / spent[mode].Seconds() }
	for _, mode := range modes {
		b.ReportMetric(mbps(mode), mode+"-MB/s")
	}
	b.ReportMetric(mbps("innerhop-unrecorded")/mbps("openssh-jump"), "unrecorded/jump")
	b.ReportMetric(mbps("innerhop-recorded")/mbps("openssh-jump"), "recorded/jump")
}

// jumpSSHConfig writes an ssh_config reaching target as web-1 through jump
// (a stock sshd) with the fixture's plain key.
func jumpSSHConfig(b *testing.B, f *hopFixture, jump, target *sshdtest.Server) string {
	b.Helper()
	known := filepath.Join(b.TempDir(), "known_hosts")
	writeTestFile(b, known, jump.KnownHostsLine()+"\n"+target.KnownHostsLine()+"\n")
	keyFile, _ := sshdtest.WriteClientKey(b, f.userKey, nil)
	jh, jp, _ := net.SplitHostPort(jump.Addr())
	th, tp, _ := net.SplitHostPort(target.Addr())
	cfg := fmt.Sprintf(`Host jump
  HostName %s
  Port %s
Host web-1
  HostName %s
  Port %s
  ProxyJump jump
Host *
  User %s
  IdentityFile %s
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile %s
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
`, jh, jp, th, tp, f.login, keyFile, known)
	p := filepath.Join(b.TempDir(), "ssh_config")
	writeTestFile(b, p, cfg)
	return p
}
