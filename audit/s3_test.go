package audit_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/internal/s3test"
	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// startS3 starts versitygw, points the AWS credential chain at it and
// returns it with a plain client.
func startS3(t *testing.T) (*s3test.Server, *s3.Client) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts versitygw")
	}
	srv := s3test.Start(t)
	srv.SetAWSEnv(t)
	cfg, err := awsconfig.LoadDefaultConfig(context.Background(), awsconfig.WithRegion(srv.Region()))
	if err != nil {
		t.Fatal(err)
	}
	cli := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(srv.Endpoint())
		o.UsePathStyle = true
	})
	return srv, cli
}

func s3URL(srv *s3test.Server, bucket, prefix, extra string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=%s&path_style=true&region=%s%s", bucket, prefix, url.QueryEscape(srv.Endpoint()), srv.Region(), extra)
}

// lockedBucket creates a bucket with S3 Object Lock (versioned, as Object
// Lock needs) and returns a recording store on it whose objects are
// retained in COMPLIANCE mode for a day.
func lockedBucket(t *testing.T, srv *s3test.Server, cli *s3.Client, name string) recorder.Store {
	t.Helper()
	ctx := context.Background()
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create bucket with object lock: %v", err)
	}
	st, err := recorder.OpenStore(ctx, s3URL(srv, name, "rec", "&object_lock_mode=COMPLIANCE&object_lock_days=1"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAnchorsInLockedBucket: checkpoints anchored in a bucket with Object
// Lock in compliance mode cannot be removed, even by someone who can write
// to the bucket and to PostgreSQL: their overwrites and deletes only add
// versions and delete markers, the retained versions are read back, and
// the rewritten chain is found. An S3 outage delays anchoring; the
// checkpoint is anchored when S3 returns.
func TestAnchorsInLockedBucket(t *testing.T) {
	t.Setenv("VGW_VERSIONING_DIR", t.TempDir())
	srv, cli := startS3(t)
	ctx := context.Background()
	e := newEnvStore(t, "postgres", lockedBucket(t, srv, cli, "evidence"))
	alice, _, _ := populate(t, e)
	mustBeIntact(t, e.verify())

	keys, err := e.store.List(ctx, audit.CheckpointPrefix)
	if err != nil || len(keys) != 2 {
		t.Fatalf("anchored checkpoints %v, %v; want 2", keys, err)
	}
	row, _ := e.st.GetSession(ctx, alice)
	for _, k := range []string{keys[0], row.Object} {
		ret, err := cli.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("evidence"), Key: aws.String("rec/" + k)})
		if err != nil || ret.Retention.Mode != "COMPLIANCE" || aws.ToTime(ret.Retention.RetainUntilDate).Before(time.Now().Add(23*time.Hour)) {
			t.Errorf("retention of %s: %+v, %v; want COMPLIANCE for a day", k, ret, err)
		}
	}
	// A retained version cannot be deleted, not even bypassing governance.
	vs, err := cli.ListObjectVersions(ctx, &s3.ListObjectVersionsInput{Bucket: aws.String("evidence"), Prefix: aws.String("rec/" + keys[0])})
	if err != nil || len(vs.Versions) != 1 {
		t.Fatalf("versions of %s: %v", keys[0], err)
	}
	if _, err := cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("evidence"), Key: aws.String("rec/" + keys[0]),
		VersionId: vs.Versions[0].VersionId, BypassGovernanceRetention: aws.Bool(true)}); err == nil {
		t.Fatal("a version under COMPLIANCE retention was deleted")
	}

	// The attacker: rewrite the chain in PostgreSQL, drop its checkpoints,
	// and delete or overwrite every anchored checkpoint in the bucket.
	e.rewriteChain(func(ev *state.Event) bool {
		if ev.Actor == "alice" {
			ev.Actor = "mallory"
		}
		return true
	})
	e.exec(`DELETE FROM audit_checkpoints`)
	if _, err := cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("evidence"), Key: aws.String("rec/" + keys[0])}); err != nil {
		t.Fatalf("add a delete marker: %v", err)
	}
	forged := `{"record":"{\"record\":\"checkpoint\",\"seq\":12}","key":"` + e.key.KeyID() + `","sig":"AAAA"}`
	if _, err := cli.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("evidence"), Key: aws.String("rec/" + keys[1]), Body: strings.NewReader(forged)}); err != nil {
		t.Fatalf("overwrite: %v", err)
	}
	if cur, _ := e.store.List(ctx, audit.CheckpointPrefix); len(cur) != 1 {
		t.Fatalf("current checkpoints after the attack: %v; want the overwritten one only", cur)
	}
	rep := e.verify()
	t.Logf("problems:\n  %s\nnotes:\n  %s", strings.Join(rep.Problems, "\n  "), strings.Join(rep.Notes, "\n  "))
	wantProblem(t, rep, "storage "+keys[0], "differs from the checkpoint signed", "were rewritten")
	wantProblem(t, rep, "storage "+keys[1], "signature does not verify")
	wantProblem(t, rep, "audit file", "differs from the chain's event")
	if !strings.Contains(strings.Join(rep.Notes, "\n"), keys[0]+" was deleted (delete marker") {
		t.Errorf("notes %q; want the delete marker noted", rep.Notes)
	}
}

// TestAnchorDuringOutage: while the bucket does not answer, checkpoints
// are taken and kept in the state store, unanchored; the first checkpoint
// after S3 returns anchors them all, in order.
func TestAnchorDuringOutage(t *testing.T) {
	srv, cli := startS3(t)
	ctx := context.Background()
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("plain")}); err != nil {
		t.Fatal(err)
	}
	st, err := recorder.OpenStore(ctx, s3URL(srv, "plain", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvStore(t, "sqlite", st)
	e.record("alice", "web-1")
	e.checkpoint()
	srv.Stop()
	e.event(state.EventAuthSuccess, "bob")
	actx, cancel := context.WithTimeout(ctx, 3*time.Second)
	_, took, err := e.cp.Checkpoint(actx, true)
	cancel()
	if !took || err == nil {
		t.Fatalf("checkpoint during the outage: took %v, err %v; want taken, anchoring failed", took, err)
	}
	if pending, _ := e.st.UnanchoredCheckpoints(ctx, 0); len(pending) != 1 {
		t.Fatalf("unanchored during the outage: %d; want 1", len(pending))
	}
	srv.Restart(t)
	e.event(state.EventAuthSuccess, "carol")
	e.checkpoint()
	if pending, _ := e.st.UnanchoredCheckpoints(ctx, 0); len(pending) != 0 {
		t.Fatalf("unanchored after S3 returned: %d", len(pending))
	}
	keys, _ := e.store.List(ctx, audit.CheckpointPrefix)
	if len(keys) != 3 {
		t.Errorf("anchored %v; want all 3 checkpoints", keys)
	}
	mustBeIntact(t, e.verify())
}

// TestExportToS3: the export writes one JSONL object per pass holding the
// events since the last, ending with a signed checkpoint of its last
// event; the objects chain, and their checkpoints check the store. One
// replica at a time holds the export's lease.
func TestExportToS3(t *testing.T) {
	srv, cli := startS3(t)
	ctx := context.Background()
	exportStore := lockedBucket(t, srv, cli, "audit-export")
	e := newEnv(t, "postgres")
	newExporter := func(owner string) *audit.Exporter {
		x, err := audit.NewExporter(audit.ExporterOptions{State: e.st, Signer: e.key, Owner: owner, S3: exportStore, Window: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	a, b := newExporter("replica-a"), newExporter("replica-b")
	e.record("alice", "web-1")
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	e.record("bob", "db-1")
	e.event(state.EventAuthSuccess, "bob")
	if err := b.Flush(ctx); err != nil { // a holds the lease: b exports nothing
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil { // nothing new: no object
		t.Fatal(err)
	}
	keys, err := exportStore.List(ctx, audit.ExportPrefix)
	if err != nil || len(keys) != 2 {
		t.Fatalf("export objects %v, %v; want 2", keys, err)
	}
	var checkpoints []audit.FoundCheckpoint
	prevHash, next := state.GenesisPrev, int64(1)
	for _, k := range keys {
		if !strings.Contains(k, fmt.Sprintf("-%012d-", next)) {
			t.Errorf("object %s does not start at seq %d", k, next)
		}
		rc, err := exportStore.Open(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(rc)
		rc.Close()
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		for _, l := range lines[:len(lines)-1] {
			var ev state.Event
			dec := json.NewDecoder(strings.NewReader(l))
			dec.UseNumber()
			if err := dec.Decode(&ev); err != nil {
				t.Fatal(err)
			}
			if h, _ := state.Hash(ev); ev.Seq != next || ev.Prev != prevHash || h != ev.Hash {
				t.Fatalf("%s: event %d does not chain", k, ev.Seq)
			}
			prevHash, next = ev.Hash, next+1
		}
		path := filepath.Join(t.TempDir(), "obj.jsonl")
		os.WriteFile(path, body, 0o600)
		cps, err := audit.ReadCheckpoints(path)
		if err != nil || len(cps) != 1 {
			t.Fatalf("%s: checkpoints %v, %v", k, cps, err)
		}
		var cp audit.Checkpoint
		if err := e.keys.Open(cps[0].Envelope, &cp); err != nil || cp.Seq != next-1 || cp.Hash != prevHash {
			t.Fatalf("%s: the last line is not a signed checkpoint of seq %d: %+v, %v", k, next-1, cp, err)
		}
		checkpoints = append(checkpoints, cps...)
	}
	head, _, _ := e.st.Head(ctx)
	if next-1 != head {
		t.Errorf("exported up to seq %d; head is %d", next-1, head)
	}
	// The export's checkpoints check the store like any other.
	rep, err := audit.Verify(ctx, e.source(), audit.VerifyOptions{Keys: e.keys, Checkpoints: checkpoints})
	if err != nil {
		t.Fatal(err)
	}
	mustBeIntact(t, rep)
	if rep.Covered != head {
		t.Errorf("covered to %d by the export's checkpoints; want %d", rep.Covered, head)
	}
}
