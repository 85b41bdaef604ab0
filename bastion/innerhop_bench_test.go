package bastion

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

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
// with recording. Cipher aes128-gcm on every hop. Compare the MB/s.
func BenchmarkRecordedThroughput(b *testing.B) {
	const size = 64 << 20
	payload := benchPayload(b, size)

	for _, mode := range []string{"openssh-jump", "innerhop-unrecorded", "innerhop-recorded"} {
		b.Run(mode, func(b *testing.B) {
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
			var c *ssh.Client
			if mode == "openssh-jump" {
				jump := sshdtest.Start(b, sshdtest.Options{AuthorizedKeys: []ssh.PublicKey{f.userPub}})
				c = jumpClient(b, f, jump.Addr(), target)
			} else {
				c = f.innerClient(b, "web-1")
			}
			b.SetBytes(int64(size + size/76))
			b.ResetTimer()
			for b.Loop() {
				if n := catThrough(b, c, payload); n < size {
					b.Fatalf("read %d bytes; want %d", n, size)
				}
			}
		})
	}
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
