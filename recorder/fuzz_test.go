package recorder

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzDecoder(f *testing.F) {
	for _, seed := range []string{
		"{\"version\": 2, \"width\": 80, \"height\": 24}\n[0.5, \"o\", \"a\"]\n[1.0, \"o\", \"b",
		"{\"version\": 3, \"term\": {\"cols\": 100, \"rows\": 50}}\n# c\n[0.5, \"o\", \"a\"]\n\n[0.25, \"x\", 0]\n",
		"{\"version\": 2, \"width\": 1, \"height\": 1}\n[1e3, \"r\", \"80x24\"]\n[-1, \"o\", \"\"]\n",
		"",
		"{}",
		"[1, \"o\", \"x\"]\n",
	} {
		f.Add([]byte(seed))
	}
	e, _ := NewEncoder(2)
	golden, _ := e.AppendHeader(nil, goldenHeader())
	f.Add(castScript(e, golden))
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder(bytes.NewReader(b))
		var last time.Duration
		for i := 0; ; i++ {
			ev, err := d.Next()
			if err != nil {
				return
			}
			if ev.Time < 0 || (d.header.Version == 3 && ev.Time < last) {
				t.Fatalf("event %d time %v (previous %v)", i, ev.Time, last)
			}
			last = ev.Time
		}
	})
}

func FuzzEncodeRoundTrip(f *testing.F) {
	for _, s := range utf8Samples {
		f.Add([]byte(s), uint16(3), true)
	}
	f.Add([]byte("bad \xff\xfe utf8 \xe4\xb8\x96\x00\x1b\"\\"), uint16(1), false)
	f.Add([]byte{}, uint16(0), false)
	f.Fuzz(func(t *testing.T, p []byte, split uint16, v3 bool) {
		version := 2
		if v3 {
			version = 3
		}
		e, _ := NewEncoder(version)
		b, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
		cut := 0
		if len(p) > 0 {
			cut = int(split) % (len(p) + 1)
		}
		b = e.AppendOutput(b, time.Millisecond, p[:cut])
		b = e.AppendInput(b, time.Millisecond, p)
		b = e.AppendOutput(b, 2*time.Millisecond, p[cut:])
		b = e.AppendFlush(b, 3*time.Millisecond)
		if !utf8.Valid(b) {
			t.Fatal("cast is not valid UTF-8")
		}
		d := NewDecoder(bytes.NewReader(b))
		var out, in strings.Builder
		for {
			ev, err := d.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("decode: %v\n%s", err, b)
			}
			switch ev.Code {
			case CodeOutput:
				out.WriteString(ev.Data)
			case CodeInput:
				in.WriteString(ev.Data)
			}
		}
		want := strings.ToValidUTF8(string(p), "\uFFFD")
		// Invalid bytes become one U+FFFD each, valid text is unchanged.
		if utf8.Valid(p) && (out.String() != want || in.String() != want) {
			t.Fatalf("round trip: out %q in %q; want %q", out.String(), in.String(), want)
		}
		if !utf8.Valid(p) && strings.ReplaceAll(out.String(), "\uFFFD", "") != strings.ReplaceAll(want, "\uFFFD", "") {
			t.Fatalf("round trip lost valid text: %q vs %q", out.String(), want)
		}
	})
}

// FuzzBoundedEncode drives the recorder's bounded path: events are cut to
// fit chunks of a fuzzed capacity, and every chunk must hold whole lines
// that decode back to the input.
func FuzzBoundedEncode(f *testing.F) {
	for _, s := range utf8Samples {
		f.Add([]byte(s), uint16(70))
	}
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xe4\xb8\x96"), uint16(61))
	f.Fuzz(func(t *testing.T, p []byte, capacity uint16) {
		size := eventOverhead + 12 + int(capacity)%2048
		e, _ := NewEncoder(2)
		cast, _ := e.AppendHeader(nil, Header{Width: 80, Height: 24})
		rest := p
		for len(rest) > 0 {
			chunk := make([]byte, 0, size)
			var n int
			chunk, n = e.appendData(chunk, time.Millisecond, streamOut, rest, cap(chunk))
			if n == 0 {
				t.Fatalf("no progress with an empty chunk of %d bytes", size)
			}
			if cap(chunk) != size || (len(chunk) > 0 && chunk[len(chunk)-1] != '\n') {
				t.Fatalf("chunk grew or ends mid-line: len %d cap %d", len(chunk), cap(chunk))
			}
			cast = append(cast, chunk...)
			rest = rest[n:]
		}
		cast = e.AppendFlush(cast, time.Millisecond)
		d := NewDecoder(bytes.NewReader(cast))
		var out strings.Builder
		for {
			ev, err := d.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			out.WriteString(ev.Data)
		}
		if utf8.Valid(p) && out.String() != string(p) {
			t.Fatalf("got %q; want %q", out.String(), p)
		}
	})
}

// FuzzEventFastPath checks the hand-written event parser against the
// encoding/json one: whenever the fast path accepts a line, it must read
// exactly what encoding/json reads.
func FuzzEventFastPath(f *testing.F) {
	for _, seed := range []string{
		`[0.5, "o", "a"]`, `[1,"i","\r"]`, `[ 12.000001 , "m" , "exec: ls" ]`, `[0.1, "o", "\u001b[0m\t\"q\"\\ \/"]`,
		`[0.1, "o", "\ud83d\ude00"]`, `[0.1, "o", "é世"]`, `[0.1, "o", "x", 1]`, `[0.1, "", "x"]`, `[0.1, "o\"", "x"]`,
		`[1e3, "o", "x"]`, `[0.1, "x", 0]`, `[0.1, "o", "\x"]`, `[0.1, "o", "` + "\xff" + `"]`, `[0.1, "o", "a` + "\x01" + `"]`,
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, line []byte, skip bool) {
		d := &Decoder{}
		if skip {
			d.skip = "o"
		}
		us, code, data, ok := d.fastEvent(line)
		if !ok {
			return
		}
		wus, wcode, wdata, err := d.slowEvent(line)
		if err != nil {
			if skip && code == "o" {
				return // skipped data is not checked (SkipData)
			}
			t.Fatalf("fast path accepted %q, encoding/json refuses it: %v", line, err)
		}
		if us != wus || code != wcode || data != wdata {
			t.Fatalf("line %q: fast (%d, %q, %q); encoding/json (%d, %q, %q)", line, us, code, data, wus, wcode, wdata)
		}
	})
}

// appendEscapedBytewise is appendEscaped one byte at a time, without the
// word-at-a-time copy: the oracle FuzzAppendEscaped holds it to.
func appendEscapedBytewise(dst, p []byte, limit int) ([]byte, int) {
	if limit < 0 {
		limit = len(dst) + 6*len(p)
	}
	dst = slices.Grow(dst, max(0, limit-len(dst)))
	i := 0
	for i < len(p) {
		b := p[i]
		switch {
		case safe[b]:
			if len(dst) == limit {
				return dst, i
			}
			dst = append(dst, b)
			i++
		case limit-len(dst) < 6:
			return dst, i
		case b < utf8.RuneSelf:
			dst = append(dst, escapes[b][:escLen[b]]...)
			i++
		case b < 0xC2 || b > 0xF4:
			dst = append(dst, "\uFFFD"...)
			i++
		default:
			r, size := utf8.DecodeRune(p[i:])
			if r == utf8.RuneError && size == 1 {
				if len(p)-i < utf8.UTFMax && !utf8.FullRune(p[i:]) {
					return dst, i
				}
				dst = append(dst, "\uFFFD"...)
				i++
				continue
			}
			dst = append(dst, p[i:i+size]...)
			i += size
		}
	}
	return dst, i
}

// FuzzAppendEscaped checks the word-at-a-time escaper against the
// byte-at-a-time one for any input, prefix and room.
func FuzzAppendEscaped(f *testing.F) {
	for _, s := range utf8Samples {
		f.Add([]byte(s), uint16(0), int16(-1))
	}
	f.Add([]byte("ZGF0YSBkYXRhIGRhdGEgZGF0YSBkYXRh\r\nZGF0YSBk\"YXRh\\IGRh\x00dGEg\xe4\xb8\x96ZGF0YSBkYXRh"), uint16(3), int16(40))
	f.Add(make([]byte, 40), uint16(7), int16(33))
	f.Add(append(make([]byte, 1000), "ZGF0YSBkYXRh\x00\x00\x01"...), uint16(2), int16(777))
	f.Fuzz(func(t *testing.T, p []byte, prefix uint16, room int16) {
		pre := bytes.Repeat([]byte{'x'}, int(prefix%64))
		limit := -1
		if room >= 0 {
			limit = len(pre) + int(room)%(6*len(p)+16)
		}
		got, gn := appendEscaped(slices.Clone(pre), p, limit)
		want, wn := appendEscapedBytewise(slices.Clone(pre), p, limit)
		if gn != wn || !bytes.Equal(got, want) {
			t.Fatalf("appendEscaped(%q, limit %d) = %q, %d; want %q, %d", p, limit, got, gn, want, wn)
		}
	})
}
