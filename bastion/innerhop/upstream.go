package innerhop

import (
	"bytes"
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

	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/internal/netx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
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
	cert, err := c.h.opts.Authority.SignTarget(s.PublicKey(), c.login, c.upstreamKeyID(), targetCertTTL)
	if err != nil {
		return nil, fmt.Errorf("sign target certificate: %w", err)
	}
	cs, err := ssh.NewCertSigner(cert, s)
	if err != nil {
		return nil, fmt.Errorf("target certificate signer: %w", err)
	}
	return cs, nil
}

// upstreamKeyID is the key id of the target certificate of a login made by
// this inner hop: the identity and the hop's first session. The target logs
// it with the login; a reused login keeps the key id of the hop that made it.
func (c *hopConn) upstreamKeyID() string {
	return c.ci.Identity.String() + "/" + c.firstID
}

// dialUpstream connects and logs in to the ssh target. Its errors are
// *usererr.Error with a message for the user.
func (c *hopConn) dialUpstream() (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
	h := c.h
	fail := func(reason, msg string, err error) (ssh.Conn, <-chan ssh.NewChannel, <-chan *ssh.Request, error) {
		h.metrics.upstream.WithLabelValues(reason).Inc()
		return nil, nil, nil, &usererr.Error{Msg: msg, Code: reason, Exit: ExitUpstreamFailed, Err: err}
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
	hc := netx.NewHandshakeConn(nc)
	conn, chans, reqs, err := ssh.NewClientConn(hc, addr, cfg)
	hc.Done()
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

// serveSSH proxies the inner connection to the ssh target, on a pooled
// login of the same identity, role, login and target if there is one
// (upstream_pool.go), else on a fresh one.
func (c *hopConn) serveSSH(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	up, err := c.acquireUpstream()
	if err != nil {
		c.log.Info("upstream unavailable", "err", err)
		c.serveFailure(nil, chans, reqs, err)
		return
	}
	c.up = up
	go c.serveGlobalRequests(reqs, up)

	var wg sync.WaitGroup
	forwards := false
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
		case "direct-tcpip":
			if !c.allowDirectTCPIP(nc) { // forward.go
				continue
			}
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "postern: unsupported channel type")
			continue
		}
		if err := up.probe(nc.ChannelType(), nc.ExtraData()); err != nil {
			// The pooled login was gone and a fresh one failed: answer
			// as if the target could not be reached in the first place.
			c.log.Info("upstream unavailable", "err", err)
			c.serveFailure(nc, chans, nil, err)
			break
		}
		if nc.ChannelType() == "session" {
			c.sessions.Add(1)
			go func() {
				defer c.sessions.Done()
				c.proxySession(nc, up)
			}()
		} else {
			forwards = true
			wg.Go(func() { c.proxyForward(nc, up) })
		}
	}
	// The inner connection is gone. Forwards end once both sides have
	// closed; a target that does not close in time loses its login.
	if forwards && !waitTimeout(wg.Wait, endGrace) {
		up.spoil("forwards still open after the inner connection ended")
		up.closeLogin()
		wg.Wait()
	}
	// Sessions that have not ended are aborted (endAll); the others are
	// closing their upstream channels as their client channels close.
	c.cancel(nil)
	if !up.waitChannels(endGrace) {
		up.spoil("channels still open after the inner connection ended")
		up.closeLogin()
	}
	up.release()
}

// waitTimeout runs wait and reports whether it returned within d.
func waitTimeout(wait func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// serveFailure answers the client after the target could not be reached:
// the first session (first, if not nil, is the first channel) gets the
// reason on stderr and ExitUpstreamFailed, then the connection ends. reqs,
// if not nil, are the global requests, which are refused.
func (c *hopConn) serveFailure(first ssh.NewChannel, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, cause error) {
	if reqs != nil {
		go ssh.DiscardRequests(reqs)
	}
	ue := asHopUserError(cause)
	next := func() (ssh.NewChannel, bool) {
		if nc := first; nc != nil {
			first = nil
			return nc, true
		}
		nc, ok := <-chans
		return nc, ok
	}
	for nc, ok := next(); ok; nc, ok = next() {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(ssh.ConnectionFailed, "postern: "+c.t.Name+": "+ue.Msg)
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
				s.sendExit(ue.Exit)
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

// asHopUserError is the user-visible cause of a session's end: the one in
// err's chain (ExitUpstreamFailed if it names no exit status), else "session
// terminated".
func asHopUserError(err error) *usererr.Error {
	if ue := usererr.As(err); ue != nil {
		return withExit(ue, ExitUpstreamFailed)
	}
	return &usererr.Error{Msg: "session terminated", Code: "terminated", Exit: ExitUpstreamFailed, Err: err}
}

// serveGlobalRequests answers the client's global requests. Keepalives get a
// reply; tcpip-forward is relayed to the target only when the policy allows
// that remote forward (forward.go), cancel-tcpip-forward when the role
// allows remote forwarding; either keeps the login out of the pool.
func (c *hopConn) serveGlobalRequests(reqs <-chan *ssh.Request, up *hopUpstream) {
	for req := range reqs {
		switch req.Type {
		case "tcpip-forward", "cancel-tcpip-forward":
			allowed := c.decision.Forwarding.Remote
			if req.Type == "tcpip-forward" {
				allowed = c.allowTCPIPForward(req.Payload)
			}
			if !allowed {
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

// relayUpstreamChannel relays a channel the target opened (remote forward,
// agent, X11; the role's rights were checked) to the client.
func (c *hopConn) relayUpstreamChannel(nc ssh.NewChannel) {
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
}

// upstreamAllowed reports whether the role lets the target open a channel
// of type typ towards the client.
func (c *hopConn) upstreamAllowed(typ string) bool {
	f := c.decision.Forwarding
	switch typ {
	case "forwarded-tcpip":
		return f.Remote
	case "auth-agent@openssh.com":
		return f.Agent
	case "x11":
		return f.X11
	}
	return false
}

// acquireUpstream gives the inner hop a login to the target: a pooled one
// for the same identity, role, login and target, or a fresh one. Its errors
// are *usererr.Error with a message for the user.
func (c *hopConn) acquireUpstream() (*hopUpstream, error) {
	l := &hopUpstream{c: c}
	key := c.upstreamKey()
	if u := c.h.pool.take(key, l); u != nil {
		c.log.Debug("upstream login reused", "address", key.addr, "key_id", u.keyID,
			"age", c.h.now().Sub(u.born).Round(time.Millisecond))
	} else if err := l.login(); err != nil {
		return nil, err
	}
	l.stopCtx = context.AfterFunc(c.ctx, l.ctxDone)
	return l, nil
}

// upstreamKey is what decided the inner hop's login to the target.
func (c *hopConn) upstreamKey() upstreamKey {
	id := c.ci.Identity
	return upstreamKey{target: c.t, addr: c.t.Dial(22), login: c.login,
		issuer: id.Issuer, subject: id.Subject, username: id.Username, role: c.decision.Role}
}

// hopUpstream is an inner hop's exclusive use of an upstream login, and the
// ssh.Conn its channel handlers are given. It counts the channels they open
// on the login and notes anything that leaves state behind on it (a global
// request such as tcpip-forward, agent or X11 forwarding, a session that
// did not end cleanly), which keeps the login out of the pool. The inner
// hop releases it once its channels are closed (release).
type hopUpstream struct {
	c *hopConn

	mu       sync.Mutex
	u        *upstreamLogin // nil after a failed fall-back login, and after release
	reused   bool           // u was made by an earlier inner hop
	probing  bool           // u is reused and has not yet answered a channel open
	pending  *firstChannel  // the channel probe opened, for its handler
	open     int            // channels open on u
	zero     chan struct{}  // closed when open drops to zero (waitChannels)
	dirty    string         // why u must not be reused; "" while it may
	closing  bool           // release began: no new channels from the target
	handlers sync.WaitGroup // handlers of channels the target opened
	stopCtx  func() bool
}

// firstChannel is the channel probe opened on a reused login, waiting for
// the handler that asks for it.
type firstChannel struct {
	typ  string
	data []byte
	ch   ssh.Channel
	reqs <-chan *ssh.Request
	err  error // the target's refusal, if it refused
}

var _ ssh.Conn = (*hopUpstream)(nil)

// errNoUpstream is the error of channels opened after the login was lost.
var errNoUpstream = errors.New("no upstream login")

// login makes a fresh login for the inner hop and makes it l's.
func (l *hopUpstream) login() error {
	c := l.c
	conn, chans, reqs, err := c.dialUpstream()
	if err != nil {
		return err
	}
	c.log.Debug("upstream connected", "address", c.t.Dial(22), "key_id", c.upstreamKeyID())
	c.h.pool.newLogin(conn, chans, reqs, c.upstreamKey(), c.upstreamKeyID(), l)
	return nil
}

// attach makes u l's login. It is called by the pool (under its lock, before
// the login's goroutine can see l as its owner) for a reused login and by
// newLogin for a fresh one.
func (l *hopUpstream) attach(u *upstreamLogin, reused bool) {
	l.mu.Lock()
	l.u, l.reused, l.probing = u, reused, reused
	l.mu.Unlock()
}

// current returns the login, nil if there is none.
func (l *hopUpstream) current() *upstreamLogin {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.u
}

// probe opens the first channel on a reused login (a no-op otherwise) and
// keeps it for the handler's OpenChannel. If the login turns out dead, does
// not answer within probeTimeout (a path that died silently), or the target
// refuses a session on it, the login is closed and l logs in afresh; its
// error is that login's failure.
func (l *hopUpstream) probe(typ string, data []byte) error {
	l.mu.Lock()
	u, probing := l.u, l.probing
	l.mu.Unlock()
	if !probing {
		return nil
	}
	wait := l.c.h.opts.probeTimeout
	timer := time.AfterFunc(wait, func() { _ = u.conn.Close() })
	ch, reqs, err := u.conn.OpenChannel(typ, data)
	if !timer.Stop() {
		// The timer closed the login; whatever the open returned is gone.
		err = fmt.Errorf("no answer to a channel open in %v", wait)
	}
	var oce *ssh.OpenChannelError
	if err == nil || (errors.As(err, &oce) && typ != "session") {
		// An answer from the target: the login works.
		l.mu.Lock()
		l.probing = false
		l.pending = &firstChannel{typ: typ, data: data, ch: ch, reqs: reqs, err: err}
		l.mu.Unlock()
		if !u.alive() {
			l.lost(u) // it died in between: tell the inner hop, as for a fresh login
		}
		return nil
	}
	c := l.c
	c.h.pool.count(reuseDead)
	c.log.Debug("pooled upstream login unusable; logging in afresh", "key_id", u.keyID, "err", err)
	c.h.pool.release(u)
	_ = u.conn.Close()
	l.mu.Lock()
	l.u, l.probing = nil, false
	l.mu.Unlock()
	return l.login()
}

// OpenChannel opens a channel on the login; the first channel of a reused
// login is the one probe opened.
func (l *hopUpstream) OpenChannel(typ string, data []byte) (ssh.Channel, <-chan *ssh.Request, error) {
	l.mu.Lock()
	if p := l.pending; p != nil && p.typ == typ && bytes.Equal(p.data, data) {
		l.pending = nil
		if p.err != nil {
			l.mu.Unlock()
			return nil, nil, p.err
		}
		l.open++
		l.mu.Unlock()
		return &hopUpstreamChannel{Channel: p.ch, l: l}, p.reqs, nil
	}
	u := l.u
	l.mu.Unlock()
	if u == nil {
		return nil, nil, errNoUpstream
	}
	ch, reqs, err := u.conn.OpenChannel(typ, data)
	if err != nil {
		return nil, nil, err
	}
	l.mu.Lock()
	l.open++
	l.mu.Unlock()
	return &hopUpstreamChannel{Channel: ch, l: l}, reqs, nil
}

// SendRequest sends a global request on the login. Anything but a keepalive
// changes the login's state on the target, so it is not reused.
func (l *hopUpstream) SendRequest(name string, wantReply bool, payload []byte) (bool, []byte, error) {
	if name != "keepalive@openssh.com" {
		l.spoil("global request " + name)
	}
	u := l.current()
	if u == nil {
		return false, nil, errNoUpstream
	}
	return u.conn.SendRequest(name, wantReply, payload)
}

// Close closes the login; it is not reused.
func (l *hopUpstream) Close() error {
	l.spoil("closed")
	l.closeLogin()
	return nil
}

// Wait waits for the login's connection to end.
func (l *hopUpstream) Wait() error {
	u := l.current()
	if u == nil {
		return errNoUpstream
	}
	return u.conn.Wait()
}

// User and the other ConnMetadata methods describe the login.
func (l *hopUpstream) User() string { return l.c.login }

func (l *hopUpstream) SessionID() []byte     { return l.meta(ssh.ConnMetadata.SessionID) }
func (l *hopUpstream) ClientVersion() []byte { return l.meta(ssh.ConnMetadata.ClientVersion) }
func (l *hopUpstream) ServerVersion() []byte { return l.meta(ssh.ConnMetadata.ServerVersion) }

func (l *hopUpstream) RemoteAddr() net.Addr {
	if u := l.current(); u != nil {
		return u.conn.RemoteAddr()
	}
	return hopAddr(l.c.t.Name)
}

func (l *hopUpstream) LocalAddr() net.Addr {
	if u := l.current(); u != nil {
		return u.conn.LocalAddr()
	}
	return hopAddr("postern")
}

func (l *hopUpstream) meta(f func(ssh.ConnMetadata) []byte) []byte {
	if u := l.current(); u != nil {
		return f(u.conn)
	}
	return nil
}

// spoil keeps the login out of the pool, for why (the first reason counts).
func (l *hopUpstream) spoil(why string) {
	l.mu.Lock()
	if l.dirty == "" {
		l.dirty = why
	}
	l.mu.Unlock()
}

// closeLogin closes the login's connection now.
func (l *hopUpstream) closeLogin() {
	if u := l.current(); u != nil {
		_ = u.conn.Close()
	}
}

// channelClosed counts a channel on the login as closed.
func (l *hopUpstream) channelClosed() {
	l.mu.Lock()
	l.open--
	if l.open == 0 && l.zero != nil {
		close(l.zero)
		l.zero = nil
	}
	l.mu.Unlock()
}

// waitChannels reports whether every channel on the login was closed within
// d. New channels from the target are refused from now on.
func (l *hopUpstream) waitChannels(d time.Duration) bool {
	l.mu.Lock()
	l.closing = true
	if l.open == 0 {
		l.mu.Unlock()
		return true
	}
	if l.zero == nil {
		l.zero = make(chan struct{})
	}
	zero := l.zero
	l.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-zero:
		return true
	case <-t.C:
		return false
	}
}

// ctxDone runs when the inner hop's context ends. A failure, revocation,
// expiry, shutdown or policy cancel closes the login at once (its channels
// with it); the ordinary end of the inner connection leaves the decision to
// release.
func (l *hopUpstream) ctxDone() {
	if cause := context.Cause(l.c.ctx); !cleanHopEnd(cause) {
		l.spoil(fmt.Sprint("inner hop ended: ", cause))
		l.closeLogin()
	}
}

// cleanHopEnd reports whether an inner hop that ended with cause may give
// its login back: only when the client closed the inner connection (the
// hop's own cancel, nil cause) or the outer one.
func cleanHopEnd(cause error) bool {
	switch cause {
	case nil, context.Canceled, bastion.ErrConnClosed:
		return true
	}
	return false
}

// lost is told by the login's goroutine that u's connection ended.
func (l *hopUpstream) lost(u *upstreamLogin) {
	l.mu.Lock()
	mine := l.u == u && !l.probing // a reused login not yet answering is replaced by probe
	l.mu.Unlock()
	if mine {
		l.c.cancel(&usererr.Error{Msg: "connection lost", Code: "connection_lost", Exit: ExitUpstreamFailed})
	}
}

// upstreamChannel takes a channel the target opened on u and relays it to
// the client when the role allows. It reports whether it took it.
func (l *hopUpstream) upstreamChannel(u *upstreamLogin, nc ssh.NewChannel) bool {
	if !l.c.upstreamAllowed(nc.ChannelType()) {
		return false
	}
	l.mu.Lock()
	if l.closing || l.u != u {
		l.mu.Unlock()
		return false
	}
	l.open++
	l.handlers.Add(1)
	if l.dirty == "" {
		l.dirty = "channel " + nc.ChannelType() + " from the target"
	}
	l.mu.Unlock()
	go func() {
		defer l.handlers.Done()
		l.c.relayUpstreamChannel(nc)
		l.channelClosed()
	}()
	return true
}

// release ends the inner hop's use of the login, once its channels are
// closed: back to the pool if it is clean, closed otherwise.
func (l *hopUpstream) release() {
	l.stopCtx()
	l.mu.Lock()
	l.closing = true
	l.mu.Unlock()
	l.handlers.Wait()
	l.mu.Lock()
	u, why, p := l.u, l.dirty, l.pending
	l.u, l.pending = nil, nil
	if why == "" && l.open > 0 {
		why = "channels open"
	}
	l.mu.Unlock()
	if p != nil && p.ch != nil {
		_ = p.ch.Close() // its handler refused the channel before opening it
		why = "first channel unused"
	}
	if u == nil {
		return
	}
	if why == "" {
		why = l.c.sessionsDirt()
	}
	if why == "" && !cleanHopEnd(context.Cause(l.c.ctx)) {
		why = fmt.Sprint("inner hop ended: ", context.Cause(l.c.ctx))
	}
	if why == "" && u.pool.put(u) {
		l.c.log.Debug("upstream login kept for reuse", "key_id", u.keyID)
		return
	}
	u.pool.release(u)
	_ = u.conn.Close()
	if why != "" {
		l.c.log.Debug("upstream login closed", "key_id", u.keyID, "reason", why)
	}
}

// hopUpstreamChannel is a channel on an upstream login, counted by its
// hopUpstream until it is closed. Channel requests other than those whose
// effect ends with the channel keep the login out of the pool: sshd keeps an
// agent socket or X11 listener per connection, not per session.
type hopUpstreamChannel struct {
	ssh.Channel
	l    *hopUpstream
	once sync.Once
}

func (ch *hopUpstreamChannel) Close() error {
	err := ch.Channel.Close()
	ch.once.Do(ch.l.channelClosed)
	return err
}

func (ch *hopUpstreamChannel) SendRequest(name string, wantReply bool, payload []byte) (bool, error) {
	switch name {
	case "pty-req", "env", "shell", "exec", "subsystem", "window-change", "signal", "break",
		"keepalive@openssh.com", "eow@openssh.com":
	default:
		ch.l.spoil("channel request " + name)
	}
	return ch.Channel.SendRequest(name, wantReply, payload)
}

// hopDirectTCPIP is the direct-tcpip open payload (RFC 4254 §7.2).
type hopDirectTCPIP struct {
	Host       string
	Port       uint32
	OriginHost string
	OriginPort uint32
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
		ba, _ = copyPooled(fitWriter{a}, b, nil)
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

// withExit returns ue, or a copy of it with exit if it names no exit status.
func withExit(ue *usererr.Error, exit int) *usererr.Error {
	if ue.Exit != 0 {
		return ue
	}
	c := *ue
	c.Exit = exit
	return &c
}
