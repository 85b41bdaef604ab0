//go:build bench

package deploy_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/lock"
	"github.com/posternhq/postern/state"
)

// TestBenchLockLatency measures, across two replicas on one PostgreSQL,
// the time from an admin's lock request on replica A to the end of the
// agent's session on replica B as the client sees it (its exit status
// arrives): BENCH_LOCK_ROUNDS rounds (default 100), each a fresh session on
// B ended by an identity lock made through A, then removed. It prints the
// percentiles; it asserts nothing about them (`make bench-locks`).
func TestBenchLockLatency(t *testing.T) {
	rounds := 100
	if s := os.Getenv("BENCH_LOCK_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	lc := newLockCluster(t)
	a, b := lc.replicaA, lc.replicaB
	signer, st, code := mint(t, b, lc.agentToken(t))
	if signer == nil {
		t.Fatalf("mint: %d %s", st, code)
	}
	var took []time.Duration
	for i := range rounds {
		cs := b.dialCat(t, signer)
		if err := cs.echo(fmt.Sprintf("round %d", i)); err != nil {
			t.Fatal(err)
		}
		ended := make(chan error, 1)
		go func() { ended <- cs.sess.Wait() }()
		start := time.Now()
		var lk state.Lock
		if st := lc.api(t, a, http.MethodPost, "/v1/locks", lock.CreateBody{Kind: "identity", Issuer: "ci",
			Subject: agentSub, Reason: "bench"}, &lk); st != http.StatusCreated {
			t.Fatalf("lock: %d", st)
		}
		var err error
		select {
		case err = <-ended:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: session not ended after 30s", i)
		}
		took = append(took, time.Since(start))
		var ee *ssh.ExitError
		if !errors.As(err, &ee) || ee.ExitStatus() != lock.ExitLocked {
			t.Fatalf("round %d: session ended with %v", i, err)
		}
		cs.close()
		if st := lc.api(t, a, http.MethodDelete, "/v1/locks/"+lk.ID, nil, nil); st != http.StatusOK {
			t.Fatalf("unlock: %d", st)
		}
	}
	slices.Sort(took)
	pct := func(p float64) time.Duration { return took[min(len(took)-1, int(p*float64(len(took))))] }
	t.Logf("lock on A → session end on B, %d rounds: p50 %s, p90 %s, p99 %s, max %s", len(took),
		pct(0.50).Round(time.Millisecond), pct(0.90).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
		took[len(took)-1].Round(time.Millisecond))
}
