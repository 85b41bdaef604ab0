package innerhop

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/posternhq/postern/certs"
	"github.com/posternhq/postern/internal/config"
	"github.com/posternhq/postern/policy"
)

func ptyModes(kv ...uint32) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, byte(kv[i]))
		b = binary.BigEndian.AppendUint32(b, kv[i+1])
	}
	return append(b, 0)
}

func TestEchoOffInModes(t *testing.T) {
	tests := []struct {
		name  string
		modes []byte
		want  bool
	}{
		{"empty", nil, false},
		{"echo on", ptyModes(1, 3, ptyModeEcho, 1), false},
		{"echo off", ptyModes(1, 3, ptyModeEcho, 0), true},
		{"no echo opcode", ptyModes(1, 3, 50, 1), false},
		{"truncated", []byte{ptyModeEcho, 0, 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := echoOffInModes(tt.modes); got != tt.want {
				t.Errorf("echoOffInModes = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestEnvAllowed(t *testing.T) {
	for name, want := range map[string]bool{"LANG": true, "LC_ALL": true, "TERM": true, "COLORTERM": true,
		"POSTERN_JSON_ERRORS": true, "LD_PRELOAD": false, "PATH": false, "BASH_ENV": false} {
		if got := envAllowed(name); got != want {
			t.Errorf("envAllowed(%q) = %v; want %v", name, got, want)
		}
	}
}

// countingWriter records write sizes.
type countingWriter struct {
	bytes.Buffer
	writes []int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes = append(w.writes, len(p))
	return w.Buffer.Write(p)
}

func TestCopyPooled(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	t.Run("bulk uses large reads", func(t *testing.T) {
		var w countingWriter
		n, err := copyPooled(&w, bytes.NewReader(data), nil)
		if err != nil || n != int64(len(data)) || !bytes.Equal(w.Bytes(), data) {
			t.Fatalf("copied %d err %v; want %d", n, err, len(data))
		}
		if max := maxOf(w.writes); max != largeCopyBuf {
			t.Errorf("largest write %d; want %d", max, largeCopyBuf)
		}
	})
	t.Run("small reads stay small", func(t *testing.T) {
		var w countingWriter
		if _, err := copyPooled(&w, iotest.OneByteReader(bytes.NewReader(data[:100])), nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.Bytes(), data[:100]) {
			t.Errorf("copy differs")
		}
	})
	t.Run("tap sees every byte first", func(t *testing.T) {
		var tapped bytes.Buffer
		var w bytes.Buffer
		_, err := copyPooled(&w, bytes.NewReader(data), func(p []byte) error {
			if tapped.Len() != w.Len() {
				t.Fatalf("tap ran after the write")
			}
			tapped.Write(p)
			return nil
		})
		if err != nil || !bytes.Equal(tapped.Bytes(), data) {
			t.Errorf("tap got %d bytes err %v", tapped.Len(), err)
		}
	})
	t.Run("tap error stops before writing", func(t *testing.T) {
		var w bytes.Buffer
		calls := 0
		_, err := copyPooled(&w, iotest.HalfReader(bytes.NewReader(data)), func(p []byte) error {
			calls++
			if calls == 3 {
				return io.ErrShortWrite
			}
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "recording tap") {
			t.Errorf("err = %v; want a tap stop", err)
		}
		if w.Len() == 0 || w.Len() >= len(data) {
			t.Errorf("wrote %d bytes; want the chunks before the refusal only", w.Len())
		}
	})
}

func maxOf(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func TestHostCertCache(t *testing.T) {
	auth, err := certs.LoadAuthority(config.CAs{}, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var mu sync.Mutex
	h, err := New(Options{Authority: auth, Policy: func() *policy.Engine { return nil },
		Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return now }})
	if err != nil {
		t.Fatal(err)
	}
	tg := &policy.Target{Target: config.Target{Name: "web-1", Aliases: []string{"10.0.0.5"}}}
	s1, err := h.hostSigner(tg)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := h.hostSigner(tg)
	if s1 != s2 {
		t.Errorf("second call re-signed the certificate before its half-life")
	}
	mu.Lock()
	now = now.Add(innerHostCertTTL/2 + time.Second)
	mu.Unlock()
	s3, _ := h.hostSigner(tg)
	if s3 == s1 {
		t.Errorf("certificate past its half-life was not renewed")
	}
	cert, ok := s3.PublicKey().(*ssh.Certificate)
	if !ok || cert.CertType != ssh.HostCert || strings.Join(cert.ValidPrincipals, ",") != "web-1,10.0.0.5" {
		t.Errorf("host key %v; want a host certificate for web-1 and its alias", s3.PublicKey())
	}
}

// fakeSink records what the tap passes on.
type fakeSink struct {
	out, in bytes.Buffer
	fail    error
}

func (f *fakeSink) Output(p []byte) error { f.out.Write(p); return f.fail }
func (f *fakeSink) Input(p []byte) error  { f.in.Write(p); return f.fail }
func (f *fakeSink) Resize(int, int) error { return f.fail }
func (f *fakeSink) Marker(string) error   { return f.fail }
func (f *fakeSink) Err() error            { return nil }

func TestHopTapMasksAfterPasswordPrompt(t *testing.T) {
	sink := &fakeSink{}
	tap := newHopTap(sink, true, nil)
	steps := []struct {
		out, in string
	}{
		{"$ ", "ls\r"},
		{"[sudo] password for alice: ", "hunter2"},
		{"", "\x7f9\r"},
		{"\r\nEnter PIN for token:", "1234\r"},
		{"$ ", "echo ok\r"},
		{"Passphrase for key 'id': ", "日本\r"},
		{"$ ", "echo done\r"},
	}
	for _, s := range steps {
		if s.out != "" {
			if err := tap.output([]byte(s.out)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tap.input([]byte(s.in)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tap.close(); err != nil {
		t.Fatal(err)
	}
	want := "ls\r*******\x7f*\r****\recho ok\r**\recho done\r"
	if got := sink.in.String(); got != want {
		t.Errorf("recorded input %q; want %q", got, want)
	}
}

func TestHopTapFailure(t *testing.T) {
	for _, required := range []bool{true, false} {
		sink := &fakeSink{fail: io.ErrClosedPipe}
		calls := 0
		tap := newHopTap(sink, required, func(error) { calls++ })
		if err := tap.output([]byte("a")); err != nil {
			t.Errorf("first write: %v; want it queued", err)
		}
		if err := tap.close(); err == nil {
			t.Errorf("required=%v: close reported no failure", required)
		}
		err := tap.output([]byte("b"))
		if calls != 1 {
			t.Errorf("required=%v: onFail called %d times; want 1", required, calls)
		}
		if required && err == nil {
			t.Errorf("required: a write after the failure succeeded; want it to stop the copy")
		}
		if !required && err != nil {
			t.Errorf("optional: write after the failure: %v; want none", err)
		}
		if sink.out.String() != "a" {
			t.Errorf("required=%v: sink got %q; want only the first write", required, sink.out.String())
		}
	}
}

func TestHopTapKeepsOrder(t *testing.T) {
	sink := &orderSink{}
	tap := newHopTap(sink, true, nil)
	var want []string
	for i := range 200 {
		switch i % 4 {
		case 0:
			_ = tap.output(bytes.Repeat([]byte{'o'}, 1+i*1000))
			want = append(want, fmt.Sprintf("o%d", 1+i*1000))
		case 1:
			_ = tap.input([]byte("i"))
			want = append(want, "i1")
		case 2:
			_ = tap.resize(i, i)
			want = append(want, fmt.Sprintf("r%d", i))
		case 3:
			_ = tap.marker("m")
			want = append(want, "m")
		}
	}
	if err := tap.close(); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sink.ops, ","); got != strings.Join(want, ",") {
		t.Errorf("recorder saw operations out of order")
	}
}

// orderSink records the order of operations.
type orderSink struct{ ops []string }

func (o *orderSink) Output(p []byte) error {
	o.ops = append(o.ops, fmt.Sprintf("o%d", len(p)))
	return nil
}
func (o *orderSink) Input(p []byte) error {
	o.ops = append(o.ops, fmt.Sprintf("i%d", len(p)))
	return nil
}
func (o *orderSink) Resize(c, _ int) error { o.ops = append(o.ops, fmt.Sprintf("r%d", c)); return nil }
func (o *orderSink) Marker(string) error   { o.ops = append(o.ops, "m"); return nil }
func (o *orderSink) Err() error            { return nil }
