package recorder

import (
	"errors"
	"fmt"

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
	if reg == nil {
		return m, nil
	}
	var err error
	m.bytes, err = register(reg, m.bytes)
	if err == nil {
		m.active, err = register(reg, m.active)
	}
	if err == nil {
		m.errors, err = register(reg, m.errors)
	}
	if err == nil {
		m.dropped, err = register(reg, m.dropped)
	}
	return m, err
}

// register registers c, or returns the collector already registered under
// the same name (several recorders may share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register recorder metrics: %w", err)
	}
	return c, nil
}
