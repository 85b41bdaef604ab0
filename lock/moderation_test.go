package lock

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
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
			j, err := b.WaitModerator(ctx, w)
			ch <- result{j.Who, err}
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
	if j, err := b.WaitModerator(ctx, ModerationWait{Session: "01S", Requester: bot, Timeout: time.Second}); err != nil || j.Who != "dave" || j.Key != dave.Key() {
		t.Errorf("without a list: %+v, %v; want the first other joiner, dave", j, err)
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

// TestModeratorCountsByKey: who counts as a moderator is decided on
// identity keys: a moderator who shares the requester's username (another
// subject, another issuer) counts; the requester never does, not even
// under another issuer that identity.aliases maps to them; moderator
// entries name people by key (a username names nobody) or groups; a join
// recorded without a key counts for nothing.
func TestModeratorCountsByKey(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"))
	l := newLocker(t, st, nil, time.Hour)
	alice := certs.Identity{Issuer: "corp", Subject: "a1", Username: "alice", Groups: []string{"sre"}}
	aliceAliased := alice
	aliceAliased.Alias = "alice"
	otherAlice := certs.Identity{Issuer: "corp", Subject: "a2", Username: "alice", Groups: []string{"sre"}}
	ghAlice := certs.Identity{Issuer: "github", Subject: "a1", Username: "alice", Groups: []string{"sre"}}
	aliceViaGH := certs.Identity{Issuer: "github", Subject: "77", Username: "alice-gh", Groups: []string{"sre"}, Alias: "alice"}
	tests := []struct {
		name       string
		requester  certs.Identity
		moderator  certs.Identity
		moderators []string
		want       bool
	}{
		{"same username, other subject", alice, otherAlice, nil, true},
		{"same username, other issuer", alice, ghAlice, nil, true},
		{"same username, other subject, by group", alice, otherAlice, []string{"sre"}, true},
		{"same username, other subject, by key", alice, otherAlice, []string{"corp:a2"}, true},
		{"the requester", alice, alice, nil, false},
		{"the requester, listed by key", alice, alice, []string{"corp:a1"}, false},
		{"the requester through an alias", aliceAliased, aliceViaGH, nil, false},
		{"the requester through an alias, unaliased certificate", alice, certs.Identity{Issuer: "corp", Subject: "a1", Username: "alice", Alias: "alice"}, nil, false},
		{"a username names nobody", alice, otherAlice, []string{"alice"}, false},
		{"another person's key", alice, otherAlice, []string{"corp:a3"}, false},
		{"an aliased moderator by alias key", alice, aliceViaGH, []string{"alias:alice"}, true},
		{"an aliased moderator by issuer key", alice, aliceViaGH, []string{"github:77"}, true},
		{"a requester without a key", certs.Identity{Issuer: "corp", Username: "alice"}, otherAlice, nil, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			session := fmt.Sprintf("01K%02d", i)
			if err := l.Join(ctx, session, tt.moderator); err != nil {
				t.Fatal(err)
			}
			js, err := st.Joins(ctx, session)
			if err != nil || len(js) != 1 {
				t.Fatalf("joins %+v, %v", js, err)
			}
			if js[0].Key != tt.moderator.Key() || js[0].Subject != tt.moderator.Subject {
				t.Errorf("join recorded key %q subject %q; want %q %q", js[0].Key, js[0].Subject, tt.moderator.Key(), tt.moderator.Subject)
			}
			w := ModerationWait{Session: session, Requester: tt.requester, Moderators: tt.moderators}
			if got := counts(js[0], w); got != tt.want {
				t.Errorf("counts = %v; want %v", got, tt.want)
			}
		})
	}
	// Joins from before joins had keys, or whose key their issuer and
	// subject do not explain, count for nothing.
	for _, j := range []state.Join{
		{Session: "01L", Who: "carol", Issuer: "corp", Subject: "c"},
		{Session: "01L", Who: "carol", Issuer: "corp", Subject: "c", Key: "corp:someone-else"},
		{Session: "01L", Who: "carol", Issuer: "corp", Key: "corp:c"},
	} {
		if counts(j, ModerationWait{Session: "01L", Requester: alice}) {
			t.Errorf("join %+v counts", j)
		}
	}
}
