package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// ErrNotFound reports an object that is not in the bucket.
var ErrNotFound = errors.New("object not found")

// MinPartSize is the smallest part S3 accepts (but for the last one).
const MinPartSize = 5 << 20

// Options tunes a Store. The zero value works.
type Options struct {
	// PartSize is the multipart part size; MinPartSize if zero (smaller
	// values are raised to it).
	PartSize int64
	// PartDelimiter, if not zero, makes a streamed upload end each part
	// (but the last) just after this byte, at or after PartSize bytes: the
	// recorder sets '\n' so that parts hold whole cast lines and a
	// checkpoint of the rest can complete the upload (Resume). Zero cuts
	// parts at exactly PartSize.
	PartDelimiter byte
	// MinBackoff is the first retry delay; 200ms if zero.
	MinBackoff time.Duration
	// MaxBackoff caps the retry delay; 5s if zero.
	MaxBackoff time.Duration
	// AttemptTimeout bounds one request; 2m if zero.
	AttemptTimeout time.Duration
	// Log receives the store's logs; discarded if nil.
	Log *slog.Logger
	// Now is the clock; time.Now if nil.
	Now func() time.Time
}

// Store is a bucket (and key prefix) holding recordings. Its methods are
// safe for concurrent use. It owns the goroutine of every [Upload] it
// begins.
type Store struct {
	cfg    Config
	opts   Options
	client *s3.Client
	m      *metrics
	log    atomic.Pointer[slog.Logger]

	mu       sync.Mutex
	uploads  map[*Upload]struct{}
	down     bool
	since    time.Time
	lastErr  string
	onHealth func(Health)
}

// Health is the store's view of the bucket.
type Health struct {
	// Down reports whether the last write failed with a transient error
	// (an outage is in progress).
	Down bool
	// Since is when the outage began (Down) or ended.
	Since time.Time
	// LastError describes the last failure (short, without credentials).
	LastError string
	// Backlog is the number of spooled bytes not yet in the bucket.
	Backlog int64
	// Uploads is the number of streaming uploads in progress.
	Uploads int
}

// OpenURL opens the store named by an s3:// URL (see [ParseURL]).
func OpenURL(ctx context.Context, raw string, opts Options) (*Store, error) {
	cfg, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	return Open(ctx, cfg, opts)
}

// Open connects to the bucket with credentials from the standard AWS
// chain and checks it with HeadBucket: a missing bucket or credentials
// that cannot reach it are an error naming the bucket.
func Open(ctx context.Context, cfg Config, opts Options) (*Store, error) {
	if opts.PartSize < MinPartSize {
		opts.PartSize = MinPartSize
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	opts.MaxBackoff = max(opts.MaxBackoff, opts.MinBackoff)
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = 2 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// The SDK's own logger would write to stderr; the store logs through
	// its slog logger instead.
	load := []func(*awsconfig.LoadOptions) error{awsconfig.WithLogger(logging.Nop{})}
	if cfg.Region != "" {
		load = append(load, awsconfig.WithRegion(cfg.Region))
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, load...)
	if err != nil {
		return nil, &setupError{msg: "storage: cannot load the AWS configuration (environment or shared config files)", err: err}
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	client := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
	})
	s := &Store{cfg: cfg, opts: opts, client: client, uploads: map[*Upload]struct{}{}}
	s.SetLogger(opts.Log)
	s.m = newMetrics(s)
	hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := client.HeadBucket(hctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, bucketError(cfg.Bucket, err)
	}
	return s, nil
}

// setupError is a start-up error: a short message for the operator and the
// cause for errors.Is/As.
type setupError struct {
	msg string
	err error
}

func (e *setupError) Error() string { return e.msg }
func (e *setupError) Unwrap() error { return e.err }

// httpStatus returns the HTTP status of a failed request, 0 if there was
// no answer (the SDK reports a failed send as a response error with status
// 0).
func httpStatus(err error) int {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

func bucketError(bucket string, err error) error {
	var reason string
	switch code := httpStatus(err); {
	case code == 404:
		reason = "HTTP 404: no such bucket"
	case code == 403 || code == 401:
		reason = fmt.Sprintf("HTTP %d: access denied", code)
	case code != 0:
		reason = fmt.Sprintf("HTTP %d", code)
	default:
		reason = "no answer: check endpoint, region and the AWS credential chain"
	}
	return &setupError{
		msg: fmt.Sprintf("storage: bucket %q does not exist or is not reachable with these credentials (%s)", bucket, reason),
		err: err,
	}
}

// SetLogger sets the store's logger (nil discards).
func (s *Store) SetLogger(l *slog.Logger) {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	s.log.Store(l.With("bucket", s.cfg.Bucket))
}

// OnHealth sets the function told when an outage begins (Down) and ends.
// It is called from upload goroutines, never with a lock held.
func (s *Store) OnHealth(fn func(Health)) {
	s.mu.Lock()
	s.onHealth = fn
	s.mu.Unlock()
}

// Health returns the store's current health and backlog.
func (s *Store) Health() Health {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := Health{Down: s.down, Since: s.since, LastError: s.lastErr, Uploads: len(s.uploads)}
	for u := range s.uploads {
		h.Backlog += u.backlog()
	}
	return h
}

// Check asks the bucket whether it answers (HeadBucket, no retries) and
// updates the outage state with the answer: a transient failure starts an
// outage, a success ends one. Readiness probes call it, so an outage that
// began while no recording was being written is still seen to end.
func (s *Store) Check(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)}, noRetry)
	switch {
	case err == nil:
		s.succeeded()
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("check bucket: %w", context.Cause(ctx))
	case retryable(err):
		s.failed("check", err)
	}
	return fmt.Errorf("check bucket %q: %s", s.cfg.Bucket, shortError(err))
}

// Bucket returns the bucket name.
func (s *Store) Bucket() string { return s.cfg.Bucket }

// Key returns the bucket key of a store key (the prefix joined).
func (s *Store) Key(key string) string { return s.cfg.key(key) }

// failed records a transient failure; the first one starts an outage.
func (s *Store) failed(op string, err error) {
	s.m.errors.WithLabelValues(op).Inc()
	msg := shortError(err)
	s.mu.Lock()
	s.lastErr = msg
	var fn func(Health)
	var h Health
	if !s.down {
		s.down, s.since = true, s.opts.Now()
		fn, h = s.onHealth, Health{Down: true, Since: s.since, LastError: msg}
	}
	s.mu.Unlock()
	if fn != nil || h.Down {
		s.m.outage.Set(1)
		s.log.Load().Warn("storage outage: retrying", "op", op, "err", msg)
	}
	if fn != nil {
		fn(h)
	}
}

// succeeded ends an outage.
func (s *Store) succeeded() {
	s.mu.Lock()
	if !s.down {
		s.mu.Unlock()
		return
	}
	began := s.since
	s.down, s.since = false, s.opts.Now()
	fn, h := s.onHealth, Health{Since: s.since, LastError: s.lastErr}
	s.mu.Unlock()
	s.m.outage.Set(0)
	s.log.Load().Info("storage recovered", "outage", h.Since.Sub(began).Round(time.Millisecond).String())
	if fn != nil {
		fn(h)
	}
}

// shortError describes err without request ids or URLs with queries.
func shortError(err error) string {
	var ae smithy.APIError
	code := httpStatus(err)
	switch {
	case errors.As(err, &ae) && code != 0:
		return fmt.Sprintf("%s (HTTP %d)", ae.ErrorCode(), code)
	case code != 0:
		return fmt.Sprintf("HTTP %d", code)
	case errors.As(err, &ae):
		return ae.ErrorCode()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + ue.URL[:strings.IndexAny(ue.URL+"?", "?")] + ": " + ue.Err.Error()
	}
	return "no answer from the S3 endpoint"
}

// retryable reports whether err is worth retrying: no answer, 5xx,
// throttling and timeouts.
func retryable(err error) bool {
	var p *permanent
	if errors.As(err, &p) {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
			"InternalError", "ServiceUnavailable", "RequestLimitExceeded":
			return true
		}
	}
	if c := httpStatus(err); c != 0 {
		return c >= 500 || c == 429 || c == 408
	}
	return true // no answer: network error, refused connection, timeout
}

// throttlesForOutage is how many throttling answers in a row for one write
// start an outage.
const throttlesForOutage = 3

// throttled reports whether err is S3 asking the client to slow down.
func throttled(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded":
			return true
		}
	}
	return httpStatus(err) == 429
}

// noRetry turns off the SDK's own retries: writes retry in [Store.retry].
func noRetry(o *s3.Options) { o.Retryer = aws.NopRetryer{} }

// retry runs fn until it succeeds, fails for good or ctx ends, waiting
// with capped exponential backoff and jitter between transient failures.
func (s *Store) retry(ctx context.Context, op string, fn func(context.Context) error) error {
	backoff := s.opts.MinBackoff
	throttles := 0
	for failed := false; ; failed = true {
		actx, cancel := context.WithTimeout(ctx, s.opts.AttemptTimeout)
		var err error
		if failed {
			// While S3 is away, a cheap HeadBucket asks whether it is back
			// before a part is read, hashed and sent again.
			_, err = s.client.HeadBucket(actx, &s3.HeadBucketInput{Bucket: aws.String(s.cfg.Bucket)}, noRetry)
		}
		if err == nil {
			err = fn(actx)
		}
		cancel()
		if err == nil {
			s.succeeded()
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", op, context.Cause(ctx))
		}
		if !retryable(err) {
			s.m.errors.WithLabelValues(op).Inc()
			return fmt.Errorf("%s: %w", op, err)
		}
		if throttled(err) {
			// S3 asks this client to slow down: back off and try again.
			// Only throttling that persists is an outage; single
			// SlowDowns are routine at high request rates and would
			// otherwise fill the audit log with outage/recovered pairs.
			s.m.throttled.WithLabelValues(op).Inc()
			if throttles++; throttles < throttlesForOutage {
				s.m.errors.WithLabelValues(op).Inc()
				s.log.Load().Debug("storage throttled: retrying", "op", op, "err", shortError(err))
			} else {
				s.failed(op, err)
			}
		} else {
			s.failed(op, err)
		}
		// Equal jitter: half the backoff fixed, half random.
		d := backoff/2 + rand.N(backoff/2+1)
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, context.Cause(ctx))
		}
		backoff = min(backoff*2, s.opts.MaxBackoff)
	}
}

// tagging returns the URL-encoded tag set of every object written.
func (s *Store) tagging() *string {
	if len(s.cfg.Tags) == 0 {
		return nil
	}
	keys := make([]string, 0, len(s.cfg.Tags))
	for k := range s.cfg.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	v := url.Values{}
	for _, k := range keys {
		v.Set(k, s.cfg.Tags[k])
	}
	return aws.String(v.Encode())
}

// retainUntil returns the Object Lock retention date of an object
// written now, nil without Object Lock.
func (s *Store) retainUntil() *time.Time {
	if s.cfg.ObjectLockMode == "" {
		return nil
	}
	t := s.opts.Now().UTC().AddDate(0, 0, s.cfg.ObjectLockDays)
	return &t
}

func (s *Store) putInput(key string, body io.ReadSeeker, size int64, contentType string) *s3.PutObjectInput {
	in := &s3.PutObjectInput{
		Bucket: aws.String(s.cfg.Bucket), Key: aws.String(key), Body: body,
		ContentLength: aws.Int64(size), ContentType: aws.String(contentType),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
		Tagging:           s.tagging(),
	}
	if s.cfg.SSE != "" {
		in.ServerSideEncryption = types.ServerSideEncryption(s.cfg.SSE)
	}
	if s.cfg.KMSKeyID != "" {
		in.SSEKMSKeyId = aws.String(s.cfg.KMSKeyID)
	}
	if s.cfg.StorageClass != "" {
		in.StorageClass = types.StorageClass(s.cfg.StorageClass)
	}
	if s.cfg.ObjectLockMode != "" {
		in.ObjectLockMode = types.ObjectLockMode(s.cfg.ObjectLockMode)
		in.ObjectLockRetainUntilDate = s.retainUntil()
	}
	return in
}

// putObject stores size bytes from body() (a fresh reader for each
// attempt) under the bucket key with one PUT, retrying.
func (s *Store) putObject(ctx context.Context, key string, body func() io.ReadSeeker, size int64, contentType string) error {
	start := time.Now()
	defer func() { s.m.upload.WithLabelValues("put").Observe(time.Since(start).Seconds()) }()
	return s.retry(ctx, "put", func(ctx context.Context) error {
		_, err := s.client.PutObject(ctx, s.putInput(key, body(), size, contentType), noRetry)
		return err
	})
}

// Put stores size bytes from r under key (a negative size means unknown):
// with one PUT up to PartSize, as a multipart upload beyond. Transient
// failures are retried until ctx ends; the object appears whole or not at
// all.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	full := s.cfg.key(key)
	first := s.opts.PartSize
	if size >= 0 && size < first {
		first = size
	}
	buf := make([]byte, first)
	n, err := io.ReadFull(r, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("put %s: read: %w", key, err)
	}
	buf = buf[:n]
	if int64(n) < s.opts.PartSize && (size < 0 || int64(n) == size) {
		if size >= 0 && !drained(r) {
			return fmt.Errorf("put %s: more than %d bytes", key, size)
		}
		if size >= 0 && int64(n) != size {
			return fmt.Errorf("put %s: read %d bytes; want %d", key, n, size)
		}
		if err := s.putObject(ctx, full, bytesBody(buf), int64(len(buf)), contentType); err != nil {
			return fmt.Errorf("put %s: %w", key, err)
		}
		return nil
	}
	if size >= 0 && int64(n) < first {
		return fmt.Errorf("put %s: read %d bytes; want %d", key, n, size)
	}
	// Multipart: buf holds the first full part.
	m := &multipart{s: s, key: full, contentType: contentType}
	total := int64(0)
	part := make([]byte, s.opts.PartSize)
	copy(part, buf)
	pn := n
	for {
		if err := m.send(ctx, bytesBody(part[:pn]), int64(pn)); err != nil {
			m.abort()
			return fmt.Errorf("put %s: %w", key, err)
		}
		total += int64(pn)
		pn, err = io.ReadFull(r, part)
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			m.abort()
			return fmt.Errorf("put %s: read: %w", key, err)
		}
		if pn == 0 {
			break
		}
	}
	if size >= 0 && total != size {
		m.abort()
		return fmt.Errorf("put %s: read %d bytes; want %d", key, total, size)
	}
	if err := m.complete(ctx); err != nil {
		m.abort()
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// drained reports whether r has nothing more to read.
func drained(r io.Reader) bool {
	var b [1]byte
	n, _ := io.ReadFull(r, b[:])
	return n == 0
}

func notFound(key string, err error) error {
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	if errors.As(err, &nsk) || errors.As(err, &nf) || httpStatus(err) == 404 {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", key, err)
}

// Open returns the object's contents; the error wraps ErrNotFound if it
// does not exist.
func (s *Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.cfg.key(key))})
	if err != nil {
		return nil, notFound(key, err)
	}
	return out.Body, nil
}

// OpenRange returns n bytes of the object from offset off (to the end if
// n < 0). A range past the end reads nothing.
func (s *Store) OpenRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("open %s: negative offset", key)
	}
	if n == 0 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	rng := fmt.Sprintf("bytes=%d-", off)
	if n > 0 {
		rng = fmt.Sprintf("bytes=%d-%d", off, off+n-1)
	}
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.cfg.key(key)), Range: aws.String(rng)})
	if httpStatus(err) == 416 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	if err != nil {
		return nil, notFound(key, err)
	}
	return out.Body, nil
}

// Info describes a stored object.
type Info struct {
	// Key is the object's store key (without the prefix).
	Key string
	// Size is its length in bytes.
	Size int64
	// ModTime is when it was last written.
	ModTime time.Time
	// ContentType is its content type.
	ContentType string
}

// Stat describes the object.
func (s *Store) Stat(ctx context.Context, key string) (Info, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.cfg.key(key))})
	if err != nil {
		return Info{}, notFound(key, err)
	}
	info := Info{Key: key, Size: aws.ToInt64(out.ContentLength), ContentType: aws.ToString(out.ContentType)}
	if out.LastModified != nil {
		info.ModTime = *out.LastModified
	}
	return info, nil
}

// Delete removes the object; deleting a missing object is not an error.
// Under Object Lock a retained object cannot be deleted.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.cfg.key(key))})
	if err != nil {
		if errors.Is(notFound(key, err), ErrNotFound) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List returns the keys (without the store's prefix) of the objects under
// prefix, a slash-separated "directory", sorted.
func (s *Store) List(ctx context.Context, prefix string) ([]string, error) {
	full := s.cfg.key(strings.Trim(prefix, "/")) + "/"
	strip := len(s.cfg.key("")) // "prefix/", or nothing
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)}
	var keys []string
	for p := s3.NewListObjectsV2Paginator(s.client, in); p.HasMorePages(); {
		out, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list %s: %s", prefix, shortError(err))
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key)[strip:])
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// Version is one version of an object in a versioned bucket (S3 Object
// Lock needs versioning): an overwrite adds a version and a delete adds a
// delete marker, while the retained versions stay.
type Version struct {
	// Key is the object's key, without the store's prefix.
	Key string
	// ID is the version id ("null" in a bucket without versioning).
	ID string
	// DeleteMarker reports whether this version is a delete marker.
	DeleteMarker bool
	// Latest reports whether it is the current version.
	Latest bool
}

// ListVersions returns every version of the objects under prefix,
// including delete markers, by key.
func (s *Store) ListVersions(ctx context.Context, prefix string) ([]Version, error) {
	full := s.cfg.key(strings.Trim(prefix, "/")) + "/"
	strip := len(s.cfg.key(""))
	in := &s3.ListObjectVersionsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)}
	var out []Version
	for p := s3.NewListObjectVersionsPaginator(s.client, in); p.HasMorePages(); {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list versions of %s: %s", prefix, shortError(err))
		}
		for _, v := range page.Versions {
			out = append(out, Version{Key: aws.ToString(v.Key)[strip:], ID: aws.ToString(v.VersionId), Latest: aws.ToBool(v.IsLatest)})
		}
		for _, m := range page.DeleteMarkers {
			out = append(out, Version{Key: aws.ToString(m.Key)[strip:], ID: aws.ToString(m.VersionId), Latest: aws.ToBool(m.IsLatest), DeleteMarker: true})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// OpenVersion returns the contents of one version of an object.
func (s *Store) OpenVersion(ctx context.Context, key, id string) (io.ReadCloser, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: aws.String(s.cfg.key(key)), VersionId: aws.String(id)})
	if err != nil {
		return nil, notFound(key, err)
	}
	return out.Body, nil
}

// AbortUploads aborts every unfinished multipart upload of key (what a
// crashed run left behind) and returns how many it aborted.
func (s *Store) AbortUploads(ctx context.Context, key string) (int, error) {
	full := s.cfg.key(key)
	in := &s3.ListMultipartUploadsInput{Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(full)}
	n := 0
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return n, fmt.Errorf("list multipart uploads of %s: %w", key, err)
		}
		for _, u := range out.Uploads {
			if aws.ToString(u.Key) != full {
				continue
			}
			_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(s.cfg.Bucket), Key: u.Key, UploadId: u.UploadId})
			if err != nil && !isNoSuchUpload(err) {
				return n, fmt.Errorf("abort multipart upload of %s: %w", key, err)
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

func isNoSuchUpload(err error) bool {
	var nsu *types.NoSuchUpload
	var ae smithy.APIError
	return errors.As(err, &nsu) || (errors.As(err, &ae) && ae.ErrorCode() == "NoSuchUpload")
}
