package innerhop

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/sshdtest"
)

func TestInnerHopRequests(t *testing.T) {
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "no rights", true: "remote forwarding"}[remote], func(t *testing.T) {
			f := newHopFixture(t, fixtureOpts{forwarding: config.Forwarding{Remote: remote, TargetAllow: []string{"127.0.0.1:*"}}})
			sshd := sshdtest.Start(t, sshdtest.Options{
				TrustedUserCAKeys: []ssh.PublicKey{f.auth.Target.PublicKey()},
				Extra:             []string{"AcceptEnv LANG LC_* FOO", "AllowAgentForwarding yes"},
			})
			f.setTargets(sshTarget("web-1", sshd))
			c := f.innerClient(t, "web-1")

			// A keepalive gets an answer (a failure reply is one).
			if _, _, err := c.SendRequest("keepalive@openssh.com", true, nil); err != nil {
				t.Errorf("keepalive: %v", err)
			}

			s, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Setenv("LANG", "C.UTF-8"); err != nil {
				t.Errorf("LANG refused: %v", err)
			}
			if err := s.Setenv("FOO", "bar"); err == nil {
				t.Errorf("FOO passed the env allow-list")
			}
			if ok, err := s.SendRequest("auth-agent-req@openssh.com", true, nil); ok || err != nil {
				t.Errorf("agent forwarding: ok %v err %v; want refused", ok, err)
			}
			out, err := s.Output(`echo "$LANG|${FOO:-unset}"`)
			if err != nil || string(out) != "C.UTF-8|unset\n" {
				t.Errorf("env on the target: %q, %v; want LANG only", out, err)
			}

			// ssh -R: tcpip-forward only with forwarding.remote.
			ln, err := c.Listen("tcp", "127.0.0.1:0")
			if !remote {
				if err == nil {
					ln.Close()
					t.Errorf("remote forward allowed without the right")
				}
				return
			}
			if err != nil {
				t.Fatalf("remote forward: %v", err)
			}
			defer ln.Close()
			go func() {
				conn, err := ln.Accept()
				if err != nil {
					return
				}
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
			s2, err := c.NewSession()
			if err != nil {
				t.Fatal(err)
			}
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			// The target connects back through the forward; bash's /dev/tcp
			// sends a line and reads the echo.
			out, err = s2.Output(`exec 3<>/dev/tcp/127.0.0.1/` + port + `; echo through-R >&3; head -n1 <&3`)
			if err != nil || !bytes.Equal(out, []byte("through-R\n")) {
				t.Errorf("data through -R: %q, %v", out, err)
			}
		})
	}
}

func TestInnerHopExitSignal(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))
	c := f.innerClient(t, "web-1")
	s, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	err = s.Run("kill -KILL $$")
	var ee *ssh.ExitError
	if !errors.As(err, &ee) || ee.Signal() != "KILL" {
		t.Errorf("err = %v; want exit signal KILL", err)
	}
	if strings.Contains(f.logs.String(), "level=ERROR") {
		t.Errorf("errors logged: %s", f.logs.String())
	}
}
