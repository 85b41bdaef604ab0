package s3store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/recorder/s3store"
	"github.com/posternhq/postern/state"
)

const bucket = "recordings"

// fast retries for tests.
var testOpts = s3store.Options{MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}

// awsEnv points the standard AWS credential chain at srv's root keys and
// nothing else (no shared files, no instance metadata).
func awsEnv(t testing.TB, access, secret string) {
	t.Helper()
	s3test.AWSEnv(t, access, secret)
}

// storeURL is the storage URL of bucket on srv under prefix.
func storeURL(srv *s3test.Server, bucket, prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&path_style=true&region=%s", bucket, prefix, url.QueryEscape(srv.Endpoint()), srv.Region())
}

// startS3 starts versitygw with the recordings bucket and sets the AWS
// environment for it.
func startS3(t testing.TB) *s3test.Server {
	t.Helper()
	srv := s3test.Start(t)
	srv.CreateBucket(t, bucket)
	awsEnv(t, srv.AccessKey(), srv.SecretKey())
	return srv
}

// rawClient is a plain S3 client for checking what the bucket holds.
func rawClient(t *testing.T, srv *s3test.Server) *s3.Client {
	t.Helper()
	return client(t, srv.Endpoint(), srv.Region())
}

// rawClientAt is rawClient for the server a test's parent started.
func rawClientAt(t *testing.T) *s3.Client {
	t.Helper()
	u, err := url.Parse(os.Getenv("POSTERN_S3STORE_CHILD_URL"))
	if err != nil {
		t.Fatal(err)
	}
	return client(t, u.Query().Get("endpoint"), u.Query().Get("region"))
}

func client(t *testing.T, endpoint, region string) *s3.Client {
	t.Helper()
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(region))
	if err != nil {
		t.Fatal(err)
	}
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
}

type env struct {
	s3    *s3store.Store
	store *recorder.S3Store
	st    *state.Store
	rec   *recorder.Recorder
	reg   *prometheus.Registry
	spool string
	dir   string
}

// newEnv opens the S3 store at rawURL, a state store and a recorder in
// dir (a new temporary directory if empty).
func newEnv(t testing.TB, rawURL, dir string, opts s3store.Options) *env {
	return newReplicaEnv(t, rawURL, dir, opts, recorder.Options{Replica: "r1"})
}

// newReplicaEnv is newEnv with recorder options (Replica,
// CheckpointInterval); replicas given the same dir share its state store.
func newReplicaEnv(t testing.TB, rawURL, dir string, opts s3store.Options, ropts recorder.Options) *env {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ctx := context.Background()
	st3, err := s3store.OpenURL(ctx, rawURL, opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := state.Open(ctx, "sqlite://"+filepath.Join(dir, "state.db"), state.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{s3: st3, store: recorder.NewS3Store(st3), st: st, reg: prometheus.NewRegistry(), spool: filepath.Join(dir, "spool-"+ropts.Replica), dir: dir}
	ropts.Store, ropts.State, ropts.SpoolDir, ropts.Metrics, ropts.BufferSize = e.store, st, e.spool, e.reg, 4<<20
	ropts.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("replica", ropts.Replica)
	e.rec, err = recorder.New(ropts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// textChunk returns n bytes of base64 text lines, like a busy terminal.
func textChunk(rng *rand.Rand, n int) []byte {
	raw := make([]byte, n*3/4+3)
	for i := range raw {
		raw[i] = byte(rng.Uint32())
	}
	enc := []byte(base64.StdEncoding.EncodeToString(raw))
	out := make([]byte, 0, n)
	for len(out) < n {
		l := min(76, n-len(out)-2, len(enc))
		if l <= 0 {
			out = append(out, '\n')
			continue
		}
		out = append(out, enc[:l]...)
		out = append(out, '\r', '\n')
		enc = enc[l:]
	}
	return out[:n]
}

// download returns the object key of the store (prefix "rec") from srv.
func download(t *testing.T, store recorder.Store, key string) []byte {
	t.Helper()
	rc, err := store.Open(context.Background(), key)
	if err != nil {
		t.Fatalf("open %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outputOf decodes a cast and returns its concatenated output events.
func outputOf(t *testing.T, cast []byte) []byte {
	t.Helper()
	d := recorder.NewDecoder(bytes.NewReader(cast))
	if _, err := d.Header(); err != nil {
		t.Fatalf("cast header: %v", err)
	}
	var out bytes.Buffer
	for {
		ev, err := d.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("decode cast: %v", err)
		}
		if ev.Code == "o" {
			out.WriteString(ev.Data)
		}
	}
	return out.Bytes()
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// metric returns the value of a counter or gauge summed over its labels.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			switch {
			case m.Counter != nil:
				sum += m.Counter.GetValue()
			case m.Gauge != nil:
				sum += m.Gauge.GetValue()
			}
		}
	}
	return sum
}

// eventTypes lists the audit event types in st.
func eventTypes(t *testing.T, st *state.Store) []string {
	t.Helper()
	evs, err := st.Events(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, e := range evs {
		types = append(types, e.Type)
	}
	return types
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// waitFor polls cond (every 20ms) until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// testWriter sends log lines to the test log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// finishIntact finishes s (waiting up to 2 minutes for the store), and
// checks that the stored object holds exactly written as output and has
// the sealed digest. It returns the object.
func finishIntact(t *testing.T, e *env, s *recorder.Session, written []byte) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sealed, err := s.Finish(ctx, recorder.Result{})
	if err != nil {
		t.Fatal(err)
	}
	obj := download(t, e.store, sealed.Object)
	if got := outputOf(t, obj); !bytes.Equal(got, written) {
		t.Fatalf("object output is %d bytes; want the %d bytes written (lost %d)", len(got), len(written), len(written)-len(got))
	}
	if sha(obj) != sealed.SHA256 {
		t.Error("object digest differs from the sealed digest")
	}
	return obj
}
