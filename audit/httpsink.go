package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/posternhq/postern/state"
)

// HTTP sink formats.
const (
	// FormatOTLP is OpenTelemetry logs over OTLP/HTTP with JSON encoding
	// (POST to the collector's /v1/logs).
	FormatOTLP = "otlp"
	// FormatHEC is the Splunk HTTP Event Collector's event format (POST to
	// /services/collector/event).
	FormatHEC = "hec"
)

// CheckpointType is the type of the line or log record that carries a
// signed checkpoint in an export, beside the events.
const CheckpointType = "audit.checkpoint"

// checkpointLine is how a checkpoint travels among exported events.
type checkpointLine struct {
	Type     string   `json:"type"`
	Seq      int64    `json:"seq"`
	Envelope Envelope `json:"envelope"`
}

// HTTPSinkOptions configure an HTTPSink.
type HTTPSinkOptions struct {
	// URL receives the POSTs; required.
	URL string
	// Format is FormatOTLP (the default) or FormatHEC.
	Format string
	// Token authenticates: "Authorization: Bearer <token>" (otlp) or
	// "Authorization: Splunk <token>" (hec); none if empty.
	Token string
	// Headers are added to every request.
	Headers map[string]string
	// Timeout bounds one request; 10s if zero.
	Timeout time.Duration
	// Instance names this replica (OTLP service.instance.id, HEC host).
	Instance string
	// Client sends the requests; a client with no redirects if nil.
	Client *http.Client
}

// HTTPSink posts audit events and checkpoints to a log collector. It is
// also an Anchor: every checkpoint is posted as a record of type
// audit.checkpoint, to a store its operator keeps apart from postern's.
type HTTPSink struct {
	opts HTTPSinkOptions
}

var _ Anchor = (*HTTPSink)(nil)

// NewHTTPSink checks opts.
func NewHTTPSink(opts HTTPSinkOptions) (*HTTPSink, error) {
	if opts.URL == "" {
		return nil, errors.New("audit http sink: URL is required")
	}
	switch opts.Format {
	case "":
		opts.Format = FormatOTLP
	case FormatOTLP, FormatHEC:
	default:
		return nil, fmt.Errorf("audit http sink: format %q is not otlp or hec", opts.Format)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Client == nil {
		opts.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return &HTTPSink{opts: opts}, nil
}

// Name returns "http".
func (h *HTTPSink) Name() string { return "http" }

// Anchor posts the signed checkpoint.
func (h *HTTPSink) Anchor(ctx context.Context, cp Checkpoint, env Envelope) error {
	line := checkpointLine{Type: CheckpointType, Seq: cp.Seq, Envelope: env}
	body, err := jsonMarshal(line)
	if err != nil {
		return err
	}
	return h.post(ctx, []record{{time: cp.Time, seq: cp.Seq, typ: CheckpointType, body: body}})
}

// Send posts events in one request.
func (h *HTTPSink) Send(ctx context.Context, evs []state.Event) error {
	recs := make([]record, 0, len(evs))
	for _, e := range evs {
		b, err := json.Marshal(e)
		if err != nil {
			return fmt.Errorf("encode event %d: %w", e.Seq, err)
		}
		recs = append(recs, record{time: e.Time, seq: e.Seq, typ: e.Type, body: b})
	}
	return h.post(ctx, recs)
}

// record is one exported line: an event or a checkpoint, as JSON.
type record struct {
	time time.Time
	seq  int64
	typ  string
	body []byte
}

// otlp types: the subset of the OTLP/JSON logs request postern writes.
type (
	otlpRequest struct {
		ResourceLogs []otlpResourceLogs `json:"resourceLogs"`
	}
	otlpResourceLogs struct {
		Resource  otlpResource    `json:"resource"`
		ScopeLogs []otlpScopeLogs `json:"scopeLogs"`
	}
	otlpResource struct {
		Attributes []otlpKV `json:"attributes"`
	}
	otlpScopeLogs struct {
		Scope      otlpScope       `json:"scope"`
		LogRecords []otlpLogRecord `json:"logRecords"`
	}
	otlpScope struct {
		Name string `json:"name"`
	}
	otlpLogRecord struct {
		TimeUnixNano         string    `json:"timeUnixNano"`
		ObservedTimeUnixNano string    `json:"observedTimeUnixNano"`
		SeverityNumber       int       `json:"severityNumber"`
		SeverityText         string    `json:"severityText"`
		Body                 otlpValue `json:"body"`
		Attributes           []otlpKV  `json:"attributes"`
	}
	otlpKV struct {
		Key   string    `json:"key"`
		Value otlpValue `json:"value"`
	}
	otlpValue struct {
		StringValue *string `json:"stringValue,omitempty"`
		IntValue    *string `json:"intValue,omitempty"`
	}
)

func otlpString(s string) otlpValue { return otlpValue{StringValue: &s} }
func otlpInt(n int64) otlpValue {
	s := strconv.FormatInt(n, 10)
	return otlpValue{IntValue: &s}
}

// hecEvent is one Splunk HEC event.
type hecEvent struct {
	Time       json.Number     `json:"time"`
	Host       string          `json:"host,omitempty"`
	Source     string          `json:"source"`
	Sourcetype string          `json:"sourcetype"`
	Event      json.RawMessage `json:"event"`
}

// encode builds the request body of recs.
func (h *HTTPSink) encode(recs []record) ([]byte, string, error) {
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	if h.opts.Format == FormatHEC {
		var buf bytes.Buffer
		for _, r := range recs {
			ev := hecEvent{
				Time: json.Number(strconv.FormatFloat(float64(r.time.UnixMicro())/1e6, 'f', 6, 64)),
				Host: h.opts.Instance, Source: "postern", Sourcetype: "postern:audit", Event: r.body,
			}
			b, err := json.Marshal(ev)
			if err != nil {
				return nil, "", err
			}
			buf.Write(b)
			buf.WriteByte('\n')
		}
		return buf.Bytes(), "application/json", nil
	}
	logs := make([]otlpLogRecord, 0, len(recs))
	for _, r := range recs {
		logs = append(logs, otlpLogRecord{
			TimeUnixNano: strconv.FormatInt(r.time.UnixNano(), 10), ObservedTimeUnixNano: now,
			SeverityNumber: 9, SeverityText: "INFO", Body: otlpString(string(r.body)),
			Attributes: []otlpKV{{Key: "postern.audit.seq", Value: otlpInt(r.seq)}, {Key: "postern.audit.type", Value: otlpString(r.typ)}},
		})
	}
	attrs := []otlpKV{{Key: "service.name", Value: otlpString("postern")}}
	if h.opts.Instance != "" {
		attrs = append(attrs, otlpKV{Key: "service.instance.id", Value: otlpString(h.opts.Instance)})
	}
	b, err := json.Marshal(otlpRequest{ResourceLogs: []otlpResourceLogs{{
		Resource:  otlpResource{Attributes: attrs},
		ScopeLogs: []otlpScopeLogs{{Scope: otlpScope{Name: "postern.audit"}, LogRecords: logs}},
	}}})
	return b, "application/json", err
}

// sinkError is a failed POST: the status (0 without an answer), never the
// URL's query or the token.
type sinkError struct {
	status int
	err    error
}

func (e *sinkError) Error() string {
	if e.status != 0 {
		return fmt.Sprintf("audit http sink: HTTP %d", e.status)
	}
	return fmt.Sprintf("audit http sink: no answer: %v", e.err)
}

func (e *sinkError) Unwrap() error { return e.err }

// post sends recs in one request.
func (h *HTTPSink) post(ctx context.Context, recs []record) error {
	body, ctype, err := h.encode(recs)
	if err != nil {
		return fmt.Errorf("audit http sink: encode: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, h.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.opts.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("audit http sink: %w", err)
	}
	req.Header.Set("Content-Type", ctype)
	for k, v := range h.opts.Headers {
		req.Header.Set(k, v)
	}
	if h.opts.Token != "" {
		scheme := "Bearer "
		if h.opts.Format == FormatHEC {
			scheme = "Splunk "
		}
		req.Header.Set("Authorization", scheme+h.opts.Token)
	}
	resp, err := h.opts.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return &sinkError{err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return &sinkError{status: resp.StatusCode}
	}
	return nil
}
