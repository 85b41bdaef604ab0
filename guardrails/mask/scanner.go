package mask

import "bytes"

// pemLabel replaces a private key block.
var pemLabel = []byte("[MASKED:" + DetectorPrivateKey + "]")

// pemEndCarry is what is kept inside a private key block to find its END
// line across writes.
const pemEndCarry = 64

// Scanner masks one byte stream. It is not safe for concurrent use; a nil
// *Scanner passes bytes through.
type Scanner struct {
	m      *Masker
	carry  []byte // bytes held back from the last call
	buf    []byte // carry + new data
	out    []byte
	inPEM  bool
	masked int
}

// NewScanner returns a Scanner for one stream; nil if m is nil.
func (m *Masker) NewScanner() *Scanner {
	if m == nil {
		return nil
	}
	return &Scanner{m: m}
}

// Next masks p, which follows the bytes of earlier calls, and returns what
// is final now and the number of matches masked in it. The trailing partial
// line (after the last LF or CR; at most MaxCarry bytes, never cutting a
// UTF-8 character or an escape sequence) is held back and scanned again
// with the next call; Flush returns it. The returned slice is valid until the next call. A nil
// Scanner returns p.
func (s *Scanner) Next(p []byte) ([]byte, int) {
	if s == nil {
		return p, 0
	}
	s.buf = append(append(s.buf[:0], s.carry...), p...)
	return s.process(false)
}

// Flush returns the held-back bytes, masked, and the number of matches in
// them. Later calls to Next start afresh (a match split across a Flush is
// not caught). Inside a private key block nothing is returned.
func (s *Scanner) Flush() ([]byte, int) {
	if s == nil || len(s.carry) == 0 {
		return nil, 0
	}
	s.buf = append(s.buf[:0], s.carry...)
	return s.process(true)
}

// Pending reports whether bytes are held back.
func (s *Scanner) Pending() bool { return s != nil && len(s.carry) > 0 && !s.inPEM }

// Masked returns the number of matches masked so far.
func (s *Scanner) Masked() int {
	if s == nil {
		return 0
	}
	return s.masked
}

func (s *Scanner) process(final bool) ([]byte, int) {
	data := s.buf
	out := s.out[:0]
	n := 0
	i := 0
	s.carry = s.carry[:0]
	for i < len(data) {
		if s.inPEM {
			loc := pemEnd.FindIndex(data[i:])
			if loc == nil {
				if !final {
					s.carry = append(s.carry, data[max(i, len(data)-pemEndCarry):]...)
				}
				i = len(data)
				break
			}
			i += loc[1]
			s.inPEM = false
			continue
		}
		seg := data[i:]
		if s.m.pem {
			if loc := pemBegin.FindIndex(seg); loc != nil {
				var k int
				out, k, _ = s.m.maskAppend(out, seg[:loc[0]], loc[0], true)
				out = append(out, pemLabel...)
				n += k + 1
				s.inPEM = true
				i += loc[1]
				continue
			}
		}
		cut := len(seg)
		if !final {
			cut = s.holdback(seg)
		}
		var k int
		out, k, cut = s.m.maskAppend(out, seg, cut, final)
		n += k
		s.carry = append(s.carry, seg[cut:]...)
		i = len(data)
	}
	s.out = out
	s.masked += n
	return out, n
}

// holdback returns where the final part of seg ends: after its last line
// end (LF, or CR: typed input ends its lines with CR), or MaxCarry bytes
// before its end, moved back so that no UTF-8 character or escape sequence
// is cut.
func (s *Scanner) holdback(seg []byte) int {
	cut := max(bytes.LastIndexByte(seg, '\n'), bytes.LastIndexByte(seg, '\r')) + 1
	if len(seg)-cut <= s.m.maxCarry {
		return cut
	}
	cut = len(seg) - s.m.maxCarry
	for k := 0; k < 3 && cut > 0 && seg[cut]&0xC0 == 0x80; k++ {
		cut--
	}
	if e := openEscape(seg[max(0, cut-64):cut]); e >= 0 {
		cut = max(0, cut-64) + e
	}
	return cut
}

// openEscape returns the index of an escape sequence that p ends inside,
// or -1.
func openEscape(p []byte) int {
	e := bytes.LastIndexByte(p, 0x1b)
	if e < 0 {
		return -1
	}
	rest := p[e+1:]
	if len(rest) == 0 {
		return e
	}
	switch rest[0] {
	case '[': // CSI: parameters, then a final byte 0x40-0x7e
		for _, c := range rest[1:] {
			if c >= 0x40 && c <= 0x7e {
				return -1
			}
		}
		return e
	case ']', 'P', '_', '^': // OSC, DCS...: ended by BEL or ST
		if bytes.IndexByte(rest, 0x07) >= 0 {
			return -1
		}
		return e
	}
	return -1
}
