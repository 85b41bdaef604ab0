package recorder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/posternhq/postern/internal/atomicfile"
)

// FileStore is a Store in a local directory. Objects are files (mode 0600)
// in directories (0700) under the root; Put writes a temporary file, fsyncs
// it and renames it into place, so an object is never seen half-written.
type FileStore struct {
	root string
	dirs sync.Map // directories known to exist: Put and Adopt skip MkdirAll for them
}

var _ Store = (*FileStore)(nil)

// NewFileStore returns a store rooted at dir, creating it if needed.
func NewFileStore(dir string) (*FileStore, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("recording store %s: %w", dir, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("create recording store: %w", err)
	}
	return &FileStore{root: abs}, nil
}

// Root returns the store's directory.
func (s *FileStore) Root() string { return s.root }

// path maps a key to a file path, refusing keys that would leave the root.
func (s *FileStore) path(key string) (string, error) {
	if key == "" || strings.ContainsRune(key, '\\') || strings.HasPrefix(key, "/") || path.Clean(key) != key || !filepath.IsLocal(filepath.FromSlash(key)) {
		return "", fmt.Errorf("invalid object key %q", key)
	}
	return filepath.Join(s.root, filepath.FromSlash(key)), nil
}

// Put stores r under key atomically (temporary file, fsync, rename, fsync of
// the directory). If size is not negative, a different length is an error
// and nothing is stored.
func (s *FileStore) Put(ctx context.Context, key string, r io.Reader, size int64, contentType string) (err error) {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	var tmp *atomicfile.File
	err = s.inDir(dir, func() error {
		var err error
		tmp, err = atomicfile.New(p, 0o600)
		return err
	})
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	defer tmp.Close() // discards it unless committed
	src := r
	if _, ok := r.(*os.File); !ok {
		src = ctxReader{ctx, r} // a local file is copied by the kernel where it can
	}
	n, err := io.Copy(tmp, src)
	if err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	if size >= 0 && n != size {
		return fmt.Errorf("put %s: wrote %d bytes; want %d", key, n, size)
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// inDir runs f, which creates a name in dir, after making sure dir exists:
// the directories of a day's recordings are made once, not looked up for
// every object. If f finds no directory (it was removed since), inDir
// makes it again and runs f once more.
func (s *FileStore) inDir(dir string, f func() error) error {
	if _, ok := s.dirs.Load(dir); !ok {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		s.dirs.Store(dir, struct{}{})
	}
	err := f()
	if errors.Is(err, fs.ErrNotExist) {
		if _, statErr := os.Stat(dir); errors.Is(statErr, fs.ErrNotExist) {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			err = f()
		}
	}
	return err
}

// errCrossDevice means Adopt cannot rename across file systems; the caller
// copies instead.
var errCrossDevice = errors.New("file is on another file system")

// Adopt moves the local file at path into the store under key by renaming
// it (mode 0600), so a finished recording is stored without copying. It
// returns an error wrapping errCrossDevice if path is on another file system.
func (s *FileStore) Adopt(ctx context.Context, key, path string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	if err := s.inDir(dir, func() error { return os.Rename(path, p) }); err != nil {
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("adopt %s: %w", key, errCrossDevice)
		}
		return fmt.Errorf("adopt %s: %w", key, err)
	}
	return atomicfile.SyncDir(dir)
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func notFound(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return fmt.Errorf("%s: %w", key, err)
}

// Open returns the object's contents.
func (s *FileStore) Open(ctx context.Context, key string) (io.ReadCloser, error) {
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(key, err)
	}
	return f, nil
}

// OpenRange returns n bytes from offset off (the rest of the object if n < 0).
func (s *FileStore) OpenRange(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("open %s: negative offset", key)
	}
	p, err := s.path(key)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, notFound(key, err)
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	if n < 0 {
		return f, nil
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, n), f}, nil
}

// Stat describes the object.
func (s *FileStore) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	p, err := s.path(key)
	if err != nil {
		return ObjectInfo{}, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return ObjectInfo{}, notFound(key, err)
	}
	if !fi.Mode().IsRegular() {
		return ObjectInfo{}, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Delete removes the object.
func (s *FileStore) Delete(ctx context.Context, key string) error {
	p, err := s.path(key)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete %s: %w", key, err)
	}
	return nil
}

// List returns the keys of the objects under prefix, sorted.
func (s *FileStore) List(ctx context.Context, prefix string) ([]string, error) {
	prefix = strings.Trim(prefix, "/")
	dir, err := s.path(prefix)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	var keys []string
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() || strings.HasPrefix(d.Name(), ".") {
			return nil // temporary files of Put are dot files
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		keys = append(keys, filepath.ToSlash(rel))
		return ctx.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	sort.Strings(keys)
	return keys, nil
}
