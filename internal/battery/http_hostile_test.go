package battery

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSlowlorisHeadersCutOff: clients that dribble request headers one line
// a second are disconnected by the HTTP server's header timeout (10 s)
// instead of holding a connection forever, and while 50 of them dribble a
// normal request is still answered.
func TestSlowlorisHeadersCutOff(t *testing.T) {
	s := startService(t, serviceOptions{})
	const n = 50
	type result struct {
		held time.Duration
		err  error
	}
	results := make(chan result, n)
	began := time.Now()
	for range n {
		go func() {
			c, err := net.Dial("tcp", s.HTTPAddr)
			if err != nil {
				results <- result{err: err}
				return
			}
			defer c.Close()
			start := time.Now()
			closed := make(chan struct{})
			go func() { // the server closing shows as EOF on read
				_, _ = io.Copy(io.Discard, c)
				close(closed)
			}()
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: postern\r\n"); err != nil {
				results <- result{err: err}
				return
			}
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			giveUp := time.After(30 * time.Second)
			for {
				select {
				case <-closed:
					results <- result{held: time.Since(start)}
					return
				case <-giveUp:
					results <- result{held: time.Since(start), err: errors.New("still open after 30s of dribbled headers")}
					return
				case <-tick.C:
					if _, err := io.WriteString(c, "X-Dribble: x\r\n"); err != nil {
						results <- result{held: time.Since(start)}
						return
					}
				}
			}
		}()
	}
	// A normal request while the dribblers hold their connections.
	resp, err := http.Get("http://" + s.HTTPAddr + "/healthz")
	if err != nil {
		t.Fatalf("healthz during slowloris: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("healthz during slowloris: %s", resp.Status)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("healthz took %v during slowloris", d)
	}
	for range n {
		r := <-results
		if r.err != nil {
			t.Errorf("dribbling client: %v", r.err)
			continue
		}
		if r.held < 9*time.Second || r.held > 15*time.Second {
			t.Errorf("dribbling client held its connection %v; want about the 10s header timeout", r.held)
		}
	}
}

// TestOversizedBearerRefused: an oversized bearer token is refused before
// any verification, a large garbage one is refused as invalid, and neither
// is echoed back.
func TestOversizedBearerRefused(t *testing.T) {
	s := startService(t, serviceOptions{})
	body := `{"public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}`
	for _, tc := range []struct {
		name       string
		size       int
		wantStatus int
		wantCode   string
	}{
		{"over the header limit", 200 << 10, http.StatusRequestHeaderFieldsTooLarge, ""},
		{"large garbage", 40 << 10, http.StatusUnauthorized, "invalid_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := strings.Repeat("eyJhbGciOiJSUzI1NiJ9", tc.size/20)
			req, _ := http.NewRequest("POST", "http://"+s.HTTPAddr+"/v1/certs", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %s; want %d; body %.200s", resp.Status, tc.wantStatus, b)
			}
			if strings.Contains(string(b), "eyJhbGciOiJSUzI1NiJ9") {
				t.Errorf("the response echoes the token")
			}
			if tc.wantCode != "" {
				var e struct{ Error, Code string }
				if err := json.Unmarshal(b, &e); err != nil || e.Code != tc.wantCode {
					t.Errorf("body %s; want code %q", b, tc.wantCode)
				}
			}
		})
	}
}

// TestSessionIDTraversal: session ids that try to leave the recordings
// store (dot segments, encoded slashes, absolute paths) are refused without
// a bearer and never return a file's content.
func TestSessionIDTraversal(t *testing.T) {
	s := startService(t, serviceOptions{})
	for _, id := range []string{
		"..%2F..%2Fstate.db", "..%2f..%2fpostern.yaml", "%2Fetc%2Fpasswd", "....%2F%2F....%2F%2Fetc%2Fpasswd",
		"..", "%2e%2e", "01ARZ3NDEKTSV4RRFFQ69G5FAV%00", "01ARZ3NDEKTSV4RRFFQ69G5FAV%2F..%2F..%2Fstate.db",
	} {
		for _, suffix := range []string{"", "/cast"} {
			url := "http://" + s.HTTPAddr + "/v1/sessions/" + id + suffix
			resp, err := http.Get(url)
			if err != nil {
				t.Fatalf("GET %s: %v", url, err)
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode < 400 || resp.StatusCode >= 500 {
				t.Errorf("GET %s: %s; want a 4xx refusal", url, resp.Status)
			}
			if strings.Contains(string(b), "SQLite format") || strings.Contains(string(b), "root:") || strings.Contains(string(b), "data_dir") {
				t.Errorf("GET %s returned file content: %.200s", url, b)
			}
		}
	}
	// And the same with a raw request line, which no client library cleans.
	c, err := net.Dial("tcp", s.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /v1/sessions/../../state.db/cast HTTP/1.1\r\nHost: postern\r\nConnection: close\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK || strings.Contains(string(b), "SQLite format") {
		t.Errorf("raw dot-segment path: %s %.200s", resp.Status, b)
	}
}
