package innerhop

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/bastion"
	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/guardrails"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/netguard"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/policy"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Exit statuses the inner hop reports to the client (contract, see
// docs/exit-codes.md). Each comes with a one-line stderr reason.
const (
	// ExitDenied means the session was refused by policy after the inner hop
	// accepted the user (for example a shell for an exec-only role).
	ExitDenied = 123
	// ExitRecordingUnavailable means the role requires recording and the
	// recording could not be started or failed mid-session.
	ExitRecordingUnavailable = 125
	// ExitUpstreamFailed is reported when the target could not be reached or
	// its host key did not verify (the status OpenSSH itself uses for
	// connection errors).
	ExitUpstreamFailed = 255
)

// Record modes of a policy decision.
const (
	recordRequired = "required"
	recordOptional = "optional"
	recordOff      = "off"
)

const (
	innerHostCertTTL    = time.Hour
	targetCertTTL       = 2 * time.Minute
	defaultDialTimeout  = 10 * time.Second
	defaultHandshakeTTL = 15 * time.Second
	endGrace            = 2 * time.Second
	expiryLead          = time.Second
)

// Approver holds a command until it is approved. It is the hook for the
// approvals broker; a nil Approver lets every command run.
type Approver interface {
	// ApproveCommand blocks until the command may run (nil) or must not (an
	// error whose message is safe to show the user). ctx ends with the session.
	ApproveCommand(ctx context.Context, req CommandRequest) error
}

// CommandRequest describes a command waiting for an Approver.
type CommandRequest struct {
	// Conn is the outer connection of the requester.
	Conn *bastion.ConnInfo
	// Target is the target the command runs on.
	Target *policy.Target
	// Login is the login on the target.
	Login string
	// Session is the session id (also the recording id).
	Session string
	// Command is the exec command, or "" for an interactive shell: what the
	// rules match.
	Command string
	// Stored is Command with the recording masks applied: what approval
	// requests, markers and audit events may hold.
	Stored string
	// Decision is the policy decision that admitted the session.
	Decision policy.Decision
	// Notify writes one line to the client's stderr (while a command is
	// held); nil if there is no client to tell.
	Notify func(line string)
	// Marker adds a marker to the session's recording (a no-op when the
	// session is not recorded); nil if none.
	Marker func(label string)
	// JSONErrors reports that the session asked for JSON messages
	// (POSTERN_JSON_ERRORS=1).
	JSONErrors bool
}

// Moderation waits for a moderator to join a session; *lock.Locker
// implements it.
type Moderation interface {
	WaitModerator(ctx context.Context, w lock.ModerationWait) (state.Join, error)
}

// Options configures an Server. The zero value of every field but
// Authority and Policy works.
type Options struct {
	// Authority signs per-target host certificates and upstream user
	// certificates. Required.
	Authority *certs.Authority
	// Policy returns the current policy engine (it changes on reload). Required.
	Policy func() *policy.Engine
	// Recorder records sessions; nil records nothing (a role that requires
	// recording is then refused with ExitRecordingUnavailable).
	Recorder *recorder.Recorder
	// Audit receives audit events; dropped if nil.
	Audit func(context.Context, state.Event)
	// Approver holds commands for approval; none if nil.
	Approver Approver
	// Locks refuses sessions a lock matches and ends a running session
	// when one comes to (a lock on its identity, role, target or the
	// session itself); no locks if nil.
	Locks bastion.Locks
	// Moderation holds the sessions of roles that require a moderator
	// until one joins; such sessions are refused if nil.
	Moderation Moderation
	// Masking masks secrets in recordings and in what clients receive;
	// nothing is masked if nil.
	Masking *guardrails.Policy
	// StreamFlushDelay is how long stream masking holds back a partial
	// line; guardrails.DefaultFlushDelay if zero.
	StreamFlushDelay time.Duration
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers the inner hop's metrics; not registered if nil.
	Metrics prometheus.Registerer
	// DialTimeout bounds dialing and handshaking with a target; 10s if zero.
	DialTimeout time.Duration
	// HandshakeTimeout bounds the inner SSH handshake with the client; 15s if
	// zero.
	HandshakeTimeout time.Duration
	// UpstreamReuse keeps logins to ssh targets for reuse by later inner
	// hops of the same identity, role, login and target (upstream_pool.go);
	// on, with Idle 30s and MaxAge 10m, if zero.
	UpstreamReuse config.UpstreamReuse
	// OwnListeners are postern's own listening sockets, which no forward
	// through a target may reach (forward.go); none known if nil.
	OwnListeners *netguard.Listeners
	// RecordingAudit reports that Audit appends to the state store the
	// Recorder indexes into. A recorded session's session.start and
	// session.end events then commit with the recording's own state
	// writes (recorder.Meta.Events, recorder.Result.Events): two commits,
	// and their fsyncs, fewer per session. Off if false.
	RecordingAudit bool

	// probeTimeout bounds the first channel open on a reused login;
	// probeTimeout (or DialTimeout, if shorter) if zero. Tests shorten it.
	probeTimeout time.Duration
}

// Server is the inner hop: the [bastion.TargetHandler] of ssh targets that
// are not passthrough and of command targets (see the package doc). It is
// safe for concurrent use; each ServeChannel call owns its channel and the
// inner connection, and has its upstream login to itself until it ends; the
// Server owns idle logins (Close closes them).
type Server struct {
	opts    Options
	now     func() time.Time
	log     *slog.Logger
	metrics *hopMetrics

	hostKey ssh.Signer // per-process key certified for every target name
	pool    *upstreamPool

	mu        sync.Mutex
	hostCerts map[string]*hostCertEntry
}

type hostCertEntry struct {
	signer  ssh.Signer
	issued  time.Time
	expires time.Time
}

// New returns an Server. It generates the per-process host key.
func New(opts Options) (*Server, error) {
	if opts.Authority == nil {
		return nil, errors.New("inner hop: no certificate authority")
	}
	if opts.Policy == nil {
		return nil, errors.New("inner hop: no policy")
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = defaultDialTimeout
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = defaultHandshakeTTL
	}
	if opts.probeTimeout <= 0 {
		opts.probeTimeout = min(probeTimeout, opts.DialTimeout)
	}
	h := &Server{opts: opts, now: opts.Now, log: opts.Log, hostCerts: map[string]*hostCertEntry{}}
	if h.now == nil {
		h.now = time.Now
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("inner hop: generate host key: %w", err)
	}
	if h.hostKey, err = ssh.NewSignerFromKey(priv); err != nil {
		return nil, fmt.Errorf("inner hop: host key signer: %w", err)
	}
	if h.metrics, err = newHopMetrics(opts.Metrics); err != nil {
		return nil, err
	}
	h.pool = newUpstreamPool(opts.UpstreamReuse, h.now, h.log, h.metrics.reuse)
	return h, nil
}

// SetUpstreamReuse applies new reuse settings (a configuration reload) and
// closes every idle upstream login: the reload may have changed targets,
// host keys or roles, and a pooled login belongs to the old ones.
func (h *Server) SetUpstreamReuse(cfg config.UpstreamReuse) { h.pool.reset(cfg) }

// Close closes every idle upstream login and keeps none from now on; logins
// still in use are closed when their inner hop ends. It is for shutdown,
// after the SSH server has drained.
func (h *Server) Close() { h.pool.close() }

// hostSigner returns the host certificate signer for t, issuing a new
// certificate when none is cached or the cached one is past its half-life.
func (h *Server) hostSigner(t *policy.Target) (ssh.Signer, error) {
	principals := append([]string{t.Name}, t.Aliases...)
	key := fmt.Sprint(principals)
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	if e := h.hostCerts[key]; e != nil && now.Before(e.issued.Add(e.expires.Sub(e.issued)/2)) {
		return e.signer, nil
	}
	cert, err := h.opts.Authority.SignHost(h.hostKey.PublicKey(), principals, innerHostCertTTL)
	if err != nil {
		return nil, fmt.Errorf("sign host certificate for %s: %w", t.Name, err)
	}
	s, err := ssh.NewCertSigner(cert, h.hostKey)
	if err != nil {
		return nil, fmt.Errorf("host certificate signer: %w", err)
	}
	h.hostCerts[key] = &hostCertEntry{signer: s, issued: now, expires: now.Add(innerHostCertTTL)}
	return s, nil
}

// hopConn is the state of one inner connection: the decision taken at
// authentication and what the sessions share.
type hopConn struct {
	h        *Server
	ci       *bastion.ConnInfo
	t        *policy.Target
	login    string
	decision policy.Decision
	log      *slog.Logger
	conn     *ssh.ServerConn
	firstID  string // session id reserved for the first session (upstream key id)
	idOnce   sync.Once
	ctx      context.Context
	cancel   context.CancelCauseFunc
	sessions sync.WaitGroup // session goroutines, for the end of ServeChannel
	up       *hopUpstream   // the upstream login (kind ssh), set before any session

	liveMu sync.Mutex
	live   map[*hopSession]struct{}
}

// track and untrack keep the set of open sessions, so that the end of the
// connection's context can tell each of them why.
func (c *hopConn) track(s *hopSession) {
	c.liveMu.Lock()
	if c.live == nil {
		c.live = map[*hopSession]struct{}{}
	}
	c.live[s] = struct{}{}
	c.liveMu.Unlock()
}

func (c *hopConn) untrack(s *hopSession) {
	s.mu.Lock()
	unlock := s.unlock
	s.mu.Unlock()
	if unlock != nil {
		unlock()
	}
	if c.up != nil {
		if why := s.upstreamDirt(); why != "" {
			c.up.spoil(why)
		}
	}
	c.liveMu.Lock()
	delete(c.live, s)
	c.liveMu.Unlock()
	close(s.done)
}

// sessionsDirt says why an open session keeps the upstream login from being
// reused; "" if none does.
func (c *hopConn) sessionsDirt() string {
	c.liveMu.Lock()
	defer c.liveMu.Unlock()
	for s := range c.live {
		if why := s.upstreamDirt(); why != "" {
			return why
		}
	}
	return ""
}

// upstreamDirt says why the session leaves its upstream login unfit for
// reuse: it was aborted (a failure or policy ended it), it has not ended,
// or its program did not report how it ended (it may still run on the
// target). "" if none of these.
func (s *hopSession) upstreamDirt() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.aborted != nil:
		return "session ended by " + s.aborted.Code
	case !s.ended:
		return "session not ended"
	case s.begun && s.exitStatus == nil && s.exitSignal == nil:
		return "session ended without exit status"
	}
	return ""
}

// upstreamDetails adds to an audit event's details which upstream login the
// inner hop uses: "upstream" is "reused" (made by an earlier inner hop of
// the same identity) or "fresh", "upstream_login" the key id the target
// logged the login with. Nothing for command targets.
func (c *hopConn) upstreamDetails(d map[string]any) {
	if c.up == nil {
		return
	}
	c.up.mu.Lock()
	u, reused := c.up.u, c.up.reused
	c.up.mu.Unlock()
	if u == nil {
		return
	}
	d["upstream"] = "fresh"
	if reused {
		d["upstream"] = "reused"
	}
	d["upstream_login"] = u.keyID
}

// endAll aborts every open session with the cause of the context's end and
// gives them up to endGrace to send their exit status before the connection
// goes.
func (c *hopConn) endAll() {
	cause := asHopUserError(context.Cause(c.ctx))
	c.liveMu.Lock()
	live := make([]*hopSession, 0, len(c.live))
	for s := range c.live {
		live = append(live, s)
	}
	c.liveMu.Unlock()
	timer := time.NewTimer(endGrace)
	defer timer.Stop()
	for _, s := range live {
		go s.abort(cause) // may block on a full client window; bounded below
	}
	for _, s := range live {
		select {
		case <-s.done:
		case <-timer.C:
			return
		}
	}
}

// nextSessionID returns the id for a new session: the reserved first id once,
// fresh ULIDs after that.
func (c *hopConn) nextSessionID() string {
	id := ""
	c.idOnce.Do(func() { id = c.firstID })
	if id == "" {
		id = ulid.Make().String()
	}
	return id
}

// ServeTarget implements [bastion.TargetHandler] for ssh targets that are
// not passthrough and for command targets: it accepts the channel and
// serves it with ServeChannel.
func (h *Server) ServeTarget(ctx context.Context, tc *bastion.TargetChannel) {
	tc.Details["kind"] = tc.Target.Kind
	ch, err := tc.Accept()
	if err != nil {
		return
	}
	h.ServeChannel(ctx, tc.Conn, ch, tc.Target)
}

// ServeChannel serves the inner SSH connection a client runs inside ch, a
// direct-tcpip channel to target t. It owns ch and closes it. It returns when
// the inner connection ends: the client leaves, the target disconnects, ctx is
// cancelled (shutdown, revocation) or ci.Expiry() passes.
func (h *Server) ServeChannel(ctx context.Context, ci *bastion.ConnInfo, ch ssh.Channel, t *policy.Target) {
	defer ch.Close()
	log := ci.Log
	if log == nil {
		log = h.log
	}
	log = log.With("target", t.Name)
	if t.Kind != config.KindSSH && t.Kind != config.KindCommand {
		log.Warn("inner hop for unsupported target kind", "kind", t.Kind)
		return
	}
	c := &hopConn{h: h, ci: ci, t: t, log: log, firstID: ulid.Make().String()}
	signer, err := h.hostSigner(t)
	if err != nil {
		log.Error("inner hop host certificate", "err", err)
		return
	}
	cfg := &ssh.ServerConfig{
		Config:        ssh.Config{Ciphers: preferredCiphers},
		ServerVersion: "SSH-2.0-postern",
		MaxAuthTries:  6,
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			// Only a cheap pre-check: the decision is taken in
			// VerifiedPublicKeyCallback, on the key the client proved.
			if !sameKey(key, ci.Key) {
				return nil, errors.New("not the key of the outer connection")
			}
			return &ssh.Permissions{}, nil
		},
		VerifiedPublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey, _ *ssh.Permissions, _ string) (*ssh.Permissions, error) {
			if !sameKey(key, ci.Key) {
				return nil, errors.New("not the key of the outer connection")
			}
			// Decide with the current policy and its own copy of the target
			// (the policy may have been reloaded since the channel opened).
			cur, d := t, policy.Decision{Reason: policy.DenyMessage(t.Name, ci.Identity), Code: policy.CodeTargetNotAllow}
			if eng := h.opts.Policy(); eng != nil {
				if lt, ok := eng.Lookup(t.Name); ok {
					cur = lt
				}
				d = eng.Authorize(ci.Identity, cur, meta.User(), 22)
			}
			if !d.Allow {
				h.audit(ctx, state.Event{Type: state.EventChannelDeny, Actor: ci.Identity.String(), Target: t.Name,
					Details: map[string]any{"login": meta.User(), "reason": d.Reason, "code": d.Code, "hop": "inner"}})
				return nil, &ssh.BannerError{
					Err:     fmt.Errorf("policy denied login %q: %s", meta.User(), d.Code),
					Message: denyReason(d) + "\r\n",
				}
			}
			c.decision = d
			c.login = meta.User()
			c.t = cur
			return &ssh.Permissions{Extensions: map[string]string{"login": meta.User()}}, nil
		},
	}
	cfg.AddHostKey(signer)

	// The handshake must finish in time, and stops on ctx cancellation.
	timer := time.AfterFunc(h.opts.HandshakeTimeout, func() { ch.Close() })
	stop := context.AfterFunc(ctx, func() { ch.Close() })
	conn, chans, reqs, err := ssh.NewServerConn(&channelConn{Channel: ch, remote: remoteAddr(ci)}, cfg)
	timer.Stop()
	stop()
	if err != nil {
		log.Info("inner hop handshake failed", "err", err)
		return
	}
	defer conn.Close()
	c.conn = conn
	c.log = log.With("login", c.login)

	var cancel context.CancelCauseFunc
	c.ctx, cancel = context.WithCancelCause(ctx)
	c.cancel = cancel
	defer cancel(nil)
	// Sessions end a moment before the outer connection does (certificate
	// expiry, unless a renewal moves it), so that the user still reads why.
	var maxEnd time.Time
	if d := c.decision.MaxSession; d > 0 {
		maxEnd = h.now().Add(d)
	}
	deadline := func() time.Time {
		end := ci.Expiry()
		if !end.IsZero() {
			end = end.Add(-expiryLead)
		}
		if !maxEnd.IsZero() && (end.IsZero() || maxEnd.Before(end)) {
			end = maxEnd
		}
		return end
	}
	if end := deadline(); !end.IsZero() {
		var expire *time.Timer
		expire = time.AfterFunc(time.Hour, func() {
			if end := deadline(); end.After(h.now()) {
				expire.Reset(end.Sub(h.now())) // renewed meanwhile
				return
			}
			cancel(&usererr.Error{Msg: "session expired", Code: "session_expired", Exit: ExitUpstreamFailed})
		})
		expire.Reset(end.Sub(h.now())) // set once expire is assigned: the function reads it
		defer expire.Stop()
	}
	// Tear the inner connection down when the context ends; the open
	// sessions are told why first. Not waited for: it runs when the context
	// ends, which ServeChannel makes happen before it returns. AfterFunc
	// holds no goroutine while the connection lives.
	context.AfterFunc(c.ctx, func() {
		c.endAll()
		conn.Close()
	})

	c.log.Info("inner hop established", "kind", t.Kind, "record", c.decision.Record)
	start := h.now()
	defer func() { c.log.Info("inner hop closed", "duration", h.now().Sub(start)) }()
	switch t.Kind {
	case config.KindSSH:
		c.serveSSH(chans, reqs)
	case config.KindCommand:
		c.serveCommand(chans, reqs)
	}
	cancel(nil)
	c.sessions.Wait()
}

// denyReason is the user-facing text of a denial.
func denyReason(d policy.Decision) string {
	if d.Reason != "" {
		return d.Reason
	}
	return "access denied"
}

// sameKey reports whether key is want, or a certificate for want.
func sameKey(key, want ssh.PublicKey) bool {
	if key == nil || want == nil {
		return false
	}
	if cert, ok := key.(*ssh.Certificate); ok {
		key = cert.Key
	}
	if cert, ok := want.(*ssh.Certificate); ok {
		want = cert.Key
	}
	return bytes.Equal(key.Marshal(), want.Marshal())
}

// remoteAddr is the client's address for the inner connection.
func remoteAddr(ci *bastion.ConnInfo) net.Addr {
	if a := ci.RemoteAddr(); a != nil {
		return a
	}
	return hopAddr("client")
}

func (h *Server) audit(ctx context.Context, e state.Event) {
	if h.opts.Audit == nil {
		return
	}
	h.opts.Audit(ctx, h.event(e))
}

// event completes e as audit does: its time (now if zero) and source.
func (h *Server) event(e state.Event) state.Event {
	if e.Time.IsZero() {
		e.Time = h.now()
	}
	e.Source = "bastion"
	return e
}

// auditsWithRecording reports whether a recorded session's start and end
// events go to the recording's state writes (Options.RecordingAudit).
func (h *Server) auditsWithRecording() bool {
	return h.opts.RecordingAudit && h.opts.Audit != nil && h.opts.Recorder != nil && h.opts.Recorder.HasState()
}

// preferredCiphers puts AES-GCM first: it has assembly on amd64 and arm64,
// which ChaCha20-Poly1305 lacks in x/crypto.
var preferredCiphers = []string{
	ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherChaCha20Poly1305,
	ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR,
}

// hopAddr is the net.Addr of an end of a channel.
type hopAddr string

func (a hopAddr) Network() string { return "ssh-channel" }
func (a hopAddr) String() string  { return string(a) }

// channelConn presents an SSH channel as a net.Conn so that an SSH server can
// run on it. Deadlines are not supported (they return nil); the inner hop
// bounds the handshake by closing the channel instead.
type channelConn struct {
	ssh.Channel
	remote net.Addr
}

func (c *channelConn) LocalAddr() net.Addr                { return hopAddr("postern") }
func (c *channelConn) RemoteAddr() net.Addr               { return c.remote }
func (c *channelConn) SetDeadline(t time.Time) error      { return nil }
func (c *channelConn) SetReadDeadline(t time.Time) error  { return nil }
func (c *channelConn) SetWriteDeadline(t time.Time) error { return nil }

// hopMetrics are the inner hop's Prometheus metrics.
type hopMetrics struct {
	sessions *prometheus.CounterVec
	active   prometheus.Gauge
	bytes    *prometheus.CounterVec
	bytesIn  prometheus.Counter // bytes.WithLabelValues("in"), resolved once
	bytesOut prometheus.Counter
	upstream *prometheus.CounterVec
	reuse    *prometheus.CounterVec
	recErr   prometheus.Counter
}

func newHopMetrics(reg prometheus.Registerer) (*hopMetrics, error) {
	m := &hopMetrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_innerhop_sessions_total",
			Help: "Sessions served on the inner hop, by kind (shell, exec, subsystem) and target kind.",
		}, []string{"kind", "target_kind"}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_innerhop_active_sessions",
			Help: "Sessions currently open on the inner hop.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_innerhop_bytes_total",
			Help: "Session bytes relayed by the inner hop, by direction (in = from the client).",
		}, []string{"direction"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_innerhop_upstream_errors_total",
			Help: "Failures to reach a target, by reason.",
		}, []string{"reason"}),
		reuse: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_upstream_reuse_total",
			Help: "Look-ups of pooled logins to ssh targets (hit, miss) and pooled logins closed (expired: idle or max age; dead: closed by the target).",
		}, []string{"result"}),
		recErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_innerhop_recording_errors_total",
			Help: "Sessions whose recording failed to start or failed mid-session.",
		}),
	}
	r := &promx.Registrar{Reg: reg}
	m.sessions = promx.Add(r, m.sessions)
	m.active = promx.Add(r, m.active)
	m.bytes = promx.Add(r, m.bytes)
	m.upstream = promx.Add(r, m.upstream)
	m.reuse = promx.Add(r, m.reuse)
	m.recErr = promx.Add(r, m.recErr)
	if r.Err != nil {
		return nil, fmt.Errorf("inner hop metrics: %w", r.Err)
	}
	m.bytesIn, m.bytesOut = m.bytes.WithLabelValues("in"), m.bytes.WithLabelValues("out")
	return m, nil
}
