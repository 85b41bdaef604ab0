package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestWriteReplaces(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	for _, data := range []string{"first", "second"} {
		if err := Write(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(p)
		if err != nil || string(got) != data {
			t.Fatalf("read %q, %v; want %q", got, err, data)
		}
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v; want 0600", fi.Mode().Perm())
	}
	assertNoTemp(t, filepath.Dir(p))
}

func TestFileDiscardedWithoutCommit(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := New(p, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("half"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "old" {
		t.Errorf("target %q after an abandoned write; want old", got)
	}
	assertNoTemp(t, dir)
	if err := f.Commit(); err == nil {
		t.Error("commit after close succeeded")
	}
}

// TestCreateOnce: of many concurrent creators exactly one wins; the others
// see fs.ErrExist and the file holds the winner's whole data.
func TestCreateOnce(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 16 {
		wg.Go(func() {
			err := Create(p, []byte{byte('a' + i), byte('a' + i)}, 0o600)
			switch {
			case err == nil:
				mu.Lock()
				wins++
				mu.Unlock()
			case !errors.Is(err, fs.ErrExist):
				t.Errorf("Create: %v", err)
			}
		})
	}
	wg.Wait()
	got, _ := os.ReadFile(p)
	if wins != 1 || len(got) != 2 || got[0] != got[1] {
		t.Errorf("%d winners, file %q", wins, got)
	}
	assertNoTemp(t, dir)
}

func assertNoTemp(t *testing.T, dir string) {
	t.Helper()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name()[0] == '.' {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
