package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var binary struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// RemovePosternBinary removes the binary PosternBinary built, if it built
// one; TestMain calls it after the run.
func RemovePosternBinary() {
	if binary.dir != "" {
		_ = os.RemoveAll(binary.dir)
	}
}

// PosternBinary returns the postern binary: $POSTERN_BIN (which `make test` sets
// to the binary it builds first), or cmd/postern built once per test binary
// the way the Dockerfile builds it (static, -trimpath).
func PosternBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("POSTERN_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("POSTERN_BIN=%s: %v", p, err)
		}
		return p
	}
	binary.once.Do(func() {
		dir, err := os.MkdirTemp("", "postern-bin-")
		if err != nil {
			binary.err = err
			return
		}
		binary.dir, binary.path = dir, filepath.Join(dir, "postern")
		cmd := exec.Command("go", "build", "-trimpath", "-o", binary.path, "./cmd/postern")
		cmd.Dir = RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binary.err = fmt.Errorf("go build ./cmd/postern: %w\n%s", err, out)
		}
	})
	if binary.err != nil {
		t.Fatal(binary.err)
	}
	return binary.path
}
