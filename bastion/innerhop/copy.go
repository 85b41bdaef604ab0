package innerhop

import (
	"errors"
	"io"
	"sync"
)

// Copy buffers. A copy loop starts with a 512-byte buffer and moves up a
// tier (8 KiB, then a large pooled one) each time a read fills the buffer,
// so that bulk transfers move 256 KiB per read while an idle session holds
// only 512 bytes per direction (a recorded session has three directions,
// each blocked in a read of its buffer while idle). Keystrokes and prompts
// fit in the start buffer; the first full read leaves it.
const (
	startCopyBuf = 512
	smallCopyBuf = 8 << 10
	largeCopyBuf = 256 << 10
	// smallReadsToShrink is how many consecutive short reads (smaller than
	// the tier below) give the buffers above the start one back to the pool.
	smallReadsToShrink = 16
)

var (
	startBufPool = sync.Pool{New: func() any { b := make([]byte, startCopyBuf); return &b }}
	smallBufPool = sync.Pool{New: func() any { b := make([]byte, smallCopyBuf); return &b }}
	largeBufPool = sync.Pool{New: func() any { b := make([]byte, largeCopyBuf); return &b }}

	// copyTiers are the buffer pools a copy loop climbs, smallest first.
	copyTiers = [...]*sync.Pool{&startBufPool, &smallBufPool, &largeBufPool}
	// copyTierSize is the buffer size of each tier.
	copyTierSize = [...]int{startCopyBuf, smallCopyBuf, largeCopyBuf}
)

// innerPacketData is the most channel data the inner hop puts in one packet
// to the client. The inner connection runs inside a channel of the outer
// one, and the client takes at most 32 KiB of data per outer packet
// (OpenSSH and x/crypto alike). An inner packet carrying 32 KiB of data is
// that plus its framing (length, padding, channel header, MAC or tag),
// which the outer channel then splits into a full packet and a sliver of
// a few dozen bytes: two packets to encrypt, send, receive and decrypt
// where one would do. 128 bytes is more than the framing of any cipher
// and MAC the inner hop offers, so every inner packet of this size fits
// one outer packet.
const innerPacketData = 32<<10 - 128

// fitWriter writes to an inner-hop channel in chunks of innerPacketData, so
// that each becomes one packet of the inner connection and one of the
// outer.
type fitWriter struct{ w io.Writer }

func (f fitWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > innerPacketData {
		m, err := f.w.Write(p[:innerPacketData])
		n += m
		if err != nil {
			return n, err
		}
		p = p[innerPacketData:]
	}
	m, err := f.w.Write(p)
	return n + m, err
}

// errTapStop is returned by copyPooled when the tap refused a chunk.
var errTapStop = errors.New("recording tap refused data")

// copyPooled copies src to dst until EOF, first handing each chunk to tap (if
// not nil). A tap error stops the copy before the chunk is written, so nothing
// reaches dst that the tap refused. It returns the bytes written to dst and
// nil at EOF.
func copyPooled(dst io.Writer, src io.Reader, tap func([]byte) error) (int64, error) {
	var held [len(copyTiers)]*[]byte
	defer func() {
		for i, p := range held {
			if p != nil {
				copyTiers[i].Put(p)
			}
		}
	}()
	tier := 0
	held[0] = copyTiers[0].Get().(*[]byte)
	buf := *held[0]
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
			case nr == len(buf) && tier < len(copyTiers)-1:
				tier++
				if held[tier] == nil {
					held[tier] = copyTiers[tier].Get().(*[]byte)
				}
				buf = *held[tier]
				short = 0
			case tier > 0 && nr < copyTierSize[tier-1]:
				if short++; short >= smallReadsToShrink {
					for i := 1; i < len(held); i++ {
						if held[i] != nil {
							copyTiers[i].Put(held[i])
							held[i] = nil
						}
					}
					tier, short = 0, 0
					buf = *held[0]
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
