package recorder

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"time"

	"github.com/posternhq/postern/recorder/state"
)

// flushInterval is how often the writer takes a partly filled chunk, so a
// quiet interactive session still reaches the spool (and live followers)
// within this delay.
const flushInterval = 50 * time.Millisecond

// writeLoop is the session's writer goroutine. It owns the spool file's
// write side: it appends queued chunks, fsyncs every FsyncInterval, and on
// stop drains the queue, fsyncs and closes done.
func (s *Session) writeLoop() {
	defer close(s.done)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	lastSync := time.Now()
	dirty := false
	for {
		select {
		case c := <-s.queue:
			dirty = s.writeChunk(c) || dirty
		case <-tick.C:
			s.flushCurrent()
			if dirty && time.Since(lastSync) >= s.r.opts.FsyncInterval {
				s.sync()
				lastSync, dirty = time.Now(), false
			}
		case <-s.stop:
			for {
				select {
				case c := <-s.queue:
					s.writeChunk(c)
					continue
				default:
				}
				break
			}
			s.sync()
			s.notify()
			return
		}
	}
}

// flushCurrent hands the current chunk to the queue if no writer holds the
// session lock (if one does, it will hand the chunk off itself when full,
// and the next tick catches the rest).
func (s *Session) flushCurrent() {
	if !s.mu.TryLock() {
		return
	}
	if len(s.cur) > 0 {
		s.handOff()
	}
	s.mu.Unlock()
}

// writeChunk appends c to the spool and recycles its buffer. It reports
// whether anything was written.
func (s *Session) writeChunk(c chunk) bool {
	defer func() {
		if c.pooled {
			s.r.release(c.buf, s.tokens)
		}
	}()
	if s.Err() != nil {
		return false
	}
	if s.r.beforeWrite != nil {
		s.r.beforeWrite()
	}
	n, err := s.f.Write(*c.buf)
	s.hash.Write((*c.buf)[:n])
	s.size += int64(n)
	if err != nil {
		s.fail("write", err)
		return false
	}
	if s.up != nil {
		s.up.Grow(s.size)
	}
	s.notify()
	if c.gap > 0 && s.r.opts.State != nil {
		// The gap marker is in the spool now; audit it.
		_, err := s.r.opts.State.Append(context.Background(), state.Event{
			Type: state.EventRecordingError, Actor: s.meta.Identity, Target: s.meta.Target, Session: s.id,
			Details: map[string]any{"reason": "buffer overflow", "dropped_bytes": c.gap},
		})
		if err != nil {
			s.log.Error("audit recording gap failed", "err", err)
		}
	}
	return true
}

func (s *Session) sync() {
	if s.Err() != nil {
		return
	}
	if err := s.f.Sync(); err != nil {
		s.fail("fsync", err)
	}
}

// notify wakes live followers.
func (s *Session) notify() {
	s.notifyMu.Lock()
	close(s.notifyCh)
	s.notifyCh = make(chan struct{})
	s.notifyMu.Unlock()
}

func (s *Session) waitCh() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notifyCh
}

func (s *Session) writerDone() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// Follow streams the recording of session id. For a session being recorded
// here it reads the spool file from the start and keeps tailing it, whole
// lines only, until the session finishes (then io.EOF) or ctx ends (then
// ctx's error). For a finished session it returns the stored cast.
func (r *Recorder) Follow(ctx context.Context, id string) (io.ReadCloser, error) {
	if s := r.lookup(id); s != nil {
		f, err := os.Open(s.spoolPath)
		if err == nil {
			return &follower{ctx: ctx, s: s, f: f, buf: make([]byte, 32<<10)}, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("follow %s: %w", id, err)
		}
		// The spool is being moved into the store: wait until the session
		// is sealed, then serve the stored cast.
		select {
		case <-s.sealed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if r.opts.State == nil {
		return nil, fmt.Errorf("follow %s: %w", id, ErrNotFound)
	}
	row, err := r.opts.State.GetSession(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("follow %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("follow %s: %w", id, err)
	}
	if row.Status == state.StatusRunning {
		return nil, fmt.Errorf("follow %s: session is recorded by replica %q", id, row.Replica)
	}
	return r.opts.Store.Open(ctx, row.Object)
}

// follower tails a spool file. It is used by one goroutine.
type follower struct {
	ctx     context.Context
	s       *Session
	f       *os.File
	buf     []byte
	pending []byte // bytes read after the last complete line
	out     []byte // complete lines not yet returned
	eof     bool
}

func (fw *follower) Read(p []byte) (int, error) {
	for {
		if len(fw.out) > 0 {
			n := copy(p, fw.out)
			fw.out = fw.out[n:]
			return n, nil
		}
		if fw.eof {
			return 0, io.EOF
		}
		// Take the wake-up channel and the done state before reading, so a
		// write between the read and the wait is never missed.
		ch := fw.s.waitCh()
		done := fw.s.writerDone()
		n, err := fw.f.Read(fw.buf)
		if n > 0 {
			fw.pending = append(fw.pending, fw.buf[:n]...)
			if i := bytes.LastIndexByte(fw.pending, '\n'); i >= 0 {
				fw.out = append(fw.out[:0], fw.pending[:i+1]...)
				fw.pending = append(fw.pending[:0], fw.pending[i+1:]...)
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, fmt.Errorf("follow %s: %w", fw.s.id, err)
		}
		if done {
			fw.eof = true // a torn tail (never written by the recorder) is dropped
			continue
		}
		select {
		case <-ch:
		case <-fw.s.done:
		case <-fw.ctx.Done():
			return 0, fw.ctx.Err()
		}
	}
}

func (fw *follower) Close() error { return fw.f.Close() }
