package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/state"
)

// Anchor is a place outside the state store where checkpoints are written:
// the recording store (StorageAnchor, with S3 Object Lock where
// configured) or an append-only log sink (HTTPSink). Writing the same
// checkpoint twice must be harmless.
type Anchor interface {
	// Name names the anchor in logs and metrics.
	Name() string
	// Anchor writes the signed checkpoint.
	Anchor(ctx context.Context, cp Checkpoint, env Envelope) error
}

// CheckpointerOptions configure a Checkpointer. State and Signer are
// required.
type CheckpointerOptions struct {
	// State is the store whose chain is checkpointed.
	State *state.Store
	// Signer is the audit signing key.
	Signer Signer
	// Interval is how often a checkpoint is taken when the chain has
	// grown; 10s if zero.
	Interval time.Duration
	// Anchors receive every checkpoint; none if empty (then checkpoints
	// live in the state store only, which protects against nothing the
	// chain does not).
	Anchors []Anchor
	// By names this replica in the checkpoints it signs.
	By string
	// Log receives failures; discarded if nil.
	Log *slog.Logger
	// Metrics registers the postern_audit_checkpoint* collectors; none if
	// nil.
	Metrics prometheus.Registerer
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Checkpointer takes signed checkpoints of the audit chain and anchors
// them. Every replica runs one: each tick, in one state store transaction
// (serialised across replicas), it takes a checkpoint of the head if the
// chain grew since the last one and the last one is older than half the
// interval, so replicas share the work; then it writes every checkpoint
// not yet anchored to every anchor, and marks it anchored once all took
// it. Checkpoints are not events of the chain: taking one never changes
// the head.
type Checkpointer struct {
	opts CheckpointerOptions
	log  *slog.Logger
	m    *checkpointMetrics
	mu   sync.Mutex // one take-and-anchor at a time in this process
}

type checkpointMetrics struct {
	taken      prometheus.Counter
	seq        prometheus.Gauge
	unanchored prometheus.Gauge
	anchorErrs *prometheus.CounterVec
}

// NewCheckpointer checks opts and registers the metrics.
func NewCheckpointer(opts CheckpointerOptions) (*Checkpointer, error) {
	if opts.State == nil || opts.Signer == nil {
		return nil, errors.New("audit checkpointer: State and Signer are required")
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Checkpointer{opts: opts, log: opts.Log}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	m := &checkpointMetrics{
		taken: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_audit_checkpoints_total", Help: "Signed audit checkpoints taken by this replica.",
		}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_audit_checkpoint_seq", Help: "Sequence number covered by the last checkpoint this replica took.",
		}),
		unanchored: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_audit_checkpoints_unanchored", Help: "Checkpoints not yet written to every anchor (as this replica last saw).",
		}),
		anchorErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_audit_anchor_errors_total", Help: "Failed writes of a checkpoint to an anchor, by anchor.",
		}, []string{"anchor"}),
	}
	r := &promx.Registrar{Reg: opts.Metrics}
	m.taken = promx.Add(r, m.taken)
	m.seq = promx.Add(r, m.seq)
	m.unanchored = promx.Add(r, m.unanchored)
	m.anchorErrs = promx.Add(r, m.anchorErrs)
	if r.Err != nil {
		return nil, fmt.Errorf("audit checkpointer metrics: %w", r.Err)
	}
	c.m = m
	return c, nil
}

// Run takes and anchors checkpoints every Interval until ctx ends, then
// takes a last one (so that a clean shutdown leaves no uncovered tail).
func (c *Checkpointer) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if _, _, err := c.Checkpoint(fctx, true); err != nil {
				c.log.Warn("final audit checkpoint failed", "err", err)
			}
			cancel()
			return
		case <-t.C:
			if _, _, err := c.Checkpoint(ctx, false); err != nil && ctx.Err() == nil {
				c.log.Error("audit checkpoint failed", "err", err)
			}
		}
	}
}

// Checkpoint takes a checkpoint of the head if the chain grew since the
// last one (and, unless force, the last one is older than half the
// interval), then anchors every checkpoint not yet anchored. It returns the
// checkpoint taken, if any. An anchor failure is logged, counted and
// retried at the next call; it is returned only if nothing else failed.
func (c *Checkpointer) Checkpoint(ctx context.Context, force bool) (Checkpoint, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp, env, took, err := c.take(ctx, force)
	if err != nil {
		return Checkpoint{}, false, err
	}
	var firstErr error
	if took {
		c.m.taken.Inc()
		c.m.seq.Set(float64(cp.Seq))
		// Anchored from memory at once: marking it in the state store is
		// bookkeeping for retries, which a writer to the store could
		// falsify; it cannot keep this one from its anchors.
		if firstErr = c.anchor(ctx, cp, env); firstErr == nil {
			if err := c.opts.State.MarkAnchored(ctx, cp.Seq); err != nil {
				return cp, took, err
			}
		}
	}
	if err := c.anchorPending(ctx); firstErr == nil {
		firstErr = err
	}
	return cp, took, firstErr
}

// anchor writes one checkpoint to every anchor and returns the first
// failure (each is logged and counted).
func (c *Checkpointer) anchor(ctx context.Context, cp Checkpoint, env Envelope) error {
	var firstErr error
	for _, a := range c.opts.Anchors {
		if err := a.Anchor(ctx, cp, env); err != nil {
			c.m.anchorErrs.WithLabelValues(a.Name()).Inc()
			c.log.Warn("anchoring audit checkpoint failed; retrying at the next checkpoint", "anchor", a.Name(), "seq", cp.Seq, "err", err)
			if firstErr == nil {
				firstErr = fmt.Errorf("anchor checkpoint %d to %s: %w", cp.Seq, a.Name(), err)
			}
		}
	}
	return firstErr
}

// take signs and stores a checkpoint of the head, in one transaction.
func (c *Checkpointer) take(ctx context.Context, force bool) (Checkpoint, Envelope, bool, error) {
	var cp Checkpoint
	var env Envelope
	took := false
	err := c.opts.State.Write(ctx, func(tx *state.Tx) error {
		seq, hash, err := tx.Head()
		if err != nil || seq == 0 {
			return err
		}
		last, ok, err := tx.LastCheckpoint()
		if err != nil {
			return err
		}
		now := c.opts.Now().UTC()
		var base int64
		var sealedBefore int64
		if ok {
			if last.Seq >= seq || (!force && now.Sub(last.Time) < c.opts.Interval/2) {
				return nil
			}
			var prev Checkpoint
			if err := decodeRecord(mustEnvelope(last.Envelope), &prev); err != nil {
				return fmt.Errorf("last checkpoint (seq %d): %w", last.Seq, err)
			}
			base, sealedBefore = prev.Seq, prev.Sealed
		}
		n, err := tx.CountEvents(state.EventSessionSealed, base, seq)
		if err != nil {
			return err
		}
		cp = Checkpoint{Record: RecordCheckpoint, Seq: seq, Hash: hash, Time: now.Truncate(time.Microsecond),
			Sealed: sealedBefore + n, By: c.opts.By}
		env, err = Sign(c.opts.Signer, cp)
		if err != nil {
			return err
		}
		body, err := envelopeJSON(env)
		if err != nil {
			return err
		}
		if err := tx.PutCheckpoint(state.StoredCheckpoint{Seq: seq, Time: cp.Time, Envelope: body}); err != nil {
			return err
		}
		took = true
		return nil
	})
	if err != nil {
		return Checkpoint{}, Envelope{}, false, fmt.Errorf("take audit checkpoint: %w", err)
	}
	return cp, env, took, nil
}

// anchorPending writes every checkpoint the state store marks unanchored
// (those whose anchoring failed earlier) to every anchor.
func (c *Checkpointer) anchorPending(ctx context.Context) error {
	pending, err := c.opts.State.UnanchoredCheckpoints(ctx, 0)
	if err != nil {
		return err
	}
	c.m.unanchored.Set(float64(len(pending)))
	for _, sc := range pending {
		env := mustEnvelope(sc.Envelope)
		var cp Checkpoint
		if err := decodeRecord(env, &cp); err != nil {
			return fmt.Errorf("stored checkpoint %d: %w", sc.Seq, err)
		}
		if err := c.anchor(ctx, cp, env); err != nil {
			return err // the rest waits for the next call, in order
		}
		if err := c.opts.State.MarkAnchored(ctx, sc.Seq); err != nil {
			return err
		}
		c.m.unanchored.Dec()
	}
	return nil
}

// envelopeJSON encodes env as stored.
func envelopeJSON(env Envelope) (string, error) {
	b, err := jsonMarshal(env)
	if err != nil {
		return "", fmt.Errorf("encode checkpoint: %w", err)
	}
	return string(b), nil
}

// mustEnvelope decodes a stored envelope; a malformed one decodes to an
// envelope that verifies as nothing.
func mustEnvelope(s string) Envelope {
	var e Envelope
	_ = jsonUnmarshal([]byte(s), &e)
	return e
}
