package s3store_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/recorder/s3store"
	"github.com/posternhq/postern/state"
)

// TestDeadReplicaCompletedFromCheckpoints: replica A streams a session
// larger than one part to S3 (parts end on cast line boundaries) and
// checkpoints the rest into the state store's journal, trimming what the
// parts hold; A then goes silent. Replica B, finding A's heartbeat stale,
// claims the session and completes A's multipart upload with the journal's
// tail: the stored cast holds everything A's session wrote, ends with an
// "interrupted" marker, and is sealed (digest verified, audit chain intact)
// by B. A, coming back, cannot seal it over B's.
func TestDeadReplicaCompletedFromCheckpoints(t *testing.T) {
	srv := startS3(t)
	dir := t.TempDir()
	opts := testOpts
	opts.PartDelimiter = '\n'
	url := storeURL(srv, bucket, "rec")
	a := newReplicaEnv(t, url, dir, opts, recorder.Options{Replica: "r-a", CheckpointInterval: 100 * time.Millisecond})
	b := newReplicaEnv(t, url, dir, opts, recorder.Options{Replica: "r-b", CheckpointInterval: 100 * time.Millisecond})
	ctx := context.Background()
	if err := a.st.Heartbeat(ctx, "r-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := a.rec.Start(ctx, recorder.Meta{Identity: "alice", Target: "web-1", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	var written bytes.Buffer
	for written.Len() < 6<<20 {
		p := textChunk(rng, 32<<10)
		if err := s.Output(p); err != nil {
			t.Fatal(err)
		}
		written.Write(p)
	}
	cli := rawClient(t, srv)
	parts := func() int {
		ups, err := cli.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket), Prefix: aws.String("rec/")})
		if err != nil || len(ups.Uploads) != 1 {
			return 0
		}
		ps, err := cli.ListParts(ctx, &s3.ListPartsInput{Bucket: aws.String(bucket), Key: ups.Uploads[0].Key, UploadId: ups.Uploads[0].UploadId})
		if err != nil {
			return 0
		}
		return len(ps.Parts)
	}
	waitFor(t, 2*time.Minute, "a part in the bucket", func() bool { return parts() >= 1 })
	tail := []byte("typed after the part was stored\r\n")
	if err := s.Output(tail); err != nil {
		t.Fatal(err)
	}
	written.Write(tail)
	// The journal holds the tail, and nothing the part holds.
	waitFor(t, time.Minute, "the tail checkpointed and the part trimmed", func() bool {
		j, err := a.st.Journal(ctx, s.ID())
		if err != nil || len(j) == 0 || j[0].Pos == 0 {
			return false
		}
		return bytes.Contains(j[len(j)-1].Data, []byte("typed after the part"))
	})
	// A stops here: no heartbeat, no more writes. B sees it dead.
	n, err := b.rec.RecoverDead(ctx, time.Now().Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("RecoverDead = %d, %v; want 1 session completed", n, err)
	}
	row, err := b.st.GetSession(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if row.Status != state.StatusInterrupted || row.Replica != "r-b" || row.SealSeq == 0 {
		t.Fatalf("row after recovery: status %s replica %s seal %d; want interrupted, r-b, sealed", row.Status, row.Replica, row.SealSeq)
	}
	obj := download(t, b.store, row.Object)
	if got := outputOf(t, obj); !bytes.Equal(got, written.Bytes()) {
		t.Fatalf("recovered output is %d bytes; want all %d written", len(got), written.Len())
	}
	if !bytes.HasSuffix(bytes.TrimSpace(obj), []byte(`"m", "interrupted"]`)) {
		t.Errorf("recovered cast does not end with the interrupted marker: %q", obj[max(0, len(obj)-80):])
	}
	if sha(obj) != row.SHA256 || int64(len(obj)) != row.Size {
		t.Error("stored object differs from the sealed digest")
	}
	if bad, err := recorder.VerifySessions(ctx, b.st, b.store); err != nil || len(bad) != 0 {
		t.Errorf("VerifySessions = %v, %v", bad, err)
	}
	if rep, err := b.st.Verify(ctx); err != nil || !rep.OK() {
		t.Errorf("audit chain: %+v, %v", rep, err)
	}
	if j, _ := b.st.Journal(ctx, s.ID()); len(j) != 0 {
		t.Errorf("journal left after recovery: %d entries", len(j))
	}
	if parts() != 0 {
		t.Error("a multipart upload is left in the bucket")
	}

	// A was only partitioned: when it finishes the session, B's recording
	// stays.
	if _, err := s.Finish(ctx, recorder.Result{}); err == nil || !strings.Contains(err.Error(), `replica "r-b"`) {
		t.Errorf("A's Finish after B completed the recording: %v; want a refusal naming r-b", err)
	}
	if again := download(t, b.store, row.Object); !bytes.Equal(again, obj) {
		t.Error("A's Finish replaced B's recording")
	}
}

// TestSmallSessionCompletedFromCheckpoints: a session far smaller than one
// part has no multipart upload at all; its recording lives only in A's
// spool and the journal, and B stores it whole from the journal.
func TestSmallSessionCompletedFromCheckpoints(t *testing.T) {
	srv := startS3(t)
	dir := t.TempDir()
	url := storeURL(srv, bucket, "rec")
	opts := testOpts
	opts.PartDelimiter = '\n'
	a := newReplicaEnv(t, url, dir, opts, recorder.Options{Replica: "r-a", CheckpointInterval: 100 * time.Millisecond})
	b := newReplicaEnv(t, url, dir, opts, recorder.Options{Replica: "r-b", CheckpointInterval: 100 * time.Millisecond})
	ctx := context.Background()
	if err := a.st.Heartbeat(ctx, "r-a", time.Now()); err != nil {
		t.Fatal(err)
	}
	s, err := a.rec.Start(ctx, recorder.Meta{Identity: "alice", Target: "web-1", Kind: "shell", Width: 100, Height: 30})
	if err != nil {
		t.Fatal(err)
	}
	var written bytes.Buffer
	for i := range 20 {
		line := []byte(strings.Repeat("x", i) + " line\r\n")
		if err := s.Output(line); err != nil {
			t.Fatal(err)
		}
		written.Write(line)
	}
	waitFor(t, time.Minute, "the session checkpointed", func() bool {
		j, err := a.st.Journal(ctx, s.ID())
		return err == nil && len(j) > 0 && bytes.Contains(j[len(j)-1].Data, []byte(strings.Repeat("x", 19)+" line"))
	})
	// A replica that is alive is not recovered.
	if n, err := b.rec.RecoverDead(ctx, time.Now().Add(-time.Minute)); err != nil || n != 0 {
		t.Fatalf("RecoverDead of a live replica = %d, %v; want 0", n, err)
	}
	n, err := b.rec.RecoverDead(ctx, time.Now().Add(time.Second))
	if err != nil || n != 1 {
		t.Fatalf("RecoverDead = %d, %v; want 1", n, err)
	}
	row, err := b.st.GetSession(ctx, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	obj := download(t, b.store, row.Object)
	if got := outputOf(t, obj); !bytes.Equal(got, written.Bytes()) {
		t.Fatalf("recovered output %q; want %q", got, written.Bytes())
	}
	dec := recorder.NewDecoder(bytes.NewReader(obj))
	h, err := dec.Header()
	if err != nil || h.Width != 100 || h.Height != 30 {
		t.Errorf("header %+v, %v; want 100x30", h, err)
	}
	if row.Status != state.StatusInterrupted || sha(obj) != row.SHA256 {
		t.Errorf("row %s / digest match %v", row.Status, sha(obj) == row.SHA256)
	}
	_ = s3store.MinPartSize
}
