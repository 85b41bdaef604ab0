package innerhop

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/posternhq/postern/internal/usererr"
)

// gateRun feeds chunks through a line gate that refuses lines containing
// "sudo" and returns what reached the program and the lines checked.
func gateRun(chunks ...string) (out string, checked []string, notices int) {
	var buf bytes.Buffer
	g := &lineGate{
		check: func(line string) error {
			checked = append(checked, line)
			if strings.Contains(line, "sudo") {
				return &usererr.Error{Msg: "command denied by approver", Code: "denied_by_approver", Exit: ExitDeniedByApprover, Global: true}
			}
			return nil
		},
		notice: func(error) { notices++ },
	}
	for _, c := range chunks {
		if n, err := g.write(&buf, []byte(c)); err != nil || n != len(c) {
			panic("write failed")
		}
	}
	return buf.String(), checked, notices
}

func TestLineGate(t *testing.T) {
	tests := []struct {
		name    string
		chunks  []string
		out     string
		checked []string
	}{
		{name: "plain line passes", chunks: []string{"ls -l\r"}, out: "ls -l\r", checked: []string{"ls -l"}},
		{name: "typed byte by byte", chunks: strings.Split("echo hi\r", ""), out: "echo hi\r", checked: []string{"echo hi"}},
		{name: "flagged line is killed", chunks: []string{"sudo reboot\r"}, out: "sudo reboot\x15", checked: []string{"sudo reboot"}},
		{name: "backspace", chunks: []string{"sudx\x7fo id\r"}, out: "sudx\x7fo id\x15", checked: []string{"sudo id"}},
		{name: "ctrl-h", chunks: []string{"lx\bs\r"}, out: "lx\bs\r", checked: []string{"ls"}},
		{name: "ctrl-u clears", chunks: []string{"sudo x\x15ls\r"}, out: "sudo x\x15ls\r", checked: []string{"ls"}},
		{name: "ctrl-c clears", chunks: []string{"sudo x\x03ls\r"}, out: "sudo x\x03ls\r", checked: []string{"ls"}},
		{name: "ctrl-w removes a word", chunks: []string{"echo sudo\x17ok\r"}, out: "echo sudo\x17ok\r", checked: []string{"echo ok"}},
		{name: "ctrl-w builds a word", chunks: []string{"su echo\x17\x17sudo id\r"}, out: "su echo\x17\x17sudo id\x15", checked: []string{"sudo id"}},
		{name: "arrow keys are skipped", chunks: []string{"su\x1b[Ddo id\r"}, out: "su\x1b[Ddo id\x15", checked: []string{"sudo id"}},
		{name: "bracketed paste", chunks: []string{"\x1b[200~echo a\rsudo id\x1b[201~\r"}, out: "\x1b[200~echo a\rsudo id\x1b[201~\x15",
			checked: []string{"echo a\nsudo id"}},
		{name: "paste markers split across chunks", chunks: []string{"\x1b[2", "00~sudo", " id\x1b[20", "1~\r"},
			out: "\x1b[200~sudo id\x1b[201~\x15", checked: []string{"sudo id"}},
		{name: "rest of the chunk after a kill", chunks: []string{"sudo id\rls\r"}, out: "sudo id\x15ls\r", checked: []string{"sudo id", "ls"}},
		{name: "empty lines are not checked", chunks: []string{"\r\r  \r"}, out: "\r\r  \r"},
		{name: "utf-8 backspace", chunks: []string{"é\x7fsudo\r"}, out: "é\x7fsudo\x15", checked: []string{"sudo"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, checked, _ := gateRun(tt.chunks...)
			if out != tt.out {
				t.Errorf("program got %q; want %q", out, tt.out)
			}
			if strings.Join(checked, "|") != strings.Join(tt.checked, "|") {
				t.Errorf("checked %q; want %q", checked, tt.checked)
			}
		})
	}
}

func TestApprovalUserError(t *testing.T) {
	ue := approvalUserError(&usererr.Error{Msg: "approval timed out", Code: "approval_timeout", Exit: ExitApprovalTimeout, Global: true})
	if ue.Exit != 122 || ue.Code != "approval_timeout" || !ue.Global {
		t.Errorf("got %+v", ue)
	}
	// An error that is not user-visible: a plain denial, its text not shown.
	if ue := approvalUserError(errors.New("internal: store unreachable")); ue.Exit != ExitDenied || strings.Contains(ue.Msg, "store") {
		t.Errorf("plain error: %+v; want exit %d and no internal text", ue, ExitDenied)
	}
	// A user-visible error without an exit status gets ExitDenied.
	if ue := approvalUserError(usererr.New("denied", "not now")); ue.Exit != ExitDenied || ue.Msg != "not now" {
		t.Errorf("user error without exit: %+v", ue)
	}
}

func FuzzLineGate(f *testing.F) {
	f.Add([]byte("sudo id\r"), 3)
	f.Add([]byte("\x1b[200~a\rb\x1b[201~\r\x17\x15\x7f"), 1)
	f.Fuzz(func(t *testing.T, in []byte, split int) {
		if split <= 0 {
			split = 1
		}
		var chunks []string
		for len(in) > 0 {
			n := min(split, len(in))
			chunks = append(chunks, string(in[:n]))
			in = in[n:]
		}
		out, checked, notices := gateRun(chunks...)
		// Every byte but the killed Enters reaches the program, in order;
		// each kill adds one ^U.
		all := strings.Join(chunks, "")
		if notices == 0 && out != all {
			t.Fatalf("unflagged input changed: %q -> %q", all, out)
		}
		if len(out) != len(all) {
			t.Fatalf("length %d; want %d", len(out), len(all))
		}
		for _, l := range checked {
			if strings.TrimSpace(l) == "" {
				t.Fatalf("empty line checked")
			}
		}
	})
}

func BenchmarkGateWriter(b *testing.B) {
	line := []byte(strings.Repeat("echo some ordinary typing here; ", 8) + "\r")
	g := &lineGate{check: func(string) error { return nil }, notice: func(error) {}}
	var sink bytes.Buffer
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		sink.Reset()
		_, _ = g.write(&sink, line)
	}
}
