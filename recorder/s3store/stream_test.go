package s3store_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/internal/testutil"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// TestLargeSessionStreamsIntact records 20 MiB of terminal output through
// Session.Output: parts reach the bucket while the session runs, and the
// object equals the spool and what was written, with the sealed SHA-256.
func TestLargeSessionStreamsIntact(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "alice", Target: "web-1", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	follow, err := e.rec.Follow(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	spoolCh := make(chan []byte, 1)
	go func() {
		defer follow.Close()
		b, err := io.ReadAll(follow)
		if err != nil {
			t.Errorf("follow spool: %v", err)
		}
		spoolCh <- b
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	var written bytes.Buffer
	for written.Len() < 20<<20 {
		p := textChunk(rng, 32<<10)
		if err := s.Output(p); err != nil {
			t.Fatal(err)
		}
		written.Write(p)
	}
	// Parts are streamed while the session runs: what is left for Finish
	// is less than one part.
	waitFor(t, 2*time.Minute, "parts streamed", func() bool {
		h := e.store.Health()
		return h.Uploads == 1 && h.Backlog < s3storeMinPart
	})
	cli := rawClient(t, srv)
	ups, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String("rec/")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 1 {
		t.Fatalf("got %d multipart uploads in progress; want 1", len(ups.Uploads))
	}
	parts, err := cli.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(bucket), Key: ups.Uploads[0].Key, UploadId: ups.Uploads[0].UploadId})
	if err != nil {
		t.Fatal(err)
	}
	if len(parts.Parts) < 4 {
		t.Fatalf("got %d parts uploaded during the session; want at least 4", len(parts.Parts))
	}

	exit := 0
	sealed, err := s.Finish(ctx, recorder.Result{ExitStatus: &exit})
	if err != nil {
		t.Fatal(err)
	}
	spool := <-spoolCh
	obj := download(t, e.store, sealed.Object)
	if !bytes.Equal(obj, spool) {
		t.Fatalf("object (%d bytes) differs from the spool (%d bytes)", len(obj), len(spool))
	}
	if got := outputOf(t, obj); !bytes.Equal(got, written.Bytes()) {
		t.Fatalf("object output is %d bytes; want the %d bytes written", len(got), written.Len())
	}
	if got := sha(obj); got != sealed.SHA256 || int64(len(obj)) != sealed.Size {
		t.Fatalf("object sha256 %s size %d; sealed %s %d", got, len(obj), sealed.SHA256, sealed.Size)
	}
	wantKey := recorder.CastKey(s.ID(), time.Now())
	if sealed.Object != wantKey {
		t.Errorf("object key %q; want %q", sealed.Object, wantKey)
	}
	head, err := cli.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(path.Join("rec", sealed.Object))})
	if err != nil {
		t.Fatal(err)
	}
	if ct := aws.ToString(head.ContentType); ct != recorder.ContentTypeCast {
		t.Errorf("content type %q; want %q", ct, recorder.ContentTypeCast)
	}
	var md recorder.Metadata
	if err := json.Unmarshal(download(t, e.store, sealed.MetaObject), &md); err != nil {
		t.Fatal(err)
	}
	if md.SHA256 != sealed.SHA256 || md.Size != sealed.Size || md.Status != state.StatusFinished {
		t.Errorf("metadata sha256 %s size %d status %s; want %s %d finished", md.SHA256, md.Size, md.Status, sealed.SHA256, sealed.Size)
	}
	row, err := e.st.GetSession(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != state.StatusFinished || row.SHA256 != sealed.SHA256 || row.SealSeq == 0 {
		t.Errorf("index row status %s sha256 %s seal %d; want finished %s sealed", row.Status, row.SHA256, row.SealSeq, sealed.SHA256)
	}
	if h := e.store.Health(); h.Backlog != 0 || h.Uploads != 0 || h.Down {
		t.Errorf("health after finish %+v; want no backlog", h)
	}
	if _, err := os.Stat(filepath.Join(e.spool, s.ID()+".cast")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("spool file still there after sealing: %v", err)
	}
	bad, err := recorder.VerifySessions(ctx, e.st, e.store)
	if err != nil || len(bad) != 0 {
		t.Errorf("VerifySessions = %v, %v; want none bad", bad, err)
	}
}

const s3storeMinPart = 5 << 20

// TestShortSessionSinglePut: a session under one part is stored with one
// PUT and no multipart upload is left behind.
func TestShortSessionSinglePut(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "bob", Target: "db", Kind: "exec", Command: "uptime"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Output([]byte("up 3 days\r\n")); err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Finish(ctx, recorder.Result{})
	if err != nil {
		t.Fatal(err)
	}
	obj := download(t, e.store, sealed.Object)
	if got := string(outputOf(t, obj)); got != "up 3 days\r\n" {
		t.Errorf("output %q; want %q", got, "up 3 days\r\n")
	}
	ups, err := rawClient(t, srv).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("got %d multipart uploads; want none", len(ups.Uploads))
	}
}

// TestReads covers whole, ranged and Stat reads and a missing object.
func TestReads(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	ctx := context.Background()
	body := []byte("0123456789abcdefghij")
	if err := e.store.Put(ctx, "2026/01/02/x.cast", bytes.NewReader(body), int64(len(body)), recorder.ContentTypeCast); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		off, n int64
		want   string
	}{
		{name: "middle", off: 3, n: 4, want: "3456"},
		{name: "to the end", off: 15, n: -1, want: "fghij"},
		{name: "past the end", off: 30, n: 5, want: ""},
		{name: "zero length", off: 2, n: 0, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc, err := e.store.OpenRange(ctx, "2026/01/02/x.cast", tt.off, tt.n)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, _ := io.ReadAll(rc)
			if string(got) != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
	if got := download(t, e.store, "2026/01/02/x.cast"); !bytes.Equal(got, body) {
		t.Errorf("whole read %q; want %q", got, body)
	}
	info, err := e.store.Stat(ctx, "2026/01/02/x.cast")
	if err != nil || info.Size != int64(len(body)) || info.Key != "2026/01/02/x.cast" || info.ModTime.IsZero() {
		t.Errorf("Stat = %+v, %v; want size %d", info, err, len(body))
	}
	for name, err := range map[string]error{
		"open":  func() error { _, err := e.store.Open(ctx, "nope.cast"); return err }(),
		"range": func() error { _, err := e.store.OpenRange(ctx, "nope.cast", 1, 2); return err }(),
		"stat":  func() error { _, err := e.store.Stat(ctx, "nope.cast"); return err }(),
	} {
		if !errors.Is(err, recorder.ErrNotFound) {
			t.Errorf("%s of a missing object: %v; want ErrNotFound", name, err)
		}
	}
	if err := e.store.Delete(ctx, "2026/01/02/x.cast"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Delete(ctx, "2026/01/02/x.cast"); err != nil {
		t.Errorf("deleting a missing object: %v", err)
	}
	// A Put of more than one part with an unknown size goes multipart.
	big := textChunk(rand.New(rand.NewPCG(3, 4)), 11<<20)
	if err := e.store.Put(ctx, "big.cast", bytes.NewReader(big), -1, recorder.ContentTypeCast); err != nil {
		t.Fatal(err)
	}
	if got := download(t, e.store, "big.cast"); !bytes.Equal(got, big) {
		t.Errorf("multipart put read back %d bytes differing from the %d put", len(got), len(big))
	}
	if err := e.store.Put(ctx, "short.cast", bytes.NewReader(body), 30, recorder.ContentTypeCast); err == nil {
		t.Error("put with a wrong size succeeded")
	}
}

// TestStartupErrors: wrong credentials, a missing bucket and credentials in
// the URL are clear errors naming the setting.
func TestStartupErrors(t *testing.T) {
	srv := s3test.Start(t)
	srv.CreateBucket(t, bucket)
	ctx := context.Background()
	tests := []struct {
		name   string
		secret string
		url    string
		want   string
	}{
		{name: "wrong credentials", secret: "not-the-secret", url: storeURL(srv, bucket, "rec"),
			want: `storage: bucket "recordings" does not exist or is not reachable with these credentials`},
		{name: "missing bucket", secret: srv.SecretKey(), url: storeURL(srv, "missing-bucket", "rec"),
			want: `storage: bucket "missing-bucket" does not exist or is not reachable with these credentials`},
		{name: "credentials in the URL", secret: srv.SecretKey(), url: "s3://AKIAEXAMPLE:supersecret@recordings/rec",
			want: "storage: credentials in the s3:// URL are not allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			awsEnv(t, srv.AccessKey(), tt.secret)
			_, err := recorder.OpenStore(ctx, tt.url)
			if err == nil {
				t.Fatal("OpenStore succeeded")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "supersecret") || strings.Contains(msg, tt.secret) {
				t.Errorf("error %q; want one line starting %q, without secrets", msg, tt.want)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		awsEnv(t, srv.AccessKey(), srv.SecretKey())
		st, err := recorder.OpenStore(ctx, storeURL(srv, bucket, "rec"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := st.(recorder.StreamingStore); !ok {
			t.Errorf("OpenStore(s3://) = %T; want a StreamingStore", st)
		}
	})
}

// TestOutageMidSession stops versitygw for more than 30 seconds in the
// middle of a session: the session keeps recording without waiting, the
// outage is audited and measured, and when S3 returns the object completes
// with every byte.
func TestOutageMidSession(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "carol", Target: "web-2", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 6))
	var written bytes.Buffer
	write := func(n int) time.Duration {
		p := textChunk(rng, n)
		start := time.Now()
		if err := s.Output(p); err != nil {
			t.Fatalf("output during the session after %v (store health %+v): %v", time.Since(start), e.store.Health(), err)
		}
		written.Write(p)
		return time.Since(start)
	}
	for written.Len() < 6<<20 {
		write(32 << 10)
	}
	cli := rawClient(t, srv)
	waitFor(t, time.Minute, "first part streamed", func() bool { return partsUploaded(ctx, cli) > 0 })

	srv.Stop()
	down := time.Now()
	// The session goes on while S3 is away: ~64 KiB every 100ms.
	var slowest time.Duration
	tick := time.NewTicker(100 * time.Millisecond)
	for range tick.C {
		slowest = max(slowest, write(64<<10))
		if h := e.store.Health(); h.Down && time.Since(down) > 31*time.Second {
			break
		}
		if time.Since(down) > 3*time.Minute {
			t.Fatal("the store never noticed the outage")
		}
	}
	tick.Stop()
	h := e.store.Health()
	if !h.Down || h.Backlog < s3storeMinPart || h.LastError == "" {
		t.Fatalf("health during the outage %+v; want down with a backlog over one part", h)
	}
	// Output waiting on S3 would have blocked for the whole outage and
	// failed with ErrOverflow after BlockTimeout (write fails the test);
	// how slow one call gets otherwise depends on the machine's disk and
	// CPU, so it is only logged.
	if got := metric(t, e.reg, "postern_s3_backlog_bytes"); got < s3storeMinPart {
		t.Errorf("postern_s3_backlog_bytes = %v during the outage; want over one part", got)
	}
	if got := metric(t, e.reg, "postern_s3_upload_errors_total"); got == 0 {
		t.Error("postern_s3_upload_errors_total = 0 during the outage")
	}
	if types := eventTypes(t, e.st); !contains(types, recorder.EventStorageOutage) {
		t.Errorf("audit events %v; want %s", types, recorder.EventStorageOutage)
	}

	if err := e.store.Check(ctx); err == nil {
		t.Error("Check succeeded while S3 is down")
	}
	srv.Restart(t)
	if err := e.store.Check(ctx); err != nil {
		t.Errorf("Check after the restart: %v", err)
	}
	if h := e.store.Health(); h.Down {
		t.Errorf("health after a successful Check %+v; want up", h)
	}
	write(1 << 10)
	finishIntact(t, e, s, written.Bytes())
	if h := e.store.Health(); h.Down || h.Backlog != 0 {
		t.Errorf("health after recovery %+v; want up, no backlog", h)
	}
	if types := eventTypes(t, e.st); !contains(types, recorder.EventStorageRecovered) {
		t.Errorf("audit events %v; want %s", types, recorder.EventStorageRecovered)
	}
	t.Logf("outage of %v: %d bytes recorded, slowest Output %v", time.Since(down).Round(time.Second), written.Len(), slowest)
}

const childEnv = "POSTERN_S3STORE_CHILD_DIR"

// TestSIGKILLRecover kills a recording process with SIGKILL in the middle
// of a streamed session; the next start's Recover aborts the stale
// multipart upload, stores the repaired spool, marks the session
// interrupted, and the object plays in asciinema.
func TestSIGKILLRecover(t *testing.T) {
	if dir := os.Getenv(childEnv); dir != "" {
		sigkillChild(t, dir)
		return
	}
	asciinema, err := exec.LookPath("asciinema")
	if err != nil {
		testutil.Missing(t, "asciinema is not installed (apt-get install asciinema)")
	}
	srv := startS3(t)
	dir := t.TempDir()
	u := storeURL(srv, bucket, "rec")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSIGKILLRecover$", "-test.v")
	cmd.Env = append(os.Environ(), childEnv+"="+dir, "POSTERN_S3STORE_CHILD_URL="+u)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var id string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "READY "); ok {
			id = rest
			break
		}
	}
	if id == "" {
		t.Fatalf("child never got ready: %v", sc.Err())
	}
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	go io.Copy(io.Discard, out)
	cmd.Wait()

	cli := rawClient(t, srv)
	ups, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 1 {
		t.Fatalf("got %d multipart uploads after the kill; want the 1 left behind", len(ups.Uploads))
	}

	e := newEnv(t, u, dir, testOpts)
	n, err := e.rec.Recover(ctx)
	if err != nil || n != 1 {
		t.Fatalf("Recover = %d, %v; want 1, nil", n, err)
	}
	row, err := e.st.GetSession(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != state.StatusInterrupted || row.SealSeq == 0 {
		t.Errorf("row status %s seal %d; want interrupted, sealed", row.Status, row.SealSeq)
	}
	ups, err = cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("got %d multipart uploads after recovery; want the stale one aborted", len(ups.Uploads))
	}
	obj := download(t, e.store, row.Object)
	if sha(obj) != row.SHA256 {
		t.Error("recovered object digest differs from the index")
	}
	want := childOutput()
	got := outputOf(t, obj)
	if len(got) < 7<<20 || !bytes.HasPrefix(want, got) {
		t.Errorf("recovered output is %d bytes; want a prefix of the %d written, at least the 7 MiB the child saw in its spool", len(got), len(want))
	}
	if !bytes.HasSuffix(bytes.TrimRight(obj, "\n"), []byte(`"m", "interrupted"]`)) && !bytes.Contains(obj[len(obj)-64:], []byte("interrupted")) {
		t.Errorf("recovered cast does not end with the interrupted marker: %q", obj[len(obj)-64:])
	}
	path := filepath.Join(t.TempDir(), "recovered.cast")
	if err := os.WriteFile(path, obj, 0o600); err != nil {
		t.Fatal(err)
	}
	play := exec.CommandContext(ctx, asciinema, "play", "-i", "0.01", path)
	play.Env = append(os.Environ(), "HOME="+t.TempDir())
	play.Stdout = io.Discard
	var stderr bytes.Buffer
	play.Stderr = &stderr
	if err := play.Run(); err != nil {
		t.Fatalf("asciinema play: %v\n%s", err, stderr.String())
	}
}

// childOutput is what the SIGKILL child writes: 7 MiB, then 64 KiB more.
func childOutput() []byte {
	rng := rand.New(rand.NewPCG(7, 8))
	var b bytes.Buffer
	for b.Len() < 7<<20+64<<10 {
		b.Write(textChunk(rng, 32<<10))
	}
	return b.Bytes()
}

// sigkillChild records into the S3 store until a part is in the bucket,
// says READY and waits to be killed.
func sigkillChild(t *testing.T, dir string) {
	e := newEnv(t, os.Getenv("POSTERN_S3STORE_CHILD_URL"), dir, testOpts)
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{ID: "sigkill-session", Identity: "dave", Target: "web-3", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	all := childOutput()
	first, rest := all[:7<<20], all[7<<20:]
	for p := first; len(p) > 0; p = p[min(len(p), 32<<10):] {
		if err := s.Output(p[:min(len(p), 32<<10)]); err != nil {
			t.Fatal(err)
		}
	}
	cli := rawClientAt(t)
	waitFor(t, 2*time.Minute, "a part stored", func() bool { return partsUploaded(ctx, cli) > 0 })
	// The recorder buffers up to BufferSize in memory; what the parent may
	// require after the kill is what reached the spool file.
	spool := filepath.Join(e.spool, s.ID()+".cast")
	waitFor(t, 2*time.Minute, "the first 7 MiB in the spool", func() bool { return spoolOutputLen(spool) >= len(first) })
	if err := s.Output(rest); err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("READY " + s.ID() + "\n")
	select {} // killed by the parent
}

// spoolOutputLen returns how many output bytes the complete events of the
// spool file at path hold (a partly written last line is ignored).
func spoolOutputLen(path string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	d := recorder.NewDecoder(f)
	if _, err := d.Header(); err != nil {
		return 0
	}
	n := 0
	for {
		ev, err := d.Next()
		if err != nil {
			return n
		}
		if ev.Code == "o" {
			n += len(ev.Data)
		}
	}
}

// partsUploaded returns how many parts the one multipart upload in the
// bucket has, 0 if there is none.
func partsUploaded(ctx context.Context, cli *s3.Client) int {
	ups, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil || len(ups.Uploads) != 1 {
		return 0
	}
	parts, err := cli.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(bucket), Key: ups.Uploads[0].Key, UploadId: ups.Uploads[0].UploadId})
	if err != nil {
		return 0
	}
	return len(parts.Parts)
}

// TestFinishDuringOutage ends a session while S3 is down: Finish returns
// ErrSealPending once its context ends, and the recording is stored and
// sealed in the background when S3 is back.
func TestFinishDuringOutage(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	t.Cleanup(func() { e.rec.Close() })
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "frank", Target: "web-5", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Output([]byte("last words\r\n")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	fctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Finish(fctx, recorder.Result{}); !errors.Is(err, recorder.ErrSealPending) {
		t.Fatalf("Finish during the outage: %v; want ErrSealPending", err)
	}
	if _, err := os.Stat(filepath.Join(e.spool, s.ID()+".cast")); err != nil {
		t.Fatalf("spool gone before the recording is stored: %v", err)
	}
	srv.Restart(t)
	var row state.Session
	waitFor(t, time.Minute, "the background seal", func() bool {
		row, err = e.st.GetSession(ctx, s.ID())
		return err == nil && row.SealSeq != 0
	})
	if row.Status != state.StatusFinished {
		t.Errorf("status %s; want finished", row.Status)
	}
	obj := download(t, e.store, row.Object)
	if got := string(outputOf(t, obj)); got != "last words\r\n" || sha(obj) != row.SHA256 {
		t.Errorf("stored output %q (sha %s); want %q with the sealed digest", got, sha(obj), "last words\r\n")
	}
	waitFor(t, 10*time.Second, "the spool removed", func() bool {
		_, err := os.Stat(filepath.Join(e.spool, s.ID()+".cast"))
		return errors.Is(err, os.ErrNotExist)
	})
}

// TestUploadVanishes aborts the session's multipart upload behind its
// back (as a lifecycle rule or another tool might): the upload starts again
// from the spool and the object is still whole.
func TestUploadVanishes(t *testing.T) {
	srv := startS3(t)
	e := newEnv(t, storeURL(srv, bucket, "rec"), "", testOpts)
	ctx := context.Background()
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "grace", Target: "web-6", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(11, 12))
	var written bytes.Buffer
	write := func(n int) {
		for end := written.Len() + n; written.Len() < end; {
			p := textChunk(rng, 32<<10)
			if err := s.Output(p); err != nil {
				t.Fatal(err)
			}
			written.Write(p)
		}
	}
	write(7 << 20)
	cli := rawClient(t, srv)
	waitFor(t, time.Minute, "a part streamed", func() bool { return partsUploaded(ctx, cli) > 0 })
	ups, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err != nil || len(ups.Uploads) != 1 {
		t.Fatalf("ListMultipartUploads = %v, %v; want one upload", ups, err)
	}
	if _, err := cli.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: ups.Uploads[0].Key, UploadId: ups.Uploads[0].UploadId}); err != nil {
		t.Fatal(err)
	}
	write(6 << 20)
	sealed, err := s.Finish(ctx, recorder.Result{})
	if err != nil {
		t.Fatal(err)
	}
	obj := download(t, e.store, sealed.Object)
	if got := outputOf(t, obj); !bytes.Equal(got, written.Bytes()) || sha(obj) != sealed.SHA256 {
		t.Fatalf("object output %d bytes (sha match %v); want the %d written", len(got), sha(obj) == sealed.SHA256, written.Len())
	}
}
