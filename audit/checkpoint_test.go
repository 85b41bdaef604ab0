package audit_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/state"
)

// TestCheckpointerTakesOnlyWhenDue: no checkpoint of an empty chain or of
// an unchanged head; within half the interval of the last one only when
// forced; each counts the sealed recordings up to it.
func TestCheckpointerTakesOnlyWhenDue(t *testing.T) {
	e := newEnv(t, "sqlite")
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{State: e.st, Signer: e.key, Interval: time.Minute,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, took, err := cp.Checkpoint(ctx, true); took || err != nil {
		t.Fatalf("checkpoint of an empty chain: %v, %v", took, err)
	}
	e.record("alice", "web-1")
	c1, took, err := cp.Checkpoint(ctx, false)
	if !took || err != nil || c1.Seq != 3 || c1.Sealed != 1 {
		t.Fatalf("first checkpoint %+v, %v, %v", c1, took, err)
	}
	if _, took, _ := cp.Checkpoint(ctx, true); took {
		t.Error("a checkpoint of an unchanged head")
	}
	e.record("bob", "web-1")
	now = now.Add(20 * time.Second)
	if _, took, _ := cp.Checkpoint(ctx, false); took {
		t.Error("a checkpoint within half the interval")
	}
	c2, took, err := cp.Checkpoint(ctx, true)
	if !took || err != nil || c2.Seq != 6 || c2.Sealed != 2 || !c2.Time.Equal(now) {
		t.Fatalf("forced checkpoint %+v, %v, %v", c2, took, err)
	}
}

// TestCheckpointersOfReplicasShare: replicas' checkpointers on one
// PostgreSQL store, ticking together, take one checkpoint per head and
// never two of the same sequence number.
func TestCheckpointersOfReplicasShare(t *testing.T) {
	e := newEnv(t, "postgres")
	other, err := state.Open(context.Background(), e.url, state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var cps []*audit.Checkpointer
	for i, st := range []*state.Store{e.st, other} {
		cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{State: st, Signer: e.key, Interval: time.Hour, By: []string{"a", "b"}[i]})
		if err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	ctx := context.Background()
	for round := range 5 {
		e.record("alice", "web-1")
		var wg sync.WaitGroup
		took := make([]bool, len(cps))
		for i, cp := range cps {
			wg.Go(func() {
				var err error
				if _, took[i], err = cp.Checkpoint(ctx, round%2 == 0); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if took[0] == took[1] && (round == 0 || round%2 == 0) {
			t.Errorf("round %d: took %v; want exactly one replica to take it", round, took)
		}
	}
	stored, err := e.st.Checkpoints(ctx, 0, 0)
	if err != nil || len(stored) < 3 {
		t.Fatalf("stored checkpoints %d, %v", len(stored), err)
	}
	rep := e.verify()
	mustBeIntact(t, rep)
}
