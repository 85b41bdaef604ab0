package lock

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
)

func TestWaitModerator(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	a := newLocker(t, st, nil, time.Hour)
	b := newLocker(t, st, nil, time.Hour) // another replica of the same process store: hints only
	carol := certs.Identity{Issuer: "corp", Subject: "c", Username: "carol", Groups: []string{"sre"}}
	dave := certs.Identity{Issuer: "corp", Subject: "d", Username: "dave", Groups: []string{"dev"}}

	type result struct {
		who string
		err error
	}
	wait := func(w ModerationWait) <-chan result {
		ch := make(chan result, 1)
		go func() {
			who, err := b.WaitModerator(ctx, w)
			ch <- result{who, err}
		}()
		return ch
	}
	done := wait(ModerationWait{Session: "01S", Requester: bot, Moderators: []string{"sre"}, Timeout: time.Minute})
	// The requester itself and a moderator outside the list do not count.
	for _, who := range []certs.Identity{bot, dave} {
		if err := a.Join(ctx, "01S", who); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case r := <-done:
		t.Fatalf("released by %+v", r)
	case <-time.After(200 * time.Millisecond):
	}
	start := time.Now()
	if err := a.Join(ctx, "01S", carol); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.err != nil || r.who != "carol" {
			t.Fatalf("WaitModerator = %q, %v; want carol", r.who, r.err)
		}
		t.Logf("released %s after the join on another locker", time.Since(start))
	case <-time.After(10 * time.Second):
		t.Fatal("not released by a moderator's join")
	}
	// A join made before the wait counts at once; any moderator counts
	// without a list.
	if who, err := b.WaitModerator(ctx, ModerationWait{Session: "01S", Requester: bot, Timeout: time.Second}); err != nil || who != "dave" {
		t.Errorf("without a list: %q, %v; want the first other joiner, dave", who, err)
	}
	_, err := b.WaitModerator(ctx, ModerationWait{Session: "01T", Requester: bot, Timeout: 100 * time.Millisecond})
	if ue := usererr.As(err); ue == nil || ue.Code != "moderator_timeout" || ue.Exit != ExitNoModerator {
		t.Errorf("nobody joins: %v; want moderator_timeout, exit %d", err, ExitNoModerator)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.WaitModerator(cctx, ModerationWait{Session: "01T", Requester: bot, Timeout: time.Minute}); err != context.Canceled {
		t.Errorf("canceled wait: %v", err)
	}
}
