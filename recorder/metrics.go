package recorder

import (
	"fmt"

	"github.com/posternhq/postern/internal/promx"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the recorder's Prometheus collectors.
type metrics struct {
	bytes   prometheus.Counter
	active  prometheus.Gauge
	errors  *prometheus.CounterVec
	dropped prometheus.Counter

	checkpoint    prometheus.Histogram
	checkpointLag prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_recording_bytes_total", Help: "Terminal bytes (input and output) recorded.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_recordings_active", Help: "Recordings in progress.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_recording_errors_total", Help: "Recording failures by reason (overflow, write, fsync, store, recover, spool_full, checkpoint).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_recording_dropped_bytes_total", Help: "Terminal bytes dropped because a recording buffer was full (drop policy).",
		}),
		checkpoint: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "postern_recording_checkpoint_seconds", Help: "Time to copy a recording's new bytes into the state store's journal.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
		}),
		checkpointLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_recording_checkpoint_lag_bytes", Help: "Spool bytes the last checkpoint could not take (a session writing faster than 8 MiB per checkpoint interval).",
		}),
	}
	r := &promx.Registrar{Reg: reg}
	m.bytes = promx.Add(r, m.bytes)
	m.active = promx.Add(r, m.active)
	m.errors = promx.Add(r, m.errors)
	m.dropped = promx.Add(r, m.dropped)
	m.checkpoint = promx.Add(r, m.checkpoint)
	m.checkpointLag = promx.Add(r, m.checkpointLag)
	if r.Err != nil {
		return nil, fmt.Errorf("recorder metrics: %w", r.Err)
	}
	return m, nil
}
