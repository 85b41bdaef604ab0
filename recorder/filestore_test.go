package recorder

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestFileStore(t *testing.T) {
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "rec")
	s, err := NewFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	key := "2026/01/02/ABC.cast"
	if err := s.Put(ctx, key, strings.NewReader("0123456789"), 10, ContentTypeCast); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(root, "2026", "01", "02", "ABC.cast"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("object mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	di, err := os.Stat(filepath.Join(root, "2026", "01"))
	if err != nil || di.Mode().Perm() != 0o700 {
		t.Errorf("dir mode = %v, %v; want 0700", di.Mode().Perm(), err)
	}
	info, err := s.Stat(ctx, key)
	if err != nil || info.Size != 10 || info.Key != key {
		t.Errorf("Stat = %+v, %v", info, err)
	}
	read := func(rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, _ := io.ReadAll(rc)
		return string(b)
	}
	if got := read(s.Open(ctx, key)); got != "0123456789" {
		t.Errorf("Open = %q", got)
	}
	for _, tt := range []struct {
		off, n int64
		want   string
	}{{0, 3, "012"}, {7, -1, "789"}, {8, 100, "89"}, {10, 5, ""}} {
		if got := read(s.OpenRange(ctx, key, tt.off, tt.n)); got != tt.want {
			t.Errorf("OpenRange(%d, %d) = %q; want %q", tt.off, tt.n, got, tt.want)
		}
	}
	// A short body stores nothing and leaves no temporary file.
	if err := s.Put(ctx, "2026/01/02/short.cast", strings.NewReader("abc"), 10, ContentTypeCast); err == nil {
		t.Error("short Put succeeded")
	}
	entries, _ := os.ReadDir(filepath.Join(root, "2026", "01", "02"))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries; want only the object", len(entries))
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, key); err != nil {
		t.Errorf("second Delete = %v; want nil", err)
	}
	if _, err := s.Open(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Open deleted = %v; want ErrNotFound", err)
	}
	if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat deleted = %v; want ErrNotFound", err)
	}
	for _, bad := range []string{"", "../x", "/etc/passwd", "a/../../b", `a\b`, "a//b", "./a"} {
		if err := s.Put(ctx, bad, strings.NewReader(""), 0, ""); err == nil {
			t.Errorf("Put(%q) accepted", bad)
		}
	}
	ctx2, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Put(ctx2, "c.cast", strings.NewReader("x"), 1, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with cancelled ctx = %v", err)
	}
}

func TestOpenStore(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		url     string
		wantErr string
	}{
		{url: "file://" + dir},
		{url: "s3://key:secret@bucket/prefix", wantErr: "credentials in the s3:// URL are not allowed"},
		{url: "s3://bucket/prefix?colour=blue", wantErr: `unknown s3 setting "colour"`},
		{url: "ftp://x", wantErr: "unsupported scheme"},
		{url: "file://", wantErr: "missing directory"},
	}
	for _, tt := range tests {
		s, err := OpenStore(context.Background(), tt.url)
		if tt.wantErr == "" {
			if err != nil || s.(*FileStore).Root() != dir {
				t.Errorf("OpenStore(%q) = %v, %v", tt.url, s, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("OpenStore(%q) err = %v; want %q", tt.url, err, tt.wantErr)
		}
	}
}

func TestKeys(t *testing.T) {
	if got := MetaKey("2026/01/02/X.cast"); got != "2026/01/02/X.json" {
		t.Errorf("MetaKey = %q", got)
	}
}

func TestFileStoreAdopt(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := NewFileStore(filepath.Join(dir, "rec"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "spool.cast")
	if err := os.WriteFile(src, []byte("cast"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Adopt(ctx, "../escape", src); err == nil {
		t.Error("Adopt accepted a key outside the root")
	}
	if err := s.Adopt(ctx, "2026/01/01/a.cast", src); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "rec", "2026", "01", "01", "a.cast"))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 4 {
		t.Errorf("adopted object = %v, %v; want 4 bytes, 0600", fi, err)
	}
	if _, err := os.Stat(src); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("source still present: %v", err)
	}
}

// TestFileStoreDirectoryRemoved: the store remembers which directories it
// made, and makes one again when it was removed behind its back.
func TestFileStoreDirectoryRemoved(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	s, err := NewFileStore(root)
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string) {
		t.Helper()
		if err := s.Put(ctx, key, strings.NewReader("x"), 1, ContentTypeCast); err != nil {
			t.Fatalf("Put %s: %v", key, err)
		}
	}
	adopt := func(key string) {
		t.Helper()
		spool := filepath.Join(t.TempDir(), "spool.cast")
		if err := os.WriteFile(spool, []byte("y"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.Adopt(ctx, key, spool); err != nil {
			t.Fatalf("Adopt %s: %v", key, err)
		}
	}
	put("2026/12/06/a.cast")
	adopt("2026/12/06/b.cast")
	if err := os.RemoveAll(filepath.Join(root, "2026")); err != nil {
		t.Fatal(err)
	}
	put("2026/12/06/c.cast")
	if _, err := s.Stat(ctx, "2026/12/06/c.cast"); err != nil {
		t.Errorf("Stat after Put into a removed directory: %v", err)
	}
	if err := os.RemoveAll(filepath.Join(root, "2026")); err != nil {
		t.Fatal(err)
	}
	adopt("2026/12/06/d.cast")
	keys, err := s.List(ctx, "2026")
	if err != nil || !slices.Equal(keys, []string{"2026/12/06/d.cast"}) {
		t.Errorf("List = %v, %v; want d", keys, err)
	}
	// A missing source file is an error, not a reason to make directories.
	if err := s.Adopt(ctx, "2026/12/07/e.cast", filepath.Join(root, "nope")); err == nil {
		t.Error("Adopt of a missing file succeeded")
	}
}
