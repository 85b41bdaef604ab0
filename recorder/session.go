package recorder

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/posternhq/postern/state"
)

// Session is one recording in progress. Output, Input, Resize and Marker may
// be called from several goroutines; Finish ends it once. All methods on a
// nil *Session are valid and do nothing (a nil session = not recording).
//
// Data path: events are encoded under a mutex into the current chunk (a
// fixed-size buffer); full chunks go through a bounded queue to the
// session's writer goroutine, which appends them to the spool file with
// large writes. The recorder's one flusher goroutine (flushLoop) hands a
// partly filled chunk to the writer every flushInterval and asks it to fsync
// every FsyncInterval while anything is unsynced. The writer runs only while
// it has work: a queued chunk or a requested fsync starts it and it exits
// when none is left, so an idle session has no goroutine. At most BufferSize
// bytes of chunks exist per session; when all are in use the overflow policy
// decides (block up to BlockTimeout then fail, or drop and record the gap).
type Session struct {
	r         *Recorder
	id        string
	meta      Meta
	row       state.Session // the index row written at Start
	start     time.Time
	key       string
	spoolPath string
	log       *slog.Logger

	mu       sync.Mutex // guards the fields below and the encoder
	enc      *Encoder
	cur      []byte  // chunk being filled; nil if none
	curBuf   *[]byte // pool handle of cur
	curGap   int64   // bytes dropped before cur's gap marker
	dropped  int64   // bytes dropped since the last gap marker
	echoOff  bool
	events   bool // whether any event line has been written
	finished bool
	bytesIn  int64
	bytesOut int64
	scratch  []byte // masked input

	queue  chan chunk    // full chunks to the writer; never blocks (cap nbuf+1)
	tokens chan struct{} // one per chunk the session may hold (cap nbuf)
	f      *os.File      // spool file, owned by the running writer goroutine after Start, by Finish after the last
	done   chan struct{} // closed by Finish once everything is written and synced

	wmu      sync.Mutex     // guards the three fields below; taken after mu, never before
	writing  bool           // a writer goroutine runs; at most one does
	syncDue  bool           // the flusher asked for an fsync
	stopping bool           // Finish writes the rest itself: no new writer
	writers  sync.WaitGroup // writer goroutines, for Finish
	dirty    atomic.Bool    // written since the last fsync
	lastSync atomic.Int64   // time of the last fsync (or of Start), in Unix nanoseconds

	// hash and size cover every byte written to the spool; the running
	// writer goroutine owns them, and Finish once the last has exited.
	hash hash.Hash
	size int64
	// written is size, published after each write for checkpoints.
	written atomic.Int64

	// Checkpoints (journal.go): the journal holds the spool up to ckptEnd;
	// entries up to ckptTrim were deleted because the store holds them.
	ckptEnd, ckptTrim atomic.Int64
	ckptLast          atomic.Int64 // when the last checkpoint started, Unix nanoseconds
	ckptBusy          atomic.Bool  // a checkpoint runs
	ckptStop          atomic.Bool  // Finish: no new checkpoint
	ckptWG            sync.WaitGroup

	sealed chan struct{} // closed when Finish has stored and indexed the recording

	// up streams the spool to a StreamingStore (nil for other stores); the
	// writer goroutine tells it of every write, Finish completes it.
	up Upload

	errMu sync.Mutex
	err   error

	notifyMu sync.Mutex
	notifyCh chan struct{} // closed and replaced after every spool write
}

// chunk is a buffer of whole cast lines handed to the writer.
type chunk struct {
	buf    *[]byte
	gap    int64 // bytes dropped before a gap marker in buf (audited)
	pooled bool  // buf came from the pool with a token, both returned after the write
}

// ID returns the session id ("" for a nil session).
func (s *Session) ID() string {
	if s == nil {
		return ""
	}
	return s.id
}

// Err returns a non-nil error once the recording has failed.
func (s *Session) Err() error {
	if s == nil {
		return nil
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// fail records the first failure of the recording.
func (s *Session) fail(reason string, err error) {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	if s.err != nil {
		return
	}
	s.err = fmt.Errorf("recording %s failed: %w", s.id, err)
	s.r.m.errors.WithLabelValues(reason).Inc()
	s.log.Error("recording failed", "reason", reason, "err", err)
}

// Output records bytes sent to the terminal ('o'). It blocks only while the
// bounded buffer is full (block policy) and returns an error once the
// recording has failed; the caller decides whether to fail closed.
func (s *Session) Output(p []byte) error {
	if s == nil {
		return nil
	}
	return s.record(streamOut, p)
}

// Input records bytes typed by the user ('i'). While echo is off they are
// recorded masked.
func (s *Session) Input(p []byte) error {
	if s == nil {
		return nil
	}
	return s.record(streamIn, p)
}

// SetEcho tells the recorder whether the remote terminal echoes input. While
// it is off (a password prompt), printable input characters are recorded as
// '*'; control characters (Enter, backspace) are kept.
func (s *Session) SetEcho(on bool) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.echoOff = !on
	s.mu.Unlock()
}

// Resize records a terminal size change ('r').
func (s *Session) Resize(cols, rows int) error {
	if s == nil {
		return nil
	}
	return s.event(func(dst []byte, t time.Duration) []byte { return s.enc.AppendResize(dst, t, cols, rows) }, 64)
}

// maxLabel bounds a marker label (longer labels are cut).
const maxLabel = 512

// Marker records a marker ('m') with label (cut to 512 bytes).
func (s *Session) Marker(label string) error {
	if s == nil {
		return nil
	}
	if len(label) > maxLabel {
		label = label[:maxLabel]
	}
	return s.event(func(dst []byte, t time.Duration) []byte { return s.enc.AppendMarker(dst, t, label) }, eventOverhead+6*len(label))
}

// event appends one small event of at most need bytes.
func (s *Session) event(add func([]byte, time.Duration) []byte, need int) error {
	if err := s.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrFinished
	}
	t := s.r.opts.Now().Sub(s.start)
	if s.cur != nil && cap(s.cur)-len(s.cur) < need {
		s.handOff()
	}
	if s.cur == nil {
		if err := s.nextChunk(t); err != nil {
			if errors.Is(err, errDrop) {
				return nil
			}
			return err
		}
	}
	s.cur = add(s.cur, t)
	s.events = true
	return nil
}

// errDrop means: no buffer space, drop the data (drop policy).
var errDrop = errors.New("drop")

func (s *Session) record(st int, p []byte) error {
	if err := s.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return ErrFinished
	}
	if st == streamIn {
		s.bytesIn += int64(len(p))
		if s.echoOff {
			p = s.mask(p)
		}
	} else {
		s.bytesOut += int64(len(p))
	}
	s.r.m.bytes.Add(float64(len(p)))
	t := s.r.opts.Now().Sub(s.start)
	for len(p) > 0 {
		if s.cur == nil {
			if err := s.nextChunk(t); err != nil {
				if errors.Is(err, errDrop) {
					s.dropped += int64(len(p))
					s.r.m.dropped.Add(float64(len(p)))
					return nil
				}
				return err
			}
		}
		var n int
		before := len(s.cur)
		s.cur, n = s.enc.appendData(s.cur, t, st, p, cap(s.cur))
		s.events = s.events || len(s.cur) > before
		p = p[n:]
		if len(p) > 0 {
			s.handOff() // the chunk is full
		}
	}
	return nil
}

// mask replaces printable input by '*', one per character.
func (s *Session) mask(p []byte) []byte {
	out := s.scratch[:0]
	for _, b := range p {
		switch {
		case b < 0x20 || b == 0x7f:
			out = append(out, b)
		case b >= 0x80 && b < 0xC0: // continuation byte: its character is already masked
		default:
			out = append(out, '*')
		}
	}
	if cap(out) <= 64<<10 {
		s.scratch = out
	}
	return out
}

// handOff queues the current chunk for the writer. Called with mu held.
func (s *Session) handOff() {
	if s.cur == nil {
		return
	}
	*s.curBuf = s.cur
	if len(s.cur) > 0 {
		s.queue <- chunk{buf: s.curBuf, gap: s.curGap, pooled: true} // never blocks: cap(queue) > number of chunks
		s.kick(false)
	} else {
		s.r.release(s.curBuf, s.tokens)
	}
	s.cur, s.curBuf, s.curGap = nil, nil, 0
}

// nextChunk makes a fresh chunk current, applying the overflow policy when
// the session already holds all BufferSize bytes of chunks. A pending gap is
// recorded as a marker at its start. Called with mu held.
func (s *Session) nextChunk(t time.Duration) error {
	select {
	case <-s.tokens:
	default:
		if s.r.opts.OnOverflow == OverflowDrop {
			return errDrop
		}
		timer := time.NewTimer(BlockTimeout)
		defer timer.Stop()
		select {
		case <-s.tokens:
		case <-timer.C:
			s.fail("overflow", ErrOverflow)
			return s.Err()
		case <-s.done:
			if err := s.Err(); err != nil {
				return err
			}
			return ErrFinished
		}
	}
	s.curBuf = s.r.pool.Get().(*[]byte)
	s.cur = (*s.curBuf)[:0]
	if s.dropped > 0 {
		s.cur = s.enc.AppendMarker(s.cur, t, "gap: "+strconv.FormatInt(s.dropped, 10)+" bytes dropped")
		s.curGap, s.dropped = s.dropped, 0
	}
	return nil
}

// Finish ends the recording: it writes the exit event (v3 only), flushes and fsyncs
// the spool, stores the cast and its metadata JSON, marks the index row
// finished (or interrupted or failed) with the digest and size, and appends
// session.end and session.sealed audit events. The spool file is removed
// once the recording is stored. A nil Session returns (nil, nil).
func (s *Session) Finish(ctx context.Context, res Result) (*Sealed, error) {
	if s == nil {
		return nil, nil
	}
	if len(res.Events) > 0 && s.r.opts.State == nil {
		return nil, errors.New("finish recording: audit events to append but no state store")
	}
	s.mu.Lock()
	if s.finished {
		s.mu.Unlock()
		return nil, ErrFinished
	}
	s.finished = true
	end := s.r.opts.Now()
	t := end.Sub(s.start)
	s.handOff()
	// The tail gets its own small buffer so Finish never waits for a chunk.
	var tail []byte
	gap := s.dropped
	if gap > 0 {
		tail = s.enc.AppendMarker(tail, t, "gap: "+strconv.FormatInt(gap, 10)+" bytes dropped")
		s.dropped = 0
	}
	tail = s.enc.AppendFlush(tail, t)
	if res.ExitStatus != nil && s.enc.v3 {
		// v3 has an exit event; in v2 the exit status lives in the
		// metadata (and in whatever marker the caller writes).
		tail = s.enc.AppendExit(tail, t, *res.ExitStatus)
	}
	if !s.events && len(tail) == 0 {
		// Players reject a cast without events.
		tail = append(s.enc.appendPrefix(tail, t, CodeOutput), '"', ']', '\n')
	}
	if len(tail) > 0 {
		s.queue <- chunk{buf: &tail, gap: gap}
	}
	bytesIn, bytesOut := s.bytesIn, s.bytesOut
	s.mu.Unlock()

	// The journal is not needed past this point: the spool is complete.
	s.stopCheckpoints()
	// No new writer from here on; the one running, if any, finishes the
	// queue's head and Finish writes the rest.
	s.wmu.Lock()
	s.stopping = true
	s.wmu.Unlock()
	s.writers.Wait()
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
	close(s.done)
	// The session stays in the active map until it is sealed, so Follow
	// finds either the spool or the finished index row.
	defer s.r.forget(s.id)
	defer close(s.sealed)
	closeErr := s.f.Close()
	if closeErr != nil {
		s.fail("write", closeErr)
	}

	if res.BytesIn == 0 {
		res.BytesIn = bytesIn
	}
	if res.BytesOut == 0 {
		res.BytesOut = bytesOut
	}
	row := s.row
	row.End = &end
	row.ExitStatus = res.ExitStatus
	row.BytesIn, row.BytesOut = res.BytesIn, res.BytesOut
	switch {
	case s.Err() != nil:
		row.Status = state.StatusFailed
	case res.Denied:
		row.Status = state.StatusDenied
	case res.Interrupted:
		row.Status = state.StatusInterrupted
	case res.Error != "":
		row.Status = state.StatusFailed
	default:
		row.Status = state.StatusFinished
	}
	if row.Meta == nil {
		row.Meta = map[string]any{}
	}
	if res.ExitSignal != "" {
		row.Meta["exit_signal"] = res.ExitSignal
	}
	errText := res.Error
	if err := s.Err(); err != nil && errText == "" {
		errText = "recording failed"
	}
	digest := &spoolDigest{size: s.size, sum: hex.EncodeToString(s.hash.Sum(nil)), up: s.up}
	if s.Err() != nil {
		if s.up != nil {
			// The spool is cut below: stream nothing of it, store it anew.
			if err := s.up.Abort(ctx); err != nil {
				s.log.Warn("aborting upload failed", "err", err)
			}
		}
		// A failed write may have left part of a line: cut it, and hash
		// what remains while storing it.
		if err := truncateTorn(s.spoolPath); err != nil {
			s.log.Error("truncating failed spool", "err", err)
		}
		digest = nil
	}
	sealed, err := s.r.seal(ctx, row, s.spoolPath, errText, digest, res.Events)
	var cse *castStoreError
	if err != nil && s.up != nil && ctx.Err() != nil && errors.As(err, &cse) {
		// The store did not take the cast before ctx ended (an outage):
		// store it from the spool, and seal it, when the store is back.
		s.log.Warn("recording kept in the spool until storage is back", "err", err)
		if digest != nil {
			digest = &spoolDigest{size: digest.size, sum: digest.sum}
		}
		s.r.sealLater(row, s.spoolPath, errText, digest)
		return nil, fmt.Errorf("recording %s: %w", s.id, ErrSealPending)
	}
	if err != nil {
		s.log.Error("sealing recording failed", "err", err)
		return nil, err
	}
	s.r.deleteJournal(ctx, s.id)
	s.log.Debug("recording sealed", "object", sealed.Object, "size", sealed.Size, "seal_seq", sealed.SealSeq)
	return sealed, nil
}

// discard removes a session that failed to start.
func (s *Session) discard() {
	if s.up != nil {
		if err := s.up.Abort(context.Background()); err != nil {
			s.log.Warn("aborting upload failed", "err", err)
		}
	}
	s.f.Close()
	os.Remove(s.spoolPath)
}
