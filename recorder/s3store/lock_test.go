package s3store_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/posternhq/postern/recorder"
)

// TestObjectLockOnVersitygw stores a recording (multipart, over 6 MiB) and
// its metadata (one PUT) in a bucket created with Object Lock and reads
// their retention and tags back from versitygw.
func TestObjectLockOnVersitygw(t *testing.T) {
	srv := startS3(t)
	ctx := context.Background()
	cli := rawClient(t, srv)
	if _, err := cli.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String("locked"), ObjectLockEnabledForBucket: aws.Bool(true)}); err != nil {
		t.Fatalf("create bucket with object lock: %v", err)
	}
	u := storeURL(srv, "locked", "rec") + "&object_lock_mode=GOVERNANCE&object_lock_days=2&tags=team=sre"
	e := newEnv(t, u, "", testOpts)
	s, err := e.rec.Start(ctx, recorder.Meta{Identity: "erin", Target: "web-4", Kind: "shell"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Output(bytes.Repeat([]byte("locked\r\n"), 800_000)); err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Finish(ctx, recorder.Result{})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{sealed.Object, sealed.MetaObject} {
		ret, err := cli.GetObjectRetention(ctx, &s3.GetObjectRetentionInput{Bucket: aws.String("locked"), Key: aws.String("rec/" + key)})
		if err != nil {
			t.Fatalf("retention of %s: %v", key, err)
		}
		until := aws.ToTime(ret.Retention.RetainUntilDate)
		if ret.Retention.Mode != "GOVERNANCE" || until.Before(time.Now().Add(47*time.Hour)) || until.After(time.Now().Add(49*time.Hour)) {
			t.Errorf("retention of %s: %s until %v; want GOVERNANCE for 2 days", key, ret.Retention.Mode, until)
		}
		tags, err := cli.GetObjectTagging(ctx, &s3.GetObjectTaggingInput{Bucket: aws.String("locked"), Key: aws.String("rec/" + key)})
		if err != nil {
			t.Fatalf("tags of %s: %v", key, err)
		}
		if len(tags.TagSet) != 1 || aws.ToString(tags.TagSet[0].Key) != "team" || aws.ToString(tags.TagSet[0].Value) != "sre" {
			t.Errorf("tags of %s: %+v; want team=sre", key, tags.TagSet)
		}
	}
	// A retained object cannot be deleted without bypassing governance.
	if _, err := cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String("locked"), Key: aws.String("rec/" + sealed.Object)}); err == nil {
		if _, err := e.store.Stat(ctx, sealed.Object); err != nil {
			t.Errorf("a retained recording was deleted: %v", err)
		}
	}
}
