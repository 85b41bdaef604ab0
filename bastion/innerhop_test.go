//go:build h6wip

package bastion

import (
	"bytes"
	"strings"
	"testing"
)

func TestInnerHopExec(t *testing.T) {
	f := newHopFixture(t, fixtureOpts{})
	sshd := startSSHD(t, f.auth)
	f.setTargets(sshTarget("web-1", sshd))

	tests := []struct {
		name       string
		cmd        string
		wantOut    string
		wantErr    string
		wantStatus int
	}{
		{name: "echo", cmd: "echo hello", wantOut: "hello\n"},
		{name: "exit code", cmd: "exit 3", wantStatus: 3},
		{name: "stderr", cmd: "echo oops >&2; exit 1", wantErr: "oops\n", wantStatus: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.ssh(nil, "web-1", tt.cmd)
			if r.code != tt.wantStatus {
				t.Errorf("exit = %d; want %d (stderr %q)", r.code, tt.wantStatus, r.stderr)
			}
			if string(r.stdout) != tt.wantOut {
				t.Errorf("stdout = %q; want %q", r.stdout, tt.wantOut)
			}
			if tt.wantErr != "" && !strings.Contains(string(r.stderr), tt.wantErr) {
				t.Errorf("stderr = %q; want %q", r.stderr, tt.wantErr)
			}
		})
	}
	t.Run("stdin", func(t *testing.T) {
		in := bytes.Repeat([]byte("abc\n"), 1000)
		r := f.ssh(in, "web-1", "cat")
		if !bytes.Equal(r.stdout, in) {
			t.Errorf("cat returned %d bytes; want %d (stderr %q)", len(r.stdout), len(in), r.stderr)
		}
	})
}
