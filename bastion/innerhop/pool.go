package innerhop

import (
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
)

// Defaults and bounds of upstream login reuse.
const (
	defaultUpstreamIdle   = 30 * time.Second
	defaultUpstreamMaxAge = 10 * time.Minute
	// maxIdleUpstreams bounds the idle logins kept in all.
	maxIdleUpstreams = 256
	// maxIdleUpstreamsPerKey bounds the idle logins kept for one identity,
	// role, login and target (several only when that identity runs inner
	// hops in parallel).
	maxIdleUpstreamsPerKey = 4
	// probeTimeout bounds the first channel open on a reused login (or the
	// dial timeout, if shorter); a login that does not answer is replaced
	// by a fresh one.
	probeTimeout = 5 * time.Second
)

// Results of a look-up in the pool, the result label of
// postern_upstream_reuse_total.
const (
	reuseHit     = "hit"     // an idle login was handed to an inner hop
	reuseMiss    = "miss"    // none matched: the inner hop logs in afresh
	reuseExpired = "expired" // an idle login was closed after Idle or MaxAge
	reuseDead    = "dead"    // a pooled login was found closed by the target
)

// upstreamKey is everything that decided an upstream login. A login is
// handed only to an inner hop for which all of it is the same.
type upstreamKey struct {
	// target is the policy's target; pointer identity, since a
	// configuration reload makes new targets (and flushes the pool).
	target *policy.Target
	// addr is the address dialled.
	addr string
	// login is the user logged in as on the target.
	login string
	// issuer, subject and username are the postern identity the target
	// certificate was issued for (Identity.String is only the username,
	// which two issuers may share).
	issuer, subject, username string
	// role names the roles that allowed the login.
	role string
}

// upstreamLogin is one authenticated SSH client connection to a target. It
// is owned by exactly one inner hop at a time (owner), or sits idle in the
// pool, or is closed. One goroutine per login (serve) consumes the
// connection's incoming channels and global requests for as long as it
// lives and hands channels to the current owner; it also notices the end of
// the connection.
type upstreamLogin struct {
	pool  *upstreamPool
	conn  ssh.Conn
	key   upstreamKey
	keyID string    // the target certificate's key id: "<identity>/<first session>"
	born  time.Time // when the login was made
	done  chan struct{}

	// Under pool.mu.
	owner  *hopUpstream // the inner hop using the login; nil while idle
	pooled bool         // in pool.idle
	idle   *time.Timer  // closes the login after Idle in the pool
}

// alive reports whether the connection has not ended.
func (u *upstreamLogin) alive() bool {
	select {
	case <-u.done:
		return false
	default:
		return true
	}
}

// serve consumes the login's incoming channels and global requests until
// the connection ends: channels the target opens go to the owner (which
// checks its role's forwarding rights) or are refused while the login is
// idle; global requests (keepalives, hostkeys-00@openssh.com) are answered
// with a failure, which is an answer. Then it removes the login from the
// pool and tells the owner.
func (u *upstreamLogin) serve(chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request) {
	for chans != nil || reqs != nil {
		select {
		case nc, ok := <-chans:
			if !ok {
				chans = nil
				continue
			}
			u.pool.mu.Lock()
			owner := u.owner
			u.pool.mu.Unlock()
			if owner == nil || !owner.upstreamChannel(u, nc) {
				_ = nc.Reject(ssh.Prohibited, "not allowed by postern policy")
			}
		case req, ok := <-reqs:
			if !ok {
				reqs = nil
				continue
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}
	_ = u.conn.Wait()
	close(u.done)
	owner := u.pool.lost(u)
	if owner != nil {
		owner.lost(u)
	}
}

// upstreamPool keeps idle upstream logins for reuse by a later inner hop of
// the same identity, role, login and target (upstreamKey), so that a short
// command does not pay for a new SSH handshake and login on the target.
//
// Security. Reuse skips only the login to the target, never a check at
// postern: every inner hop that takes a pooled login has passed the whole
// outer authentication (user certificate, revocation list), the inner hop's
// key check and a fresh policy decision for its identity, target and login,
// and its sessions are gated, recorded and audited as on a fresh login.
// Logins are never shared across identities, roles, logins, target
// definitions or addresses (the key), and a login is used by one inner hop
// at a time, so sessions of two connections never share an SSH connection.
// The target's host key was verified when the login was made, on the same
// TCP connection. A login goes back to the pool only when it is clean (see
// hopUpstream.release): no global request was sent (tcpip-forward), no
// agent or X11 forwarding was asked for, every channel is closed and every
// program exited with a status, and the inner hop did not end because of a
// failure, revocation, expiry, shutdown or policy cancel; anything else
// closes it. An idle login is closed after Idle, is not handed out after
// MaxAge from its login, is closed when the target closes it, and all are
// closed on a configuration reload and on shutdown. Disabled turns reuse
// off. The target's own log shows one login for several sessions: its line
// names the identity and the first session of the login (the certificate's
// key id, "<identity>/<session>"), and postern's session.start events say
// which login each session used ("upstream", "upstream_login").
//
// A nil *upstreamPool is not valid; a pool whose settings say Disabled keeps
// nothing. Its methods are safe for concurrent use.
type upstreamPool struct {
	now    func() time.Time
	log    *slog.Logger
	metric *prometheus.CounterVec

	mu     sync.Mutex
	cfg    config.UpstreamReuse // defaults applied
	idle   map[upstreamKey][]*upstreamLogin
	n      int // idle logins
	closed bool
}

func newUpstreamPool(cfg config.UpstreamReuse, now func() time.Time, log *slog.Logger, metric *prometheus.CounterVec) *upstreamPool {
	p := &upstreamPool{now: now, log: log, metric: metric, idle: map[upstreamKey][]*upstreamLogin{}}
	p.cfg = withReuseDefaults(cfg)
	return p
}

func withReuseDefaults(cfg config.UpstreamReuse) config.UpstreamReuse {
	if cfg.Idle <= 0 {
		cfg.Idle = config.Duration(defaultUpstreamIdle)
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = config.Duration(defaultUpstreamMaxAge)
	}
	return cfg
}

// newLogin registers a fresh login made for owner and starts its goroutine.
func (p *upstreamPool) newLogin(conn ssh.Conn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request,
	key upstreamKey, keyID string, owner *hopUpstream) *upstreamLogin {
	u := &upstreamLogin{pool: p, conn: conn, key: key, keyID: keyID, born: p.now(), done: make(chan struct{}), owner: owner}
	owner.attach(u, false)
	go u.serve(chans, reqs) // ends when conn does; every login is closed by its owner or the pool
	return u
}

// take hands the most recently used idle login for key to owner, or returns
// nil. Logins past MaxAge are closed on the way.
func (p *upstreamPool) take(key upstreamKey, owner *hopUpstream) *upstreamLogin {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg.Disabled || p.closed {
		return nil
	}
	maxAge := p.cfg.MaxAge.D()
	list := p.idle[key]
	for len(list) > 0 {
		u := list[len(list)-1]
		list = list[:len(list)-1]
		p.unlink(u)
		if !u.alive() {
			p.count(reuseDead)
			continue
		}
		if p.now().Sub(u.born) >= maxAge {
			p.count(reuseExpired)
			p.log.Debug("upstream login past max age", "target", key.target.Name, "key_id", u.keyID)
			_ = u.conn.Close()
			continue
		}
		u.owner = owner
		owner.attach(u, true) // before the login's goroutine can see its owner
		p.count(reuseHit)
		return u
	}
	p.count(reuseMiss)
	return nil
}

// put takes back a clean login from its owner. It reports whether the pool
// kept it; if not, the caller closes it.
func (p *upstreamPool) put(u *upstreamLogin) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	u.owner = nil
	if p.cfg.Disabled || p.closed || !u.alive() || p.now().Sub(u.born) >= p.cfg.MaxAge.D() ||
		p.n >= maxIdleUpstreams || len(p.idle[u.key]) >= maxIdleUpstreamsPerKey {
		return false
	}
	p.idle[u.key] = append(p.idle[u.key], u)
	p.n++
	u.pooled = true
	// Close after Idle, or at MaxAge if that comes first.
	d := min(p.cfg.Idle.D(), p.cfg.MaxAge.D()-p.now().Sub(u.born))
	u.idle = time.AfterFunc(d, func() { p.expire(u) })
	return true
}

// expire closes u if it is still idle.
func (p *upstreamPool) expire(u *upstreamLogin) {
	p.mu.Lock()
	if !u.pooled {
		p.mu.Unlock()
		return
	}
	p.unlink(u)
	p.count(reuseExpired)
	p.mu.Unlock()
	p.log.Debug("idle upstream login closed", "target", u.key.target.Name, "key_id", u.keyID)
	_ = u.conn.Close()
}

// lost forgets u, whose connection ended, and returns its owner, if any.
func (p *upstreamPool) lost(u *upstreamLogin) *hopUpstream {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u.pooled {
		p.unlink(u)
		p.count(reuseDead)
		p.log.Debug("pooled upstream login closed by the target", "target", u.key.target.Name, "key_id", u.keyID)
	}
	owner := u.owner
	u.owner = nil
	return owner
}

// release detaches u from its owner without pooling it (the caller closes
// it).
func (p *upstreamPool) release(u *upstreamLogin) {
	p.mu.Lock()
	u.owner = nil
	p.mu.Unlock()
}

// unlink removes u from the idle lists. Called with p.mu held.
func (p *upstreamPool) unlink(u *upstreamLogin) {
	if !u.pooled {
		return
	}
	u.pooled = false
	if u.idle != nil {
		u.idle.Stop()
		u.idle = nil
	}
	list := slices.DeleteFunc(p.idle[u.key], func(x *upstreamLogin) bool { return x == u })
	if len(list) == 0 {
		delete(p.idle, u.key)
	} else {
		p.idle[u.key] = list
	}
	p.n--
}

// idleCount returns the number of idle logins.
func (p *upstreamPool) idleCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// reset closes every idle login and applies cfg from now on (a
// configuration reload: the old targets are gone). Logins in use are
// judged by the new settings when their inner hop ends.
func (p *upstreamPool) reset(cfg config.UpstreamReuse) {
	p.mu.Lock()
	p.cfg = withReuseDefaults(cfg)
	idle := p.drain()
	p.mu.Unlock()
	closeLogins(idle)
}

// close closes every idle login and keeps none from now on (shutdown).
func (p *upstreamPool) close() {
	p.mu.Lock()
	p.closed = true
	idle := p.drain()
	p.mu.Unlock()
	closeLogins(idle)
}

// drain empties the pool and returns what it held. Called with p.mu held.
func (p *upstreamPool) drain() []*upstreamLogin {
	var out []*upstreamLogin
	for _, list := range p.idle {
		out = append(out, list...)
	}
	for _, u := range out {
		p.unlink(u)
	}
	return out
}

func closeLogins(us []*upstreamLogin) {
	for _, u := range us {
		_ = u.conn.Close()
	}
}

func (p *upstreamPool) count(result string) {
	if p.metric != nil {
		p.metric.WithLabelValues(result).Inc()
	}
}
