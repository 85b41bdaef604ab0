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
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/internal/httpx"
	"github.com/posternhq/postern/internal/usererr"
	"github.com/posternhq/postern/state"
)

// Slack action ids of the Approve and Deny buttons; each button's value is
// the request id.
const (
	SlackActionApprove = "postern_approve"
	SlackActionDeny    = "postern_deny"
	// SlackActionTerminate ends the session the held command belongs to
	// (shown only with SlackOptions.Terminate).
	SlackActionTerminate = "postern_terminate"
)

// SlackMaxSkew is the timestamp window of signed Slack callbacks.
const SlackMaxSkew = 5 * time.Minute

// slackMaxBody bounds a callback body.
const slackMaxBody = 64 << 10

// SlackOptions configures the Slack channel.
type SlackOptions struct {
	// Client posts messages; a client with a 10s timeout if nil.
	Client *http.Client
	// ResponseURLPrefix is what a callback's response_url must start with;
	// https://hooks.slack.com/ if empty.
	ResponseURLPrefix string
	// Now is the clock; time.Now if nil.
	Now func() time.Time
	// Log is the logger; nothing is logged if nil.
	Log *slog.Logger
	// Terminate ends the session of request a on behalf of by (a Slack
	// approver's postern username), with a lock on the session. With it, a
	// command's message carries a Terminate button; without it, none.
	Terminate func(ctx context.Context, a state.Approval, by string) error
}

// Slack posts requests to a Slack incoming webhook as Block Kit messages with
// Approve and Deny buttons and serves the interactivity callback
// (POST /v1/slack/actions) as an http.Handler.
//
// A callback is verified before it is parsed: the X-Slack-Signature header
// must be "v0=" + hex HMAC-SHA256(signing secret, "v0:" + timestamp + ":" +
// raw body) (compared in constant time), X-Slack-Request-Timestamp within 5
// minutes of now, and the signature not seen before (replays are refused).
// The clicking Slack user id maps to a postern username through the
// configured approvers; unknown users, requesters deciding their own request
// and non-approvers get an ephemeral answer and the request stays pending.
// A decision replaces the original message through the callback's
// response_url with the outcome and who decided.
type Slack struct {
	b      *Broker
	cfg    config.Slack
	opts   SlackOptions
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	mu   sync.Mutex
	seen map[string]time.Time // signature -> when it expires from the cache
}

// NewSlack returns the Slack channel for cfg and registers it with b as a
// notifier.
func NewSlack(b *Broker, cfg config.Slack, opts SlackOptions) (*Slack, error) {
	if cfg.WebhookURL == "" && cfg.SigningSecret == "" {
		return nil, errors.New("slack: webhook_url and signing_secret are required")
	}
	if cfg.SigningSecret == "" {
		return nil, errors.New("slack: signing_secret is required to take decisions from Slack")
	}
	s := &Slack{b: b, cfg: cfg, opts: opts, client: opts.Client, now: opts.Now, log: opts.Log, seen: map[string]time.Time{}}
	if s.client == nil {
		s.client = &http.Client{Timeout: 10 * time.Second}
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.opts.ResponseURLPrefix == "" {
		s.opts.ResponseURLPrefix = "https://hooks.slack.com/"
	}
	if cfg.WebhookURL != "" {
		b.AddNotifier(s)
	}
	return s, nil
}

// Name implements Notifier.
func (s *Slack) Name() string { return "slack" }

// Notify posts a pending request to the incoming webhook; decisions are
// shown by replacing the message from the callback.
func (s *Slack) Notify(ctx context.Context, a state.Approval) error {
	if a.Status != state.ApprovalPending {
		return nil
	}
	msg := SlackMessage(a, s.b.URL(a.ID), s.b.sessionURL(a.Session))
	if s.opts.Terminate != nil && a.Session != "" {
		addTerminateButton(msg, a.ID)
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("slack message: %w", err)
	}
	return s.post(ctx, s.cfg.WebhookURL, body)
}

func (s *Slack) post(ctx context.Context, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("slack request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("post to slack: %w", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("post to slack: status %d", resp.StatusCode)
	}
	return nil
}

// sessionURL is the web link of a session ("" without a public URL).
func (b *Broker) sessionURL(id string) string {
	if b.opts.PublicURL == "" || id == "" {
		return ""
	}
	return b.opts.PublicURL + "/ui/sessions/" + id
}

// SlackMessage builds the Block Kit message of a pending request.
func SlackMessage(a state.Approval, link, sessionLink string) map[string]any {
	title := "Approval needed: command"
	if a.Kind == state.ApprovalAccess {
		title = "Approval needed: access request"
	}
	fields := []map[string]any{
		mrkdwn("*Requester*\n" + slackEscape(a.Requester)),
		mrkdwn("*Target*\n" + slackEscape(a.Target)),
	}
	if a.Login != "" {
		fields = append(fields, mrkdwn("*Login*\n"+slackEscape(a.Login)))
	}
	if a.Rule != "" {
		fields = append(fields, mrkdwn("*Rule*\n`"+slackEscape(a.Rule)+"`"))
	}
	if a.Kind == state.ApprovalAccess {
		fields = append(fields, mrkdwn("*For*\n"+a.Duration.String()))
	}
	blocks := []map[string]any{
		{"type": "header", "text": map[string]any{"type": "plain_text", "text": title}},
		{"type": "section", "fields": fields},
	}
	if a.Command != "" {
		blocks = append(blocks, map[string]any{"type": "section", "text": mrkdwn("```" + slackEscape(strings.ReplaceAll(a.Command, "```", "'''")) + "```")})
	}
	if a.Reason != "" {
		blocks = append(blocks, map[string]any{"type": "section", "text": mrkdwn("*Reason*\n" + slackEscape(a.Reason))})
	}
	ctxt := fmt.Sprintf("Request `%s` · needs %d approval(s) from %s · expires %s", slackEscape(a.ID), a.Required,
		slackEscape(strings.Join(a.Approvers, ", ")), a.Expires.UTC().Format(time.RFC3339))
	if len(a.Approvers) == 0 {
		ctxt = fmt.Sprintf("Request `%s` · expires %s", slackEscape(a.ID), a.Expires.UTC().Format(time.RFC3339))
	}
	if sessionLink != "" {
		ctxt += " · " + slackLink(sessionLink, "session "+a.Session)
	} else if a.Session != "" {
		ctxt += " · session " + slackEscape(a.Session)
	}
	if link != "" {
		ctxt += " · " + slackLink(link, "open")
	}
	blocks = append(blocks, map[string]any{"type": "context", "elements": []any{mrkdwn(ctxt)}})
	blocks = append(blocks, map[string]any{"type": "actions", "block_id": "postern_decision", "elements": []any{
		map[string]any{"type": "button", "action_id": SlackActionApprove, "style": "primary", "value": a.ID,
			"text": map[string]any{"type": "plain_text", "text": "Approve"}},
		map[string]any{"type": "button", "action_id": SlackActionDeny, "style": "danger", "value": a.ID,
			"text": map[string]any{"type": "plain_text", "text": "Deny"}},
	}})
	// The top-level text is the notification and fallback; Slack reads it
	// as mrkdwn too, so it is escaped like every other field.
	text := fmt.Sprintf("postern: %s asks to run on %s: %s", a.Requester, a.Target, a.Command)
	if a.Kind == state.ApprovalAccess {
		text = fmt.Sprintf("postern: %s asks for %s of access to %s", a.Requester, a.Duration, a.Target)
	}
	return map[string]any{"text": slackEscape(text), "blocks": blocks}
}

// addTerminateButton adds the Terminate button to the actions block of a
// request's message.
func addTerminateButton(msg map[string]any, id string) {
	blocks, _ := msg["blocks"].([]map[string]any)
	for _, b := range blocks {
		if b["type"] != "actions" {
			continue
		}
		els, _ := b["elements"].([]any)
		b["elements"] = append(els, map[string]any{"type": "button", "action_id": SlackActionTerminate, "value": id,
			"text": map[string]any{"type": "plain_text", "text": "Terminate session"},
			"confirm": map[string]any{
				"title":   map[string]any{"type": "plain_text", "text": "Terminate the session?"},
				"text":    map[string]any{"type": "plain_text", "text": "The session ends at once, with the command still held."},
				"confirm": map[string]any{"type": "plain_text", "text": "Terminate"},
				"deny":    map[string]any{"type": "plain_text", "text": "Cancel"},
				"style":   "danger",
			}})
	}
}

func mrkdwn(s string) map[string]any { return map[string]any{"type": "mrkdwn", "text": s} }

// slackEscape escapes the three characters Slack's mrkdwn treats as markup
// (links, mentions such as <!channel>, and entities). Every text postern
// sends to Slack that holds anything but postern's own words goes through
// it.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slackLink is a mrkdwn link to url (postern's own URL) labelled text; the
// URL's markup characters and '|' are escaped so that neither can end the
// link early.
func slackLink(url, text string) string {
	return "<" + strings.ReplaceAll(slackEscape(url), "|", "%7C") + "|" + slackEscape(text) + ">"
}

// SlackAction is the part of a block_actions callback postern reads.
type SlackAction struct {
	// UserID is the clicking Slack user.
	UserID string
	// ActionID is SlackActionApprove or SlackActionDeny.
	ActionID string
	// Request is the request id (the button's value).
	Request string
	// ResponseURL replaces the message or answers ephemerally.
	ResponseURL string
}

// ParseSlackPayload parses a verified callback body (form-encoded, with a
// "payload" JSON field) into the postern action it carries.
func ParseSlackPayload(body []byte) (SlackAction, error) {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return SlackAction{}, fmt.Errorf("slack payload: %w", err)
	}
	raw := form.Get("payload")
	if raw == "" {
		return SlackAction{}, errors.New("slack payload: missing payload")
	}
	var p struct {
		Type string `json:"type"`
		User struct {
			ID string `json:"id"`
		} `json:"user"`
		ResponseURL string `json:"response_url"`
		Actions     []struct {
			ActionID string `json:"action_id"`
			Value    string `json:"value"`
		} `json:"actions"`
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return SlackAction{}, fmt.Errorf("slack payload: %w", err)
	}
	if p.Type != "block_actions" {
		return SlackAction{}, fmt.Errorf("slack payload: unsupported type %q", p.Type)
	}
	if p.User.ID == "" {
		return SlackAction{}, errors.New("slack payload: no user")
	}
	for _, a := range p.Actions {
		if (a.ActionID == SlackActionApprove || a.ActionID == SlackActionDeny || a.ActionID == SlackActionTerminate) &&
			a.Value != "" && len(a.Value) <= 64 {
			return SlackAction{UserID: p.User.ID, ActionID: a.ActionID, Request: a.Value, ResponseURL: p.ResponseURL}, nil
		}
	}
	return SlackAction{}, errors.New("slack payload: no postern action")
}

// Verify checks a callback's signature, timestamp window and replay; it
// returns an error (never showing secrets) when the callback must be refused.
func (s *Slack) Verify(h http.Header, body []byte) error {
	ts := h.Get("X-Slack-Request-Timestamp")
	sig := h.Get("X-Slack-Signature")
	if ts == "" || sig == "" {
		return errors.New("missing signature headers")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errors.New("bad timestamp")
	}
	now := s.now()
	if d := now.Sub(time.Unix(sec, 0)); d > SlackMaxSkew || d < -SlackMaxSkew {
		return errors.New("stale timestamp")
	}
	mac := hmac.New(sha256.New, []byte(s.cfg.SigningSecret))
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	want := "v0=" + hex.EncodeToString(mac.Sum(nil))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return errors.New("bad signature")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, exp := range s.seen {
		if now.After(exp) {
			delete(s.seen, k)
		}
	}
	if _, dup := s.seen[sig]; dup {
		return errors.New("replayed request")
	}
	s.seen[sig] = time.Unix(sec, 0).Add(2 * SlackMaxSkew)
	return nil
}

// SignSlack returns the X-Slack-Signature value Slack sends for body at ts
// (unix seconds) with secret.
func SignSlack(secret, ts string, body []byte) string {
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte("v0:" + ts + ":"))
	mac.Write(body)
	return "v0=" + hex.EncodeToString(mac.Sum(nil))
}

// ServeHTTP handles POST /v1/slack/actions.
func (s *Slack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		httpx.Fail(w, http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, slackMaxBody))
	if err != nil {
		httpx.Fail(w, http.StatusRequestEntityTooLarge, "body_too_large", "body too large")
		return
	}
	if err := s.Verify(r.Header, body); err != nil {
		s.log.Warn("slack callback refused", "reason", err.Error(), "remote", r.RemoteAddr)
		httpx.Fail(w, http.StatusUnauthorized, "bad_signature", "invalid Slack signature")
		return
	}
	act, err := ParseSlackPayload(body)
	if err != nil {
		httpx.Fail(w, http.StatusBadRequest, "bad_request", "unsupported Slack payload")
		return
	}
	if act.ResponseURL != "" && !strings.HasPrefix(act.ResponseURL, s.opts.ResponseURLPrefix) {
		act.ResponseURL = ""
	}
	// Slack expects an answer within 3 seconds; the result goes to response_url.
	w.WriteHeader(http.StatusOK)
	s.decide(r.Context(), act)
}

func (s *Slack) decide(ctx context.Context, act SlackAction) {
	ephemeral := func(text string) {
		s.respond(ctx, act.ResponseURL, map[string]any{"response_type": "ephemeral", "replace_original": false, "text": slackEscape(text)})
	}
	key, ok := s.cfg.Approvers[act.UserID]
	id, known := certs.IdentityFromKey(key)
	if !ok || !known {
		s.log.Info("slack decision from an unknown user", "slack_user", act.UserID, "request", act.Request)
		ephemeral("You are not a postern approver.")
		return
	}
	username := id.Display()
	if _, err := s.b.CheckApprover(id); err != nil {
		s.log.Info("slack action refused", "slack_user", act.UserID, "approver", id.Key(), "request", act.Request, "err", err)
		ephemeral(upperFirst(usererr.As(err).Msg) + ".")
		return
	}
	if act.ActionID == SlackActionTerminate {
		s.terminate(ctx, act, username, ephemeral)
		return
	}
	a, err := s.b.Decide(ctx, act.Request, Decision{Approver: id, Trusted: true, Approve: act.ActionID == SlackActionApprove, Via: "slack"})
	switch {
	case errors.Is(err, ErrSelfApproval), errors.Is(err, ErrNotApprover), errors.Is(err, ErrNotFound):
		ephemeral(upperFirst(usererr.As(err).Msg) + ".")
		return
	case usererr.As(err) != nil && usererr.As(err).HTTPStatus() == http.StatusForbidden:
		// Options.Approver's refusal (a deprovisioned approver).
		ephemeral(upperFirst(usererr.As(err).Msg) + ".")
		return
	case errors.Is(err, ErrDecided):
		ephemeral("This request was already decided: " + strings.ReplaceAll(a.Status, "_", " ") + ".")
		return
	case err != nil:
		s.log.Error("slack decision", "request", act.Request, "err", err)
		ephemeral("postern could not record the decision; try again.")
		return
	}
	text := slackEscape(fmt.Sprintf("%s: %s by %s", a.ID, strings.ReplaceAll(a.Status, "_", " "), username))
	if a.Status == state.ApprovalPending {
		text = slackEscape(fmt.Sprintf("%s: approved by %s (%d of %d approvals)", a.ID, username, a.Approvals(), a.Required))
	}
	what := a.Command
	if a.Kind == state.ApprovalAccess {
		what = fmt.Sprintf("%s of access to %s", a.Duration, a.Target)
	}
	s.respond(ctx, act.ResponseURL, map[string]any{"replace_original": true, "text": text, "blocks": []any{
		map[string]any{"type": "section", "text": mrkdwn(fmt.Sprintf("*%s* on *%s* by %s\n```%s```",
			strings.ReplaceAll(a.Status, "_", " "), slackEscape(a.Target), slackEscape(a.Requester), slackEscape(what)))},
		map[string]any{"type": "context", "elements": []any{mrkdwn(text)}},
	}})
}

// terminate ends the session of the request act names, on behalf of a
// configured Slack approver.
func (s *Slack) terminate(ctx context.Context, act SlackAction, username string, ephemeral func(string)) {
	a, err := s.b.Get(ctx, act.Request)
	switch {
	case s.opts.Terminate == nil, err == nil && a.Session == "":
		ephemeral("This request has no session to terminate.")
		return
	case errors.Is(err, ErrNotFound):
		ephemeral(upperFirst(ErrNotFound.Msg) + ".")
		return
	case err != nil:
		s.log.Error("slack terminate", "request", act.Request, "err", err)
		ephemeral("postern could not terminate the session; try again.")
		return
	}
	if err := s.opts.Terminate(ctx, a, username); err != nil {
		s.log.Error("slack terminate", "request", a.ID, "session", a.Session, "err", err)
		ephemeral("postern could not terminate the session; try again.")
		return
	}
	s.log.Info("session terminated from slack", "request", a.ID, "session", a.Session, "by", username)
	text := slackEscape(fmt.Sprintf("%s: session %s terminated by %s", a.ID, a.Session, username))
	s.respond(ctx, act.ResponseURL, map[string]any{"replace_original": true, "text": text, "blocks": []any{
		map[string]any{"type": "section", "text": mrkdwn(fmt.Sprintf("*session terminated* on *%s* by %s\n```%s```",
			slackEscape(a.Target), slackEscape(a.Requester), slackEscape(strings.ReplaceAll(a.Command, "```", "'''"))))},
		map[string]any{"type": "context", "elements": []any{mrkdwn(text)}},
	}})
}

func (s *Slack) respond(ctx context.Context, u string, msg map[string]any) {
	if u == "" {
		return
	}
	body, _ := json.Marshal(msg)
	if err := s.post(context.WithoutCancel(ctx), u, body); err != nil {
		s.log.Warn("slack response failed", "err", err)
	}
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
