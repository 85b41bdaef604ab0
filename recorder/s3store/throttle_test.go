package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/recorder/s3store"
)

// throttlingProxy stands in front of versitygw and answers every other
// write request (part uploads, puts, completions) with 503 SlowDown, the
// way S3 throttles a prefix that is written too fast. Reads and bucket
// checks pass through. The Host header is kept, so the request signatures
// the client computed for the proxy's address still verify at versitygw.
type throttlingProxy struct {
	url       string
	writes    atomic.Int64
	throttled atomic.Int64
	on        atomic.Bool // throttle every other write
	all       atomic.Bool // throttle every write
}

func startThrottlingProxy(t *testing.T, endpoint string) *throttlingProxy {
	t.Helper()
	target, err := url.Parse(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	p := &throttlingProxy{}
	p.on.Store(true)
	rp := httputil.NewSingleHostReverseProxy(target)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut || r.Method == http.MethodPost {
			if n := p.writes.Add(1); p.all.Load() || p.on.Load() && n%2 == 1 {
				p.throttled.Add(1)
				// S3 reads the request before it answers.
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/xml")
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
				return
			}
		}
		rp.ServeHTTP(w, r)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln) // returns when Close is called below
	t.Cleanup(func() { srv.Close() })
	p.url = "http://" + ln.Addr().String()
	return p
}

// TestThrottlingMidSession records 20 MiB (several parts) while S3 answers
// half of all writes with 503 SlowDown: the session never blocks on it,
// the throttled requests are retried, and the sealed object holds every
// byte with the sealed digest.
func TestThrottlingMidSession(t *testing.T) {
	srv := startS3(t)
	proxy := startThrottlingProxy(t, srv.Endpoint())
	rawURL := fmt.Sprintf("s3://%s/rec?endpoint=%s&path_style=true&region=%s", bucket, url.QueryEscape(proxy.url), srv.Region())
	e := newEnv(t, rawURL, "", s3store.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond})
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "dave", Target: "web-3", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	var written bytes.Buffer
	for written.Len() < 20<<20 {
		p := textChunk(rng, 64<<10)
		if err := s.Output(p); err != nil {
			t.Fatalf("output while S3 throttles (store health %+v): %v", e.store.Health(), err)
		}
		written.Write(p)
	}
	obj := finishIntact(t, e, s, written.Bytes())
	if proxy.throttled.Load() < 3 {
		t.Fatalf("the proxy throttled %d of %d writes; want several (did the parts go through it?)", proxy.throttled.Load(), proxy.writes.Load())
	}
	if h := e.store.Health(); h.Down || h.Backlog != 0 {
		t.Errorf("health after the session %+v; want up, no backlog", h)
	}
	for _, name := range []string{"postern_s3_throttled_total", "postern_s3_upload_errors_total"} {
		if got := metric(t, e.reg, name); got != float64(proxy.throttled.Load()) {
			t.Errorf("%s = %v; want the %d throttled writes", name, got, proxy.throttled.Load())
		}
	}
	// Each write got through on its second try: throttling, not an outage.
	if types := eventTypes(t, e.st); contains(types, recorder.EventStorageOutage) {
		t.Errorf("audit events %v; want no %s for throttling that clears on retry", types, recorder.EventStorageOutage)
	}
	if got := metric(t, e.reg, "postern_s3_outage"); got != 0 {
		t.Errorf("postern_s3_outage = %v; want 0", got)
	}
	t.Logf("%d MiB recorded through S3 throttling %d of %d writes; object %d bytes", written.Len()>>20, proxy.throttled.Load(), proxy.writes.Load(), len(obj))
}

// TestPersistentThrottlingIsAnOutage: when every write is throttled, the
// third refusal in a row starts an outage (audited, postern_s3_outage 1);
// the session keeps spooling, and once S3 accepts writes again the outage
// ends and the object is complete.
func TestPersistentThrottlingIsAnOutage(t *testing.T) {
	srv := startS3(t)
	proxy := startThrottlingProxy(t, srv.Endpoint())
	proxy.on.Store(false)
	rawURL := fmt.Sprintf("s3://%s/rec?endpoint=%s&path_style=true&region=%s", bucket, url.QueryEscape(proxy.url), srv.Region())
	e := newEnv(t, rawURL, "", s3store.Options{MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "erin", Target: "web-4", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	proxy.all.Store(true)
	rng := rand.New(rand.NewPCG(9, 10))
	var written bytes.Buffer
	for written.Len() < 12<<20 {
		p := textChunk(rng, 64<<10)
		if err := s.Output(p); err != nil {
			t.Fatalf("output while S3 throttles everything: %v", err)
		}
		written.Write(p)
	}
	waitFor(t, time.Minute, "an outage after persistent throttling", func() bool { return e.store.Health().Down })
	if got := metric(t, e.reg, "postern_s3_outage"); got != 1 {
		t.Errorf("postern_s3_outage = %v during persistent throttling; want 1", got)
	}
	if types := eventTypes(t, e.st); !contains(types, recorder.EventStorageOutage) {
		t.Errorf("audit events %v; want %s", types, recorder.EventStorageOutage)
	}
	proxy.all.Store(false)
	finishIntact(t, e, s, written.Bytes())
	if h := e.store.Health(); h.Down {
		t.Errorf("health after S3 accepted writes again %+v; want up", h)
	}
	if types := eventTypes(t, e.st); !contains(types, recorder.EventStorageRecovered) {
		t.Errorf("audit events %v; want %s", types, recorder.EventStorageRecovered)
	}
}
