package battery

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/testutil"
	"golang.org/x/crypto/ssh"
)

// mountSmallTmpfs mounts a tmpfs of size bytes on dir and unmounts it at
// cleanup. It needs root and the mount binary; CI runs as root.
func mountSmallTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testutil.Missing(t, "mounting a small tmpfs for the spool needs root (CI runs as root)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
}

// TestSpoolDiskFull: the spool is a 2 MiB file system. A recorded session
// that streams 4 MiB fills it: with record: required, postern ends that
// session with exit status 125 and "recording unavailable" rather than let
// it run unrecorded, and keeps serving: once the
// failed spool file has been sealed out of the spool, the next session is
// recorded in full.
func TestSpoolDiskFull(t *testing.T) {
	data := t.TempDir()
	mountSmallTmpfs(t, filepath.Join(data, "spool"), "2m")
	s := startService(t, serviceOptions{Data: data})
	signer := s.userSigner(t, "full@example.com", nil)

	run := func(payload []byte) (out []byte, exit int, stderr string) {
		t.Helper()
		h, err := s.dialHop(signer, "echo")
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		sess, err := h.Inner.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		var so, se bytes.Buffer
		sess.Stdout, sess.Stderr = &so, &se
		sess.Stdin = bytes.NewReader(payload)
		err = sess.Run("exec cat")
		var ee *ssh.ExitError
		switch {
		case err == nil:
		case errors.As(err, &ee):
			exit = ee.ExitStatus()
		case errors.Is(err, io.EOF), strings.Contains(err.Error(), "exit status"):
			exit = -1
		default:
			var missing *ssh.ExitMissingError
			if !errors.As(err, &missing) {
				t.Fatalf("session: %v", err)
			}
			exit = -1
		}
		return so.Bytes(), exit, se.String()
	}

	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"), 4<<20/64)
	out, exit, stderr := run(big)
	// Exit 125 with "recording unavailable" (docs/exit-codes.md), not the
	// killed program's signal, nor the exit status of a program whose input
	// was cut: the program is stopped because of the recording, and the
	// client is told so.
	if exit != 125 || !strings.Contains(stderr, "postern: recording unavailable") {
		t.Errorf("4 MiB through a 2 MiB spool: exit %d, stderr %q, %d bytes echoed; want 125 and recording unavailable", exit, stderr, len(out))
	}
	if len(out) >= len(big) {
		t.Errorf("the whole stream went through unrecorded (%d bytes)", len(out))
	}

	// The failed recording is sealed out of the spool into the store,
	// which frees the spool for the next session.
	for deadline := time.Now().Add(15 * time.Second); len(s.recordings(t)) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the failed recording was not sealed within 15s")
		}
		time.Sleep(50 * time.Millisecond) // polling the store
	}
	small := []byte("after the spool filled up\n")
	out, exit, stderr = run(small)
	if exit != 0 || !bytes.Equal(out, small) {
		t.Fatalf("next session: exit %d, stderr %q, out %q; want the echo", exit, stderr, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		recs := s.recordings(t)
		var found bool
		for path, m := range recs {
			if strings.Contains(verifyCast(t, path, m), "after the spool filled up") {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the session after the full spool has no sealed recording (%d recordings: %v)", len(recs), recs)
		}
		time.Sleep(50 * time.Millisecond) // sealing follows the session's end; polling the store
	}
}
