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
			Name: "postern_recording_errors_total", Help: "Recording failures by reason (overflow, write, fsync, store, recover, spool_full).",
		}, []string{"reason"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_recording_dropped_bytes_total", Help: "Terminal bytes dropped because a recording buffer was full (drop policy).",
		}),
	}
	r := &promx.Registrar{Reg: reg}
	m.bytes = promx.Add(r, m.bytes)
	m.active = promx.Add(r, m.active)
	m.errors = promx.Add(r, m.errors)
	m.dropped = promx.Add(r, m.dropped)
	if r.Err != nil {
		return nil, fmt.Errorf("recorder metrics: %w", r.Err)
	}
	return m, nil
}
