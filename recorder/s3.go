package recorder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/posternhq/postern/audit"
	"github.com/posternhq/postern/recorder/s3store"
	"github.com/posternhq/postern/state"
)

// StreamingStore is a Store that takes a recording while it is written.
// The recorder detects it: each session's spool is handed to Begin at
// Start, told of every write with Upload.Grow, and completed at Finish,
// so only the tail is left to send when a session ends.
type StreamingStore interface {
	Store
	// Begin starts storing key from the spool file at path, which holds
	// size bytes now and grows. It must not wait for the network.
	Begin(ctx context.Context, key, path string, size int64) (Upload, error)
	// AbortUploads abandons the unfinished streamed uploads of key that a
	// crashed run left behind.
	AbortUploads(ctx context.Context, key string) error
}

// Upload is one recording being streamed to a StreamingStore.
type Upload interface {
	// Grow reports that the spool now holds size bytes; it never blocks.
	Grow(size int64)
	// Complete stores the rest of the spool, final at size bytes, and
	// makes the object appear. If ctx ends first the upload is abandoned
	// and the spool must be stored another way.
	Complete(ctx context.Context, size int64) error
	// Abort abandons the upload.
	Abort(ctx context.Context) error
	// Durable returns how many bytes of the spool the store already
	// holds for good (completed parts); they end on a line boundary.
	Durable() int64
}

// Resumer is a StreamingStore whose unfinished uploads outlive the process
// that began them (S3 multipart uploads), so that another replica can
// complete a recording a dead one was streaming.
type Resumer interface {
	// Resume takes over the unfinished upload of key; the error wraps
	// ErrNotFound if there is none.
	Resume(ctx context.Context, key string) (ResumedUpload, error)
}

// ResumedUpload is an upload taken over by Resume.
type ResumedUpload interface {
	// Size returns how many bytes the upload holds; they end on a line
	// boundary.
	Size() int64
	// Complete appends n bytes from body() (a fresh reader per attempt)
	// and makes the object appear.
	Complete(ctx context.Context, body func() io.ReadSeeker, n int64) error
	// Abort abandons the upload.
	Abort()
}

// StorageHealth is a store's view of its backend.
type StorageHealth struct {
	// Down reports whether writes are failing and being retried.
	Down bool
	// Since is when the outage began (Down) or last ended.
	Since time.Time
	// LastError describes the last failure (short, no credentials).
	LastError string
	// Backlog is the number of spooled bytes not yet stored.
	Backlog int64
	// Uploads is the number of recordings being streamed.
	Uploads int
}

// HealthReporter is implemented by stores that can be unreachable (S3).
type HealthReporter interface {
	// Check asks the backend whether it answers now and updates Health.
	Check(ctx context.Context) error
	// Health returns the current health and backlog.
	Health() StorageHealth
	// OnHealth sets the function called when an outage begins or ends.
	OnHealth(fn func(StorageHealth))
}

// Audit event types of the storage backend.
const (
	// EventStorageOutage is appended when writes to the store start failing.
	EventStorageOutage = "storage.outage"
	// EventStorageRecovered is appended when they succeed again.
	EventStorageRecovered = "storage.recovered"
)

// S3Store is the recording Store in an S3 bucket: an [s3store.Store]
// seen through the Store, StreamingStore and HealthReporter interfaces.
// It is also a prometheus.Collector (postern_s3_* metrics), registered by
// New on Options.Metrics.
type S3Store struct {
	s *s3store.Store
}

var (
	_ StreamingStore       = (*S3Store)(nil)
	_ Resumer              = (*S3Store)(nil)
	_ HealthReporter       = (*S3Store)(nil)
	_ prometheus.Collector = (*S3Store)(nil)
)

// NewS3Store returns st as a recording Store.
func NewS3Store(st *s3store.Store) *S3Store { return &S3Store{s: st} }

// Bucket returns the underlying bucket store.
func (a *S3Store) Bucket() *s3store.Store { return a.s }

func s3Err(key string, err error) error {
	if errors.Is(err, s3store.ErrNotFound) {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return err
}

// Put stores size bytes from r under key.
func (a *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error {
	return a.s.Put(ctx, key, r, size, contentType)
}

// Open returns the object's contents.
func (a *S3Store) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	rc, err := a.s.Open(ctx, key)
	return rc, s3Err(key, err)
}

// OpenRange returns n bytes from offset off (the rest if n < 0).
func (a *S3Store) OpenRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	rc, err := a.s.OpenRange(ctx, key, off, n)
	return rc, s3Err(key, err)
}

// Stat describes the object.
func (a *S3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	info, err := a.s.Stat(ctx, key)
	if err != nil {
		return ObjectInfo{}, s3Err(key, err)
	}
	return ObjectInfo{Key: info.Key, Size: info.Size, ModTime: info.ModTime}, nil
}

// List returns the keys under prefix, sorted.
func (a *S3Store) List(ctx context.Context, prefix string) ([]string, error) {
	return a.s.List(ctx, prefix)
}

// ListVersions returns every version of the objects under prefix, delete
// markers included, for readers that must see what an overwrite or a
// delete hid (audit anchors).
func (a *S3Store) ListVersions(ctx context.Context, prefix string) ([]audit.ObjectVersion, error) {
	vs, err := a.s.ListVersions(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]audit.ObjectVersion, len(vs))
	for i, v := range vs {
		out[i] = audit.ObjectVersion{Key: v.Key, ID: v.ID, DeleteMarker: v.DeleteMarker, Latest: v.Latest}
	}
	return out, nil
}

// OpenVersion returns one version of an object.
func (a *S3Store) OpenVersion(ctx context.Context, key, id string) (io.ReadCloser, error) {
	rc, err := a.s.OpenVersion(ctx, key, id)
	return rc, s3Err(key, err)
}

// Delete removes the object.
func (a *S3Store) Delete(ctx context.Context, key string) error { return a.s.Delete(ctx, key) }

// Begin starts streaming the spool at path to key.
func (a *S3Store) Begin(ctx context.Context, key, path string, size int64) (Upload, error) {
	return a.s.Begin(key, path, ContentTypeCast, size), nil
}

// AbortUploads aborts the unfinished multipart uploads of key.
func (a *S3Store) AbortUploads(ctx context.Context, key string) error {
	_, err := a.s.AbortUploads(ctx, key)
	return err
}

// Resume takes over the unfinished multipart upload of key.
func (a *S3Store) Resume(ctx context.Context, key string) (ResumedUpload, error) {
	r, err := a.s.Resume(ctx, key)
	if err != nil {
		return nil, s3Err(key, err)
	}
	return r, nil
}

// Health returns the bucket's health and the upload backlog.
func (a *S3Store) Health() StorageHealth { return fromS3Health(a.s.Health()) }

// OnHealth sets the function called when an outage begins or ends.
func (a *S3Store) OnHealth(fn func(StorageHealth)) {
	if fn == nil {
		a.s.OnHealth(nil)
		return
	}
	a.s.OnHealth(func(h s3store.Health) { fn(fromS3Health(h)) })
}

// Check asks the bucket whether it answers and updates Health with the
// answer (for readiness probes).
func (a *S3Store) Check(ctx context.Context) error { return a.s.Check(ctx) }

// SetLogger sets the store's logger.
func (a *S3Store) SetLogger(l *slog.Logger) { a.s.SetLogger(l) }

// Describe implements prometheus.Collector.
func (a *S3Store) Describe(ch chan<- *prometheus.Desc) { a.s.Describe(ch) }

// Collect implements prometheus.Collector.
func (a *S3Store) Collect(ch chan<- prometheus.Metric) { a.s.Collect(ch) }

func fromS3Health(h s3store.Health) StorageHealth {
	return StorageHealth{Down: h.Down, Since: h.Since, LastError: h.LastError, Backlog: h.Backlog, Uploads: h.Uploads}
}

// openS3 opens an s3:// storage URL.
func openS3(ctx context.Context, rawURL string) (Store, error) {
	// Parts hold whole cast lines, so that a recording's upload can be
	// completed by another replica from a checkpoint of the rest.
	st, err := s3store.OpenURL(ctx, rawURL, s3store.Options{PartDelimiter: '\n'})
	if err != nil {
		return nil, err
	}
	return NewS3Store(st), nil
}

// StorageHealth returns the store's health and backlog; ok is false for
// stores that cannot be unreachable (the file store).
func (r *Recorder) StorageHealth() (h StorageHealth, ok bool) {
	hr, ok := r.opts.Store.(HealthReporter)
	if !ok {
		return StorageHealth{}, false
	}
	return hr.Health(), true
}

// storageHealthChanged audits the start and end of a storage outage.
func (r *Recorder) storageHealthChanged(h StorageHealth) {
	typ, details := EventStorageRecovered, map[string]any{}
	if h.Down {
		typ = EventStorageOutage
		details["error"] = h.LastError
		r.log.Warn("recording storage unreachable: sessions keep spooling locally", "err", h.LastError)
	} else {
		r.log.Info("recording storage reachable again")
	}
	if st := r.opts.State; st != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := st.Append(ctx, state.Event{Time: h.Since, Type: typ, Details: details}); err != nil {
			r.log.Error("audit storage health failed", "err", err)
		}
	}
}
