package httpx

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
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

// TestClientAddr: X-Forwarded-For is believed only from trusted proxies,
// walked from the right past every trusted hop; what the client wrote
// itself (hops left of the first untrusted one) never counts.
func TestClientAddr(t *testing.T) {
	lb := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	tests := []struct {
		name    string
		peer    string
		xff     []string
		trusted []netip.Prefix
		want    string
	}{
		{name: "no proxies configured", peer: "10.1.1.1:5000", xff: []string{"203.0.113.9"}, want: "10.1.1.1"},
		{name: "untrusted peer spoofs", peer: "198.51.100.7:5000", xff: []string{"203.0.113.9"}, trusted: lb, want: "198.51.100.7"},
		{name: "one trusted hop", peer: "10.1.1.1:5000", xff: []string{"203.0.113.9"}, trusted: lb, want: "203.0.113.9"},
		{name: "chain of trusted hops", peer: "10.1.1.1:5000", xff: []string{"1.2.3.4, 203.0.113.9, 10.2.2.2"}, trusted: lb, want: "203.0.113.9"},
		{name: "client-written hops ignored", peer: "10.1.1.1:5000", xff: []string{"10.9.9.9, 203.0.113.9"}, trusted: lb, want: "203.0.113.9"},
		{name: "several headers in order", peer: "10.1.1.1:5000", xff: []string{"1.2.3.4", "203.0.113.9, 10.3.3.3"}, trusted: lb, want: "203.0.113.9"},
		{name: "all trusted: leftmost", peer: "10.1.1.1:5000", xff: []string{"10.5.5.5, 10.6.6.6"}, trusted: lb, want: "10.5.5.5"},
		{name: "garbage hop ends the walk", peer: "10.1.1.1:5000", xff: []string{"203.0.113.9, junk"}, trusted: lb, want: "10.1.1.1"},
		{name: "no header", peer: "10.1.1.1:5000", trusted: lb, want: "10.1.1.1"},
		{name: "IPv6 and mapped IPv4", peer: "[fd00::1]:5000", xff: []string{"::ffff:203.0.113.9"}, trusted: lb, want: "203.0.113.9"},
		{name: "IPv6 peer", peer: "[2001:db8::1]:5555", want: "2001:db8::1"},
		{name: "mapped IPv4 peer", peer: "[::ffff:192.0.2.7]:1", want: "192.0.2.7"},
		{name: "peer without port", peer: "192.0.2.1", want: "192.0.2.1"},
		{name: "unparsable peer", peer: "not an address", xff: []string{"203.0.113.9"}, trusted: lb, want: "invalid IP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := ClientAddr(r, tc.trusted); got.String() != tc.want {
				t.Errorf("got %s; want %s", got, tc.want)
			}
		})
	}
}
