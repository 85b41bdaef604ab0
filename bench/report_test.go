package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestSamples(t *testing.T) {
	tests := []struct {
		name           string
		s              Samples
		median, p99    float64
		wantMin, wantM float64
	}{
		{name: "odd", s: Samples{3, 1, 2}, median: 2, p99: 3, wantMin: 1, wantM: 3},
		{name: "even", s: Samples{4, 1, 2, 3}, median: 2.5, p99: 4, wantMin: 1, wantM: 4},
		{name: "one", s: Samples{7}, median: 7, p99: 7, wantMin: 7, wantM: 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.s.Median(); got != tc.median {
				t.Errorf("Median = %v; want %v", got, tc.median)
			}
			if got := tc.s.Quantile(0.99); got != tc.p99 {
				t.Errorf("Quantile(0.99) = %v; want %v", got, tc.p99)
			}
			if got := tc.s.Min(); got != tc.wantMin {
				t.Errorf("Min = %v; want %v", got, tc.wantMin)
			}
			if got := tc.s.Max(); got != tc.wantM {
				t.Errorf("Max = %v; want %v", got, tc.wantM)
			}
		})
	}
	if !math.IsNaN(Samples{}.Median()) {
		t.Errorf("Median of no samples is not NaN")
	}
	p99 := make(Samples, 100)
	for i := range p99 {
		p99[i] = float64(i + 1)
	}
	if got := p99.Quantile(0.99); got != 99 {
		t.Errorf("Quantile(0.99) of 1..100 = %v; want 99", got)
	}
}

func TestRowCheck(t *testing.T) {
	tests := []struct {
		name    string
		value   float64
		atLeast bool
		bound   float64
		unit    string
		want    bool
		target  string
	}{
		{name: "ratio met", value: 1.3, atLeast: true, bound: 1.25, unit: "×", want: true, target: "≥ 1.25"},
		{name: "ratio missed", value: 1.1, atLeast: true, bound: 1.25, unit: "×", want: false, target: "≥ 1.25"},
		{name: "upper bound", value: 0.4, atLeast: false, bound: 0.5, unit: "×", want: true, target: "≤ 0.500"},
		{name: "with unit", value: 2, atLeast: false, bound: 1, unit: "ms", want: false, target: "≤ 1.00 ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Row{Value: tc.value, ValueUnit: tc.unit}
			r.Check(tc.atLeast, tc.bound)
			if r.Met == nil || *r.Met != tc.want {
				t.Errorf("Met = %v; want %v", r.Met, tc.want)
			}
			if r.Target != tc.target {
				t.Errorf("Target = %q; want %q", r.Target, tc.target)
			}
		})
	}
}

func TestReportOutputs(t *testing.T) {
	r := &Report{
		Started:  time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC),
		Duration: "1m0s",
		Machine:  Machine{CPUs: 2, CPUModel: "cpu", SSH: "OpenSSH_9.2p1", Go: "go1.26"},
		Settings: []string{"cipher aes128-gcm@openssh.com"},
	}
	row := Row{Name: "bulk | output", Variant: "aes", Client: "x/crypto",
		Postern: NewFigure("MB/s", Samples{200, 210, 190}), OpenSSH: NewFigure("MB/s", Samples{150}),
		Value: 200.0 / 150, ValueUnit: "×", Note: "cat of a file"}
	row.Check(true, 1.25)
	r.Rows = append(r.Rows, row, Row{Name: "reported only", Value: 5, ValueUnit: "KiB"},
		Row{Name: "broken", Value: math.Inf(1), Postern: NewFigure("MB/s", nil)})

	var md bytes.Buffer
	if err := r.WriteMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| bulk \\| output | aes | x/crypto | 200 (190–210) MB/s | 150 MB/s | 1.33 × | ≥ 1.25 | yes |",
		"| reported only |  |  | — | — | 5.00 KiB |  | (reported) |",
		"2 CPUs (cpu), OpenSSH_9.2p1, go1.26",
		"- bulk | output: cat of a file",
		"| broken |  |  | — | — | n/a  |  | (reported) |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q; got:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("json: %v", err)
	}
	if len(back.Rows) != 3 || back.Rows[2].Value != 0 || back.Rows[0].Postern.Median != 200 || *back.Rows[0].Met != true {
		t.Errorf("json round trip = %+v", back.Rows)
	}
}
