package approval

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/state"
)

// WebhookOptions configures a generic webhook channel.
type WebhookOptions struct {
	// Client posts; a client with a 10s timeout if nil.
	Client *http.Client
	// Attempts is how many times a delivery is tried; 5 if zero.
	Attempts int
	// Backoff is the wait before the first retry, doubling after each;
	// 500ms if zero.
	Backoff time.Duration
	// Now is the clock for the timestamp header; time.Now if nil.
	Now func() time.Time
}

// Webhook POSTs every request, and again its decision, as JSON:
//
//	{"event": "approval.requested"|"approval.decided", "approval": {...}, "url": "..."}
//
// with X-Postern-Timestamp (unix seconds) and X-Postern-Signature:
// "v1=" + hex HMAC-SHA256(secret, timestamp + "." + body). Network errors,
// 429 and 5xx answers are retried with exponential backoff. Decisions come
// back through the API, never through the webhook's answer.
type Webhook struct {
	cfg    config.Webhook
	opts   WebhookOptions
	client *http.Client
	now    func() time.Time
	link   func(id string) string
}

// NewWebhook returns the channel for cfg and registers it with b.
func NewWebhook(b *Broker, cfg config.Webhook, opts WebhookOptions) (*Webhook, error) {
	if cfg.URL == "" || cfg.Secret == "" {
		return nil, errors.New("webhook: url and secret are required")
	}
	w := &Webhook{cfg: cfg, opts: opts, client: opts.Client, now: opts.Now, link: b.URL}
	if w.client == nil {
		w.client = &http.Client{Timeout: 10 * time.Second}
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.opts.Attempts <= 0 {
		w.opts.Attempts = 5
	}
	if w.opts.Backoff <= 0 {
		w.opts.Backoff = 500 * time.Millisecond
	}
	b.AddNotifier(w)
	return w, nil
}

// Name implements Notifier.
func (w *Webhook) Name() string { return "webhook" }

// WebhookSignature returns the X-Postern-Signature value for body at ts.
func WebhookSignature(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "v1=" + hex.EncodeToString(mac.Sum(nil))
}

// Notify implements Notifier.
func (w *Webhook) Notify(ctx context.Context, a state.Approval) error {
	event := state.EventApprovalRequested
	if a.Status != state.ApprovalPending {
		event = state.EventApprovalDecided
	}
	body, err := json.Marshal(map[string]any{"event": event, "approval": a, "url": w.link(a.ID)})
	if err != nil {
		return fmt.Errorf("webhook body: %w", err)
	}
	wait := w.opts.Backoff
	var last error
	for i := range w.opts.Attempts {
		if i > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return fmt.Errorf("webhook: %w (last: %w)", ctx.Err(), last)
			case <-t.C:
			}
			wait *= 2
		}
		retry, err := w.post(ctx, body)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			break
		}
	}
	return last
}

func (w *Webhook) post(ctx context.Context, body []byte) (retry bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("webhook request: %w", err)
	}
	ts := strconv.FormatInt(w.now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Postern-Timestamp", ts)
	req.Header.Set("X-Postern-Signature", WebhookSignature(w.cfg.Secret, ts, body))
	resp, err := w.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode/100 == 2:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("post webhook: status %d", resp.StatusCode)
	}
	return false, fmt.Errorf("post webhook: status %d", resp.StatusCode)
}
