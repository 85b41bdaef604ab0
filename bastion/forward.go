package bastion

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// dialTimeout bounds connecting to a forward's destination.
const dialTimeout = 10 * time.Second

// Copy buffer sizes. A direction reads into a small buffer of its own while
// data trickles, and borrows a large pooled buffer while it flows (a read
// that fills the small buffer), giving it back once a read fits in the small
// buffer again. Idle forwards so hold no large buffer.
const (
	smallBufSize = 2 << 10
	largeBufSize = 128 << 10
)

var largeBufs = sync.Pool{New: func() any {
	b := make([]byte, largeBufSize)
	return &b
}}

// halfCloser is one end of a splice: an SSH channel or a TCP connection.
type halfCloser interface {
	io.ReadWriteCloser
	// CloseWrite signals EOF to the peer and keeps reading.
	CloseWrite() error
}

// spliceStats is what a splice moved.
type spliceStats struct {
	// Up is the byte count from the client to the destination.
	Up int64
	// Down is the byte count from the destination to the client.
	Down int64
	// Err is the first copy error other than EOF or a close, if any.
	Err error
}

// splice copies between client and dest in both directions until both
// directions reach EOF, either side fails, or ctx ends. EOF on one side is
// passed on as a half-close (CloseWrite) so request/response protocols work;
// both ends are closed when splice returns. up and down, if not nil, count
// bytes as they move.
func splice(ctx context.Context, client, dest halfCloser, up, down prometheus.Counter) spliceStats {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() {
		client.Close()
		dest.Close()
	})
	defer stop()

	var st spliceStats
	var errUp, errDown error
	var wg sync.WaitGroup
	wg.Go(func() {
		st.Up, errUp = copyHalf(dest, client, up)
		if errUp != nil {
			cancel()
			return
		}
		dest.CloseWrite()
	})
	wg.Go(func() {
		st.Down, errDown = copyHalf(client, dest, down)
		if errDown != nil {
			cancel()
			return
		}
		client.CloseWrite()
	})
	wg.Wait()
	client.Close()
	dest.Close()
	for _, err := range []error{errUp, errDown} {
		if err != nil && !isClosed(err) && st.Err == nil {
			st.Err = err
		}
	}
	return st
}

// copyHalf copies src to dst until EOF (nil error) or a failure.
func copyHalf(dst io.Writer, src io.Reader, counter prometheus.Counter) (int64, error) {
	small := make([]byte, smallBufSize)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBufs.Put(large)
		}
	}()
	var total int64
	for {
		buf := small
		if large != nil {
			buf = *large
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			wn, werr := dst.Write(buf[:n])
			total += int64(wn)
			if counter != nil {
				counter.Add(float64(wn))
			}
			if werr != nil {
				return total, werr
			}
			if wn != n {
				return total, io.ErrShortWrite
			}
		}
		if rerr != nil {
			if rerr == io.EOF {
				return total, nil
			}
			return total, rerr
		}
		switch {
		case large == nil && n == len(small):
			large = largeBufs.Get().(*[]byte)
		case large != nil && n <= smallBufSize:
			largeBufs.Put(large)
			large = nil
		}
	}
}

// isClosed reports whether err only says that the other direction or the
// context closed the connection.
func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE)
}
