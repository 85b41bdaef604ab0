package lock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// ExitLocked is the exit status of an SSH session that a lock ended or
// refused, and of a session a moderator terminated (contract, see
// docs/exit-codes.md).
const ExitLocked = 124

// CodeLocked is the error code of every refusal because of a lock.
const CodeLocked = "locked"

// hintChannel is the store notification channel of "the locks changed".
const hintChannel = "postern_locks"

// Defaults of Options.
const (
	defaultPoll = 2 * time.Second
	// maxReason bounds a lock's reason, which users whose sessions end read.
	maxReason = 300
	// maxName bounds names and identity fields of a lock.
	maxName = 256
)

// Errors of Lock and Unlock; user-visible.
var (
	// ErrNotFound: no such lock, or it was removed already.
	ErrNotFound = &usererr.Error{Status: http.StatusNotFound, Code: "not_found", Msg: "no such lock"}
)

// Store is the part of the state store the Locker uses; *state.Store
// implements it.
type Store interface {
	CreateLock(ctx context.Context, l state.Lock) error
	RemoveLock(ctx context.Context, id, by string) error
	GetLock(ctx context.Context, id string) (state.Lock, error)
	ActiveLocks(ctx context.Context) ([]state.Lock, error)
	ListLocks(ctx context.Context, limit int) ([]state.Lock, error)
	JoinSession(ctx context.Context, j state.Join) error
	Joins(ctx context.Context, session string) ([]state.Join, error)
}

var _ Store = (*state.Store)(nil)

// Options configures a Locker. Store is required; every other field has a
// working zero value.
type Options struct {
	// Store keeps the locks.
	Store Store
	// Notify and Subscribe carry "the locks changed" hints between replicas
	// (the state store's Notify and Subscribe); without them each replica
	// sees the others' locks at its next poll only.
	Notify    func(ctx context.Context, channel, payload string) error
	Subscribe func(ctx context.Context, channel string) (<-chan string, error)
	// Poll is how often the active locks are re-read in case a hint was
	// lost; 2s if zero.
	Poll time.Duration
	// Roles returns the roles that match an identity under the current
	// policy, for role locks; role locks match nothing if nil.
	Roles func(certs.Identity) []string
	// Audit receives lock.enforced events; none if nil. (lock.created and
	// lock.removed are appended by the store with the change itself.)
	Audit func(context.Context, state.Event)
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers postern_locks_active and
	// postern_lock_terminations_total; not registered if nil.
	Metrics prometheus.Registerer
}

// Locker makes, removes and enforces locks. It is safe for concurrent use.
// It owns its listener and poller goroutines (Close stops them) and the
// registry of tracked live sessions.
type Locker struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger

	active     prometheus.Gauge
	terminated *prometheus.CounterVec
	reloadMu   sync.Mutex // one reload at a time, so enforcement sees locks in order
	mu         sync.Mutex
	locks      []state.Lock // active when last read, oldest first
	tracked    map[*entry]struct{}
	waiters    map[string]map[chan struct{}]struct{} // session -> woken when someone joins it
	stop       context.CancelFunc
	done       sync.WaitGroup
	closed     bool
}

// New returns a Locker with the active locks loaded, listening for hints
// and polling.
func New(ctx context.Context, opts Options) (*Locker, error) {
	if opts.Store == nil {
		return nil, errors.New("lock: no state store")
	}
	if opts.Poll <= 0 {
		opts.Poll = defaultPoll
	}
	l := &Locker{opts: opts, now: opts.Now, log: opts.Log, tracked: map[*entry]struct{}{},
		waiters: map[string]map[chan struct{}]struct{}{}}
	if l.now == nil {
		l.now = time.Now
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.active = prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_locks_active",
		Help: "Locks in force on this replica (made, not removed, not expired)."})
	l.terminated = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_lock_terminations_total",
		Help: "Live connections, channels and sessions ended by a lock, by lock kind."}, []string{"kind"})
	r := &promx.Registrar{Reg: opts.Metrics}
	l.active = promx.Add(r, l.active)
	l.terminated = promx.Add(r, l.terminated)
	if r.Err != nil {
		return nil, fmt.Errorf("lock: %w", r.Err)
	}
	if err := l.reload(ctx); err != nil {
		return nil, fmt.Errorf("lock: load active locks: %w", err)
	}
	bg, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	var hints, joins <-chan string
	if opts.Notify != nil && opts.Subscribe != nil {
		var err error
		if hints, err = opts.Subscribe(bg, hintChannel); err != nil {
			cancel()
			return nil, fmt.Errorf("lock: subscribe to lock changes: %w", err)
		}
		if joins, err = opts.Subscribe(bg, joinChannel); err != nil {
			cancel()
			return nil, fmt.Errorf("lock: subscribe to moderators joining: %w", err)
		}
	}
	l.done.Go(func() { l.run(bg, hints) })
	l.done.Go(func() { l.listenJoins(bg, joins) })
	return l, nil
}

// Close stops listening and polling. Tracked sessions are left alone.
func (l *Locker) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	l.stop()
	l.done.Wait()
}

// run reloads on every hint and every poll until ctx ends, subscribing
// again (at the next poll) when the subscription breaks.
func (l *Locker) run(ctx context.Context, hints <-chan string) {
	t := time.NewTicker(l.opts.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-hints:
			if !ok {
				hints = nil
				continue
			}
		case <-t.C:
			if hints == nil && l.opts.Subscribe != nil && l.opts.Notify != nil {
				h, err := l.opts.Subscribe(ctx, hintChannel)
				if err != nil {
					l.log.Warn("subscribe to lock changes; polling meanwhile", "err", err)
				} else {
					hints = h
				}
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := l.reload(rctx); err != nil && ctx.Err() == nil {
			l.log.Warn("reload locks; enforcing the last ones read", "err", err)
		}
		cancel()
	}
}

// reload reads the active locks and, if they changed, ends the tracked
// sessions they now match.
func (l *Locker) reload(ctx context.Context) error {
	l.reloadMu.Lock()
	defer l.reloadMu.Unlock()
	ls, err := l.opts.Store.ActiveLocks(ctx)
	if err != nil {
		return err
	}
	l.mu.Lock()
	changed := !sameLocks(l.locks, ls)
	l.locks = ls
	l.mu.Unlock()
	l.active.Set(float64(len(ls)))
	if changed {
		l.enforce()
	}
	return nil
}

// sameLocks reports whether a and b hold the same lock ids in order.
func sameLocks(a, b []state.Lock) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// Spec is what to lock. The Go entry point of the kill switch: SCIM
// deprovisioning, the Slack Terminate button and the web UI build one and
// call [Locker.Lock].
type Spec struct {
	// Kind is state.LockIdentity, state.LockRole, state.LockTarget or
	// state.LockSession.
	Kind string
	// Identity names the identity of an identity lock by Issuer (the
	// configured issuer name) and Subject (the token's sub claim); its
	// Username, if set, is kept for people reading the lock.
	Identity certs.Identity
	// Name is the role, the target or the session id of the other kinds.
	Name string
	// Reason says why; required. The people whose sessions end read it.
	Reason string
	// TTL makes the lock expire after this long; it never expires if zero.
	TTL time.Duration
	// By names who locks (a username, "slack:<user>", "scim").
	By string
}

// Lock validates spec, stores the lock (audited as lock.created), enforces
// it on this replica at once and tells the other replicas. A bad spec is a
// *usererr.Error.
func (l *Locker) Lock(ctx context.Context, spec Spec) (state.Lock, error) {
	lk, err := l.build(spec)
	if err != nil {
		return state.Lock{}, err
	}
	if err := l.opts.Store.CreateLock(ctx, lk); err != nil {
		return state.Lock{}, fmt.Errorf("store lock: %w", err)
	}
	l.log.Info("lock made", "lock", lk.ID, "kind", lk.Kind, "name", describe(lk), "by", lk.CreatedBy,
		"expires", lk.Expires)
	l.changed(ctx, lk.ID)
	return lk, nil
}

// build checks spec and returns the lock to store.
func (l *Locker) build(spec Spec) (state.Lock, error) {
	bad := func(msg string) (state.Lock, error) { return state.Lock{}, usererr.New("bad_request", msg) }
	reason := strings.TrimSpace(spec.Reason)
	switch {
	case reason == "":
		return bad("a reason is required")
	case utf8.RuneCountInString(reason) > maxReason:
		return bad(fmt.Sprintf("the reason is longer than %d characters", maxReason))
	case !printable(reason):
		return bad("the reason contains control characters")
	case spec.TTL < 0:
		return bad("the lock's duration must be positive")
	case strings.TrimSpace(spec.By) == "":
		return bad("who locks is required")
	}
	now := l.now().UTC()
	lk := state.Lock{ID: ulid.Make().String(), Kind: spec.Kind, Reason: reason, CreatedBy: spec.By, Created: now}
	if spec.TTL > 0 {
		lk.Expires = now.Add(spec.TTL)
	}
	switch spec.Kind {
	case state.LockIdentity:
		lk.Issuer, lk.Subject, lk.Username = spec.Identity.Issuer, spec.Identity.Subject, spec.Identity.Username
		if lk.Issuer == "" || lk.Subject == "" {
			return bad("an identity lock needs the issuer and the subject")
		}
	case state.LockRole, state.LockTarget, state.LockSession:
		lk.Name = strings.TrimSpace(spec.Name)
		if lk.Name == "" {
			return bad("a " + spec.Kind + " lock needs a name")
		}
	case "":
		return bad("a kind is required: identity, role, target or session")
	default:
		return bad("kind must be identity, role, target or session")
	}
	for _, s := range []string{lk.Issuer, lk.Subject, lk.Username, lk.Name, lk.CreatedBy} {
		if len(s) > maxName || !printable(s) {
			return bad("a name of the lock is too long or contains control characters")
		}
	}
	return lk, nil
}

// printable reports whether s has no control characters.
func printable(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return false
		}
	}
	return utf8.ValidString(s)
}

// Unlock removes lock id on behalf of by (audited as lock.removed). It
// returns ErrNotFound if there is no such lock or it was removed already.
func (l *Locker) Unlock(ctx context.Context, id, by string) error {
	if err := l.opts.Store.RemoveLock(ctx, id, by); err != nil {
		if errors.Is(err, state.ErrNotFound) {
			return ErrNotFound
		}
		return fmt.Errorf("remove lock: %w", err)
	}
	l.log.Info("lock removed", "lock", id, "by", by)
	l.changed(ctx, id)
	return nil
}

// changed reloads this replica's locks and tells the others.
func (l *Locker) changed(ctx context.Context, id string) {
	if err := l.reload(context.WithoutCancel(ctx)); err != nil {
		l.log.Error("reload locks after a change", "lock", id, "err", err)
	}
	if l.opts.Notify != nil {
		if err := l.opts.Notify(context.WithoutCancel(ctx), hintChannel, id); err != nil {
			l.log.Warn("publish lock change; other replicas see it at their next poll", "lock", id, "err", err)
		}
	}
}

// Get returns lock id (active or not).
func (l *Locker) Get(ctx context.Context, id string) (state.Lock, error) {
	lk, err := l.opts.Store.GetLock(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return lk, ErrNotFound
	}
	return lk, err
}

// List returns the active locks (oldest first), or with all up to limit
// locks made, newest first, removed and expired ones included.
func (l *Locker) List(ctx context.Context, all bool, limit int) ([]state.Lock, error) {
	if all {
		return l.opts.Store.ListLocks(ctx, limit)
	}
	return l.opts.Store.ActiveLocks(ctx)
}

// describe names what a lock locks, for messages and logs.
func describe(lk state.Lock) string {
	if lk.Kind == state.LockIdentity {
		if lk.Username != "" {
			return lk.Username
		}
		return lk.Issuer + "/" + lk.Subject
	}
	return lk.Name
}
