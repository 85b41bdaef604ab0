package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// maxRestarts bounds how often one upload starts again after the server
// forgot its multipart upload.
const maxRestarts = 3

// Upload streams a growing local file (a recording's spool) to one object.
// Begin starts its goroutine; [Upload.Grow] reports new bytes without
// waiting; [Upload.Complete] or [Upload.Abort] ends it exactly once.
type Upload struct {
	s           *Store
	key         string // store key
	full        string // bucket key
	path        string
	contentType string

	size  atomic.Int64 // bytes in the file
	sent  atomic.Int64 // bytes the bucket has
	wake  chan struct{}
	final chan int64

	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	done   chan struct{}
	err    error      // set by run before done closes
	m      *multipart // owned by run; read after done
}

// Begin starts streaming the file at path, which holds size bytes now and
// grows, to key. It does not touch the network: parts are sent by the
// upload's goroutine as the file grows.
func (s *Store) Begin(key, path, contentType string, size int64) *Upload {
	ctx, cancel := context.WithCancel(context.Background())
	u := &Upload{
		s: s, key: key, full: s.cfg.key(key), path: path, contentType: contentType,
		wake: make(chan struct{}, 1), final: make(chan int64, 1),
		ctx: ctx, cancel: cancel, done: make(chan struct{}),
	}
	u.size.Store(size)
	u.m = &multipart{s: s, key: u.full, contentType: contentType}
	s.mu.Lock()
	s.uploads[u] = struct{}{}
	s.mu.Unlock()
	go u.run() // ends on Complete or Abort, which wait for it
	return u
}

// Grow reports that the file now holds size bytes. It never blocks.
func (u *Upload) Grow(size int64) {
	u.size.Store(size)
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// backlog returns the bytes in the file not yet in the bucket.
func (u *Upload) backlog() int64 {
	return max(u.size.Load()-u.sent.Load(), 0)
}

// Complete sends what remains of the file, which is final at size bytes,
// and completes the object, retrying transient failures until ctx ends.
// If ctx ends first, the upload is abandoned (the caller keeps the file and
// stores it again later) and ctx's error returned.
func (u *Upload) Complete(ctx context.Context, size int64) error {
	first := false
	u.once.Do(func() {
		first = true
		u.size.Store(size)
		u.final <- size
	})
	if !first {
		return errors.New("upload already ended")
	}
	select {
	case <-u.done:
		return u.err
	case <-ctx.Done():
		u.cancel()
		<-u.done
		u.m.abort()
		return fmt.Errorf("complete %s: %w", u.key, context.Cause(ctx))
	}
}

// Abort stops the upload and aborts its multipart upload, if any.
func (u *Upload) Abort(ctx context.Context) error {
	u.once.Do(func() {})
	u.cancel()
	<-u.done
	u.m.abort()
	return nil
}

// run is the upload's goroutine: it sends full parts as the file grows
// and, once the size is final, the rest.
func (u *Upload) run() {
	defer close(u.done)
	defer func() {
		u.s.mu.Lock()
		delete(u.s.uploads, u)
		u.s.mu.Unlock()
	}()
	u.err = u.stream()
	if u.err != nil && u.ctx.Err() == nil {
		u.s.log.Load().Error("recording upload failed", "key", u.full, "err", u.err)
	}
}

func (u *Upload) stream() error {
	f, err := os.Open(u.path)
	if err != nil {
		return fmt.Errorf("upload %s: %w", u.key, err)
	}
	defer f.Close()
	part := u.s.opts.PartSize
	var off int64
	final := int64(-1)
	restarts := 0
	cut := &partCut{delim: u.s.opts.PartDelimiter}
	for {
		if final < 0 {
			select {
			case <-u.wake:
			case final = <-u.final:
			case <-u.ctx.Done():
				return fmt.Errorf("upload %s: %w", u.key, u.ctx.Err())
			}
		}
		for {
			end := u.size.Load()
			if final >= 0 {
				end = final
			}
			avail := end - off
			if avail <= 0 || (avail < part && (final < 0 || u.m.id == "")) {
				break
			}
			n := min(avail, part)
			if cut.delim != 0 && final < 0 {
				// While the file grows, a part ends just after a
				// delimiter (a whole cast line), so that another process
				// can complete the upload from a checkpoint of the rest.
				var ok bool
				if n, ok = cut.find(f, off, off+part-1, end); !ok {
					break
				}
			}
			// The part is read from the spool by each attempt: no upload
			// holds a part buffer, even while S3 is away.
			err := u.m.send(u.ctx, section(f, off, n), n)
			if errors.Is(err, errNoSuchUpload) && restarts < maxRestarts {
				restarts++
				u.s.log.Load().Warn("multipart upload vanished: starting again", "key", u.full)
				u.m.reset()
				off = 0
				u.sent.Store(0)
				cut.reset()
				continue
			}
			if err != nil {
				return fmt.Errorf("upload %s: %w", u.key, err)
			}
			off += n
			u.sent.Store(off)
		}
		if final < 0 {
			continue
		}
		if u.m.id == "" {
			// A short recording: one PUT of the whole file.
			if err := u.s.putObject(u.ctx, u.full, section(f, 0, final), final, u.contentType); err != nil {
				return fmt.Errorf("upload %s: %w", u.key, err)
			}
			u.sent.Store(final)
			return nil
		}
		err := u.m.complete(u.ctx)
		if errors.Is(err, errNoSuchUpload) && restarts < maxRestarts {
			restarts++
			u.m.reset()
			off = 0
			u.sent.Store(0)
			continue
		}
		if err != nil {
			return fmt.Errorf("upload %s: %w", u.key, err)
		}
		u.m.reset() // completed: nothing to abort
		return nil
	}
}

// Durable returns how many bytes of the file are in the bucket, in the
// completed parts of the multipart upload (or the whole object once
// completed). With Options.PartDelimiter set, that many bytes end just
// after a delimiter.
func (u *Upload) Durable() int64 { return u.sent.Load() }

// partCut finds where a part may end: just after the first delimiter at or
// after a minimum size. It remembers how far it has looked, so a file that
// grows is scanned once.
type partCut struct {
	delim   byte
	scanned int64 // bytes before this offset hold no delimiter past the minimum
	buf     []byte
}

func (c *partCut) reset() { c.scanned = 0 }

// find returns n such that the part [off, off+n) ends with the delimiter,
// its last byte at or after minEnd, reading the file no further than end;
// ok is false if no delimiter is there yet.
func (c *partCut) find(f *os.File, off, minEnd, end int64) (n int64, ok bool) {
	pos := max(minEnd, c.scanned)
	if c.buf == nil {
		c.buf = make([]byte, 64<<10)
	}
	for pos < end {
		k, err := f.ReadAt(c.buf[:min(int64(len(c.buf)), end-pos)], pos)
		if i := bytes.IndexByte(c.buf[:k], c.delim); i >= 0 {
			c.scanned = 0
			return pos + int64(i) + 1 - off, true
		}
		pos += int64(k)
		if err != nil {
			break
		}
	}
	c.scanned = pos
	return 0, false
}

// section returns a function giving a fresh reader of n bytes of f from
// off, for each attempt of a request.
func section(f *os.File, off, n int64) func() io.ReadSeeker {
	return func() io.ReadSeeker { return io.NewSectionReader(f, off, n) }
}

// bytesBody returns a function giving a fresh reader of b.
func bytesBody(b []byte) func() io.ReadSeeker {
	return func() io.ReadSeeker { return bytes.NewReader(b) }
}
