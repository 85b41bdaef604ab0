package lock

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// openStore opens a real SQLite state store at path.
func openStore(t testing.TB, path string) *state.Store {
	t.Helper()
	st, err := state.Open(context.Background(), "sqlite://"+path, state.Options{})
	if err != nil {
		t.Fatalf("open state store: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

// roles is the test policy: agents are in role "agents", everyone in "all".
func roles(id certs.Identity) []string {
	if id.InGroup("agents") {
		return []string{"all", "agents"}
	}
	return []string{"all"}
}

// newLocker returns a Locker over st with hints through st (in-process
// for SQLite) and a long poll, so that only hints make it fast.
func newLocker(t testing.TB, st *state.Store, audit *auditLog, poll time.Duration) *Locker {
	t.Helper()
	opts := Options{Store: st, Notify: st.Notify, Subscribe: st.Subscribe, Roles: roles, Poll: poll}
	if audit != nil {
		opts.Audit = audit.add
	}
	l, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(l.Close)
	return l
}

type auditLog struct {
	mu     sync.Mutex
	events []state.Event
}

func (a *auditLog) add(_ context.Context, e state.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *auditLog) count(typ string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, e := range a.events {
		if e.Type == typ {
			n++
		}
	}
	return n
}

var (
	alice = certs.Identity{Issuer: "corp", Subject: "u-alice", Username: "alice@example.com", Groups: []string{"dev"}}
	// aliceElsewhere has alice's username from another issuer: a different identity.
	aliceElsewhere = certs.Identity{Issuer: "github", Subject: "u-alice", Username: "alice@example.com"}
	bot            = certs.Identity{Issuer: "github", Subject: "repo:acme/app:ref:refs/heads/main", Username: "bot",
		Kind: certs.KindAgent, Groups: []string{"agents"}}
)

func TestLockSpecValidation(t *testing.T) {
	l := newLocker(t, openStore(t, filepath.Join(t.TempDir(), "s.db")), nil, time.Hour)
	long := strings.Repeat("x", maxReason+1)
	tests := []struct {
		name string
		spec Spec
		want string
	}{
		{"no kind", Spec{Name: "x", Reason: "r", By: "ops"}, "a kind is required"},
		{"unknown kind", Spec{Kind: "host", Name: "x", Reason: "r", By: "ops"}, "kind must be"},
		{"no reason", Spec{Kind: state.LockRole, Name: "agents", By: "ops"}, "a reason is required"},
		{"blank reason", Spec{Kind: state.LockRole, Name: "agents", Reason: "  ", By: "ops"}, "a reason is required"},
		{"long reason", Spec{Kind: state.LockRole, Name: "agents", Reason: long, By: "ops"}, "longer than"},
		{"control characters", Spec{Kind: state.LockRole, Name: "agents", Reason: "a\x1b[2Jb", By: "ops"}, "control characters"},
		{"identity without subject", Spec{Kind: state.LockIdentity, Identity: certs.Identity{Issuer: "corp"}, Reason: "r", By: "ops"}, "issuer and the subject"},
		{"role without name", Spec{Kind: state.LockRole, Reason: "r", By: "ops"}, "needs a name"},
		{"negative ttl", Spec{Kind: state.LockRole, Name: "agents", Reason: "r", By: "ops", TTL: -time.Second}, "positive"},
		{"nobody", Spec{Kind: state.LockRole, Name: "agents", Reason: "r"}, "who locks"},
		{"name with newline", Spec{Kind: state.LockTarget, Name: "db\n1", Reason: "r", By: "ops"}, "control characters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := l.Lock(context.Background(), tt.spec)
			ue := usererr.As(err)
			if ue == nil || ue.Code != "bad_request" || !strings.Contains(ue.Msg, tt.want) {
				t.Fatalf("Lock = %v; want a bad_request saying %q", err, tt.want)
			}
		})
	}
	if ls, _ := l.List(context.Background(), true, 10); len(ls) != 0 {
		t.Errorf("refused specs stored locks: %+v", ls)
	}
}

func TestCheckMatches(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	l, err := New(ctx, Options{Store: st, Notify: st.Notify, Subscribe: st.Subscribe, Roles: roles, Poll: time.Hour, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)

	mustLock := func(s Spec) state.Lock {
		t.Helper()
		s.By = "ops@example.com"
		lk, err := l.Lock(ctx, s)
		if err != nil {
			t.Fatalf("Lock(%+v): %v", s, err)
		}
		return lk
	}
	idLock := mustLock(Spec{Kind: state.LockIdentity, Identity: alice, Reason: "stolen laptop"})
	mustLock(Spec{Kind: state.LockRole, Name: "agents", Reason: "runaway agent", TTL: time.Hour})
	mustLock(Spec{Kind: state.LockTarget, Name: "db-1", Reason: "restore in progress"})
	mustLock(Spec{Kind: state.LockSession, Name: "01SESSION", Reason: "typo in prod"})

	carol := certs.Identity{Issuer: "corp", Subject: "u-carol", Username: "carol@example.com"}
	// dana is one person with two issuers (identity.aliases maps both to
	// "dana"); a lock of the alias holds her through either, and a lock of
	// one of her issuer identities holds that one.
	danaCorp := certs.Identity{Issuer: "corp", Subject: "u-dana", Username: "dana@example.com", Alias: "dana"}
	danaGitHub := certs.Identity{Issuer: "github", Subject: "4242", Username: "dana", Alias: "dana"}
	danaUnaliased := certs.Identity{Issuer: "github", Subject: "4242", Username: "dana"}
	mustLock(Spec{Kind: state.LockIdentity, Identity: certs.Identity{Issuer: "alias", Subject: "dana"}, Reason: "offboarding"})
	erin := certs.Identity{Issuer: "corp", Subject: "u-erin", Username: "erin@example.com", Alias: "erin"}
	mustLock(Spec{Kind: state.LockIdentity, Identity: certs.Identity{Issuer: "corp", Subject: "u-erin"}, Reason: "lost token"})
	tests := []struct {
		name string
		s    Subject
		want string // "" for not locked, else a fragment of the message
	}{
		{"the locked identity", Subject{Identity: alice}, "your access is locked: stolen laptop"},
		{"same username, other issuer", Subject{Identity: aliceElsewhere}, ""},
		{"a member of the locked role", Subject{Identity: bot}, "role agents is locked: runaway agent"},
		{"someone else", Subject{Identity: carol}, ""},
		{"someone else on the locked target", Subject{Identity: carol, Target: "db-1"}, "target db-1 is locked"},
		{"someone else on another target", Subject{Identity: carol, Target: "db-2"}, ""},
		{"the terminated session", Subject{Identity: carol, Target: "web-1", Session: "01SESSION"}, "session terminated: typo in prod"},
		{"another session", Subject{Identity: carol, Target: "web-1", Session: "01OTHER"}, ""},
		{"no identity", Subject{}, ""},
		{"an alias through one issuer", Subject{Identity: danaCorp}, "offboarding"},
		{"an alias through another issuer", Subject{Identity: danaGitHub}, "offboarding"},
		{"the same subject without the alias", Subject{Identity: danaUnaliased}, ""},
		{"an issuer identity of an aliased person", Subject{Identity: erin}, "lost token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.Check(tt.s)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check = %v; want not locked", err)
				}
				return
			}
			ue := usererr.As(err)
			if ue == nil || ue.Code != CodeLocked || ue.Exit != ExitLocked || ue.HTTPStatus() != 403 || !strings.Contains(ue.Msg, tt.want) {
				t.Fatalf("Check = %#v; want locked (exit %d, 403) saying %q", ue, ExitLocked, tt.want)
			}
		})
	}
	if err := l.Check(Subject{Identity: alice}); !strings.Contains(err.Error(), idLock.ID) {
		t.Errorf("refusal %q does not name the lock %s", err, idLock.ID)
	}

	// The role lock expires after an hour; the identity lock goes when removed.
	mu.Lock()
	now = now.Add(time.Hour + time.Second)
	mu.Unlock()
	if err := l.Check(Subject{Identity: bot}); err != nil {
		t.Errorf("expired role lock still applies: %v", err)
	}
	if err := l.Unlock(ctx, idLock.ID, "ops@example.com"); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(Subject{Identity: alice}); err != nil {
		t.Errorf("removed identity lock still applies: %v", err)
	}
	if err := l.Unlock(ctx, idLock.ID, "ops@example.com"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second removal = %v; want ErrNotFound", err)
	}
	if _, err := l.Get(ctx, "01NOPE"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get unknown = %v; want ErrNotFound", err)
	}
}

// ender records how a tracked entry was ended.
type ender struct {
	once  sync.Once
	cause chan error
}

func newEnder() *ender { return &ender{cause: make(chan error, 1)} }

func (e *ender) end(err error) { e.once.Do(func() { e.cause <- err }) }

func (e *ender) wait(t *testing.T, within time.Duration) error {
	t.Helper()
	select {
	case err := <-e.cause:
		return err
	case <-time.After(within):
		t.Fatalf("tracked session not ended within %s", within)
		return nil
	}
}

func (e *ender) ended() bool {
	select {
	case err := <-e.cause:
		e.cause <- err
		return true
	default:
		return false
	}
}

func TestTrackEndsMatchingSessions(t *testing.T) {
	ctx := context.Background()
	audit := &auditLog{}
	l := newLocker(t, openStore(t, filepath.Join(t.TempDir(), "s.db")), audit, time.Hour)

	conn, onTarget, session, other := newEnder(), newEnder(), newEnder(), newEnder()
	for _, tr := range []struct {
		s Subject
		e *ender
	}{
		{Subject{Identity: bot, Conn: "c1"}, conn},
		{Subject{Identity: alice, Target: "db-1", Conn: "c2"}, onTarget},
		{Subject{Identity: alice, Target: "web-1", Session: "01S", Conn: "c2"}, session},
		{Subject{Identity: aliceElsewhere, Target: "web-1", Session: "01T", Conn: "c3"}, other},
	} {
		untrack, err := l.Track(tr.s, tr.e.end)
		if err != nil {
			t.Fatalf("Track(%+v): %v", tr.s, err)
		}
		t.Cleanup(untrack)
	}

	if _, err := l.Lock(ctx, Spec{Kind: state.LockRole, Name: "agents", Reason: "stop", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	if err := conn.wait(t, time.Second); usererr.As(err) == nil || usererr.As(err).Code != CodeLocked {
		t.Fatalf("role member's connection ended with %v; want a lock refusal", err)
	}
	if _, err := l.Lock(ctx, Spec{Kind: state.LockTarget, Name: "db-1", Reason: "stop", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	onTarget.wait(t, time.Second)
	if _, err := l.Lock(ctx, Spec{Kind: state.LockSession, Name: "01S", Reason: "stop", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	session.wait(t, time.Second)
	if other.ended() {
		t.Error("a session no lock matches was ended")
	}
	if n := audit.count(state.EventLockEnforced); n != 3 {
		t.Errorf("audited %d lock.enforced; want 3", n)
	}

	// A new session of a locked subject is refused at Track.
	if _, err := l.Track(Subject{Identity: bot}, newEnder().end); usererr.As(err) == nil {
		t.Error("Track accepted a session of a locked role")
	}
	// An untracked entry is never ended.
	late := newEnder()
	untrack, err := l.Track(Subject{Identity: alice, Target: "web-2"}, late.end)
	if err != nil {
		t.Fatal(err)
	}
	untrack()
	if _, err := l.Lock(ctx, Spec{Kind: state.LockTarget, Name: "web-2", Reason: "stop", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	if late.ended() {
		t.Error("an untracked session was ended")
	}
}

// TestLockAcrossLockers: two Lockers on one store (two replicas of one
// process's store: hints in-process) and on two handles of one SQLite file
// (two processes: no hints, the poll). A lock made through one ends the
// other's tracked session, and CheckFresh sees it at once.
func TestLockAcrossLockers(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	st := openStore(t, path)
	a := newLocker(t, st, nil, time.Hour)
	b := newLocker(t, st, nil, time.Hour) // hints only: the poll would take an hour

	e := newEnder()
	untrack, err := b.Track(Subject{Identity: alice}, e.end)
	if err != nil {
		t.Fatal(err)
	}
	defer untrack()
	start := time.Now()
	if _, err := a.Lock(ctx, Spec{Kind: state.LockIdentity, Identity: alice, Reason: "hint", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	e.wait(t, 5*time.Second)
	t.Logf("hint delivered the lock in %s", time.Since(start))

	// Another process: a second handle on the file, no hints between them.
	other := openStore(t, path)
	c, err := New(ctx, Options{Store: other, Roles: roles, Poll: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	e2 := newEnder()
	untrack2, err := c.Track(Subject{Identity: bot, Target: "web-1"}, e2.end)
	if err != nil {
		t.Fatal(err)
	}
	defer untrack2()
	if _, err := a.Lock(ctx, Spec{Kind: state.LockTarget, Name: "web-1", Reason: "poll", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	e2.wait(t, 5*time.Second)

	// CheckFresh reads the store: a lock made elsewhere is seen at once,
	// even by a Locker that neither polls nor hears hints.
	d, err := New(ctx, Options{Store: other, Roles: roles, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	carol := certs.Identity{Issuer: "corp", Subject: "u-carol", Username: "carol"}
	if _, err := a.Lock(ctx, Spec{Kind: state.LockIdentity, Identity: carol, Reason: "fresh", By: "ops"}); err != nil {
		t.Fatal(err)
	}
	if err := d.CheckFresh(ctx, Subject{Identity: carol}); usererr.As(err) == nil || usererr.As(err).Code != CodeLocked {
		t.Errorf("CheckFresh = %v; want the lock made through another handle", err)
	}
}

func TestCheckFreshFailsClosed(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	l, err := New(context.Background(), Options{Store: st, Poll: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	st.Close()
	err = l.CheckFresh(context.Background(), Subject{Identity: alice})
	if ue := usererr.As(err); ue == nil || ue.HTTPStatus() != 503 || ue.Exit != ExitLocked {
		t.Fatalf("CheckFresh on a closed store = %v; want a 503 refusal", err)
	}
}

func TestRefusalNamesWhat(t *testing.T) {
	for _, k := range []string{state.LockIdentity, state.LockRole, state.LockTarget, state.LockSession} {
		ue := Refusal(state.Lock{ID: "01L", Kind: k, Name: "n", Reason: "why"})
		if !ue.Global || ue.Exit != ExitLocked || !strings.HasSuffix(ue.Msg, ": why (lock 01L)") ||
			!slices.Contains([]string{"your access is locked", "role n is locked", "target n is locked", "session terminated"},
				strings.TrimSuffix(ue.Msg, ": why (lock 01L)")) {
			t.Errorf("Refusal(%s) = %+v", k, ue)
		}
	}
}
