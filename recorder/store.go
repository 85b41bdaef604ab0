package recorder

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"time"
)

// ErrNotFound reports an object that is not in the store. It wraps
// fs.ErrNotExist, so readers that know no recorder (package audit) can
// tell a missing object too.
var ErrNotFound = fmt.Errorf("object not found: %w", fs.ErrNotExist)

// Store holds finished recordings and their metadata under slash-separated
// keys (YYYY/MM/DD/<id>.cast and <id>.json). FileStore and S3Store
// implement it; S3Store is also a StreamingStore.
type Store interface {
	// Put stores size bytes from r under key, replacing any object there.
	// A negative size means unknown. The object appears atomically: readers
	// see the old object or the whole new one.
	Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) error
	// Open returns the object's contents; the error wraps ErrNotFound if it
	// does not exist.
	Open(ctx context.Context, key string) (io.ReadCloser, error)
	// OpenRange returns n bytes of the object from offset off (to the end if
	// n < 0).
	OpenRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	// Stat describes the object.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// Delete removes the object; deleting a missing object is not an error.
	Delete(ctx context.Context, key string) error
	// List returns the keys of the objects under prefix (a slash-separated
	// directory, no trailing slash), sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	// Key is the object's key.
	Key string
	// Size is its length in bytes.
	Size int64
	// ModTime is when it was last written.
	ModTime time.Time
}

// Content types of stored objects.
const (
	// ContentTypeCast is the content type of a cast.
	ContentTypeCast = "application/x-asciicast"
	// ContentTypeJSON is the content type of the metadata JSON.
	ContentTypeJSON = "application/json"
)

// CastKey returns the object key of the recording of session id started at
// start: YYYY/MM/DD/<id>.cast (UTC date).
func CastKey(id string, start time.Time) string {
	return path.Join(start.UTC().Format("2006/01/02"), id+".cast")
}

// MetaKey returns the key of the metadata JSON beside a cast key.
func MetaKey(castKey string) string {
	return castKey[:len(castKey)-len(path.Ext(castKey))] + ".json"
}

// OpenStore opens the recording store named by rawURL: file:///abs/dir (or
// file://relative/dir), or s3://bucket/prefix?... (see [s3store.ParseURL]
// for the settings; credentials come from the AWS chain, and the bucket is
// checked at once, so a wrong setting is reported here).
func OpenStore(ctx context.Context, rawURL string) (Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("storage %q: not a URL", rawURL)
	}
	switch u.Scheme {
	case "file":
		p := u.Host + u.Path
		if p == "" {
			return nil, fmt.Errorf("storage %q: missing directory", rawURL)
		}
		return NewFileStore(filepath.FromSlash(p))
	case "s3":
		return openS3(ctx, rawURL)
	default:
		return nil, fmt.Errorf("storage %q: unsupported scheme (want file:// or s3://)", rawURL)
	}
}

// OpenExistingStore is OpenStore for readers (`postern audit verify`): a
// file:// store whose directory does not exist is an error wrapping
// fs.ErrNotExist instead of being created.
func OpenExistingStore(ctx context.Context, rawURL string) (Store, error) {
	if u, err := url.Parse(rawURL); err == nil && u.Scheme == "file" {
		dir := filepath.FromSlash(u.Host + u.Path)
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("recording store %s: %w", dir, err)
		}
	}
	return OpenStore(ctx, rawURL)
}
