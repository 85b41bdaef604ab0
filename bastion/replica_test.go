package bastion

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestReplicaID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := ReplicaID(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !validReplicaID(a) || len(a) != 18 {
		t.Fatalf("id %q", a)
	}
	b, err := ReplicaID(dir)
	if err != nil || b != a {
		t.Fatalf("second call = %q, %v; want the stable %q", b, err, a)
	}
	fi, err := os.Stat(filepath.Join(dir, replicaIDFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("replica_id file: %v %v", fi, err)
	}
	other, err := ReplicaID(t.TempDir())
	if err != nil || other == a {
		t.Fatalf("another data directory got %q (%v); want a different id", other, err)
	}
}

func TestReplicaIDConcurrentStart(t *testing.T) {
	dir := t.TempDir()
	ids := make([]string, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			id, err := ReplicaID(dir)
			if err != nil {
				t.Error(err)
			}
			ids[i] = id
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("ids differ: %v", ids)
		}
	}
}

func TestReplicaIDMalformed(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, replicaIDFile), []byte("bad id/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReplicaID(dir); err == nil {
		t.Fatal("malformed replica id accepted")
	}
}
