package innerhop

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/posternhq/postern/internal/usererr"
)

// gateRun feeds chunks through a line gate that refuses lines containing
// "sudo" and returns what reached the program, the lines checked and the
// notices shown.
func gateRun(chunks ...string) (out string, checked []string, notices []string) {
	var buf bytes.Buffer
	var mu sync.Mutex
	g := newLineGate(context.Background(), lineGateHooks{
		check: func(_ context.Context, line string) error {
			mu.Lock()
			checked = append(checked, line)
			mu.Unlock()
			if strings.Contains(line, "sudo") {
				return &usererr.Error{Msg: "command denied by approver", Code: "denied_by_approver", Exit: ExitDeniedByApprover, Global: true}
			}
			return nil
		},
		notice:    func(ue *usererr.Error) { notices = append(notices, ue.Code) },
		discarded: func(string, string) {},
	})
	for _, c := range chunks {
		if n, err := g.write(&buf, []byte(c)); err != nil || n != len(c) {
			panic("write failed")
		}
		g.wait()
	}
	return buf.String(), checked, notices
}

func TestLineGate(t *testing.T) {
	kill := "\x03" + string(killKeys)
	tests := []struct {
		name    string
		chunks  []string
		out     string
		checked []string
		notices string
	}{
		{name: "plain line passes", chunks: []string{"ls -l\r"}, out: "ls -l\r", checked: []string{"ls -l"}},
		{name: "typed byte by byte", chunks: strings.Split("echo hi\r", ""), out: "echo hi\r", checked: []string{"echo hi"}},
		{name: "flagged line is discarded", chunks: []string{"sudo reboot\r"}, out: "sudo reboot" + kill, checked: []string{"sudo reboot"}, notices: "denied_by_approver"},
		{name: "backspace", chunks: []string{"sudx\x7fo id\r"}, out: "sudx\x7fo id" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "ctrl-h", chunks: []string{"lx\bs\r"}, out: "lx\bs\r", checked: []string{"ls"}},
		{name: "ctrl-u clears", chunks: []string{"sudo x\x15ls\r"}, out: "sudo x\x15ls\r", checked: []string{"ls"}},
		{name: "ctrl-c clears", chunks: []string{"sudo x\x03ls\r"}, out: "sudo x" + kill + "ls\r", checked: []string{"ls"}},
		{name: "ctrl-w removes a word", chunks: []string{"echo sudo\x17ok\r"}, out: "echo sudo\x17ok\r", checked: []string{"echo ok"}},
		{name: "ctrl-w builds a word", chunks: []string{"su echo\x17\x17sudo id\r"}, out: "su echo\x17\x17sudo id" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "left arrow inserts mid-line", chunks: []string{"su\x1b[Ddo id\r"}, out: "su\x1b[Ddo id\r", checked: []string{"sdo idu"}},
		{name: "cursor keys edit", chunks: []string{"do id\x1b[Hsu\x1b[F!\r"}, out: "do id\x1b[Hsu\x1b[F!" + kill, checked: []string{"sudo id!"}, notices: "denied_by_approver"},
		{name: "ctrl-a ctrl-e ctrl-b ctrl-f", chunks: []string{"o\x01sud\x05 i\x02\x06d\r"}, out: "o\x01sud\x05 i\x02\x06d" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "ctrl-k kills to the end", chunks: []string{"ls sudo\x01\x06\x06\x0b\r"}, out: "ls sudo\x01\x06\x06\x0b\r", checked: []string{"ls"}},
		{name: "ctrl-u at column 0 kills nothing", chunks: []string{"sudo id\x01\x15\r"}, out: "sudo id\x01\x15" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "delete key", chunks: []string{"sxudo id\x01\x06\x1b[3~\r"}, out: "sxudo id\x01\x06\x1b[3~" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "ss3 cursor keys", chunks: []string{"u\x1bODs\x1bOFdo\r"}, out: "u\x1bODs\x1bOFdo" + kill, checked: []string{"sudo"}, notices: "denied_by_approver"},
		{name: "bracketed paste", chunks: []string{"\x1b[200~echo a\rsudo id\x1b[201~\r"}, out: "\x1b[200~echo a\rsudo id\x1b[201~" + kill,
			checked: []string{"echo a", "echo a\nsudo id"}, notices: "denied_by_approver"},
		{name: "flagged line inside a paste", chunks: []string{"\x1b[200~sudo id\rls\x1b[201~\r"}, out: "\x1b[200~sudo id" + kill + "ls\x1b[201~\r",
			checked: []string{"sudo id", "ls"}, notices: "denied_by_approver"},
		{name: "paste markers split across chunks", chunks: []string{"\x1b[2", "00~sudo", " id\x1b[20", "1~\r"},
			out: "\x1b[200~sudo id\x1b[201~" + kill, checked: []string{"sudo id"}, notices: "denied_by_approver"},
		{name: "paste approved at its line end is not asked again", chunks: []string{"\x1b[200~echo a\r\x1b[201~\r"},
			out: "\x1b[200~echo a\r\x1b[201~\r", checked: []string{"echo a"}},
		{name: "rest of the chunk after a kill", chunks: []string{"sudo id\rls\r"}, out: "sudo id" + kill + "ls\r", checked: []string{"sudo id", "ls"}, notices: "denied_by_approver"},
		{name: "empty lines are not checked", chunks: []string{"\r\r  \r"}, out: "\r\r  \r"},
		{name: "utf-8 backspace", chunks: []string{"é\x7fsudo\r"}, out: "é\x7fsudo" + kill, checked: []string{"sudo"}, notices: "denied_by_approver"},
		{name: "utf-8 cursor", chunks: []string{"é\x1b[Ds\r"}, out: "é\x1b[Ds\r", checked: []string{"sé"}},
		// The battery's cases, and their class: a key the gate cannot
		// follow never lets the line through unchecked.
		{name: "ctrl-v ESC[200~ ctrl-u is no paste", chunks: []string{"\x16\x1b[200~\x15", "sudo id\r", "ls\r"},
			out: "\x16\x1b[200~\x15sudo id" + kill + "ls\r", checked: []string{"ls"}, notices: "line_unverifiable"},
		{name: "ctrl-o on a flagged line", chunks: []string{"sudo id\x0f", "\r", "ls\r"},
			out: "sudo id" + kill + "\rls\r", checked: []string{"sudo id", "ls"}, notices: "denied_by_approver"},
		{name: "ctrl-o on an allowed line", chunks: []string{"ls\x0f", "\r"}, out: "ls\x0f" + kill, checked: []string{"ls"}, notices: "line_unverifiable"},
		{name: "history recall", chunks: []string{"\x1b[A\r"}, out: "\x1b[A" + kill, notices: "line_unverifiable"},
		{name: "completion", chunks: []string{"ec\t hi\r"}, out: "ec\t hi" + kill, notices: "line_unverifiable"},
		{name: "reverse search", chunks: []string{"\x12sud\r"}, out: "\x12sud" + kill, notices: "line_unverifiable"},
		{name: "meta key", chunks: []string{"sudo id\x1bb\r"}, out: "sudo id\x1bb" + kill, notices: "line_unverifiable"},
		{name: "yank", chunks: []string{"sudo id\x15\x19\r"}, out: "sudo id\x15\x19" + kill, notices: "line_unverifiable"},
		{name: "modified arrow", chunks: []string{"ls\x1b[1;5D\r"}, out: "ls\x1b[1;5D" + kill, notices: "line_unverifiable"},
		{name: "unverifiable, then a clean line", chunks: []string{"\x1b[A\r", "ls\r"}, out: "\x1b[A" + kill + "ls\r", checked: []string{"ls"}, notices: "line_unverifiable"},
		{name: "ctrl-c clears unverifiable", chunks: []string{"\x1b[A\x03ls\r"}, out: "\x1b[A" + kill + "ls\r", checked: []string{"ls"}},
		{name: "ctrl-c is followed by the kill keys", chunks: []string{"danger\x03", "ls\r"}, out: "danger" + kill + "ls\r", checked: []string{"ls"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, checked, notices := gateRun(tt.chunks...)
			if out != tt.out {
				t.Errorf("program got %q; want %q", out, tt.out)
			}
			if strings.Join(checked, "|") != strings.Join(tt.checked, "|") {
				t.Errorf("checked %q; want %q", checked, tt.checked)
			}
			if strings.Join(notices, "|") != tt.notices {
				t.Errorf("notices %q; want %q", notices, tt.notices)
			}
		})
	}
}

// TestLineGateHeldLine: input typed while a line waits for approvers waits
// behind it; Ctrl-C abandons the line (the check's context ends) and what
// follows is typed afterwards.
func TestLineGateHeldLine(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	release := make(chan error)
	canceled := make(chan struct{})
	var notices []string
	g := newLineGate(context.Background(), lineGateHooks{
		check: func(ctx context.Context, line string) error {
			if line != "sudo id" {
				return nil
			}
			select {
			case err := <-release:
				return err
			case <-ctx.Done():
				close(canceled)
				return ctx.Err()
			}
		},
		notice:    func(ue *usererr.Error) { notices = append(notices, ue.Code) },
		discarded: func(string, string) {},
	})
	write := func(s string) {
		mu.Lock()
		defer mu.Unlock()
		if _, err := g.write(&buf, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	output := func() string {
		g.mu.Lock()
		defer g.mu.Unlock()
		return buf.String()
	}
	write("sudo id\r")
	write("ls\r")
	if got := output(); got != "sudo id" {
		t.Fatalf("while held: %q; want the line without its Enter, nothing after", got)
	}
	release <- nil // approved
	g.wait()
	if got := output(); got != "sudo id\rls\r" {
		t.Fatalf("after approval: %q", got)
	}
	write("sudo id\r")
	write("typed ahead")
	write("\x03echo after\r")
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("Ctrl-C did not cancel the approval wait")
	}
	g.wait()
	if got := output(); got != "sudo id\rls\rsudo id\x03"+string(killKeys)+"echo after\r" {
		t.Fatalf("after Ctrl-C: %q; want the line discarded, the typed-ahead dropped, the rest typed", got)
	}
	if strings.Join(notices, "|") != "line_abandoned" {
		t.Errorf("notices %q; want line_abandoned", notices)
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
	f.Add([]byte("\x16\x1b[200~\x15sudo id\r"), 2)
	f.Add([]byte("sudo id\x01\x15\r"), 4)
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
		// Every byte but the withheld Enters reaches the program, in order;
		// each withheld Enter is replaced by the kill keys, with a notice.
		all := strings.Join(chunks, "")
		if len(notices) == 0 && out != all && !strings.Contains(all, "\x03") {
			t.Fatalf("unflagged input changed: %q -> %q", all, out)
		}
		// (and each Ctrl-C typed, when no line was held, gets Ctrl-E Ctrl-U)
		if len(out) < len(all) {
			t.Fatalf("length %d; want at least %d", len(out), len(all))
		}
		for _, l := range checked {
			if strings.TrimSpace(l) == "" {
				t.Fatalf("empty line checked")
			}
		}
		// Fail closed: no Enter reaches the program after text holding
		// "sudo" unless that text was checked (and so refused).
		if strings.Contains(all, "sudo") && len(checked) == 0 && len(notices) == 0 && strings.ContainsAny(all, "\r\n\x0f") {
			i := strings.Index(all, "sudo")
			if strings.ContainsAny(all[i:], "\r\n\x0f") && !strings.Contains(all[i:], "\x03") && !strings.Contains(all[i:], "\x15") && !strings.Contains(all[i:], "\x17") && !strings.Contains(all[i:], "\x7f") && !strings.Contains(all[i:], "\x08") && !strings.Contains(all[i:], "\x0b") && !strings.Contains(all[i:], "\x04") && !strings.Contains(all[i:], "\x1b") {
				t.Fatalf("a line with sudo was entered unchecked: %q", all)
			}
		}
	})
}

func BenchmarkGateWriter(b *testing.B) {
	line := []byte(strings.Repeat("echo some ordinary typing here; ", 8) + "\r")
	g := newLineGate(context.Background(), lineGateHooks{check: func(context.Context, string) error { return nil },
		notice: func(*usererr.Error) {}, discarded: func(string, string) {}})
	var sink bytes.Buffer
	b.SetBytes(int64(len(line)))
	b.ReportAllocs()
	for b.Loop() {
		sink.Reset()
		_, _ = g.write(&sink, line)
		g.wait()
	}
}
