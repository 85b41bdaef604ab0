package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Tool returns the path of a test server binary built from one of the
// tools modules (tools/<module>). It looks in order at the environment
// variable env, then <repo>/bin/<name>; if neither exists it builds pkg
// inside <repo>/tools/<module> into <repo>/bin/<name> once (concurrent test
// binaries wait for one build under a file lock). "make tools" builds all of
// them ahead of time.
func Tool(t testing.TB, env, name, module, pkg string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s: %v", env, p, err)
		}
		return p
	}
	root := RepoRoot(t)
	bin := filepath.Join(root, "bin", name)
	if isFile(bin) {
		return bin
	}
	if _, err := exec.LookPath("go"); err != nil {
		Missing(t, "%s is not built and go is not installed; run make tools", name)
	}
	if err := buildTool(root, bin, module, pkg); err != nil {
		t.Fatal(err)
	}
	return bin
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// buildTool builds pkg from tools/<module> into bin under an exclusive lock.
func buildTool(root, bin, module, pkg string) error {
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return fmt.Errorf("create bin directory: %w", err)
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("take build lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if isFile(bin) {
		return nil // built by another test binary while we waited
	}
	tmp := bin + ".tmp"
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = filepath.Join(root, "tools", module)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s (run make tools): %w\n%s", pkg, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return fmt.Errorf("install %s: %w", bin, err)
	}
	return nil
}
