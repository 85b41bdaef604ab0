package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/promx"
	"github.com/posternhq/postern/state"
)

// ExportPrefix is where the S3 export writes its objects by default.
const ExportPrefix = "audit/export"

// Sink names of the continuous export, as kept in the state store's
// cursors and in the metrics' sink label.
const (
	SinkS3   = "s3"
	SinkHTTP = "http"
)

// ExporterOptions configure an Exporter. State is required, and Signer
// with S3.
type ExporterOptions struct {
	// State is the store whose events are exported.
	State *state.Store
	// Signer signs the checkpoint at the end of each S3 object.
	Signer Signer
	// Owner names this replica in the export leases.
	Owner string
	// S3 receives one JSONL object per window; no S3 export if nil.
	S3 Objects
	// S3Prefix is the objects' key prefix; ExportPrefix if empty.
	S3Prefix string
	// Window is how often an S3 object is written (each holds the events
	// since the last); 5m if zero.
	Window time.Duration
	// HTTP receives batches of events; no HTTP export if nil.
	HTTP *HTTPSink
	// BatchSize is the most events one HTTP request carries; 500 if zero.
	BatchSize int
	// Poll is how often the HTTP export looks for new events; 1s if zero.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the wait between failed attempts;
	// 1s and 1m if zero.
	MinBackoff, MaxBackoff time.Duration
	// Log receives failures; discarded if nil.
	Log *slog.Logger
	// Metrics registers the postern_audit_export_* collectors; none if nil.
	Metrics prometheus.Registerer
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Exporter streams the audit chain to its sinks: to S3 as one JSONL object
// per window, ending with a signed checkpoint of the object's last event,
// and to an HTTP log collector in batches. Each sink keeps a cursor (the
// last sequence number delivered) in the state store, and one replica at a
// time, holding the sink's lease there, exports; delivery is at least once
// (a replica that dies after sending and before moving the cursor leaves
// the batch to be sent again; the events' seq tells duplicates). Failed
// deliveries are retried with backoff, never dropped; the lag metrics say
// how far behind each sink is.
type Exporter struct {
	opts ExporterOptions
	log  *slog.Logger
	m    *exportMetrics
	mu   sync.Mutex // one pass per sink at a time (Run and Flush)
}

type exportMetrics struct {
	lagEvents  *prometheus.GaugeVec
	lagSeconds *prometheus.GaugeVec
	events     *prometheus.CounterVec
	errors     *prometheus.CounterVec
}

// NewExporter checks opts and registers the metrics.
func NewExporter(opts ExporterOptions) (*Exporter, error) {
	if opts.State == nil {
		return nil, errors.New("audit exporter: State is required")
	}
	if opts.S3 != nil && opts.Signer == nil {
		return nil, errors.New("audit exporter: the S3 export needs the audit signing key")
	}
	if opts.S3Prefix == "" {
		opts.S3Prefix = ExportPrefix
	}
	if opts.Window <= 0 {
		opts.Window = 5 * time.Minute
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = 500
	}
	if opts.Poll <= 0 {
		opts.Poll = time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	x := &Exporter{opts: opts, log: opts.Log}
	if x.log == nil {
		x.log = slog.New(slog.DiscardHandler)
	}
	m := &exportMetrics{
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postern_audit_export_lag_events", Help: "Audit events not yet delivered to the export sink.",
		}, []string{"sink"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "postern_audit_export_lag_seconds", Help: "Age of the oldest audit event not yet delivered to the export sink; 0 when caught up.",
		}, []string{"sink"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_audit_export_events_total", Help: "Audit events delivered to the export sink by this replica.",
		}, []string{"sink"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_audit_export_errors_total", Help: "Failed deliveries to the export sink (each is retried).",
		}, []string{"sink"}),
	}
	r := &promx.Registrar{Reg: opts.Metrics}
	m.lagEvents = promx.Add(r, m.lagEvents)
	m.lagSeconds = promx.Add(r, m.lagSeconds)
	m.events = promx.Add(r, m.events)
	m.errors = promx.Add(r, m.errors)
	if r.Err != nil {
		return nil, fmt.Errorf("audit exporter metrics: %w", r.Err)
	}
	x.m = m
	return x, nil
}

// Run exports until ctx ends, then makes a last pass of every sink (for at
// most 10 s) so that a clean shutdown leaves nothing behind.
func (x *Exporter) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if x.opts.S3 != nil {
		wg.Go(func() { x.loop(ctx, SinkS3, x.opts.Window) })
	}
	if x.opts.HTTP != nil {
		wg.Go(func() { x.loop(ctx, SinkHTTP, x.opts.Poll) })
	}
	wg.Wait()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := x.Flush(fctx); err != nil {
		x.log.Warn("last audit export pass failed; the next replica to start continues", "err", err)
	}
}

// loop runs passes of sink every interval, backing off after failures.
func (x *Exporter) loop(ctx context.Context, sink string, interval time.Duration) {
	backoff := time.Duration(0)
	for {
		wait := interval
		if err := x.pass(ctx, sink); err != nil {
			if ctx.Err() != nil {
				return
			}
			x.m.errors.WithLabelValues(sink).Inc()
			backoff = min(max(2*backoff, x.opts.MinBackoff), x.opts.MaxBackoff)
			wait = backoff
			x.log.Warn("audit export failed; retrying", "sink", sink, "in", wait.String(), "err", err)
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Flush runs one pass of every sink now: everything appended so far is
// delivered, unless another replica holds a sink's lease. It returns the
// first failure.
func (x *Exporter) Flush(ctx context.Context) error {
	var errs []error
	if x.opts.S3 != nil {
		errs = append(errs, x.pass(ctx, SinkS3))
	}
	if x.opts.HTTP != nil {
		errs = append(errs, x.pass(ctx, SinkHTTP))
	}
	return errors.Join(errs...)
}

// pass delivers every event after the sink's cursor, if this replica holds
// (or takes) the sink's lease, and updates the lag metrics.
func (x *Exporter) pass(ctx context.Context, sink string) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	lease := 3 * x.opts.Poll
	if sink == SinkS3 {
		lease = 2 * x.opts.Window
	}
	lease = max(lease, 30*time.Second)
	cursor, ok, err := x.opts.State.ClaimExport(ctx, sink, x.opts.Owner, lease)
	if err != nil {
		return err
	}
	defer x.updateLag(ctx, sink)
	if !ok {
		return nil
	}
	head, _, err := x.opts.State.Head(ctx)
	if err != nil {
		return err
	}
	for cursor < head {
		limit := x.opts.BatchSize
		if sink == SinkS3 {
			limit = 10000
		}
		evs, err := x.opts.State.Events(ctx, cursor, limit)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		if sink == SinkS3 {
			err = x.putObject(ctx, evs)
		} else {
			err = x.opts.HTTP.Send(ctx, evs)
		}
		if err != nil {
			return err
		}
		last := evs[len(evs)-1].Seq
		moved, err := x.opts.State.AdvanceExport(ctx, sink, x.opts.Owner, last)
		if err != nil {
			return err
		}
		x.m.events.WithLabelValues(sink).Add(float64(len(evs)))
		if !moved {
			return nil // the lease passed to another replica
		}
		cursor = last
	}
	return nil
}

// putObject writes evs as one JSONL object ending with a signed checkpoint
// of the last event.
func (x *Exporter) putObject(ctx context.Context, evs []state.Event) error {
	first, last := evs[0], evs[len(evs)-1]
	sealed, err := x.opts.State.CountEvents(ctx, state.EventSessionSealed, 0, last.Seq)
	if err != nil {
		return err
	}
	now := x.opts.Now().UTC()
	cp := Checkpoint{Record: RecordCheckpoint, Seq: last.Seq, Hash: last.Hash, Time: now.Truncate(time.Microsecond), Sealed: sealed, By: x.opts.Owner}
	env, err := Sign(x.opts.Signer, cp)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", e.Seq, err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	b, err := jsonMarshal(checkpointLine{Type: CheckpointType, Seq: cp.Seq, Envelope: env})
	if err != nil {
		return err
	}
	buf.Write(b)
	buf.WriteByte('\n')
	window := now.Truncate(x.opts.Window)
	key := path.Join(x.opts.S3Prefix, window.Format("2006/01/02"),
		fmt.Sprintf("%s-%012d-%012d.jsonl", window.Format("20060102T150405Z"), first.Seq, last.Seq))
	if err := x.opts.S3.Put(ctx, key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), "application/x-ndjson"); err != nil {
		return fmt.Errorf("export %s: %w", key, err)
	}
	return nil
}

// updateLag sets the sink's lag gauges from the shared cursor.
func (x *Exporter) updateLag(ctx context.Context, sink string) {
	cursor, err := x.opts.State.ExportCursor(ctx, sink)
	if err != nil {
		return
	}
	head, _, err := x.opts.State.Head(ctx)
	if err != nil {
		return
	}
	x.m.lagEvents.WithLabelValues(sink).Set(float64(max(head-cursor, 0)))
	age := 0.0
	if head > cursor {
		if evs, err := x.opts.State.Events(ctx, cursor, 1); err == nil && len(evs) == 1 {
			age = max(x.opts.Now().Sub(evs[0].Time).Seconds(), 0)
		}
	}
	x.m.lagSeconds.WithLabelValues(sink).Set(age)
}
