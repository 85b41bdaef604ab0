package innerhop

import (
	"bytes"
	"io"
	"slices"
	"testing"
)

// scriptedReader returns one read of each given size, then EOF.
type scriptedReader struct{ sizes []int }

func (r *scriptedReader) Read(p []byte) (int, error) {
	if len(r.sizes) == 0 {
		return 0, io.EOF
	}
	n := min(r.sizes[0], len(p))
	r.sizes = r.sizes[1:]
	for i := range n {
		p[i] = 'x'
	}
	return n, nil
}

// TestCopyPooledTiers checks that a copy loop climbs from the 512-byte start
// buffer through 8 KiB to the large buffer only while reads fill it, and
// drops back to the start buffer after a run of short reads.
func TestCopyPooledTiers(t *testing.T) {
	big := 1 << 20
	sizes := []int{big, big, big, big}
	for range smallReadsToShrink {
		sizes = append(sizes, 100)
	}
	sizes = append(sizes, big)
	var w countingWriter
	if _, err := copyPooled(&w, &scriptedReader{sizes: sizes}, nil); err != nil {
		t.Fatal(err)
	}
	want := []int{startCopyBuf, smallCopyBuf, largeCopyBuf, largeCopyBuf}
	for range smallReadsToShrink {
		want = append(want, 100)
	}
	want = append(want, startCopyBuf)
	if !slices.Equal(w.writes, want) {
		t.Errorf("write sizes %v; want %v", w.writes, want)
	}
	if !bytes.Equal(w.Bytes(), bytes.Repeat([]byte("x"), w.Len())) {
		t.Errorf("copy differs")
	}
}

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
