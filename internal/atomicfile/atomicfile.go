package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a file being written in place of path: written through the
// embedded *os.File, then put in place by Commit. Close without Commit
// discards it.
type File struct {
	*os.File
	path      string
	committed bool
}

// New starts writing a file that will replace path with mode perm. The
// directory of path must exist.
func New(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return &File{File: f, path: path}, nil
}

// Commit syncs and closes the file, renames it over the target and syncs
// the directory. After an error the target is unchanged.
func (f *File) Commit() error {
	if f.committed {
		return errors.New("atomicfile: already committed")
	}
	f.committed = true
	err := f.File.Sync()
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.File.Name(), f.path)
	}
	if err != nil {
		os.Remove(f.File.Name())
		return err
	}
	return SyncDir(filepath.Dir(f.path))
}

// Close discards the file unless it was committed.
func (f *File) Close() error {
	if f.committed {
		return nil
	}
	f.committed = true
	err := f.File.Close()
	os.Remove(f.File.Name())
	return err
}

// Write replaces path with data (mode perm), atomically.
func Write(path string, data []byte, perm os.FileMode) error {
	f, err := New(path, perm)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.File.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// Create writes data (mode perm) to path only if path does not exist: the
// complete file is linked into place, so of two processes creating it at
// once one wins and the other gets an error wrapping fs.ErrExist (and then
// reads the winner's whole file, never a part of it).
func Create(path string, data []byte, perm os.FileMode) error {
	f, err := New(path, perm)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	tmp := f.File.Name()
	defer os.Remove(tmp)
	_, err = f.File.Write(data)
	if err == nil {
		err = f.File.Sync()
	}
	if cerr := f.File.Close(); err == nil {
		err = cerr
	}
	f.committed = true
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create %s: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("create %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes the names in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
