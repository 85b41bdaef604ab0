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

	"github.com/posternhq/postern/state"
)

// flushInterval is how often the flusher takes a partly filled chunk, so a
// quiet interactive session still reaches the spool (and live followers)
// within this delay.
const flushInterval = 50 * time.Millisecond

// flushLoop is the recorder's flusher goroutine, one for all sessions in
// place of a ticker per session: every flushInterval it visits each active
// session (flushTick). Start starts it when the first session becomes
// active; it exits at the first tick that finds none, so it is not waited
// for.
func (r *Recorder) flushLoop() {
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	var sessions []*Session
	for now := range tick.C {
		r.mu.Lock()
		if len(r.active) == 0 {
			r.flushing = false
			r.mu.Unlock()
			return
		}
		for _, s := range r.active {
			sessions = append(sessions, s)
		}
		r.mu.Unlock()
		for _, s := range sessions {
			s.flushTick(now)
		}
		clear(sessions)
		sessions = sessions[:0]
	}
}

// flushTick hands the current chunk to the writer and, when the spool has
// unsynced writes and the last fsync is FsyncInterval old, asks the writer
// for an fsync.
func (s *Session) flushTick(now time.Time) {
	s.flushCurrent()
	if s.dirty.Load() && now.Sub(time.Unix(0, s.lastSync.Load())) >= s.r.opts.FsyncInterval {
		s.kick(true)
	}
	if s.checkpointDue(now) {
		s.startCheckpoint(now)
	}
}

// kick makes sure a writer goroutine runs, to write what is queued and, with
// fsync, to fsync the spool. Called after every send to queue: a writer
// exits only after finding the queue empty under wmu, so every queued chunk
// has one.
func (s *Session) kick(fsync bool) {
	s.wmu.Lock()
	if fsync {
		s.syncDue = true
	}
	if !s.writing && !s.stopping {
		s.writing = true
		s.writers.Go(s.writeLoop)
	}
	s.wmu.Unlock()
}

// writeLoop is the session's writer goroutine while it has work: it appends
// queued chunks to the spool and fsyncs when asked, then exits. At most one
// runs at a time (kick); it owns the spool file's write side while it runs.
func (s *Session) writeLoop() {
	for {
		select {
		case c := <-s.queue:
			if s.writeChunk(c) {
				s.dirty.Store(true)
			}
			continue
		default:
		}
		s.wmu.Lock()
		switch {
		case len(s.queue) > 0:
			s.wmu.Unlock()
		case s.syncDue:
			s.syncDue = false
			s.wmu.Unlock()
			s.dirty.Store(false)
			s.sync()
			s.lastSync.Store(time.Now().UnixNano())
		default:
			s.writing = false
			s.wmu.Unlock()
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
	s.written.Store(s.size)
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
