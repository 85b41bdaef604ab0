package bastion

import (
	"errors"
	"io"
	"sync"
)

// Copy buffers. A copy loop starts with a small buffer and switches to a large
// pooled one while reads keep filling the small one, so that bulk transfers
// move 256 KiB per read while idle sessions hold only a few KiB.
const (
	smallCopyBuf = 8 << 10
	largeCopyBuf = 256 << 10
	// smallReadsToShrink is how many consecutive short reads give the large
	// buffer back to the pool.
	smallReadsToShrink = 16
)

var (
	smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallCopyBuf); return &b }}
	largeBufPool = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}
)

// errTapStop is returned by copyPooled when the tap refused a chunk.
var errTapStop = errors.New("recording tap refused data")

// copyPooled copies src to dst until EOF, first handing each chunk to tap (if
// not nil). A tap error stops the copy before the chunk is written, so nothing
// reaches dst that the tap refused. It returns the bytes written to dst and
// nil at EOF.
func copyPooled(dst io.Writer, src io.Reader, tap func([]byte) error) (int64, error) {
	sp := smallBufPool.Get().(*[]byte)
	defer smallBufPool.Put(sp)
	var lp *[]byte
	defer func() {
		if lp != nil {
			largeBufPool.Put(lp)
		}
	}()
	buf := *sp
	short := 0
	var written int64
	for {
		nr, rerr := src.Read(buf)
		if nr > 0 {
			if tap != nil {
				if err := tap(buf[:nr]); err != nil {
					return written, errors.Join(errTapStop, err)
				}
			}
			nw, werr := dst.Write(buf[:nr])
			written += int64(nw)
			if werr != nil {
				return written, werr
			}
			switch {
			case lp == nil && nr == len(buf):
				lp = largeBufPool.Get().(*[]byte)
				buf = *lp
				short = 0
			case lp != nil && nr < smallCopyBuf:
				if short++; short >= smallReadsToShrink {
					largeBufPool.Put(lp)
					lp = nil
					buf = *sp
				}
			default:
				short = 0
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				return written, nil
			}
			return written, rerr
		}
	}
}
