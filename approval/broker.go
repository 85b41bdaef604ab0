package approval

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/keyrate"
	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Errors of Decide and the API; user-visible, compared with errors.Is.
var (
	// ErrNotFound: no such request.
	ErrNotFound = &usererr.Error{Status: http.StatusNotFound, Code: "not_found", Msg: "no such approval request"}
	// ErrDecided: the request is no longer pending.
	ErrDecided = &usererr.Error{Status: http.StatusConflict, Code: "already_decided", Msg: "approval request already decided"}
	// ErrSelfApproval: requesters may not decide their own requests.
	ErrSelfApproval = &usererr.Error{Status: http.StatusForbidden, Code: "self_approval", Msg: "you cannot decide your own request"}
	// ErrNotApprover: the caller is not an approver of the request.
	ErrNotApprover = &usererr.Error{Status: http.StatusForbidden, Code: "not_approver", Msg: "you are not an approver of this request"}
	// ErrNoKey: the requester's identity has no key (no issuer and subject).
	ErrNoKey = &usererr.Error{Status: http.StatusForbidden, Code: "no_identity", Msg: "your identity names no issuer and subject"}
)

// Store is the part of the state store the broker uses; *state.Store
// implements it.
type Store interface {
	CreateApproval(ctx context.Context, a state.Approval) error
	GetApproval(ctx context.Context, id string) (state.Approval, error)
	ListApprovals(ctx context.Context, status string, limit int) ([]state.Approval, error)
	VoteApproval(ctx context.Context, id string, v state.Vote) (state.Approval, error)
	ExpireApproval(ctx context.Context, id, status string, force bool) (state.Approval, error)
	ActiveGrants(ctx context.Context, identity string) ([]state.JITGrant, error)
	RevokeGrant(ctx context.Context, id, by string) error
}

var _ Store = (*state.Store)(nil)

// Notifier tells approvers about a request. Notify is called when a request
// is made (status pending) and again when it is decided. An error is logged
// and counted; it never approves anything.
type Notifier interface {
	// Name names the channel in logs and metrics (slack, webhook).
	Name() string
	// Notify delivers a.
	Notify(ctx context.Context, a state.Approval) error
}

// Options configures a Broker. Store is required.
type Options struct {
	// Store keeps the requests.
	Store Store
	// PublicURL is the bastion's public URL; request links are
	// <PublicURL>/ui/approvals/<id>.
	PublicURL string
	// Audit receives audit events; dropped if nil.
	Audit func(context.Context, state.Event)
	// Groups returns the groups of an approver known only by identity key
	// (Slack users: approvals.groups); none if nil.
	Groups func(key string) []string
	// Approver, if set, is asked about every approver before a decision:
	// it returns the approver with its current groups (a directory such as
	// SCIM provisioning holds them), or an error (a *usererr.Error) that
	// refuses the decision, for an approver who may no longer decide
	// anything (deprovisioned). Decisions take the approver as it comes if
	// nil.
	Approver func(certs.Identity) (certs.Identity, error)
	// AccessApprovers are the groups or identity keys that may decide
	// access requests; if empty, any holder of the approver permission (API) or
	// any configured Slack approver.
	AccessApprovers []string
	// AccessTimeout is how long an access request stays pending; 1h if zero.
	AccessTimeout time.Duration
	// MaxAccess caps the duration of a just-in-time grant; 24h if zero.
	MaxAccess time.Duration
	// PollInterval is how often a waiter re-reads the store for decisions
	// made elsewhere; 1s if zero.
	PollInterval time.Duration
	// Notify and Subscribe, when both are set, carry "request X was decided"
	// hints between replicas (the state store's Notify and Subscribe: LISTEN/
	// NOTIFY on PostgreSQL), so that a waiter on another replica is released
	// at once rather than at its next poll. Polling goes on regardless: a lost
	// hint only delays a release.
	Notify    func(ctx context.Context, channel, payload string) error
	Subscribe func(ctx context.Context, channel string) (<-chan string, error)
	// NotifyTimeout bounds one notifier call (with its retries); 1m if zero.
	NotifyTimeout time.Duration
	// RateLimit bounds requests per identity and target (approvals.rate_limit):
	// 10 a minute after a burst of 5 if zero.
	RateLimit config.ApprovalRateLimit
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// Metrics registers the broker's metrics; not registered if nil.
	Metrics prometheus.Registerer
}

// Broker creates, decides and waits on approval requests. It is safe for
// concurrent use.
type Broker struct {
	opts Options
	now  func() time.Time
	log  *slog.Logger

	requests  *prometheus.CounterVec
	decisions *prometheus.CounterVec
	notifyErr *prometheus.CounterVec
	wait      *prometheus.HistogramVec
	limited   prometheus.Counter
	limiter   *keyrate.Table // per identity and target; nil if disabled

	mu        sync.Mutex
	notifiers []Notifier
	wake      map[string]chan struct{}
	bg        sync.WaitGroup
	closed    bool

	stopSub context.CancelFunc // ends the hint subscription
	subDone chan struct{}      // closed when the subscription goroutine ends
}

// hintChannel is the store notification channel of decision hints.
const hintChannel = "postern_approvals"

// NewBroker returns a Broker.
func NewBroker(opts Options) (*Broker, error) {
	if opts.Store == nil {
		return nil, errors.New("approval broker: no state store")
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = time.Second
	}
	if opts.AccessTimeout <= 0 {
		opts.AccessTimeout = time.Hour
	}
	if opts.MaxAccess <= 0 {
		opts.MaxAccess = 24 * time.Hour
	}
	if opts.NotifyTimeout <= 0 {
		opts.NotifyTimeout = time.Minute
	}
	b := &Broker{opts: opts, now: opts.Now, log: opts.Log, wake: map[string]chan struct{}{}}
	if !opts.RateLimit.Disabled {
		b.limiter = keyrate.New(cmp.Or(opts.RateLimit.PerMinute, DefaultRatePerMinute))
	}
	if b.now == nil {
		b.now = time.Now
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.requests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_approval_requests_total",
		Help: "Approval requests made, by kind (command, access)."}, []string{"kind"})
	b.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_approval_decisions_total",
		Help: "Approval requests decided, by status (approved, denied, timed_out, canceled)."}, []string{"status"})
	b.notifyErr = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "postern_approval_notify_failures_total",
		Help: "Notifications that could not be delivered, by channel."}, []string{"channel"})
	b.wait = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "postern_approval_wait_seconds",
		Help:    "How long approval requests waited for their decision, by outcome (approved, denied, timed_out, canceled); observed by the replica that decided.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12)}, []string{"status"})
	b.limited = prometheus.NewCounter(prometheus.CounterOpts{Name: "postern_approval_requests_limited_total",
		Help: "Approval requests refused by the per-identity and per-target rate limit."})
	r := &promx.Registrar{Reg: opts.Metrics}
	b.wait = promx.Add(r, b.wait)
	b.requests = promx.Add(r, b.requests)
	b.decisions = promx.Add(r, b.decisions)
	b.notifyErr = promx.Add(r, b.notifyErr)
	b.limited = promx.Add(r, b.limited)
	if r.Err != nil {
		return nil, fmt.Errorf("approvals: %w", r.Err)
	}
	b.subDone = make(chan struct{})
	if opts.Notify != nil && opts.Subscribe != nil {
		ctx, cancel := context.WithCancel(context.Background())
		hints, err := opts.Subscribe(ctx, hintChannel)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("subscribe to approval decisions: %w", err)
		}
		b.stopSub = cancel
		go b.listen(ctx, hints)
	} else {
		close(b.subDone)
	}
	return b, nil
}

// listen wakes local waiters on decision hints from other replicas, and
// subscribes again (every few seconds) when the subscription breaks.
func (b *Broker) listen(ctx context.Context, hints <-chan string) {
	defer close(b.subDone)
	for {
		for id := range hints {
			b.wakeLocal(id)
		}
		t := time.NewTimer(5 * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		var err error
		if hints, err = b.opts.Subscribe(ctx, hintChannel); err != nil {
			b.log.Warn("subscribe to approval decisions", "err", err)
			c := make(chan string)
			close(c)
			hints = c
		}
	}
}

// wakeLocal releases this process's waiters on request id.
func (b *Broker) wakeLocal(id string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if ch, ok := b.wake[id]; ok {
		close(ch)
		delete(b.wake, id)
	}
}

// AddNotifier adds a channel that hears about every request.
func (b *Broker) AddNotifier(n Notifier) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notifiers = append(b.notifiers, n)
}

// Close waits for notifications in flight. Requests made after Close are
// not notified.
func (b *Broker) Close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	if b.stopSub != nil {
		b.stopSub()
	}
	<-b.subDone
	b.bg.Wait()
}

// URL returns the web link of request id ("" without a public URL).
func (b *Broker) URL(id string) string {
	if b.opts.PublicURL == "" {
		return ""
	}
	return b.opts.PublicURL + "/ui/approvals/" + id
}

func (b *Broker) audit(ctx context.Context, e state.Event) {
	if b.opts.Audit != nil {
		b.opts.Audit(context.WithoutCancel(ctx), e)
	}
}

// CommandRequest is a command to hold.
type CommandRequest struct {
	// Requester is who runs the command.
	Requester certs.Identity
	// Target, Login and Session say where it runs.
	Target, Login, Session string
	// Command is the command line.
	Command string
	// Match is the approve rule the command matched.
	Match Match
}

// SubmitCommand stores a pending request for a command and notifies the
// channels. It does not wait; see Wait.
func (b *Broker) SubmitCommand(ctx context.Context, r CommandRequest) (state.Approval, error) {
	if r.Requester.Key() == "" {
		return state.Approval{}, ErrNoKey
	}
	now := b.now().UTC()
	a := state.Approval{
		ID: ulid.Make().String(), Kind: state.ApprovalCommand, Status: state.ApprovalPending, Requester: r.Requester.Display(),
		RequesterKey: r.Requester.Key(), Groups: r.Requester.Groups, Target: r.Target, Login: r.Login, Command: r.Command, Session: r.Session,
		Rule: r.Match.Pattern(), Approvers: slices.Clone(r.Match.Rule.Approvers), Required: r.Match.Required(),
		Created: now, Expires: now.Add(r.Match.Timeout()),
	}
	return a, b.submit(ctx, a)
}

// AccessRequest asks for just-in-time access to a target.
type AccessRequest struct {
	// Requester is who asks.
	Requester certs.Identity
	// Target is the target's name; Login the login wanted on it (optional).
	Target, Login string
	// Duration is how long the access should last.
	Duration time.Duration
	// Reason is the requester's reason (required).
	Reason string
}

// SubmitAccess stores a pending access request and notifies the channels.
// Once approved, a just-in-time grant of Target for Duration is created.
func (b *Broker) SubmitAccess(ctx context.Context, r AccessRequest) (state.Approval, error) {
	switch {
	case r.Target == "":
		return state.Approval{}, usererr.New("bad_request", "a target is required")
	case r.Reason == "":
		return state.Approval{}, usererr.New("bad_request", "a reason is required")
	case r.Duration <= 0:
		return state.Approval{}, usererr.New("bad_request", "a positive duration is required")
	case r.Duration > b.opts.MaxAccess:
		return state.Approval{}, usererr.New("bad_request", fmt.Sprintf("at most %s of access may be requested", b.opts.MaxAccess))
	case r.Requester.Key() == "":
		return state.Approval{}, ErrNoKey
	}
	now := b.now().UTC()
	a := state.Approval{
		ID: ulid.Make().String(), Kind: state.ApprovalAccess, Status: state.ApprovalPending, Requester: r.Requester.Display(),
		RequesterKey: r.Requester.Key(), Groups: r.Requester.Groups, Target: r.Target, Login: r.Login, Reason: r.Reason, Duration: r.Duration,
		Approvers: slices.Clone(b.opts.AccessApprovers), Required: 1, Created: now, Expires: now.Add(b.opts.AccessTimeout),
	}
	return a, b.submit(ctx, a)
}

// DefaultRatePerMinute is the default of approvals.rate_limit.per_minute.
const DefaultRatePerMinute = 10

// CodeRateLimited is the code of a request refused by the rate limit.
const CodeRateLimited = "approval_rate_limited"

// allow applies the rate limit of a's requester and target.
func (b *Broker) allow(a state.Approval) error {
	if b.limiter == nil {
		return nil
	}
	ok, wait := b.limiter.Allow(a.RequesterKey+"\x00"+a.Target, b.now())
	if ok {
		return nil
	}
	b.limited.Inc()
	b.log.Info("approval request refused: rate limit", "requester", a.RequesterKey, "target", a.Target, "retry_in", wait)
	secs := max(int(math.Ceil(wait.Seconds())), 1)
	return &usererr.Error{Status: http.StatusTooManyRequests, Code: CodeRateLimited, RetryAfter: wait,
		Msg: fmt.Sprintf("too many approval requests for %s; try again in %ds", a.Target, secs)}
}

func (b *Broker) submit(ctx context.Context, a state.Approval) error {
	if err := b.allow(a); err != nil {
		return err
	}
	if err := b.opts.Store.CreateApproval(ctx, a); err != nil {
		return fmt.Errorf("store approval request: %w", err)
	}
	b.requests.WithLabelValues(a.Kind).Inc()
	details := map[string]any{"request": a.ID, "kind": a.Kind, "requester_key": a.RequesterKey, "login": a.Login, "rule": a.Rule,
		"approvers": a.Approvers, "required": a.Required, "expires": a.Expires.Format(time.RFC3339)}
	if a.Command != "" {
		details["command"] = a.Command
	}
	if a.Kind == state.ApprovalAccess {
		details["reason"] = a.Reason
		details["duration"] = a.Duration.String()
	}
	b.audit(ctx, state.Event{Type: state.EventApprovalRequested, Actor: a.Requester, Target: a.Target,
		Session: a.Session, Details: details})
	b.log.Info("approval requested", "request", a.ID, "kind", a.Kind, "requester", a.Requester, "target", a.Target)
	b.notify(ctx, a)
	return nil
}

// notify delivers a to every channel in the background.
func (b *Broker) notify(ctx context.Context, a state.Approval) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	for _, n := range b.notifiers {
		b.bg.Go(func() {
			nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), b.opts.NotifyTimeout)
			defer cancel()
			if err := n.Notify(nctx, a); err != nil {
				b.notifyErr.WithLabelValues(n.Name()).Inc()
				b.log.Warn("approval notification failed", "channel", n.Name(), "request", a.ID, "err", err)
			}
		})
	}
}

// Get returns request id.
func (b *Broker) Get(ctx context.Context, id string) (state.Approval, error) {
	a, err := b.opts.Store.GetApproval(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return a, ErrNotFound
	}
	return a, err
}

// List returns requests with status (all if empty), newest first.
func (b *Broker) List(ctx context.Context, status string, limit int) ([]state.Approval, error) {
	return b.opts.Store.ListApprovals(ctx, status, limit)
}

// CheckApprover returns approver as Options.Approver sees it now (with its
// directory's groups), or the refusal of an approver who may no longer act
// (deprovisioned). It returns approver as it is without Options.Approver.
func (b *Broker) CheckApprover(approver certs.Identity) (certs.Identity, error) {
	if b.opts.Approver == nil {
		return approver, nil
	}
	return b.opts.Approver(approver)
}

// MayDecide reports why approver may not decide a (nil if they may).
// trusted says the approver holds the approver permission or is a
// configured Slack approver; access requests without AccessApprovers need
// it. The requester never decides their own request: identities are
// compared by key (issuer and subject, or alias), never by username, and an
// approver without a key decides nothing. An entry of a.Approvers names an
// approver by group or by identity key (certs.Identity.Names).
func (b *Broker) MayDecide(a state.Approval, approver certs.Identity, trusted bool) error {
	key := approver.Key()
	if key == "" {
		return ErrNotApprover
	}
	if key == a.RequesterKey || approver.Names(a.RequesterKey) {
		return ErrSelfApproval
	}
	if a.Kind == state.ApprovalAccess && len(a.Approvers) == 0 {
		if trusted {
			return nil
		}
		return ErrNotApprover
	}
	if slices.ContainsFunc(a.Approvers, approver.Names) || approver.InGroup(a.Approvers...) {
		return nil
	}
	if b.opts.Groups != nil && len(approver.Groups) == 0 {
		id := approver
		id.Groups = b.opts.Groups(key)
		if id.InGroup(a.Approvers...) {
			return nil
		}
	}
	return ErrNotApprover
}

// Decision is one approver's answer.
type Decision struct {
	// Approver is who decides.
	Approver certs.Identity
	// Trusted: see MayDecide.
	Trusted bool
	// Approve approves; false denies.
	Approve bool
	// Reason is the approver's note (optional).
	Reason string
	// Via names the channel: api, slack.
	Via string
}

// Decide records d on request id after checking the approver (MayDecide).
// A denial ends the request; approvals end it when enough distinct approvers
// approved. It returns the request as it is after the vote.
func (b *Broker) Decide(ctx context.Context, id string, d Decision) (state.Approval, error) {
	a, err := b.Get(ctx, id)
	if err != nil {
		return a, err
	}
	if a.Status != state.ApprovalPending {
		return a, ErrDecided
	}
	approver, err := b.CheckApprover(d.Approver)
	if err != nil {
		b.log.Info("approval decision refused", "request", id, "approver", d.Approver.Key(), "err", err)
		return a, err
	}
	d.Approver = approver
	if err := b.MayDecide(a, d.Approver, d.Trusted); err != nil {
		b.log.Info("approval decision refused", "request", id, "approver", d.Approver.Key(), "err", err)
		return a, err
	}
	a, err = b.opts.Store.VoteApproval(ctx, id, state.Vote{By: d.Approver.Display(), Key: d.Approver.Key(), Approve: d.Approve,
		Reason: d.Reason, Via: d.Via, Time: b.now().UTC()})
	if errors.Is(err, state.ErrDecided) {
		return a, ErrDecided
	}
	if err != nil {
		return a, fmt.Errorf("record decision: %w", err)
	}
	b.audit(ctx, state.Event{Type: state.EventApprovalVote, Actor: d.Approver.Display(), Target: a.Target,
		Session: a.Session, Details: map[string]any{"request": id, "approve": d.Approve, "reason": d.Reason,
			"via": d.Via, "requester": a.Requester, "approver_key": d.Approver.Key()}})
	if a.Status != state.ApprovalPending {
		b.finished(ctx, a)
	}
	return a, nil
}

// Cancel ends a pending request as canceled (the requester left).
func (b *Broker) Cancel(ctx context.Context, id string) (state.Approval, error) {
	a, err := b.opts.Store.ExpireApproval(ctx, id, state.ApprovalCanceled, true)
	if err != nil {
		return a, err
	}
	b.finished(ctx, a)
	return a, nil
}

// finished handles a request that just left pending: audit, wake local
// waiters, notify. (The store created the grant of an approved access
// request together with the decision.)
func (b *Broker) finished(ctx context.Context, a state.Approval) {
	b.decisions.WithLabelValues(a.Status).Inc()
	b.wait.WithLabelValues(a.Status).Observe(max(b.now().Sub(a.Created), 0).Seconds())
	b.audit(ctx, state.Event{Type: state.EventApprovalDecided, Actor: a.DecidedBy, Target: a.Target,
		Session: a.Session, Details: map[string]any{"request": a.ID, "kind": a.Kind, "status": a.Status,
			"requester": a.Requester, "approvals": a.Approvals(), "note": a.Note}})
	b.log.Info("approval decided", "request", a.ID, "status", a.Status, "by", a.DecidedBy)
	b.wakeLocal(a.ID)
	if b.opts.Notify != nil {
		if err := b.opts.Notify(context.WithoutCancel(ctx), hintChannel, a.ID); err != nil {
			b.log.Warn("publish approval decision", "request", a.ID, "err", err)
		}
	}
	b.notify(ctx, a)
}

// wakeChan returns the channel closed when request id is decided in this
// process.
func (b *Broker) wakeChan(id string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch, ok := b.wake[id]
	if !ok {
		ch = make(chan struct{})
		b.wake[id] = ch
	}
	return ch
}

// Wait blocks until request id is decided or times out (then it is stored
// as timed out), or ctx ends. It sees decisions made in this process at
// once and those made by other replicas at the next poll.
func (b *Broker) Wait(ctx context.Context, id string) (state.Approval, error) {
	for {
		wake := b.wakeChan(id)
		a, err := b.Get(ctx, id)
		if err != nil || a.Status != state.ApprovalPending {
			return a, err
		}
		now := b.now()
		if !now.Before(a.Expires) {
			a, err = b.opts.Store.ExpireApproval(ctx, id, state.ApprovalTimedOut, false)
			switch {
			case errors.Is(err, state.ErrDecided):
				return a, nil
			case err != nil:
				return a, fmt.Errorf("time out approval: %w", err)
			case a.Status != state.ApprovalPending:
				b.finished(ctx, a)
				return a, nil
			}
			continue
		}
		d := min(b.opts.PollInterval, a.Expires.Sub(now)+time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return a, ctx.Err()
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// Hold is Wait for the requester itself: if ctx ends first (the session
// that asked is gone) the request is stored as canceled, so no approver
// decides a request nobody waits for. It returns the request as it is
// then, and ctx's error.
func (b *Broker) Hold(ctx context.Context, id string) (state.Approval, error) {
	a, err := b.Wait(ctx, id)
	if err == nil || ctx.Err() == nil {
		return a, err
	}
	// The cancel must outlive ctx; it fails only if the request was decided
	// meanwhile, and then that decision stands.
	if c, cerr := b.Cancel(context.WithoutCancel(ctx), id); cerr == nil {
		return c, err
	}
	if cur, gerr := b.Get(context.WithoutCancel(ctx), id); gerr == nil {
		return cur, err
	}
	a.ID = id
	return a, err
}

// WaitFor is Wait bounded by d: it returns the request as it is when d
// passes (possibly still pending).
func (b *Broker) WaitFor(ctx context.Context, id string, d time.Duration) (state.Approval, error) {
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	a, err := b.Wait(wctx, id)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return b.Get(ctx, id)
	}
	return a, err
}

// Outcome records what became of a decided command (ran, blocked, or
// line-killed) in the audit log.
func (b *Broker) Outcome(ctx context.Context, a state.Approval, outcome string) {
	b.audit(ctx, state.Event{Type: state.EventApprovalOutcome, Actor: a.Requester, Target: a.Target,
		Session: a.Session, Details: map[string]any{"request": a.ID, "status": a.Status, "outcome": outcome}})
}

// Grants returns the active just-in-time grants of the identity keyed
// identity (certs.Identity.Key); none for "".
func (b *Broker) Grants(ctx context.Context, identity string) ([]state.JITGrant, error) {
	return b.opts.Store.ActiveGrants(ctx, identity)
}
