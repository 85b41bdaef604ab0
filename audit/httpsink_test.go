package audit_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/state"
)

// collector is a log collector's receiving end: it records every request
// and answers the first failures with 503.
type collector struct {
	mu       sync.Mutex
	failures int
	bodies   [][]byte
	auth     []string
}

func (c *collector) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.auth = append(c.auth, r.Header.Get("Authorization"))
	if c.failures > 0 {
		c.failures--
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	c.bodies = append(c.bodies, b)
}

// otlpLines returns the bodies of every OTLP log record received, with
// their seq and type attributes.
func (c *collector) otlpLines(t *testing.T) (lines []string, types []string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, b := range c.bodies {
		var req struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []struct {
						Key   string
						Value struct{ StringValue string }
					}
				}
				ScopeLogs []struct {
					Scope      struct{ Name string }
					LogRecords []struct {
						TimeUnixNano string
						Body         struct{ StringValue string }
						Attributes   []struct {
							Key   string
							Value struct{ StringValue, IntValue string }
						}
					}
				}
			}
		}
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("not an OTLP logs request: %v\n%s", err, b)
		}
		rl := req.ResourceLogs[0]
		if rl.Resource.Attributes[0].Key != "service.name" || rl.Resource.Attributes[0].Value.StringValue != "postern" {
			t.Errorf("resource %+v", rl.Resource)
		}
		for _, lr := range rl.ScopeLogs[0].LogRecords {
			if lr.TimeUnixNano == "" {
				t.Error("log record without a time")
			}
			lines = append(lines, lr.Body.StringValue)
			types = append(types, lr.Attributes[1].Value.StringValue)
		}
	}
	return lines, types
}

// TestHTTPExportRetriesAndLag: events reach an OTLP collector in order,
// in batches, with the token; failed posts are retried, never dropped;
// checkpoints go the same way as records of their own; the lag metrics
// fall to zero once caught up.
func TestHTTPExportRetriesAndLag(t *testing.T) {
	c := &collector{failures: 2}
	srv := httptest.NewServer(c)
	defer srv.Close()
	e := newEnv(t, "sqlite")
	sink, err := audit.NewHTTPSink(audit.HTTPSinkOptions{URL: srv.URL + "/v1/logs", Token: "s3cret", Instance: "r-test"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	x, err := audit.NewExporter(audit.ExporterOptions{State: e.st, Owner: "r-test", HTTP: sink, BatchSize: 4,
		Poll: 20 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		e.record("alice", "web-1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { x.Run(ctx); close(done) }()
	head, _, _ := e.st.Head(context.Background())
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if cur, _ := e.st.ExportCursor(context.Background(), audit.SinkHTTP); cur == head {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the export did not catch up with seq %d", head)
		}
	}
	cancel()
	<-done
	lines, types := c.otlpLines(t)
	if len(lines) != int(head) {
		t.Fatalf("collector got %d records; want %d", len(lines), head)
	}
	for i, l := range lines {
		var ev state.Event
		dec := json.NewDecoder(strings.NewReader(l))
		dec.UseNumber()
		if err := dec.Decode(&ev); err != nil || ev.Seq != int64(i+1) || types[i] != ev.Type {
			t.Fatalf("record %d = %q (%s), %v; want event %d", i, l, types[i], err, i+1)
		}
		if h, _ := state.Hash(ev); h != ev.Hash {
			t.Fatalf("record %d: the event's hash does not check", i)
		}
	}
	for _, a := range c.auth {
		if a != "Bearer s3cret" {
			t.Fatalf("Authorization %q", a)
		}
	}
	if n := sample(t, reg, "postern_audit_export_errors_total"); n < 2 {
		t.Errorf("errors counted %v; want the 2 failures", n)
	}
	if n := sample(t, reg, "postern_audit_export_events_total"); n != float64(head) {
		t.Errorf("events counted %v; want %d", n, head)
	}
	if v := sample(t, reg, "postern_audit_export_lag_events"); v != 0 {
		t.Errorf("lag events %v; want 0", v)
	}
	if v := sample(t, reg, "postern_audit_export_lag_seconds"); v != 0 {
		t.Errorf("lag seconds %v; want 0", v)
	}
	// Behind: the lag shows what is waiting and for how long.
	e.event(state.EventAuthSuccess, "bob")
	c.mu.Lock()
	c.failures = 1000
	c.mu.Unlock()
	if err := x.Flush(context.Background()); err == nil {
		t.Fatal("flush to a failing collector succeeded")
	}
	if v := sample(t, reg, "postern_audit_export_lag_events"); v != 1 {
		t.Errorf("lag events %v; want 1", v)
	}

	// The sink anchors checkpoints as records of their own.
	c.mu.Lock()
	c.failures, c.bodies = 0, nil
	c.mu.Unlock()
	cp, err := audit.NewCheckpointer(audit.CheckpointerOptions{State: e.st, Signer: e.key, Anchors: []audit.Anchor{sink}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := cp.Checkpoint(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	lines, types = c.otlpLines(t)
	if len(lines) != 1 || types[0] != audit.CheckpointType {
		t.Fatalf("anchored records %q (%v); want one checkpoint", lines, types)
	}
	var line struct {
		Type     string
		Envelope audit.Envelope
	}
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil || e.keys.Verify(line.Envelope) != nil {
		t.Fatalf("checkpoint record %q does not verify: %v", lines[0], err)
	}
}

// TestHTTPSinkHEC: the HEC format posts one JSON event per line with the
// Splunk token scheme, and a rejected post is an error naming only the
// status.
func TestHTTPSinkHEC(t *testing.T) {
	c := &collector{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	sink, err := audit.NewHTTPSink(audit.HTTPSinkOptions{URL: srv.URL + "/services/collector/event?token=x", Format: audit.FormatHEC,
		Token: "hec-token", Instance: "r-1"})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 123456000, time.UTC)
	evs := []state.Event{{Seq: 1, Time: t0, Type: "auth.success", Hash: "h1"}, {Seq: 2, Time: t0, Type: "channel.open", Hash: "h2"}}
	if err := sink.Send(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	body := string(c.bodies[0])
	ls := strings.Split(strings.TrimSpace(body), "\n")
	if len(ls) != 2 || c.auth[0] != "Splunk hec-token" {
		t.Fatalf("HEC body %q, auth %q", body, c.auth[0])
	}
	var ev struct {
		Time       json.Number
		Host       string
		Sourcetype string
		Event      state.Event
	}
	if err := json.Unmarshal([]byte(ls[1]), &ev); err != nil || ev.Time.String() != "1777629600.123456" || ev.Host != "r-1" ||
		ev.Sourcetype != "postern:audit" || ev.Event.Seq != 2 {
		t.Fatalf("HEC event %+v, %v", ev, err)
	}
	c.failures = 1
	err = sink.Send(context.Background(), evs)
	if err == nil || err.Error() != "audit http sink: HTTP 503" {
		t.Errorf("error %v; want only the status", err)
	}
	if _, err := audit.NewHTTPSink(audit.HTTPSinkOptions{URL: srv.URL, Format: "syslog"}); err == nil {
		t.Error("an unknown format was accepted")
	}
}

// sample reads the one sample of a gauge or counter family from reg.
func sample(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			m := mf.GetMetric()[0]
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
