package bastion

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/atomicfile"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/state"
)

// AuditLog is the subset of the state store the bastion writes audit events
// to. *state.Store implements it.
type AuditLog interface {
	Append(ctx context.Context, e state.Event) (state.Event, error)
}

// RevocationList is the subset of the state store that says whether a
// certificate serial is revoked. *state.Store implements it.
type RevocationList interface {
	IsRevoked(ctx context.Context, serial uint64) (bool, error)
}

// Locks is the kill switch the bastion consults and registers its live
// connections and target channels with; *lock.Locker implements it.
type Locks interface {
	// CheckFresh refuses a subject an active lock matches, reading the
	// locks from the store first.
	CheckFresh(ctx context.Context, s lock.Subject) error
	// Track registers a live connection or channel that end ends when a
	// lock comes to match it; it refuses a subject already locked.
	Track(s lock.Subject, end func(cause error)) (untrack func(), err error)
}

// Renewals finds the newest certificate an identity got for a key, so that
// a connection runs on past its certificate's expiry while the workload
// keeps renewing (postern agent). *state.Store implements it.
type Renewals interface {
	// IssuedFor returns the unexpired, unrevoked certificates issued for
	// the key and identity, the one that expires last first.
	IssuedFor(ctx context.Context, keyFingerprint, issuer, subject string) ([]state.IssuedCert, error)
}

// Defaults of config.SSH.
const (
	defaultHandshakeTimeout = 15 * time.Second
	defaultIdleTimeout      = 30 * time.Minute
	defaultMaxConns         = 10000
	defaultMaxConnsSource   = 200
	hostCertTTL             = 24 * time.Hour
	// hostCertRefresh is how long before expiry the host certificate is
	// re-signed.
	hostCertRefresh = 12 * time.Hour
	// revocationRecheck is how often an open connection checks whether its
	// certificate was revoked since it authenticated.
	revocationRecheck = time.Minute
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("bastion: server closed")

// Options configures a Server. Authority and Policy are required.
type Options struct {
	// Authority holds the user CA (user certificates are checked against it)
	// and the host CA (which signs postern's host certificate).
	Authority *certs.Authority
	// Policy is the initial role policy; SetPolicy replaces it.
	Policy *policy.Engine
	// Audit receives audit events; events are only logged if nil.
	Audit AuditLog
	// Revocations is consulted for every user certificate; no certificate is
	// considered revoked if nil.
	Revocations RevocationList
	// Locks refuses logins of locked identities and ends live connections
	// and target channels when a lock comes to match them; no locks if nil.
	Locks Locks
	// Renewals lets a connection run on past its certificate's expiry when
	// the same identity holds a newer, unrevoked certificate for the same
	// key that still names the connection's login; connections end at
	// their certificate's expiry if nil.
	Renewals Renewals
	// Handlers serve the channels the policy admits to inventory targets,
	// by kind (HandlerSSH, HandlerCommand, HandlerTCP, HandlerPostgres); a
	// target whose kind has no handler is refused with "postern: <name>:
	// not available".
	Handlers map[string]TargetHandler
	// HostKey is postern's own host key; it takes precedence over
	// HostKeyFile (the service passes the one replicas share through the
	// state store).
	HostKey ssh.Signer
	// HostKeyFile is postern's own ed25519 host key (OpenSSH PEM), generated
	// with mode 0600 if missing; an in-memory key per Server if empty.
	HostKeyFile string
	// HostNames are the principals of postern's host certificate; no host
	// certificate (only the plain host key) if empty.
	HostNames []string
	// Config holds connection hygiene settings; see config.SSH for defaults.
	// Config.Penalty sets the per-source penalties for failed
	// authentication (penalty.go); its zero value turns them on with the
	// defaults of config.Penalty, and SetPenalty replaces it.
	Config config.SSH
	// RevocationRecheck is how often an open connection checks whether its
	// certificate was revoked since it authenticated; every minute if zero.
	RevocationRecheck time.Duration
	// Resolver resolves forward destinations outside the inventory;
	// net.DefaultResolver if nil.
	Resolver Resolver
	// OwnListeners are postern's own listening sockets, which no forward may
	// reach (the wiring adds the HTTP listener; Serve adds each SSH
	// listener); a set of the SSH listeners only if nil.
	OwnListeners *netguard.Listeners
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log receives the server's logs; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers the server's collectors; they are kept private if nil.
	Metrics prometheus.Registerer
}

// Server is the bastion's SSH server. It owns its listeners (closed by
// Shutdown) and every accepted connection (each served by one goroutine that
// closes it). Its methods are safe for concurrent use.
type Server struct {
	opts     Options
	log      *slog.Logger
	now      func() time.Time
	resolver Resolver
	metrics  *metrics

	handshakeTimeout, idleTimeout time.Duration
	maxConns, maxConnsSource      int
	maxChans                      int32         // per connection
	revocationRecheck             time.Duration // how often open connections recheck revocation
	penalty                       *penaltyBox
	refusals                      refusalLog

	policy  atomic.Pointer[policy.Engine]
	hostKey ssh.Signer

	hostMu       sync.Mutex
	hostCert     *ssh.Certificate
	hostSigner   ssh.Signer // cert signer for hostCert; nil without host names
	hostCertNext time.Time

	own *netguard.Listeners // listeners no forward may reach

	mu        sync.Mutex
	shutting  bool
	listeners map[net.Listener]struct{}
	conns     map[*serverConn]struct{}
	perSource map[netip.Addr]int
	wg        sync.WaitGroup // one per accepted conn
}

// NewServer checks opts, loads or generates the host key and signs the
// host certificate.
func NewServer(opts Options) (*Server, error) {
	if opts.Authority == nil || opts.Authority.User == nil {
		return nil, errors.New("bastion: Options.Authority with a user CA is required")
	}
	if opts.Policy == nil {
		return nil, errors.New("bastion: Options.Policy is required")
	}
	s := &Server{
		opts:      opts,
		log:       opts.Log,
		now:       opts.Now,
		resolver:  opts.Resolver,
		own:       opts.OwnListeners,
		listeners: map[net.Listener]struct{}{},
		conns:     map[*serverConn]struct{}{},
		perSource: map[netip.Addr]int{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.resolver == nil {
		s.resolver = net.DefaultResolver
	}
	if s.own == nil {
		s.own = &netguard.Listeners{}
	}
	s.handshakeTimeout = orDur(opts.Config.HandshakeTimeout.D(), defaultHandshakeTimeout)
	s.idleTimeout = orDur(opts.Config.IdleTimeout.D(), defaultIdleTimeout)
	s.maxConns = orInt(opts.Config.MaxConnections, defaultMaxConns)
	s.maxConnsSource = orInt(opts.Config.MaxConnectionsPerSource, defaultMaxConnsSource)
	s.maxChans = maxChannelsPerConn
	s.revocationRecheck = orDur(opts.RevocationRecheck, revocationRecheck)
	var err error
	if s.metrics, err = newMetrics(opts.Metrics); err != nil {
		return nil, fmt.Errorf("bastion: register metrics: %w", err)
	}
	if s.penalty, err = newPenaltyBox(opts.Config.Penalty, s.now); err != nil {
		return nil, fmt.Errorf("bastion: %w", err)
	}
	s.hostKey = opts.HostKey
	if s.hostKey == nil {
		if s.hostKey, err = loadHostKey(opts.HostKeyFile); err != nil {
			return nil, fmt.Errorf("bastion: %w", err)
		}
	}
	if _, err := s.hostSigners(); err != nil {
		return nil, fmt.Errorf("bastion: %w", err)
	}
	s.policy.Store(opts.Policy)
	return s, nil
}

func orDur(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func orInt(n, def int) int {
	if n <= 0 {
		return def
	}
	return n
}

// SetPolicy atomically replaces the role policy. Connections keep their
// authentication; every channel opened afterwards is decided by e.
func (s *Server) SetPolicy(e *policy.Engine) {
	if e != nil {
		s.policy.Store(e)
	}
}

// SetPenalty replaces the settings of per-source penalties (a
// configuration reload). Sources keep their counts and penalties in force,
// except that a source now inside an exempt prefix is forgotten (its
// penalty lifted) and Disabled forgets every source. It fails only if an
// exempt entry does not parse.
func (s *Server) SetPenalty(p config.Penalty) error {
	if err := s.penalty.configure(p); err != nil {
		return fmt.Errorf("bastion: %w", err)
	}
	return nil
}

// Policy returns the role policy in force.
func (s *Server) Policy() *policy.Engine { return s.policy.Load() }

// HostKey returns postern's own public host key.
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey.PublicKey() }

// loadHostKey reads the host key at path, generating an ed25519 key there
// (mode 0600) if the file does not exist; path "" gives an in-memory key.
func loadHostKey(path string) (ssh.Signer, error) {
	if path != "" {
		b, err := os.ReadFile(path)
		if err == nil {
			signer, err := ssh.ParsePrivateKey(b)
			if err != nil {
				return nil, fmt.Errorf("parse host key %s: %w", path, err)
			}
			return signer, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read host key: %w", err)
		}
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, fmt.Errorf("generate host key: %w", err)
	}
	if path == "" {
		return signer, nil
	}
	block, err := ssh.MarshalPrivateKey(priv, "postern host key")
	if err != nil {
		return nil, fmt.Errorf("encode host key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create host key directory: %w", err)
	}
	if err := atomicfile.Create(path, pem.EncodeToMemory(block), 0o600); errors.Is(err, fs.ErrExist) {
		return loadHostKey(path) // another replica or process generated it first: use theirs
	} else if err != nil {
		return nil, fmt.Errorf("host key: %w", err)
	}
	return signer, nil
}

// hostSigners returns the host keys to offer: the host certificate (signed
// anew when it is within hostCertRefresh of expiry) and the plain key.
func (s *Server) hostSigners() ([]ssh.Signer, error) {
	a := s.opts.Authority
	if len(s.opts.HostNames) == 0 || a.Host == nil || a.Host.Signer() == nil {
		return []ssh.Signer{s.hostKey}, nil
	}
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.hostSigner == nil || !s.now().Before(s.hostCertNext) {
		cert, err := a.SignHost(s.hostKey.PublicKey(), s.opts.HostNames, hostCertTTL)
		if err != nil {
			if s.hostSigner != nil {
				s.log.Error("refresh host certificate", "err", err)
				return []ssh.Signer{s.hostSigner, s.hostKey}, nil
			}
			return nil, fmt.Errorf("sign host certificate: %w", err)
		}
		signer, err := ssh.NewCertSigner(cert, s.hostKey)
		if err != nil {
			return nil, fmt.Errorf("host certificate signer: %w", err)
		}
		s.hostCert, s.hostSigner = cert, signer
		s.hostCertNext = time.Unix(int64(cert.ValidBefore), 0).Add(-hostCertRefresh)
	}
	return []ssh.Signer{s.hostSigner, s.hostKey}, nil
}

// HostCertificate returns postern's current host certificate, or nil if
// there are no host names.
func (s *Server) HostCertificate() *ssh.Certificate {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	return s.hostCert
}

// Serve accepts connections on ln until Shutdown, which closes ln. It
// returns ErrServerClosed after Shutdown and the accept error otherwise.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	s.own.Add(ln.Addr())
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			shutting := s.shutting
			s.mu.Unlock()
			if shutting {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("accept: %w", err)
		}
		backoff = 0
		s.accept(nc)
	}
}

// accept registers nc (or refuses it at once when its source is penalised
// or a limit is reached) and starts its goroutine. A refused connection is
// closed before postern sends its version: no handshake work is spent on it.
func (s *Server) accept(nc net.Conn) {
	remote := addrPortOf(nc.RemoteAddr())
	if _, ok := s.penalty.blocked(remote.Addr()); ok {
		// Reset rather than close gracefully, so that a storm from a
		// penalised source leaves no TIME_WAIT state behind on the bastion.
		if tc, ok := nc.(interface{ SetLinger(int) error }); ok { // *net.TCPConn, or behind a PROXY header
			_ = tc.SetLinger(0)
		}
		s.refuse(nc, remote, "penalty")
		return
	}
	s.mu.Lock()
	reason := ""
	switch {
	case s.shutting:
		reason = "shutdown"
	case len(s.conns) >= s.maxConns:
		reason = "limit_global"
	case s.perSource[remote.Addr()] >= s.maxConnsSource:
		reason = "limit_source"
	}
	if reason != "" {
		s.mu.Unlock()
		s.refuse(nc, remote, reason)
		return
	}
	c := s.newConn(nc, remote)
	s.conns[c] = struct{}{}
	s.perSource[remote.Addr()]++
	s.wg.Add(1)
	s.mu.Unlock()
	s.metrics.connections.Inc()
	s.metrics.connectionsOpen.Inc()
	go func() {
		defer s.wg.Done()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			if s.perSource[remote.Addr()]--; s.perSource[remote.Addr()] <= 0 {
				delete(s.perSource, remote.Addr())
			}
			s.mu.Unlock()
			s.metrics.connectionsOpen.Dec()
		}()
		c.serve()
	}()
}

// refuse closes nc, counts the refusal and logs it, at most once per
// refusalLogEvery for each reason.
func (s *Server) refuse(nc net.Conn, remote netip.AddrPort, reason string) {
	s.metrics.connsRefused.WithLabelValues(reason).Inc() // counted before the client can see the close
	nc.Close()
	if n, ok := s.refusals.allow(reason, s.now()); ok {
		s.log.Warn("connection refused", "remote", remote.String(), "reason", reason, "suppressed", n)
	}
}

// refusalLogEvery is the least time between two "connection refused" log
// lines with the same reason; the refusals in between are counted in the
// next line's "suppressed" and in postern_connections_refused_total.
const refusalLogEvery = 10 * time.Second

// refusalLog rate-limits the log lines of refused connections, so that a
// storm of refusals does not become a storm of log lines.
type refusalLog struct {
	mu         sync.Mutex
	next       map[string]time.Time // reason: when its next line may be written
	suppressed map[string]int       // reason: refusals not logged since its last line
}

// allow reports whether a refusal for reason may be logged at now, and how
// many were left out since the last line for reason.
func (l *refusalLog) allow(reason string, now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.next == nil {
		l.next, l.suppressed = map[string]time.Time{}, map[string]int{}
	}
	if now.Before(l.next[reason]) {
		l.suppressed[reason]++
		return 0, false
	}
	n := l.suppressed[reason]
	l.next[reason], l.suppressed[reason] = now.Add(refusalLogEvery), 0
	return n, true
}

// countAuthFailure counts one failed authentication of c against its
// source and, if that starts a penalty, audits and logs it once: later
// connections from the source are refused at accept and leave no audit
// event each.
func (s *Server) countAuthFailure(c *serverConn) {
	p, started := s.penalty.fail(c.remote.Addr())
	if !started {
		return
	}
	s.metrics.penalties.Inc()
	src := p.sourceString()
	s.log.Warn("source penalised: refusing its connections", "source", src, "failures", p.Failures,
		"duration", p.Duration, "until", p.Until.UTC().Format(time.RFC3339), "offence", p.Offence)
	s.audit(c.ctx, c.log, state.Event{
		Type: state.EventAuthPenalty, Actor: "postern", Source: src,
		Details: map[string]any{
			"conn": c.id, "failures": p.Failures, "duration": p.Duration.String(),
			"until": p.Until.UTC().Format(time.RFC3339), "offence": p.Offence,
		},
	})
}

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Shutdown stops accepting, lets open connections end on their own, and at
// ctx's end closes those still open. It returns once every connection
// goroutine has returned: nil if they drained, ctx's error otherwise.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.shutting = true
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	for c := range s.conns {
		c.close(errShutdown)
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// ActiveConnections returns the number of open connections.
func (s *Server) ActiveConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// newConnID returns a time-sortable connection id.
func newConnID() string { return ulid.Make().String() }

// audit appends e to the audit log (logging a failure) and returns it.
func (s *Server) audit(ctx context.Context, log *slog.Logger, e state.Event) {
	if e.Time.IsZero() {
		e.Time = s.now().UTC()
	}
	if s.opts.Audit == nil {
		log.Debug("audit", "type", e.Type, "details", e.Details)
		return
	}
	if _, err := s.opts.Audit.Append(context.WithoutCancel(ctx), e); err != nil {
		log.Error("append audit event", "type", e.Type, "err", err)
	}
}
