package promx

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterShares(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "postern_test_total", Help: "test"}
	a, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Register(reg, prometheus.NewCounter(opts))
	if err != nil || a != b {
		t.Fatalf("second registration: %v, shared %v; want the first collector", err, a == b)
	}
	// Same name, another shape: an error, not a silent second metric.
	if _, err := Register(reg, prometheus.NewCounterVec(opts, []string{"x"})); err == nil {
		t.Error("a conflicting collector was accepted")
	}
	r := &Registrar{Reg: reg}
	Add(r, prometheus.NewGauge(prometheus.GaugeOpts{Name: "postern_test_total", Help: "test"}))
	if r.Err == nil {
		t.Error("Registrar kept no error")
	}
	if c, err := Register(nil, prometheus.NewCounter(opts)); err != nil || c == nil {
		t.Errorf("nil registry: %v", err)
	}
}
