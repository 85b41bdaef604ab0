package bastion

import (
	"github.com/posternhq/postern/internal/promx"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the bastion's Prometheus collectors.
type metrics struct {
	connections     prometheus.Counter
	connectionsOpen prometheus.Gauge
	connsRefused    *prometheus.CounterVec
	authFailures    *prometheus.CounterVec
	penalties       prometheus.Counter
	channels        *prometheus.CounterVec
	panics          *prometheus.CounterVec
	bytesUp         prometheus.Counter
	bytesDown       prometheus.Counter
	handshake       *prometheus.HistogramVec
}

// newMetrics registers the collectors on reg; a nil reg keeps them private.
// A collector already registered (a second Server on the same registry) is
// shared.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	r := &promx.Registrar{Reg: reg}
	m := &metrics{
		connections: promx.Add(r, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_connections_total", Help: "SSH connections accepted by the bastion.",
		})),
		connectionsOpen: promx.Add(r, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_connections_active", Help: "SSH connections open on the bastion.",
		})),
		connsRefused: promx.Add(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_connections_refused_total",
			Help: "SSH connections refused before the handshake, by reason (limit_global, limit_source, penalty, shutdown).",
		}, []string{"reason"})),
		authFailures: promx.Add(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_auth_failures_total", Help: "Failed SSH authentications, by reason code.",
		}, []string{"reason"})),
		penalties: promx.Add(r, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "postern_auth_penalties_total",
			Help: "Penalties started: a source refused at accept after repeated failed authentications.",
		})),
		channels: promx.Add(r, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_channels_total",
			Help: "SSH channel open requests on the bastion, by channel type and outcome (open, denied, failed).",
		}, []string{"type", "outcome"})),
	}
	m.panics = promx.Add(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_panics_total",
		Help: "Panics recovered while serving a client, by where (connection, channel); each ended its connection.",
	}, []string{"where"}))
	m.handshake = promx.Add(r, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "postern_ssh_handshake_seconds",
		Help:    "Outer SSH handshakes (key exchange and certificate authentication), from accept to done, by result (ok, failed).",
		Buckets: prometheus.ExponentialBuckets(0.002, 2, 13),
	}, []string{"result"}))
	fwd := promx.Add(r, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "postern_forwarded_bytes_total",
		Help: "Bytes spliced by forwards, by direction (up: client to destination, down: destination to client).",
	}, []string{"direction"}))
	if r.Err != nil {
		return nil, r.Err
	}
	m.bytesUp, m.bytesDown = fwd.WithLabelValues("up"), fwd.WithLabelValues("down")
	return m, nil
}
