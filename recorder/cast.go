package recorder

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Event codes of asciicast.
const (
	CodeOutput = "o" // bytes sent to the terminal
	CodeInput  = "i" // bytes typed by the user
	CodeResize = "r" // terminal resized, data "COLSxROWS"
	CodeMarker = "m" // marker, data is the label
	CodeExit   = "x" // v3 only: exit status
)

// Header is the first line of a cast. Only standard asciicast fields are
// written; postern's own metadata lives in the sidecar JSON.
type Header struct {
	// Version is 2 or 3.
	Version int
	// Width and Height are the terminal size in columns and rows.
	Width, Height int
	// Timestamp is the start time in Unix seconds; omitted if zero.
	Timestamp int64
	// Term is the terminal type (TERM); written as env.TERM in v2 and
	// term.type in v3.
	Term string
	// Command is the command that was recorded; omitted if empty.
	Command string
	// Title is a title for players; omitted if empty.
	Title string
	// Env holds environment variables (SHELL, TERM); omitted if empty.
	Env map[string]string
	// IdleTimeLimit is read from casts that carry it; never written.
	IdleTimeLimit float64
}

type headerV2 struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

type termV3 struct {
	Cols int    `json:"cols"`
	Rows int    `json:"rows"`
	Type string `json:"type,omitempty"`
}

type headerV3 struct {
	Version   int               `json:"version"`
	Term      termV3            `json:"term"`
	Timestamp int64             `json:"timestamp,omitempty"`
	Command   string            `json:"command,omitempty"`
	Title     string            `json:"title,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
}

// Encoder writes asciicast v2 or v3 lines. It keeps the state a cast needs
// across events: the time of the previous event (v3 writes intervals) and, per
// stream, up to 3 trailing bytes of a UTF-8 character split across writes.
//
// Every Append method appends whole '\n'-terminated lines to dst and returns
// the extended slice; none allocates when dst has room. An Encoder is not
// safe for concurrent use.
//
// # Why not encoding/json
//
// Terminal output is the hot path of every recorded session: with
// encoding/json escaping each chunk, JSON encoding took 28–40% of the relay's
// CPU. The escaper here copies runs of safe bytes in bulk and escapes only
// what JSON requires: '"', '\\' and control bytes below 0x20 (as \n, \r, \t,
// \b, \f or \u00XX). Valid UTF-8 is copied as is (no HTML escaping, no
// escaping of U+2028/U+2029, which JSON allows); each invalid byte becomes
// U+FFFD.
//
// # Cost of binary floods
//
// A control byte expands to at most 6 bytes (\u00XX) and an invalid byte to
// 3 (U+FFFD), so a stream of zeros grows 6× (a 512 MiB zero stream is a 3 GiB
// cast). What bounds memory is not the encoder but the recorder's bounded
// buffer: data is encoded into fixed-size chunks of at most
// Options.BufferSize in total, and when the writer falls behind the overflow
// policy (block, then fail; or drop with an audited gap) decides, so a flood
// costs disk, never unbounded memory.
type Encoder struct {
	v3    bool
	last  int64 // time of the previous event, µs since start
	carry [2]carry
}

// carry holds the start of a UTF-8 sequence cut off at the end of a write.
type carry struct {
	b [utf8.UTFMax]byte
	n int
}

const (
	streamOut = 0
	streamIn  = 1
)

// NewEncoder returns an encoder for asciicast version 2 or 3.
func NewEncoder(version int) (*Encoder, error) {
	switch version {
	case 2:
		return &Encoder{}, nil
	case 3:
		return &Encoder{v3: true}, nil
	}
	return nil, fmt.Errorf("asciicast version %d is not supported (want 2 or 3)", version)
}

// Version returns 2 or 3.
func (e *Encoder) Version() int {
	if e.v3 {
		return 3
	}
	return 2
}

// AppendHeader appends the header line for h (its Version is ignored: the
// encoder's version is written).
func (e *Encoder) AppendHeader(dst []byte, h Header) ([]byte, error) {
	var v any
	if e.v3 {
		v = headerV3{Version: 3, Term: termV3{Cols: h.Width, Rows: h.Height, Type: h.Term},
			Timestamp: h.Timestamp, Command: h.Command, Title: h.Title, Env: h.Env}
	} else {
		env := h.Env
		if h.Term != "" && env["TERM"] == "" {
			env = make(map[string]string, len(h.Env)+1)
			for k, v := range h.Env {
				env[k] = v
			}
			env["TERM"] = h.Term
		}
		v = headerV2{Version: 2, Width: h.Width, Height: h.Height, Timestamp: h.Timestamp,
			Command: h.Command, Title: h.Title, Env: env}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil { // Encode ends the line with '\n'
		return dst, fmt.Errorf("encode cast header: %w", err)
	}
	return append(dst, buf.Bytes()...), nil
}

// AppendOutput appends an "o" event with p at time t since the start. Bytes
// of an incomplete UTF-8 character at the end of p are held back and
// prefixed to the next output; if nothing is left to write, no line is
// appended.
func (e *Encoder) AppendOutput(dst []byte, t time.Duration, p []byte) []byte {
	dst, _ = e.appendData(dst, t, streamOut, p, -1)
	return dst
}

// AppendInput appends an "i" event with p, with its own UTF-8 carry.
func (e *Encoder) AppendInput(dst []byte, t time.Duration, p []byte) []byte {
	dst, _ = e.appendData(dst, t, streamIn, p, -1)
	return dst
}

// AppendResize appends an "r" event "COLSxROWS".
func (e *Encoder) AppendResize(dst []byte, t time.Duration, cols, rows int) []byte {
	dst = e.appendPrefix(dst, t, CodeResize)
	dst = strconv.AppendInt(dst, int64(cols), 10)
	dst = append(dst, 'x')
	dst = strconv.AppendInt(dst, int64(rows), 10)
	return append(dst, '"', ']', '\n')
}

// AppendMarker appends an "m" event with label.
func (e *Encoder) AppendMarker(dst []byte, t time.Duration, label string) []byte {
	dst = e.appendPrefix(dst, t, CodeMarker)
	dst, n := appendEscaped(dst, []byte(label), -1)
	if n < len(label) {
		dst = append(dst, "\uFFFD"...) // an incomplete character at the end
	}
	return append(dst, '"', ']', '\n')
}

// AppendExit records the exit status: an "x" event in v3, and in v2 (which
// has no exit event) an "m" marker "exit status N".
func (e *Encoder) AppendExit(dst []byte, t time.Duration, status int) []byte {
	if !e.v3 {
		return e.AppendMarker(dst, t, "exit status "+strconv.Itoa(status))
	}
	dst = e.appendPrefix(dst, t, CodeExit)
	dst = strconv.AppendInt(dst, int64(status), 10)
	return append(dst, '"', ']', '\n')
}

// AppendFlush ends both streams: a UTF-8 sequence still held back can never
// be completed, so it is written as U+FFFD.
func (e *Encoder) AppendFlush(dst []byte, t time.Duration) []byte {
	for st, code := range [2]string{CodeOutput, CodeInput} {
		if e.carry[st].n > 0 {
			e.carry[st].n = 0
			dst = e.appendPrefix(dst, t, code)
			dst = append(dst, "\uFFFD\"]\n"...)
		}
	}
	return dst
}

// eventOverhead bounds the bytes of a data event line other than the data:
// `[` time (≤ 20 digits and a point) `, "o", "` … `"]\n`.
const eventOverhead = 48

// appendData appends one event for stream st with as much of p as fits
// below limit (the maximum len(dst); -1 for no limit) and returns how many
// bytes of p it consumed (held-back carry bytes count as consumed). With a
// limit it needs room for eventOverhead plus one escaped character
// (utf8.UTFMax carried bytes and 6 bytes); it consumes nothing otherwise.
func (e *Encoder) appendData(dst []byte, t time.Duration, st int, p []byte, limit int) ([]byte, int) {
	if limit >= 0 && limit-len(dst) < eventOverhead+12 {
		return dst, 0
	}
	c := &e.carry[st]
	if len(p) == 0 {
		return dst, 0
	}
	mark, last := len(dst), e.last
	code := CodeOutput
	if st == streamIn {
		code = CodeInput
	}
	dst = e.appendPrefix(dst, t, code)
	dataStart := len(dst)
	lim := limit
	if lim >= 0 {
		lim -= 3 // room for `"]\n`
	}
	consumed := 0
	if c.n > 0 {
		// Complete the held-back character with the first bytes of p.
		need := seqLen(c.b[0]) - c.n
		take := 0
		for take < need && take < len(p) && p[take]&0xC0 == 0x80 {
			take++
		}
		switch {
		case take == need:
			var tmp [utf8.UTFMax]byte
			n := copy(tmp[:], c.b[:c.n])
			n += copy(tmp[n:], p[:take])
			if r, size := utf8.DecodeRune(tmp[:n]); r != utf8.RuneError || size > 1 {
				dst = append(dst, tmp[:n]...)
			} else {
				dst = append(dst, "\uFFFD"...)
			}
			c.n = 0
			consumed = take
		case take == len(p):
			// Still incomplete: keep carrying.
			c.n += copy(c.b[c.n:], p)
			dst, e.last = dst[:mark], last
			return dst, len(p)
		default:
			// The sequence was broken by a non-continuation byte.
			dst = append(dst, "\uFFFD"...)
			c.n = 0
		}
	}
	var n int
	dst, n = appendEscaped(dst, p[consumed:], lim)
	consumed += n
	if rest := p[consumed:]; len(rest) > 0 && len(rest) < utf8.UTFMax && !utf8.FullRune(rest) {
		// An incomplete character at the very end of p: carry it.
		c.n = copy(c.b[:], rest)
		consumed = len(p)
	}
	if len(dst) == dataStart {
		dst, e.last = dst[:mark], last
		return dst, consumed
	}
	return append(dst, '"', ']', '\n'), consumed
}

// seqLen returns the length of the UTF-8 sequence that lead byte b starts.
func seqLen(b byte) int {
	switch {
	case b >= 0xF0:
		return 4
	case b >= 0xE0:
		return 3
	default:
		return 2
	}
}

// appendPrefix appends `[TIME, "CODE", "` and advances the event clock.
func (e *Encoder) appendPrefix(dst []byte, t time.Duration, code string) []byte {
	us := int64(t / time.Microsecond)
	if us < e.last {
		us = e.last // never go back in time
	}
	v := us
	if e.v3 {
		// Intervals are differences of rounded absolute times, so rounding
		// errors never accumulate over a long session.
		v = us - e.last
	}
	e.last = us
	dst = append(dst, '[')
	dst = appendSeconds(dst, v)
	dst = append(dst, ',', ' ', '"')
	dst = append(dst, code...)
	return append(dst, '"', ',', ' ', '"')
}

// appendSeconds writes us microseconds as decimal seconds with up to six
// fractional digits and at least one ("1.5", "0.000123", "3.0").
func appendSeconds(dst []byte, us int64) []byte {
	dst = strconv.AppendInt(dst, us/1e6, 10)
	frac := us % 1e6
	dst = append(dst, '.')
	if frac == 0 {
		return append(dst, '0')
	}
	var digits [6]byte
	for i := 5; i >= 0; i-- {
		digits[i] = byte('0' + frac%10)
		frac /= 10
	}
	n := 6
	for digits[n-1] == '0' {
		n--
	}
	return append(dst, digits[:n]...)
}

// safe[b] reports whether byte b is copied into a JSON string as is.
var safe = func() (t [256]bool) {
	for b := 0x20; b < 0x80; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// escapes[b] is the JSON escape of an ASCII byte that is not safe, padded to
// 6 bytes so it is stored with one 6-byte copy; escLen[b] is its length.
var escapes, escLen = func() (t [utf8.RuneSelf][6]byte, n [utf8.RuneSelf]uint8) {
	const hex = "0123456789abcdef"
	for b := range t {
		t[b] = [6]byte{'\\', 'u', '0', '0', hex[b>>4], hex[b&0xF]}
		n[b] = 6
	}
	for b, c := range map[byte]byte{'"': '"', '\\': '\\', '\n': 'n', '\r': 'r', '\t': 't', '\b': 'b', '\f': 'f'} {
		t[b], n[b] = [6]byte{'\\', c}, 2
	}
	return t, n
}()

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// nulEscapes is a run of escaped NUL bytes.
var nulEscapes = strings.Repeat(`\u0000`, 128)

// unsafeMask returns a word whose byte k has its high bit set for the bytes
// of w (little-endian) that need escaping or are not ASCII: a byte < 0x20,
// ≥ 0x80, '"' or '\\' (word-at-a-time tests). Bytes above the first such
// byte may be flagged wrongly (a borrow carries upward), the first is
// exact: bits.TrailingZeros64(m)/8 is the number of safe bytes that lead w.
func unsafeMask(w uint64) uint64 {
	quote, bslash := w^(lsb*'"'), w^(lsb*'\\')
	return ((w-lsb*0x20)&^w | w | (quote-lsb)&^quote | (bslash-lsb)&^bslash) & msb
}

// appendEscaped appends p escaped as the contents of a JSON string, stopping
// before len(dst) would exceed limit (-1: no limit), and returns how many
// bytes of p it consumed. It stops without consuming an incomplete UTF-8
// sequence at the end of p, so the caller can carry it. It writes into dst's
// spare capacity directly; with a limit beyond cap(dst) or no limit, dst is
// grown first (the recorder always passes limit = cap(dst)).
//
// Runs of safe ASCII are found 8 bytes at a time (where a word holds a byte
// to escape, the safe bytes before it are counted from the test's result)
// and copied with one copy.
func appendEscaped(dst, p []byte, limit int) ([]byte, int) {
	if limit < 0 {
		limit = len(dst) + 6*len(p)
	}
	if limit > cap(dst) {
		dst = slices.Grow(dst, limit-len(dst))
	}
	n := len(dst)
	buf := dst[:limit]
	i := 0
	for i < len(p) {
		if safe[p[i]] {
			j := i + 1
			for {
				if q := p[j:]; len(q) >= 16 {
					if m := unsafeMask(binary.LittleEndian.Uint64(q)); m != 0 {
						j += bits.TrailingZeros64(m) >> 3
						break
					}
					if m := unsafeMask(binary.LittleEndian.Uint64(q[8:])); m != 0 {
						j += 8 + bits.TrailingZeros64(m)>>3
						break
					}
					j += 16
					continue
				}
				if q := p[j:]; len(q) >= 8 {
					if m := unsafeMask(binary.LittleEndian.Uint64(q)); m != 0 {
						j += bits.TrailingZeros64(m) >> 3
						break
					}
					j += 8
				}
				for j < len(p) && safe[p[j]] {
					j++
				}
				break
			}
			if room := limit - n; j-i > room {
				n += copy(buf[n:], p[i:i+room])
				return buf[:n], i + room
			}
			n += copy(buf[n:], p[i:j])
			i = j
			continue
		}
		if limit-n < 6 {
			break
		}
		b := p[i]
		if b == 0 {
			// A run of NULs, what a binary flood mostly holds, is copied
			// from a ready-made run of escapes.
			r := 1
			for r+8 <= len(nulEscapes)/6 && i+r+8 <= len(p) && binary.LittleEndian.Uint64(p[i+r:]) == 0 {
				r += 8
			}
			for r < len(nulEscapes)/6 && i+r < len(p) && p[i+r] == 0 {
				r++
			}
			r = min(r, (limit-n)/6)
			n += copy(buf[n:], nulEscapes[:6*r])
			i += r
			continue
		}
		if b < utf8.RuneSelf {
			*(*[6]byte)(buf[n:]) = escapes[b]
			n += int(escLen[b])
			i++
			continue
		}
		if b < 0xC2 || b > 0xF4 {
			// Never the start of a valid sequence (continuation byte,
			// overlong lead or out of range): one U+FFFD, no decoding.
			n += copy(buf[n:], "\uFFFD")
			i++
			continue
		}
		r, size := utf8.DecodeRune(p[i:])
		if r == utf8.RuneError && size == 1 {
			if len(p)-i < utf8.UTFMax && !utf8.FullRune(p[i:]) {
				break // incomplete sequence at the end
			}
			n += copy(buf[n:], "\uFFFD")
			i++
			continue
		}
		n += copy(buf[n:], p[i:i+size])
		i += size
	}
	return buf[:n], i
}
