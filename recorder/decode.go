package recorder

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// ErrTornLine reports a final line without its terminating '\n' (a cast cut
// off mid-write). The events before it are intact; the torn line is dropped.
var ErrTornLine = errors.New("asciicast: torn final line")

// Event is one decoded asciicast event.
type Event struct {
	// Time is the absolute time since the start of the recording (v3
	// intervals are summed).
	Time time.Duration
	// Code is "o", "i", "r", "m" or "x".
	Code string
	// Data is the event's payload.
	Data string
}

// Decoder reads an asciicast v2 or v3 stream. Players and tests use it; it
// is tolerant of a torn final line, which it reports as ErrTornLine.
type Decoder struct {
	r       *bufio.Reader
	skip    string // codes whose data is not decoded (SkipData)
	buf     []byte // a line longer than the reader's buffer, reused
	header  Header
	hdrErr  error
	hdrDone bool
	us      int64 // running absolute time in µs (v3)
	line    int
	torn    bool
	done    bool
}

// NewDecoder returns a decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10)}
}

// maxLine bounds one line of a cast; the recorder never writes lines longer
// than its chunk size.
const maxLine = 64 << 20

// readLine returns the next line without its '\n'. A last line without '\n'
// is returned with torn set.
func (d *Decoder) readLine() ([]byte, bool, error) {
	var line []byte
	discard := false // the rest of a skipped event's line is not kept
	for {
		frag, err := d.r.ReadSlice('\n')
		if err == nil && line == nil {
			// The whole line is in the buffer: no copy (it is valid until
			// the next read, and every caller is done with it by then).
			d.line++
			return frag[:len(frag)-1], false, nil
		}
		switch {
		case line == nil:
			// A line longer than the buffer: gather it in d.buf, reused
			// from line to line; of an event whose data is skipped, keep
			// only this first part (its time and code).
			line = append(d.buf[:0], frag...)
			discard = errors.Is(err, bufio.ErrBufferFull) && d.skip != "" && d.skippedHead(frag)
		case !discard:
			line = append(line, frag...)
		}
		d.buf = line
		if len(line) > maxLine {
			return nil, false, fmt.Errorf("asciicast line %d: longer than %d bytes", d.line+1, maxLine)
		}
		switch {
		case err == nil:
			d.line++
			if discard {
				return line, false, nil
			}
			return line[:len(line)-1], false, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(line) == 0 {
				return nil, false, io.EOF
			}
			d.line++
			return line, true, nil
		default:
			return nil, false, fmt.Errorf("read asciicast: %w", err)
		}
	}
}

type rawHeader struct {
	Version       int               `json:"version"`
	Width         int               `json:"width"`
	Height        int               `json:"height"`
	Term          *termV3           `json:"term"`
	Timestamp     json.Number       `json:"timestamp"`
	Command       string            `json:"command"`
	Title         string            `json:"title"`
	Env           map[string]string `json:"env"`
	IdleTimeLimit float64           `json:"idle_time_limit"`
}

// Header reads (once) and returns the header.
func (d *Decoder) Header() (Header, error) {
	if d.hdrDone {
		return d.header, d.hdrErr
	}
	d.hdrDone = true
	d.header, d.hdrErr = d.readHeader()
	return d.header, d.hdrErr
}

func (d *Decoder) readHeader() (Header, error) {
	line, torn, err := d.readLine()
	if errors.Is(err, io.EOF) {
		return Header{}, errors.New("asciicast: empty file")
	}
	if err != nil {
		return Header{}, err
	}
	if torn {
		d.done = true
		return Header{}, fmt.Errorf("asciicast header: %w", ErrTornLine)
	}
	var raw rawHeader
	if err := json.Unmarshal(line, &raw); err != nil {
		return Header{}, fmt.Errorf("asciicast header: not a JSON object")
	}
	h := Header{Version: raw.Version, Command: raw.Command, Title: raw.Title, Env: raw.Env, IdleTimeLimit: raw.IdleTimeLimit}
	if raw.Timestamp != "" {
		f, err := raw.Timestamp.Float64()
		if err != nil {
			return Header{}, fmt.Errorf("asciicast header: bad timestamp")
		}
		h.Timestamp = int64(f)
	}
	switch raw.Version {
	case 2:
		h.Width, h.Height = raw.Width, raw.Height
		h.Term = raw.Env["TERM"]
	case 3:
		if raw.Term == nil {
			return Header{}, errors.New("asciicast v3 header: missing term")
		}
		h.Width, h.Height, h.Term = raw.Term.Cols, raw.Term.Rows, raw.Term.Type
	default:
		return Header{}, fmt.Errorf("asciicast version %d is not supported (want 2 or 3)", raw.Version)
	}
	if h.Width <= 0 || h.Height <= 0 {
		return Header{}, errors.New("asciicast header: missing terminal size")
	}
	return h, nil
}

// Next returns the next event. It returns io.EOF at the end of the stream
// and ErrTornLine (once, then io.EOF) if the final line is incomplete.
// Comment lines (v3 "#") and blank lines are skipped.
func (d *Decoder) Next() (Event, error) {
	if _, err := d.Header(); err != nil {
		if d.done {
			return Event{}, io.EOF
		}
		d.done = true
		return Event{}, err
	}
	for {
		if d.done {
			return Event{}, io.EOF
		}
		line, torn, err := d.readLine()
		if err != nil {
			d.done = true
			return Event{}, err
		}
		if torn {
			d.done, d.torn = true, true
			return Event{}, ErrTornLine
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		return d.parseEvent(line)
	}
}

// SkipData makes Next return events whose code is one of the single-byte
// codes in codes (for example "o") without their data: Data is empty, and
// the data is neither decoded nor checked. Readers that want only some
// kinds of events (the search indexer reading input lines past its output
// budget) skip the rest at the speed of finding line ends. An empty codes
// decodes every event again.
func (d *Decoder) SkipData(codes string) { d.skip = codes }

// Torn reports whether the stream ended with a torn line.
func (d *Decoder) Torn() bool { return d.torn }

func (d *Decoder) parseEvent(line []byte) (Event, error) {
	us, code, data, ok := d.fastEvent(line)
	if !ok {
		var err error
		if us, code, data, err = d.slowEvent(line); err != nil {
			return Event{}, err
		}
	}
	if d.header.Version == 3 {
		if d.us > maxMicros-us {
			return Event{}, fmt.Errorf("asciicast line %d: time overflows", d.line)
		}
		d.us += us
	} else {
		d.us = us
	}
	return Event{Time: time.Duration(d.us) * time.Microsecond, Code: code, Data: data}, nil
}

// fastEvent parses the line shape the recorder writes, [time, "code",
// "data"], without encoding/json (which made reading a cast back 15 times
// slower than writing it). Anything else, a JSON string with surrogate
// escapes or invalid UTF-8, or malformed input, reports !ok and is left to
// slowEvent, which decides exactly as encoding/json does.
func (d *Decoder) fastEvent(line []byte) (us int64, code, data string, ok bool) {
	us, code, p, ok := parseHead(line)
	if !ok {
		return 0, "", "", false
	}
	if len(code) == 1 && strings.IndexByte(d.skip, code[0]) >= 0 {
		return us, code, "", true
	}
	p = bytes.TrimRight(p, " \t\r\n")
	if len(p) < 3 || p[0] != '"' || p[len(p)-1] != ']' {
		return 0, "", "", false
	}
	data, rest, ok := unquoteJSON(p[:len(p)-1])
	if !ok || len(skipSpace(rest)) != 0 {
		return 0, "", "", false
	}
	return us, code, data, true
}

// parseHead parses the start of an event line, `[time, "code", `, and
// returns the time in microseconds, the code and the rest of the line.
func parseHead(line []byte) (us int64, code string, rest []byte, ok bool) {
	p := line
	if len(p) < 2 || p[0] != '[' {
		return 0, "", nil, false
	}
	p = skipSpace(p[1:])
	i := 0
	for i < len(p) && (p[i] >= '0' && p[i] <= '9' || p[i] == '.') {
		i++
	}
	if !plainNumber(p[:i]) {
		return 0, "", nil, false
	}
	us, err := parseMicros(string(p[:i]))
	if err != nil {
		return 0, "", nil, false
	}
	p = skipSpace(p[i:])
	if len(p) == 0 || p[0] != ',' {
		return 0, "", nil, false
	}
	p = skipSpace(p[1:])
	if len(p) < 3 || p[0] != '"' {
		return 0, "", nil, false
	}
	end := bytes.IndexByte(p[1:], '"')
	if end <= 0 {
		return 0, "", nil, false
	}
	c := p[1 : 1+end]
	if bytes.IndexByte(c, '\\') >= 0 || bytes.IndexFunc(c, func(r rune) bool { return r < 0x20 || r == utf8.RuneError }) >= 0 {
		return 0, "", nil, false
	}
	p = skipSpace(p[2+end:])
	if len(p) == 0 || p[0] != ',' {
		return 0, "", nil, false
	}
	return us, codeString(c), skipSpace(p[1:]), true
}

// skippedHead reports whether head, the start of an event line, names an
// event whose data SkipData skips.
func (d *Decoder) skippedHead(head []byte) bool {
	_, code, _, ok := parseHead(bytes.TrimLeft(head, " \t\r"))
	return ok && len(code) == 1 && strings.IndexByte(d.skip, code[0]) >= 0
}

// plainNumber reports whether n is a JSON number without sign or exponent:
// 0 or a digit string without leading zero, then optionally '.' and digits.
func plainNumber(n []byte) bool {
	whole, frac, dot := bytes.Cut(n, []byte{'.'})
	if len(whole) == 0 || (len(whole) > 1 && whole[0] == '0') || !allDigits(string(whole)) {
		return false
	}
	return !dot || (len(frac) > 0 && allDigits(string(frac)))
}

// codeString returns the event code, without allocating for the standard
// codes.
func codeString(c []byte) string {
	switch string(c) {
	case CodeOutput:
		return CodeOutput
	case CodeInput:
		return CodeInput
	case CodeResize:
		return CodeResize
	case CodeMarker:
		return CodeMarker
	case CodeExit:
		return CodeExit
	}
	return string(c)
}

func skipSpace(p []byte) []byte {
	for len(p) > 0 && (p[0] == ' ' || p[0] == '\t' || p[0] == '\r' || p[0] == '\n') {
		p = p[1:]
	}
	return p
}

// unquoteJSON decodes the JSON string at the start of p (which begins with
// '"') and returns it with the rest of p. It reports !ok for what it does
// not handle: invalid UTF-8, raw control characters, surrogate escapes and
// malformed escapes.
func unquoteJSON(p []byte) (string, []byte, bool) {
	p = p[1:]
	// The common case: no escapes at all.
	i := 0
	for i < len(p) && p[i] != '"' && p[i] != '\\' && p[i] >= 0x20 {
		i++
	}
	if i < len(p) && p[i] == '"' {
		if !utf8.Valid(p[:i]) {
			return "", nil, false
		}
		return string(p[:i]), p[i+1:], true
	}
	buf := make([]byte, 0, len(p))
	buf = append(buf, p[:i]...)
	for i < len(p) {
		c := p[i]
		switch {
		case c == '"':
			if !utf8.Valid(buf) {
				return "", nil, false
			}
			return string(buf), p[i+1:], true
		case c < 0x20:
			return "", nil, false
		case c != '\\':
			buf = append(buf, c)
			i++
			continue
		}
		if i+1 >= len(p) {
			return "", nil, false
		}
		switch p[i+1] {
		case '"', '\\', '/':
			buf = append(buf, p[i+1])
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			if i+6 > len(p) {
				return "", nil, false
			}
			v, err := strconv.ParseUint(string(p[i+2:i+6]), 16, 16)
			if err != nil || utf16.IsSurrogate(rune(v)) {
				return "", nil, false
			}
			buf = utf8.AppendRune(buf, rune(v))
			i += 6
			continue
		default:
			return "", nil, false
		}
		i += 2
	}
	return "", nil, false
}

// slowEvent parses an event line with encoding/json.
func (d *Decoder) slowEvent(line []byte) (int64, string, string, error) {
	var raw []json.RawMessage
	if err := json.Unmarshal(line, &raw); err != nil || len(raw) != 3 {
		return 0, "", "", fmt.Errorf("asciicast line %d: not an event [time, code, data]", d.line)
	}
	var num json.Number
	if err := json.Unmarshal(raw[0], &num); err != nil {
		return 0, "", "", fmt.Errorf("asciicast line %d: bad event time", d.line)
	}
	us, err := parseMicros(string(num))
	if err != nil || us < 0 {
		return 0, "", "", fmt.Errorf("asciicast line %d: bad event time", d.line)
	}
	var code, data string
	if err := json.Unmarshal(raw[1], &code); err != nil || code == "" {
		return 0, "", "", fmt.Errorf("asciicast line %d: bad event code", d.line)
	}
	if len(code) == 1 && strings.IndexByte(d.skip, code[0]) >= 0 {
		return us, code, "", nil
	}
	if err := json.Unmarshal(raw[2], &data); err != nil {
		// v3 allows a number for "x"; accept any scalar as text.
		var n json.Number
		if code != CodeExit || json.Unmarshal(raw[2], &n) != nil {
			return 0, "", "", fmt.Errorf("asciicast line %d: bad event data", d.line)
		}
		data = n.String()
	}
	return us, code, data, nil
}

// parseMicros parses decimal seconds ("12", "1.5", "0.000123", "1e-3") to
// microseconds without accumulating float error for the common forms.
func parseMicros(s string) (int64, error) {
	const maxSec = math.MaxInt64 / int64(time.Second/time.Microsecond) / 1000
	whole, frac, ok := cutByte(s, '.')
	if w, err := strconv.ParseInt(whole, 10, 64); err == nil && w >= 0 && w < maxSec && allDigits(frac) {
		us := w * 1e6
		for i := 0; i < 6; i++ {
			d := int64(0)
			if ok && i < len(frac) {
				d = int64(frac[i] - '0')
			}
			us += d * pow10[5-i]
		}
		return us, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > float64(maxSec) {
		return 0, errors.New("bad time")
	}
	return int64(math.Round(f * 1e6)), nil
}

// maxMicros is the largest time a decoded event may have (a time.Duration
// of microseconds must not overflow).
const maxMicros = math.MaxInt64 / int64(time.Microsecond)

var pow10 = [6]int64{1, 10, 100, 1000, 10000, 100000}

func cutByte(s string, c byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
