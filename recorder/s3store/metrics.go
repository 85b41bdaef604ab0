package s3store

import "github.com/prometheus/client_golang/prometheus"

// metrics are the store's Prometheus collectors; the Store is itself a
// prometheus.Collector that reports them.
type metrics struct {
	errors    *prometheus.CounterVec
	throttled *prometheus.CounterVec
	backlog   prometheus.GaugeFunc
	outage    prometheus.Gauge
	upload    *prometheus.HistogramVec
}

func newMetrics(s *Store) *metrics {
	return &metrics{
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_s3_upload_errors_total", Help: "Failed S3 write requests by operation (put, create_multipart, upload_part, complete_multipart).",
		}, []string{"op"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "postern_s3_throttled_total", Help: "S3 write requests answered with a throttling error (SlowDown, 429, 503), by operation; also counted in postern_s3_upload_errors_total.",
		}, []string{"op"}),
		backlog: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "postern_s3_backlog_bytes", Help: "Spooled recording bytes not yet stored in S3.",
		}, func() float64 { return float64(s.Health().Backlog) }),
		outage: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "postern_s3_outage", Help: "1 while S3 writes are failing and being retried, else 0.",
		}),
		upload: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "postern_s3_part_upload_seconds",
			Help:    "Time to store one multipart part (upload_part) or a whole small object (put), retries included.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"op"}),
	}
}

// Describe implements prometheus.Collector.
func (s *Store) Describe(ch chan<- *prometheus.Desc) {
	s.m.errors.Describe(ch)
	s.m.throttled.Describe(ch)
	s.m.backlog.Describe(ch)
	s.m.outage.Describe(ch)
	s.m.upload.Describe(ch)
}

// Collect implements prometheus.Collector.
func (s *Store) Collect(ch chan<- prometheus.Metric) {
	s.m.errors.Collect(ch)
	s.m.throttled.Collect(ch)
	s.m.backlog.Collect(ch)
	s.m.outage.Collect(ch)
	s.m.upload.Collect(ch)
}
