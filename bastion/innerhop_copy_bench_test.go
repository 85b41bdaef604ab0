package bastion

import (
	"io"
	"testing"
)

// packetReader returns n bytes in reads of at most 32 KiB, the largest
// SSH channel packet x/crypto delivers, without allocating.
type packetReader struct {
	n   int
	buf []byte
}

func (r *packetReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), len(r.buf), r.n)
	copy(p[:k], r.buf)
	r.n -= k
	return k, nil
}

// BenchmarkCopyPooled measures the inner hop's copy loop (pooled buffers,
// optional recording tap) per byte moved; it must not allocate per chunk.
func BenchmarkCopyPooled(b *testing.B) {
	const size = 16 << 20
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = 'a' + byte(i%26)
	}
	for _, bc := range []struct {
		name string
		tap  func([]byte) error
	}{
		{"no-tap", nil},
		{"tap", func(p []byte) error { return nil }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(size)
			b.ReportAllocs()
			r := &packetReader{buf: buf}
			for b.Loop() {
				r.n = size
				if _, err := copyPooled(io.Discard, r, bc.tap); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
