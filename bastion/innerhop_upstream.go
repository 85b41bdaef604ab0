package bastion

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/posternhq/postern/bastion/policy"
	"github.com/posternhq/postern/recorder/state"
)

// errHostKeyMismatch marks a target whose host key did not verify.
var errHostKeyMismatch = errors.New("target host key verification failed")

// hostKeyVerifier checks a target's host key one way (pin, known_hosts, CA)
// and names the host key algorithms that make the target present a key this
// way can verify.
type hostKeyVerifier struct {
	check func(addr string, remote net.Addr, key ssh.PublicKey) error
	algos []string
}

// targetHostKeyCallback builds the host key check for t from every method t
// configures; a key passes if any method accepts it. A target with no method
// configured cannot be dialled: postern never skips host key verification.
func targetHostKeyCallback(t *policy.Target, now func() time.Time) (ssh.HostKeyCallback, []string, error) {
	var vs []hostKeyVerifier
	pins := t.HostKeys
	if len(pins) == 0 && t.HostKey != "" {
		pin, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.HostKey))
		if err != nil {
			return nil, nil, fmt.Errorf("target %s: parse host_key: %w", t.Name, err)
		}
		pins = []ssh.PublicKey{pin}
	}
	if len(pins) > 0 {
		var algos []string
		for _, p := range pins {
			algos = append(algos, algosForKeyType(p.Type())...)
		}
		vs = append(vs, hostKeyVerifier{
			check: func(_ string, _ net.Addr, key ssh.PublicKey) error {
				if _, isCert := key.(*ssh.Certificate); isCert {
					return errHostKeyMismatch
				}
				for _, p := range pins {
					if sameKey(key, p) {
						return nil
					}
				}
				return errHostKeyMismatch
			},
			algos: algos,
		})
	}
	if t.KnownHosts != "" {
		cb, err := knownhosts.New(t.KnownHosts)
		if err != nil {
			return nil, nil, fmt.Errorf("target %s: read known_hosts: %w", t.Name, err)
		}
		// Ask the file which key types it knows for this address, so that the
		// target is asked for one of those.
		var algos []string
		probe := cb(knownhosts.Normalize(t.Dial(22)), &net.TCPAddr{}, probeKey)
		var ke *knownhosts.KeyError
		if errors.As(probe, &ke) {
			for _, k := range ke.Want {
				for _, a := range algosForKeyType(k.Key.Type()) {
					if !slices.Contains(algos, a) {
						algos = append(algos, a)
					}
				}
			}
		}
		vs = append(vs, hostKeyVerifier{check: cb, algos: algos})
	}
	ca := t.HostCAKey
	if ca == nil && t.HostCA != "" {
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(t.HostCA))
		if err != nil {
			return nil, nil, fmt.Errorf("target %s: parse host_ca: %w", t.Name, err)
		}
		ca = k
	}
	if ca != nil {
		names := []string{t.Name}
		names = append(names, t.Aliases...)
		if t.Host != "" {
			names = append(names, t.Host)
		}
		checker := &ssh.CertChecker{Clock: now}
		vs = append(vs, hostKeyVerifier{
			check: func(_ string, _ net.Addr, key ssh.PublicKey) error {
				cert, ok := key.(*ssh.Certificate)
				if !ok || cert.CertType != ssh.HostCert || !sameKey(cert.SignatureKey, ca) {
					return errHostKeyMismatch
				}
				for _, n := range names {
					if checker.CheckCert(n, cert) == nil {
						return nil
					}
				}
				return errHostKeyMismatch
			},
			algos: certAlgosForKeyType(ca.Type()),
		})
	}
	if len(vs) == 0 {
		return nil, nil, fmt.Errorf("target %s has no host_key, known_hosts or host_ca", t.Name)
	}
	var algos []string
	for _, v := range vs {
		if len(v.algos) == 0 {
			algos = nil // one method accepts any type: let x/crypto choose
			break
		}
		algos = append(algos, v.algos...)
	}
	cb := func(addr string, remote net.Addr, key ssh.PublicKey) error {
		for _, v := range vs {
			if v.check(addr, remote, key) == nil {
				return nil
			}
		}
		return errHostKeyMismatch
	}
	return cb, algos, nil
}

// probeKey is a key no target has; offering it to a known_hosts callback
// lists the keys the file knows for an address.
var probeKey = func() ssh.PublicKey {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	k, _ := ssh.NewPublicKey(pub)
	return k
}()

func algosForKeyType(t string) []string {
	if t == ssh.KeyAlgoRSA {
		return []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256}
	}
	return []string{t}
}

// certAlgosForKeyType lists host certificate algorithms. The CA's key type
// says nothing about the host key's type, so every certificate type is asked
// for, ed25519 first.
func certAlgosForKeyType(string) []string {
	return []string{
		ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01,
		ssh.CertAlgoECDSA521v01, ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01,
	}
}

// upstreamSigner returns the credential presented to the target: the
// target's stored private key, or a fresh key with a short-lived certificate
// from the target CA for the login, whose key id names the identity and the
// session.
func (c *hopConn) upstreamSigner() (ssh.Signer, error) {
	if c.t.PrivateKey != "" {
		s, err := ssh.ParsePrivateKey([]byte(c.t.PrivateKey))
		if err != nil {
			return nil, fmt.Errorf("target %s: parse private_key: %w", c.t.Name, err)
		}
		return s, nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate upstream key: %w", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("upstream key signer: %w", err)
	}
	keyID := c.ci.Identity.String() + "/" + c.firstID
	cert, err := c.h.opts.Authority.SignTarget(s.PublicKey(), c.login, keyID, targetCertTTL)
	if err != nil {
		return nil, fmt.Errorf("sign target certificate: %w", err)
	}
	cs, err := ssh.NewCertSigner(cert, s)
	if err != nil {
		return nil, fmt.Errorf("target certificate signer: %w", err)
	}
	return cs, nil
}

// dialUpstream connects and logs in to the ssh target. Its errors are
// *hopUserError with a message for the user.
func (c *hopConn) dialUpstream() (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	h := c.h
	fail := func(reason, msg string, err error) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
		h.metrics.upstream.WithLabelValues(reason).Inc()
		return nil, nil, nil, &hopUserError{msg: msg, code: reason, exit: ExitUpstreamFailed, err: err}
	}
	hostKeyCB, algos, err := targetHostKeyCallback(c.t, h.now)
	if err != nil {
		return fail("host_key_config", "host key verification failed", err)
	}
	signer, err := c.upstreamSigner()
	if err != nil {
		return fail("credential", "cannot log in to target", err)
	}
	var mismatch bool
	cfg := &ssh.ClientConfig{
		Config:        ssh.Config{Ciphers: preferredCiphers},
		User:          c.login,
		Auth:          []ssh.AuthMethod{ssh.PublicKeys(signer)},
		ClientVersion: "SSH-2.0-postern",
		HostKeyCallback: func(addr string, remote net.Addr, key ssh.PublicKey) error {
			if err := hostKeyCB(addr, remote, key); err != nil {
				mismatch = true
				return err
			}
			return nil
		},
		HostKeyAlgorithms: algos,
		Timeout:           h.opts.DialTimeout,
	}
	d := net.Dialer{Timeout: h.opts.DialTimeout}
	addr := c.t.Dial(22)
	nc, err := d.DialContext(c.ctx, "tcp", addr)
	if err != nil {
		return fail("dial", "connection failed", fmt.Errorf("dial upstream %s: %w", addr, err))
	}
	_ = nc.SetDeadline(h.now().Add(h.opts.DialTimeout))
	stop := context.AfterFunc(c.ctx, func() { nc.Close() })
	conn, chans, reqs, err := ssh.NewClientConn(nc, addr, cfg)
	stop()
	if err != nil {
		nc.Close()
		if mismatch {
			c.log.Warn("target host key verification failed", "address", addr)
			h.audit(c.ctx, state.Event{Type: state.EventChannelDeny, Actor: c.ci.Identity.String(), Target: c.t.Name,
				Details: map[string]any{"login": c.login, "reason": "target host key verification failed",
					"code": "host_key_mismatch", "address": addr}})
			return fail("host_key_mismatch", "host key verification failed", fmt.Errorf("upstream %s: %w", addr, errHostKeyMismatch))
		}
		return fail("handshake", "login to target failed", fmt.Errorf("upstream handshake %s: %w", addr, err))
	}
	_ = nc.SetDeadline(time.Time{})
	return conn, chans, reqs, nil
}

// serveSSH proxies the inner connection to the ssh target.
func (c *hopConn) serveSSH(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	up, upChans, upReqs, err := c.dialUpstream()
	if err != nil {
		c.log.Info("upstream unavailable", "err", err)
		c.serveFailure(chans, reqs, err)
		return
	}
	defer up.Close()
	c.log.Debug("upstream connected", "address", c.t.Dial(22))

	upDone := make(chan struct{})
	go func() {
		_ = up.Wait()
		close(upDone)
	}()
	// Turn a lost target into the session end cause, and a cancelled session
	// into a closed upstream. Ends with whichever comes first.
	go func() {
		select {
		case <-upDone:
			c.cancel(&hopUserError{msg: "connection lost", code: "connection_lost", exit: ExitUpstreamFailed})
		case <-c.ctx.Done():
			up.Close()
		}
	}()
	go ssh.DiscardRequests(upReqs)
	go c.serveUpstreamChannels(upChans)
	go c.serveGlobalRequests(reqs, up)

	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			c.sessions.Add(1)
			go func() {
				defer c.sessions.Done()
				c.proxySession(nc, up)
			}()
		case "direct-tcpip":
			if !c.decision.Forwarding.Local {
				_ = nc.Reject(ssh.Prohibited, "postern: port forwarding is not allowed")
				c.auditForwardDeny(nc)
				continue
			}
			wg.Go(func() { c.proxyForward(nc, up) })
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "postern: unsupported channel type")
		}
	}
}

// serveFailure answers the client after the target could not be reached:
// the first session gets the reason on stderr and ExitUpstreamFailed, then
// the connection ends.
func (c *hopConn) serveFailure(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, cause error) {
	go ssh.DiscardRequests(reqs)
	ue := asHopUserError(cause)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.ConnectionFailed, "postern: "+c.t.Name+": "+ue.msg)
			continue
		}
		ch, creqs, err := nc.Accept()
		if err != nil {
			return
		}
		s := c.newSession(ch)
		defer c.untrack(s)
		for req := range creqs {
			switch req.Type {
			case "shell", "exec", "subsystem":
				_ = req.Reply(true, nil)
				s.notify(ue)
				s.sendExit(ue.exit)
				_ = ch.CloseWrite()
				_ = ch.Close()
				// Wait (a little) for the client to close its side: only
				// then is it sure to have read all of the above before the
				// connection goes.
				t := time.AfterFunc(endGrace, func() { c.conn.Close() })
				for req := range creqs {
					if req.WantReply {
						_ = req.Reply(false, nil)
					}
				}
				t.Stop()
				return
			case "env":
				s.handleEnv(req)
			default:
				if req.WantReply {
					_ = req.Reply(req.Type == "pty-req", nil)
				}
			}
		}
		return
	}
}

func asHopUserError(err error) *hopUserError {
	var ue *hopUserError
	if errors.As(err, &ue) {
		return ue
	}
	return &hopUserError{msg: "session terminated", code: "terminated", exit: ExitUpstreamFailed, err: err}
}

// serveGlobalRequests answers the client's global requests. Keepalives get a
// reply; tcpip-forward is relayed to the target only when the role allows
// remote forwarding.
func (c *hopConn) serveGlobalRequests(reqs <-chan *ssh.Request, up ssh.Conn) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward", "cancel-tcpip-forward":
			if !c.decision.Forwarding.Remote {
				_ = req.Reply(false, nil)
				continue
			}
			ok, payload, err := up.SendRequest(req.Type, req.WantReply, req.Payload)
			if err != nil {
				ok = false
			}
			_ = req.Reply(ok, payload)
		default:
			// keepalive@openssh.com and anything else: a failure reply is
			// an answer, which is all a keepalive needs.
			_ = req.Reply(false, nil)
		}
	}
}

// serveUpstreamChannels relays channels the target opens towards the client
// (remote forwards, agent, X11) when the role allows them.
func (c *hopConn) serveUpstreamChannels(chans <-chan ssh.NewChannel) {
	for nc := range chans {
		f := c.decision.Forwarding
		allowed := false
		switch nc.ChannelType() {
		case "forwarded-tcpip":
			allowed = f.Remote
		case "auth-agent@openssh.com":
			allowed = f.Agent
		case "x11":
			allowed = f.X11
		}
		if !allowed {
			_ = nc.Reject(ssh.Prohibited, "not allowed by postern policy")
			continue
		}
		go func() {
			ch, chReqs, err := c.conn.OpenChannel(nc.ChannelType(), nc.ExtraData())
			if err != nil {
				var oce *ssh.OpenChannelError
				if errors.As(err, &oce) {
					_ = nc.Reject(oce.Reason, oce.Message)
				} else {
					_ = nc.Reject(ssh.ConnectionFailed, "client unavailable")
				}
				return
			}
			upCh, upReqs, err := nc.Accept()
			if err != nil {
				ch.Close()
				return
			}
			pipeChannels(upCh, upReqs, ch, chReqs)
		}()
	}
}

// hopDirectTCPIP is the direct-tcpip open payload (RFC 4254 §7.2).
type hopDirectTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
}

func (c *hopConn) auditForwardDeny(nc ssh.NewChannel) {
	var p hopDirectTCPIP
	_ = ssh.Unmarshal(nc.ExtraData(), &p)
	c.h.audit(c.ctx, state.Event{Type: state.EventChannelDeny, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Details: map[string]any{"channel": "direct-tcpip", "host": p.Host, "port": p.Port, "hop": "inner",
			"reason": "local forwarding not allowed"}})
}

// proxyForward relays a direct-tcpip channel (ssh -L through the target).
func (c *hopConn) proxyForward(nc ssh.NewChannel, up ssh.Conn) {
	var p hopDirectTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &p); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "postern: malformed forward request")
		return
	}
	upCh, upReqs, err := up.OpenChannel("direct-tcpip", nc.ExtraData())
	if err != nil {
		var oce *ssh.OpenChannelError
		if errors.As(err, &oce) {
			_ = nc.Reject(oce.Reason, oce.Message)
		} else {
			_ = nc.Reject(ssh.ConnectionFailed, "postern: "+c.t.Name+": connection lost")
		}
		return
	}
	ch, reqs, err := nc.Accept()
	if err != nil {
		upCh.Close()
		return
	}
	dest := net.JoinHostPort(p.Host, fmt.Sprint(p.Port))
	c.h.audit(c.ctx, state.Event{Type: state.EventForwardStart, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Details: map[string]any{"via": c.t.Name, "destination": dest, "login": c.login}})
	start := c.h.now()
	in, out := pipeChannels(ch, reqs, upCh, upReqs)
	c.h.audit(c.ctx, state.Event{Type: state.EventForwardEnd, Actor: c.ci.Identity.String(), Target: c.t.Name,
		Details: map[string]any{"via": c.t.Name, "destination": dest, "bytes_in": in, "bytes_out": out,
			"duration_ms": c.h.now().Sub(start).Milliseconds()}})
}

// pipeChannels copies a and b into each other until both directions end,
// half-closing in order, and relays their requests; it closes both. It
// returns the bytes copied from a to b and from b to a.
func pipeChannels(a ssh.Channel, aReqs <-chan *ssh.Request, b ssh.Channel, bReqs <-chan *ssh.Request) (ab, ba int64) {
	var wg sync.WaitGroup
	wg.Go(func() { relayRequests(aReqs, b) })
	wg.Go(func() { relayRequests(bReqs, a) })
	var cp sync.WaitGroup
	cp.Go(func() {
		ab, _ = copyPooled(b, a, nil)
		_ = b.CloseWrite()
	})
	cp.Go(func() {
		ba, _ = copyPooled(a, b, nil)
		_ = a.CloseWrite()
	})
	cp.Wait()
	a.Close()
	b.Close()
	wg.Wait()
	return ab, ba
}

// relayRequests forwards channel requests to dst until reqs closes.
func relayRequests(reqs <-chan *ssh.Request, dst ssh.Channel) {
	for req := range reqs {
		ok, err := dst.SendRequest(req.Type, req.WantReply, req.Payload)
		if req.WantReply {
			_ = req.Reply(ok && err == nil, nil)
		}
	}
}
