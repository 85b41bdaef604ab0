package players

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// isRaw reports whether tty has canonical mode and echo off.
func isRaw(t *testing.T, tty *os.File) bool {
	t.Helper()
	st, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	return st.Lflag&(unix.ICANON|unix.ECHO) == 0
}
