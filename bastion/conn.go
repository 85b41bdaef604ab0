package bastion

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/netx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// Causes of a connection's end.
var (
	errShutdown = endCause("shutdown", "server shutting down")
	errIdle     = endCause("idle_timeout", "idle timeout")
	errExpired  = endCause("expired", "certificate or session expired")
	errRevoked  = endCause("revoked", "certificate revoked")
	errInternal = endCause("internal_error", "internal error; connection closed")
)

// ErrConnClosed is the cause of a channel's context when its outer
// connection closed (the client left).
var ErrConnClosed = errors.New("connection closed")

// exitEnded is the exit status of a session postern ends (the status ssh
// itself reports for a connection that ends: docs/exit-codes.md).
const exitEnded = 255

// endCause is why postern ends a connection: the sessions on it tell the
// user ("postern: <msg>") and exit with exitEnded.
func endCause(code, msg string) *usererr.Error {
	return &usererr.Error{Code: code, Msg: msg, Global: true, Exit: exitEnded}
}

// maxChannelsPerConn caps the channels open at once on one connection.
const maxChannelsPerConn int32 = 1024

// extConnID is the Permissions extension that ties an authenticated
// connection to the ConnInfo its auth callback created.
const extConnID = "conn-id@postern"

// serverConn is one accepted connection. Its goroutine (serve) owns nc and
// closes it; close may be called from anywhere to end it early.
type serverConn struct {
	s      *Server
	nc     net.Conn
	ac     *activityConn
	remote netip.AddrPort
	id     string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelCauseFunc

	// ci is set by the auth callbacks, which run on serve's goroutine during
	// the handshake; it is read only after the handshake succeeded.
	ci *ConnInfo
	// The auth callbacks also keep what the penalty needs, on the same
	// goroutine: authStarted reports whether the key exchange was done and
	// authentication began, failCounted whether this connection has counted
	// its failure, serverFault whether a key was refused for postern's own
	// failure (revocation lookup).
	authStarted, failCounted, serverFault bool

	chans sync.WaitGroup // one per channel handler

	mu     sync.Mutex
	ending bool // end began: no new channel handler (chans.Add) from now on
}

// endNoticeGrace bounds how long end waits for the channel handlers to tell
// their sessions why the connection ends (the inner hop gives its sessions
// endGrace, 2 s, to send their notice and exit status).
const endNoticeGrace = 3 * time.Second

func (s *Server) newConn(nc net.Conn, remote netip.AddrPort) *serverConn {
	id := newConnID()
	ctx, cancel := context.WithCancelCause(context.Background())
	c := &serverConn{
		s:      s,
		nc:     nc,
		ac:     newActivityConn(nc),
		remote: remote,
		id:     id,
		log:    s.log.With("conn", id, "remote", remote.String()),
		ctx:    ctx,
		cancel: cancel,
	}
	return c
}

// close ends the connection with cause at once.
func (c *serverConn) close(cause error) {
	c.cancel(cause)
	c.nc.Close()
}

// end ends the connection with cause, a user-visible end cause
// (revocation, expiry, idle timeout): the channel handlers see it on their
// context first and tell their sessions (the inner hop writes "postern:
// <cause>" to each session's stderr and sends exit status 255), and the
// transport is closed once they have returned, or after endNoticeGrace.
func (c *serverConn) end(cause error) {
	c.mu.Lock()
	c.ending = true
	c.mu.Unlock()
	c.cancel(cause)
	done := make(chan struct{})
	go func() { // ends when the handlers have returned, which the timer below bounds
		c.chans.Wait()
		close(done)
	}()
	t := time.NewTimer(endNoticeGrace)
	select {
	case <-done:
	case <-t.C:
	}
	t.Stop()
	c.nc.Close()
}

func (c *serverConn) serve() {
	defer c.close(ErrConnClosed)
	defer c.recoverPanic("connection")
	start := time.Now()
	if err := c.nc.SetDeadline(start.Add(c.s.handshakeTimeout)); err != nil {
		return
	}
	conf, err := c.serverConfig()
	if err != nil {
		c.log.Error("server config", "err", err)
		return
	}
	sc, chans, reqs, err := ssh.NewServerConn(c.ac, conf)
	c.ac.handshaking.Store(false)
	result := "ok"
	if err != nil {
		result = "failed"
	}
	c.s.metrics.handshake.WithLabelValues(result).Observe(time.Since(start).Seconds())
	if err != nil {
		c.log.Debug("handshake failed", "err", err)
		if c.authStarted && !c.failCounted && !c.serverFault {
			// Authentication began and ended without a key refused by
			// verifyKey: still one failure of the source.
			c.s.metrics.authFailures.WithLabelValues(codeNoAuth).Inc()
			c.failCounted = true
			c.s.countAuthFailure(c)
		}
		return
	}
	defer sc.Close()
	ci := c.ci
	if ci == nil || sc.Permissions == nil || sc.Permissions.Extensions[extConnID] != c.id {
		c.log.Error("handshake succeeded without a verified certificate")
		return
	}
	if err := c.nc.SetDeadline(time.Time{}); err != nil {
		return
	}
	c.log = ci.Log
	if c.s.opts.Locks != nil {
		untrack, err := c.s.opts.Locks.Track(lock.Subject{Identity: ci.Identity, Conn: c.id}, c.endLocked)
		if err != nil {
			// Locked between authentication and now.
			c.log.Info("connection refused: locked", "err", err)
			return
		}
		defer untrack()
	}
	c.log.Info("connection start", "client", string(sc.ClientVersion()))
	go c.watch(ci)
	go c.globalRequests(reqs)
	var open atomic.Int32
	for nch := range chans {
		if ue := usererr.As(context.Cause(c.ctx)); ue != nil && c.ctx.Err() != nil {
			// Ending (a lock): no new channel, and the client reads why.
			c.s.metrics.channels.WithLabelValues(channelLabel(nch.ChannelType()), "denied").Inc()
			_ = nch.Reject(ssh.Prohibited, "postern: "+ue.Msg)
			continue
		}
		if open.Load() >= c.s.maxChans {
			c.s.metrics.channels.WithLabelValues(channelLabel(nch.ChannelType()), "denied").Inc()
			c.log.Warn("channel refused: too many channels", "limit", c.s.maxChans)
			_ = nch.Reject(ssh.ResourceShortage, "postern: too many channels on this connection")
			continue
		}
		c.mu.Lock()
		ending := c.ending
		if !ending {
			c.chans.Add(1)
		}
		c.mu.Unlock()
		if ending {
			_ = nch.Reject(ssh.ConnectionFailed, "postern: connection ending")
			continue
		}
		open.Add(1)
		go func() {
			defer c.chans.Done()
			defer open.Add(-1)
			defer c.recoverPanic("channel")
			c.handleChannel(ci, nch)
		}()
	}
	c.cancel(ErrConnClosed)
	c.chans.Wait()
	cause := context.Cause(c.ctx)
	reason := "closed"
	if ue := usererr.As(cause); ue != nil {
		reason = ue.Msg
	}
	c.log.Info("connection end", "duration", time.Since(start).Round(time.Millisecond), "reason", reason)
}

// lockGrace is how long a connection a lock ends stays open after its
// sessions were told why, so that their notices and exit statuses reach
// the client before the TCP connection goes.
const lockGrace = 2 * time.Second

// endLocked ends the connection because a lock came to match it: the
// context ends with cause at once (every channel handler tells its
// sessions and ends them), and the connection closes lockGrace later.
func (c *serverConn) endLocked(cause error) {
	c.cancel(cause)
	c.log.Info("connection ending: locked")
	time.AfterFunc(lockGrace, func() { c.nc.Close() })
}

// recoverPanic, deferred at the top of each of a connection's goroutines
// that serves the client (the connection itself, each channel handler),
// stops a panic there from taking the process: the value and stack are
// logged, postern_panics_total{where} counted, and the connection ended
// with a short notice. One bad client never ends the others' sessions.
func (c *serverConn) recoverPanic(where string) {
	r := recover()
	if r == nil {
		return
	}
	c.s.metrics.panics.WithLabelValues(where).Inc()
	c.log.Error("panic serving a connection; connection closed", "where", where, "panic", fmt.Sprint(r),
		"stack", string(debug.Stack()))
	c.close(errInternal)
}

// renewalLead is how long before its certificate expires a connection
// looks for a renewal, and renewalRetry how often again until then.
const (
	renewalLead  = 10 * time.Second
	renewalRetry = 2 * time.Second
)

// watch ends the connection after the idle timeout without traffic, at
// its expiry (if not zero) unless a renewal moved it, or when a periodic
// check finds its certificate revoked, whichever comes first.
func (c *serverConn) watch(ci *ConnInfo) {
	idle := c.s.idleTimeout
	it := time.NewTimer(idle)
	defer it.Stop()
	var expC <-chan time.Time
	var et *time.Timer
	// next is when to look next: for a renewal while the expiry is near,
	// then the expiry itself.
	next := func() time.Duration {
		exp := ci.Expiry()
		at := exp.Add(-renewalLead)
		if c.s.opts.Renewals == nil || !c.s.now().Before(at) {
			at = exp
			if c.s.opts.Renewals != nil && c.s.now().Before(exp.Add(-renewalRetry)) {
				at = c.s.now().Add(renewalRetry)
			}
		}
		return at.Sub(c.s.now())
	}
	if !ci.Expires.IsZero() {
		et = time.NewTimer(next())
		defer et.Stop()
		expC = et.C
	}
	var revC <-chan time.Time
	if c.s.opts.Revocations != nil && c.s.revocationRecheck > 0 {
		rt := time.NewTicker(c.s.revocationRecheck)
		defer rt.Stop()
		revC = rt.C
	}
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-revC:
			if c.revoked() {
				c.end(errRevoked)
				return
			}
		case <-expC:
			if c.s.now().Before(ci.Expiry()) {
				c.renewal(ci)
				et.Reset(next())
				continue
			}
			c.log.Info("connection expired")
			c.end(errExpired)
			return
		case <-it.C:
			since := time.Since(c.ac.last())
			if since >= idle {
				c.log.Info("idle timeout", "idle", since.Round(time.Second))
				c.end(errIdle)
				return
			}
			it.Reset(idle - since)
		}
	}
}

// renewal moves the connection's expiry to that of the newest certificate
// the same identity got for the same key, if it is later, unrevoked and
// still names the connection's login; it audits auth.renewed.
func (c *serverConn) renewal(ci *ConnInfo) {
	if c.s.opts.Renewals == nil || ci.Identity.Subject == "" {
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, revocationTimeout)
	defer cancel()
	certs, err := c.s.opts.Renewals.IssuedFor(ctx, ssh.FingerprintSHA256(ci.Key), ci.Identity.Issuer, ci.Identity.Subject)
	if err != nil {
		ci.Log.Warn("look for a renewed certificate", "err", err)
		return
	}
	i := slices.IndexFunc(certs, func(rc state.IssuedCert) bool { return slices.Contains(rc.Principals, ci.Login) })
	if i < 0 || !certs[i].ValidBefore.After(ci.Expiry()) {
		return
	}
	rc := certs[i]
	ci.renew(rc.Serial, rc.ValidBefore)
	ci.Log.Info("connection renewed", "serial", rc.Serial, "until", rc.ValidBefore.UTC().Format(time.RFC3339))
	c.s.audit(c.ctx, ci.Log, state.Event{
		Type: state.EventAuthRenewed, Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(),
		Details: map[string]any{"conn": ci.ID, "serial": strconv.FormatUint(rc.Serial, 10),
			"previous_serial": strconv.FormatUint(ci.Cert.Serial, 10), "until": rc.ValidBefore.UTC().Format(time.RFC3339)},
	})
}

// revoked reports whether the connection's certificate has been revoked
// since it authenticated, auditing the disconnection. A store that cannot
// answer keeps the connection (it was checked at authentication) and is
// logged.
func (c *serverConn) revoked() bool {
	ci := c.ci
	ctx, cancel := context.WithTimeout(c.ctx, revocationTimeout)
	defer cancel()
	revoked, err := c.s.opts.Revocations.IsRevoked(ctx, ci.serial())
	if err != nil {
		ci.Log.Warn("revocation recheck", "err", err)
		return false
	}
	if !revoked {
		return false
	}
	ci.Log.Info("certificate revoked: closing connection", "serial", ci.Cert.Serial)
	c.s.metrics.authFailures.WithLabelValues(codeCertRevoked).Inc()
	c.s.audit(c.ctx, ci.Log, state.Event{
		Type: state.EventAuthFailure, Actor: ci.Identity.Username, Source: ci.Remote.Addr().String(),
		Details: map[string]any{
			"conn": ci.ID, "reason": codeCertRevoked, "serial": strconv.FormatUint(ci.Cert.Serial, 10),
			"fingerprint": ssh.FingerprintSHA256(ci.Key), "login": ci.Login, "phase": "open_connection",
		},
	})
	return true
}

// globalRequests answers the connection's global requests: keepalives yes,
// remote forwarding (-R) and everything else no.
func (c *serverConn) globalRequests(reqs <-chan *ssh.Request) {
	for req := range reqs {
		switch req.Type {
		case "keepalive@openssh.com":
			req.Reply(true, nil)
		case "tcpip-forward", "streamlocal-forward@openssh.com":
			c.s.audit(c.ctx, c.log, state.Event{
				Type: state.EventChannelDeny, Actor: c.ci.Identity.Username, Source: c.remote.Addr().String(),
				Details: map[string]any{"conn": c.id, "type": req.Type, "code": "not_supported"},
			})
			c.s.metrics.channels.WithLabelValues(req.Type, "denied").Inc()
			req.Reply(false, nil)
		default:
			req.Reply(false, nil)
		}
	}
}

// activityConn records when bytes last moved, for the idle timeout.
type activityConn struct {
	net.Conn
	lastNano atomic.Int64
	// handshaking acknowledges every read at once (see netx.QuickAck) until
	// the SSH handshake is over.
	handshaking atomic.Bool
}

func newActivityConn(nc net.Conn) *activityConn {
	a := &activityConn{Conn: nc}
	a.lastNano.Store(time.Now().UnixNano())
	a.handshaking.Store(true)
	return a
}

func (a *activityConn) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if n > 0 {
		a.lastNano.Store(time.Now().UnixNano())
		if a.handshaking.Load() {
			_ = netx.QuickAck(a.Conn)
		}
	}
	return n, err
}

func (a *activityConn) Write(p []byte) (int, error) {
	n, err := a.Conn.Write(p)
	if n > 0 {
		a.lastNano.Store(time.Now().UnixNano())
	}
	return n, err
}

func (a *activityConn) last() time.Time { return time.Unix(0, a.lastNano.Load()) }
