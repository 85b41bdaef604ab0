package search

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

type timedLine struct {
	text string
	at   time.Duration
}

func screenLines(chunks ...string) []timedLine {
	var out []timedLine
	s := &screenText{emit: func(l string, at time.Duration) { out = append(out, timedLine{l, at}) }}
	for i, c := range chunks {
		s.write(c, time.Duration(i)*time.Second)
	}
	s.close()
	return out
}

func TestScreenText(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   []string
	}{
		{name: "plain lines", chunks: []string{"hello\r\nworld\r\n"}, want: []string{"hello", "world"}},
		{name: "colours", chunks: []string{"\x1b[01;34mdir\x1b[0m  \x1b[01;32mexe\x1b[0m\r\n"}, want: []string{"dir  exe"}},
		{name: "window title", chunks: []string{"\x1b]0;root@web-1: ~\x07root@web-1:~# ls\r\n"}, want: []string{"root@web-1:~# ls"}},
		{name: "title ended by ST", chunks: []string{"\x1b]2;t\x1b\\x\r\n"}, want: []string{"x"}},
		{name: "escape split across events", chunks: []string{"a\x1b", "[3", "1mb\x1b]0;ti", "tle\x07c\r\n"}, want: []string{"abc"}},
		{name: "progress redraws", chunks: []string{" 10%\r 50%\r100%\r\n"}, want: []string{"10%", "50%", "100%"}},
		{name: "crlf split across events", chunks: []string{"one\r", "\ntwo\n"}, want: []string{"one", "two"}},
		{name: "backspace echo", chunks: []string{"lss\b \b -l\r\n"}, want: []string{"ls -l"}},
		{name: "cursor to another row", chunks: []string{"top line\x1b[2;1Hsecond\x1b[K"}, want: []string{"top line", "second"}},
		{name: "cursor forward separates", chunks: []string{"a\x1b[5Cb\r\n"}, want: []string{"a b"}},
		{name: "charset designation", chunks: []string{"\x1b(Bq\x1b)0r\n"}, want: []string{"qr"}},
		{name: "dcs string", chunks: []string{"x\x1bPq#0;2;0;0;0\x1b\\y\n"}, want: []string{"xy"}},
		{name: "controls dropped", chunks: []string{"a\x07b\x00c\x7fd\tz\n"}, want: []string{"abcd z"}},
		{name: "blank lines dropped", chunks: []string{"\r\n   \r\n\x1b[0m\r\nx"}, want: []string{"x"}},
		{name: "utf-8 backspace", chunks: []string{"é\bx\n"}, want: []string{"x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range screenLines(tt.chunks...) {
				got = append(got, l.text)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestScreenTextLineTime(t *testing.T) {
	got := screenLines("first", " half\r\nsecond ", "half\r\n")
	want := []timedLine{{"first half", 0}, {"second half", time.Second}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v; want %v", got, want)
	}
}

func TestScreenTextLongLine(t *testing.T) {
	got := screenLines(strings.Repeat("x", 2*maxLine+10) + "\n")
	if len(got) != 3 || len(got[0].text) != maxLine || len(got[2].text) != 10 {
		t.Errorf("a long line became %d lines", len(got))
	}
}

func typedLines(prompt string, chunks ...string) []timedLine {
	var out []timedLine
	e := &lineEditor{emit: func(l string, at time.Duration) { out = append(out, timedLine{l, at}) },
		prompt: func() string { return prompt }}
	for i, c := range chunks {
		e.write(c, time.Duration(i)*time.Second)
	}
	return out
}

func TestLineEditor(t *testing.T) {
	tests := []struct {
		name   string
		prompt string
		chunks []string
		want   []string
	}{
		{name: "keystrokes", prompt: "$ ", chunks: []string{"l", "s", " ", "-", "l", "\r"}, want: []string{"ls -l"}},
		{name: "backspace", chunks: []string{"lx\x7fs\r"}, want: []string{"ls"}},
		{name: "kill line", chunks: []string{"rm -rf /\x15echo ok\r"}, want: []string{"echo ok"}},
		{name: "erase word", chunks: []string{"cat /etc/shadow\x17hosts\r"}, want: []string{"cat hosts"}},
		{name: "interrupt", chunks: []string{"shutdown now\x03", "uptime\r"}, want: []string{"uptime"}},
		{name: "arrow keys", chunks: []string{"\x1b[A\x1bOBvim x\x1b[D\r"}, want: []string{"vim x"}},
		{name: "bracketed paste", chunks: []string{"\x1b[200~DROP TABLE t;\x1b[201~\r"}, want: []string{"DROP TABLE t;"}},
		{name: "several lines at once", chunks: []string{"a\rb\nc\r"}, want: []string{"a", "b", "c"}},
		{name: "masked password", chunks: []string{"*******\r", "ls\r"}, want: []string{"ls"}},
		{name: "password prompt", prompt: "[sudo] password for alice: ", chunks: []string{"hunter2\r"}, want: nil},
		{name: "passphrase prompt", prompt: "Enter passphrase for key '/home/alice/.ssh/id_ed25519': ", chunks: []string{"s3cret\r"}, want: nil},
		{name: "pin prompt", prompt: "PIN: ", chunks: []string{"1234\r"}, want: nil},
		{name: "spinning is not pin", prompt: "spinning:", chunks: []string{"ok\r"}, want: []string{"ok"}},
		{name: "empty lines", chunks: []string{"\r\r  \r"}, want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, l := range typedLines(tt.prompt, tt.chunks...) {
				got = append(got, l.text)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
	got := typedLines("$ ", "", "sudo", " -i\r")
	if len(got) != 1 || got[0].at != time.Second {
		t.Errorf("line time %v; want the first keystroke's (1s)", got)
	}
}

func TestIsPasswordPrompt(t *testing.T) {
	for prompt, want := range map[string]bool{
		"Password:": true, "alice@host's password: ": true, "Enter PIN for 'PIV Card':": true, "Passcode or option (1-3):": true,
		"Password": false, "password reset done": false, "pinned:": false, "$ ": false, "": false,
	} {
		if got := isPasswordPrompt(prompt); got != want {
			t.Errorf("isPasswordPrompt(%q) = %v; want %v", prompt, got, want)
		}
	}
}
