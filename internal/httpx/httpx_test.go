package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/usererr"
)

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code, msg  string
		requestID  bool
		retryAfter string
	}{
		{name: "user error", err: &usererr.Error{Status: http.StatusForbidden, Code: "forbidden", Msg: "not yours"},
			status: 403, code: "forbidden", msg: "not yours"},
		{name: "wrapped user error", err: fmt.Errorf("decide: %w", usererr.New("bad_request", "a reason is required")),
			status: 400, code: "bad_request", msg: "a reason is required"},
		{name: "internal error", err: errors.New("pq: relation \"approvals\" does not exist at /var/lib/postern"),
			status: 500, code: CodeInternal, msg: "internal error", requestID: true},
		{name: "retry after", err: &usererr.Error{Status: 429, Code: "rate_limited", Msg: "slow down", RetryAfter: 1500 * time.Millisecond},
			status: 429, code: "rate_limited", msg: "slow down", retryAfter: "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs strings.Builder
			log := slog.New(slog.NewTextHandler(&logs, nil))
			rec := httptest.NewRecorder()
			var id string
			WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				id = RequestID(r)
				WriteError(w, r, log, tc.err)
			})).ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
			var body ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if rec.Code != tc.status || body.Code != tc.code || body.Error != tc.msg {
				t.Errorf("got %d %+v; want %d %s %q", rec.Code, body, tc.status, tc.code, tc.msg)
			}
			if strings.Contains(rec.Body.String(), "pq:") || strings.Contains(rec.Body.String(), "/var/lib") {
				t.Errorf("body shows the internal error: %s", rec.Body.String())
			}
			if got := rec.Header().Get(RequestIDHeader); got != id || id == "" {
				t.Errorf("X-Request-Id %q; want the request's id %q", got, id)
			}
			if tc.requestID != (body.RequestID != "") || (tc.requestID && body.RequestID != id) {
				t.Errorf("request_id %q; want it (%v) equal to %q", body.RequestID, tc.requestID, id)
			}
			if tc.requestID && !strings.Contains(logs.String(), id) {
				t.Errorf("the failure is not logged under its request id: %s", logs.String())
			}
			if got := rec.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q; want %q", got, tc.retryAfter)
			}
			for h, want := range map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"} {
				if got := rec.Header().Get(h); got != want {
					t.Errorf("%s %q; want %q", h, got, want)
				}
			}
		})
	}
}

func TestClientAddr(t *testing.T) {
	for _, tc := range []struct {
		remote, xff string
		trust       bool
		want        string
	}{
		{"192.0.2.1:5555", "", false, "192.0.2.1"},
		{"[2001:db8::1]:5555", "", false, "2001:db8::1"},
		{"[::ffff:192.0.2.7]:1", "", false, "192.0.2.7"},
		{"192.0.2.1", "", false, "192.0.2.1"},
		{"192.0.2.1:5555", "203.0.113.9", false, "192.0.2.1"},
		{"192.0.2.1:5555", "198.51.100.1, 203.0.113.9", true, "203.0.113.9"},
		{"192.0.2.1:5555", "garbage", true, "192.0.2.1"},
		{"not an address", "", false, "invalid IP"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		if got := ClientAddr(r, tc.trust).String(); got != tc.want {
			t.Errorf("ClientAddr(%q, xff %q, trust %v) = %s; want %s", tc.remote, tc.xff, tc.trust, got, tc.want)
		}
	}
}
