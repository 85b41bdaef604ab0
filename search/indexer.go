package search

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Options configures an Indexer. State and Store are required.
type Options struct {
	// State holds the sessions index and receives the search entries.
	State *state.Store
	// Store holds the recordings.
	Store recorder.Store
	// Replica names this server in indexing claims.
	Replica string
	// Limits bound what one recording adds to the index.
	Limits Limits
	// Backfill is how often the indexer looks for sealed sessions that are
	// not indexed (recorded before search existed, or sealed by a replica
	// that stopped before indexing them); 10m if zero.
	Backfill time.Duration
	// Log receives indexing failures and backfill progress; discarded if nil.
	Log *slog.Logger
	// Metrics registers postern_search_* metrics; none if nil.
	Metrics prometheus.Registerer
}

// Indexer indexes sealed recordings for search. Enqueue hands it a session
// that was just sealed; Run indexes queued sessions one at a time and, in
// between, backfills the sealed sessions nobody indexed. Several replicas
// may run indexers on one state store: a claim taken with the first write
// of a session's entries (stale after claimStale) gives each session to one
// of them. An Indexer is safe for
// concurrent use; Run owns its one worker goroutine.
type Indexer struct {
	opts  Options
	log   *slog.Logger
	queue chan string

	indexed  *prometheus.CounterVec
	cpu      prometheus.Counter
	duration prometheus.Histogram
}

// readers hold the buffered readers casts are read through, so that
// indexing a recording does not allocate one (the garbage collector's
// work grew with every recording indexed).
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

// claimStale is how old a claim may be before another indexer takes the
// session over (its indexer is presumed gone).
const claimStale = 10 * time.Minute

// queueSize bounds the sessions waiting to be indexed; beyond it, a sealed
// session waits for the next backfill.
const queueSize = 1024

// New returns an Indexer.
func New(opts Options) (*Indexer, error) {
	if opts.State == nil || opts.Store == nil {
		return nil, errors.New("search: indexer needs a state store and a recording store")
	}
	if opts.Backfill <= 0 {
		opts.Backfill = 10 * time.Minute
	}
	ix := &Indexer{opts: opts, log: opts.Log, queue: make(chan string, queueSize)}
	if ix.log == nil {
		ix.log = slog.New(slog.DiscardHandler)
	}
	ix.indexed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_search_sessions_indexed_total",
		Help: "Recordings indexed for search, by result (ok, failed).",
	}, []string{"result"})
	ix.cpu = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "postern_search_index_cpu_seconds_total",
		Help: "CPU time the search indexer's thread spent indexing recordings (Linux; compare with process_cpu_seconds_total).",
	})
	ix.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "postern_search_index_duration_seconds",
		Help:    "Wall time to index one recording.",
		Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
	})
	r := &promx.Registrar{Reg: opts.Metrics}
	ix.indexed = promx.Add(r, ix.indexed)
	ix.cpu = promx.Add(r, ix.cpu)
	ix.duration = promx.Add(r, ix.duration)
	if r.Err != nil {
		return nil, fmt.Errorf("search: %w", r.Err)
	}
	return ix, nil
}

// Enqueue asks for session id to be indexed. It never blocks: when the
// queue is full the session is left to the next backfill.
func (ix *Indexer) Enqueue(id string) {
	select {
	case ix.queue <- id:
	default:
	}
}

// Run indexes queued sessions and backfills unindexed ones until ctx ends.
// The worker keeps to one OS thread, so that its CPU time can be measured
// (postern_search_index_cpu_seconds_total).
func (ix *Indexer) Run(ctx context.Context) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	backfill := time.NewTimer(0)
	defer backfill.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case id := <-ix.queue:
			ix.index(ctx, id)
		case <-backfill.C:
			ix.backfill(ctx)
			backfill.Reset(ix.opts.Backfill)
		}
	}
}

// backfill indexes every sealed session without entries, newest first,
// giving way to freshly sealed sessions between two.
func (ix *Indexer) backfill(ctx context.Context) {
	done := 0
	for ctx.Err() == nil {
		ids, err := ix.opts.State.UnindexedSessions(ctx, 100, claimStale)
		if err != nil {
			ix.log.Warn("search backfill: listing unindexed sessions failed", "err", err)
			return
		}
		if len(ids) == 0 {
			break
		}
		progress := false
		for _, id := range ids {
			for drained := false; !drained; {
				select {
				case q := <-ix.queue:
					ix.index(ctx, q)
				default:
					drained = true
				}
			}
			if ix.index(ctx, id) {
				progress = true
				done++
			}
		}
		if !progress {
			break // every listed session is claimed by another replica or fails
		}
	}
	if done > 0 {
		ix.log.Info("search backfill indexed recordings", "sessions", done)
	}
}

// index indexes session id under this indexer's claim, reporting whether
// it did.
func (ix *Indexer) index(ctx context.Context, id string) bool {
	// The thread's CPU time is measured: the goroutine stays on its
	// thread meanwhile (nested in Run's own lock, or alone for a caller
	// that did not lock).
	runtime.LockOSThread()
	t0, c0 := time.Now(), threadCPU()
	n, err := ix.index1(ctx, id, &state.SearchClaim{Replica: ix.opts.Replica, Stale: claimStale})
	ix.cpu.Add(max(threadCPU()-c0, 0).Seconds())
	runtime.UnlockOSThread()
	if errors.Is(err, state.ErrSearchClaimed) {
		return false
	}
	ix.duration.Observe(time.Since(t0).Seconds())
	if err != nil {
		ix.indexed.WithLabelValues("failed").Inc()
		ix.log.Warn("search: indexing a recording failed", "session", id, "err", err)
		if ferr := ix.opts.State.FailSearch(context.WithoutCancel(ctx), id, err.Error()); ferr != nil {
			ix.log.Warn("search: recording the failure failed", "session", id, "err", ferr)
		}
		return false
	}
	ix.indexed.WithLabelValues("ok").Inc()
	ix.log.Debug("recording indexed", "session", id, "entries", n)
	return true
}

// Index reads session id's recording and audit events and replaces its
// search entries, whoever else may be indexing it; it returns the number
// of entries.
func (ix *Indexer) Index(ctx context.Context, id string) (int, error) { return ix.index1(ctx, id, nil) }

// index1 indexes session id, under claim if it is not nil.
func (ix *Indexer) index1(ctx context.Context, id string, claim *state.SearchClaim) (int, error) {
	row, err := ix.opts.State.GetSession(ctx, id)
	if err != nil {
		return 0, err
	}
	if row.Status == state.StatusRunning || row.Object == "" {
		return 0, fmt.Errorf("session %s is not sealed", id)
	}
	events, err := ix.opts.State.SessionEvents(ctx, id, 100000, EventTypes...)
	if err != nil {
		return 0, err
	}
	rc, err := ix.opts.Store.Open(ctx, row.Object)
	if err != nil {
		return 0, fmt.Errorf("open recording: %w", err)
	}
	defer rc.Close()
	br := readers.Get().(*bufio.Reader)
	br.Reset(rc)
	defer func() { br.Reset(nil); readers.Put(br) }()
	res, err := Extract(br, row, events, ix.opts.Limits)
	if err != nil {
		return 0, err
	}
	if err := ix.opts.State.IndexSession(ctx, id, row.Start, res.Entries, res.Truncated, claim); err != nil {
		return 0, err
	}
	return len(res.Entries), nil
}
