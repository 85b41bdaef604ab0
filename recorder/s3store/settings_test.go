package s3store_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/recorder/s3store"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name    string
		url     string
		want    s3store.Config
		wantErr string
	}{
		{name: "bucket only", url: "s3://rec", want: s3store.Config{Bucket: "rec"}},
		{name: "everything", url: "s3://rec/a/b/?region=eu-west-1&endpoint=https://s3.example.com&path_style=true&sse=aws:kms&kms_key_id=k1&storage_class=standard_ia&tags=team=sre,env=prod&object_lock_mode=governance&object_lock_days=30",
			want: s3store.Config{Bucket: "rec", Prefix: "a/b", Region: "eu-west-1", Endpoint: "https://s3.example.com", PathStyle: true,
				SSE: "aws:kms", KMSKeyID: "k1", StorageClass: "STANDARD_IA", Tags: map[string]string{"team": "sre", "env": "prod"},
				ObjectLockMode: "GOVERNANCE", ObjectLockDays: 30}},
		{name: "sse-s3", url: "s3://rec?sse=AES256", want: s3store.Config{Bucket: "rec", SSE: "AES256"}},
		{name: "credentials", url: "s3://AKIA:secret@rec/p", wantErr: "credentials in the s3:// URL are not allowed"},
		{name: "credentials in endpoint", url: "s3://rec?endpoint=http://a:b@host:9000", wantErr: "credentials in the endpoint URL"},
		{name: "no bucket", url: "s3:///p", wantErr: "has no bucket"},
		{name: "unknown setting", url: "s3://rec?acl=public", wantErr: `unknown s3 setting "acl"`},
		{name: "bad path style", url: "s3://rec?path_style=maybe", wantErr: "path_style"},
		{name: "bad sse", url: "s3://rec?sse=rot13", wantErr: "sse"},
		{name: "kms key without kms", url: "s3://rec?kms_key_id=k", wantErr: "kms_key_id needs sse=aws:kms"},
		{name: "bad lock mode", url: "s3://rec?object_lock_mode=forever&object_lock_days=1", wantErr: "object_lock_mode"},
		{name: "lock without days", url: "s3://rec?object_lock_mode=COMPLIANCE", wantErr: "go together"},
		{name: "bad days", url: "s3://rec?object_lock_mode=COMPLIANCE&object_lock_days=-3", wantErr: "object_lock_days"},
		{name: "bad tags", url: "s3://rec?tags=novalue", wantErr: "tags"},
		{name: "bad endpoint", url: "s3://rec?endpoint=ftp://x", wantErr: "endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s3store.ParseURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v; want error with %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q leaks the secret", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

// s3Recorder is an S3-compatible endpoint that answers just enough for
// the store's writes and records the request headers.
type s3Recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	method, path, query string
	hdr                 http.Header
}

func (rec *s3Recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	rec.mu.Lock()
	rec.reqs = append(rec.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone()})
	rec.mu.Unlock()
	q := r.URL.Query()
	w.Header().Set("ETag", `"0123456789abcdef0123456789abcdef"`)
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up-1</UploadId></InitiateMultipartUploadResult>`)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"x-2"</ETag></CompleteMultipartUploadResult>`)
	}
}

func (rec *s3Recorder) find(method, query string) []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var out []recorded
	for _, r := range rec.reqs {
		if r.method == method && strings.Contains(r.query, query) {
			out = append(out, r)
		}
	}
	return out
}

// TestObjectSettingsSent checks the encryption, storage class, tags and
// Object Lock headers on single PUTs and multipart uploads. versitygw's
// posix backend does not implement SSE or storage classes, so this test
// records the requests an S3-compatible endpoint receives instead.
func TestObjectSettingsSent(t *testing.T) {
	rec := &s3Recorder{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	awsEnv(t, "AKIDTEST", "test-secret")
	u := "s3://rec/pre?path_style=true&region=us-east-1&endpoint=" + url.QueryEscape(srv.URL) +
		"&sse=aws:kms&kms_key_id=key-1&storage_class=STANDARD_IA&tags=team=sre,env=prod&object_lock_mode=COMPLIANCE&object_lock_days=7"
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	opts := testOpts
	opts.Now = func() time.Time { return now }
	st, err := s3store.OpenURL(context.Background(), u, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := st.Put(ctx, "2026/03/04/a.json", strings.NewReader("{}"), 2, "application/json"); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), s3store.MinPartSize+10)
	if err := st.Put(ctx, "2026/03/04/a.cast", bytes.NewReader(big), int64(len(big)), "application/x-asciicast"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"X-Amz-Server-Side-Encryption":                "aws:kms",
		"X-Amz-Server-Side-Encryption-Aws-Kms-Key-Id": "key-1",
		"X-Amz-Storage-Class":                         "STANDARD_IA",
		"X-Amz-Tagging":                               "env=prod&team=sre",
		"X-Amz-Object-Lock-Mode":                      "COMPLIANCE",
		"X-Amz-Object-Lock-Retain-Until-Date":         "2026-03-11T05:06:07Z",
	}
	puts := rec.find(http.MethodPut, "x-id=PutObject")
	creates := rec.find(http.MethodPost, "uploads")
	parts := rec.find(http.MethodPut, "partNumber=")
	if len(puts) != 1 || len(creates) != 1 || len(parts) != 2 || len(rec.find(http.MethodPost, "uploadId=up-1")) != 1 {
		t.Fatalf("got %d PUTs, %d creates, %d parts; want 1, 1, 2 and one complete", len(puts), len(creates), len(parts))
	}
	for _, r := range []recorded{puts[0], creates[0]} {
		if r.path != "/rec/pre/2026/03/04/a.json" && r.path != "/rec/pre/2026/03/04/a.cast" {
			t.Errorf("request path %s; want the key under the prefix", r.path)
		}
		for k, v := range want {
			if got := r.hdr.Get(k); got != v {
				t.Errorf("%s %s: %s = %q; want %q", r.method, r.path, k, got, v)
			}
		}
	}
	if ct := puts[0].hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("PUT Content-Type %q; want application/json", ct)
	}
	if ct := creates[0].hdr.Get("Content-Type"); ct != "application/x-asciicast" {
		t.Errorf("multipart Content-Type %q; want application/x-asciicast", ct)
	}
	if puts[0].hdr.Get("Authorization") == "" || strings.Contains(puts[0].hdr.Get("Authorization"), "test-secret") {
		t.Error("requests must be signed (and never carry the secret)")
	}
}
