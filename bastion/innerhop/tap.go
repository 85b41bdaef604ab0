package innerhop

import (
	"errors"
	"regexp"
	"sync"
	"sync/atomic"

	"github.com/posternhq/postern/guardrails/mask"
	"github.com/posternhq/postern/recorder"
)

// passwordPrompt matches output that ends in a secret prompt.
var passwordPrompt = regexp.MustCompile(`(?i)(password|passphrase|pin)[^\n]*:\s*$`)

const promptTail = 128

// hopTap feeds one session's data to its recording.
//
// Input masking. Input typed at a no-echo prompt is recorded as '*', one per
// character, with control keys (Enter, backspace) kept. On an ssh target the
// inner hop sees the pty modes only once, in pty-req, and never sees later
// termios changes, so it uses a heuristic: after output whose tail matches
// (?i)(password|passphrase|pin)[^\n]*:\s*$ the input is masked until the
// next CR or LF typed. On a command target the pty is postern's own, and
// input is masked whenever the pty is at a no-echo prompt (echoOff: ECHO off
// in canonical mode), in addition to the heuristic.
//
// Masking. With recording masking rules (setMask), output and input each
// pass through a mask.Scanner before they are queued: matches are replaced,
// and the trailing partial line is held back until the line ends (CR or
// LF), the carry bound is reached, or the session ends (close, and the exit
// markers before it). Nothing else releases it — not input, not a marker:
// a secret split across two writes is masked whatever happens between them.
// The price is that a line's output reaches the recording when the line is
// complete (a prompt, with what is typed at it, once Enter is echoed). The
// first masked match adds a "masking applied" marker and marks the
// recording masked (metadata masked: true); the values themselves are never
// recorded.
//
// Off the data path. The copy loops only copy each chunk into a pooled
// buffer and queue it (tapQueue chunks at most); a drain goroutine hands
// the queue, in order, to the recorder, whose encoding thus runs beside the
// relay instead of inside it. The drain goroutine runs only while the queue
// holds something: the first enqueue starts it and it exits once it finds
// the queue empty, so an idle session has none. A full queue blocks the
// copy loop: that, and the recorder's own bounded buffer, is all the tap
// ever blocks.
//
// Failure. The first recording error stops recording and is reported to
// onFail. With required set (record: required) every later call returns
// that error, so the copy loops stop and the session ends (at most tapQueue
// chunks reach the user after the failing one); otherwise (record: optional)
// the session goes on unrecorded.
type hopTap struct {
	s        tapSink
	required bool
	echoOff  func() bool // nil on ssh targets; set before input flows
	onFail   func(error)

	q       chan tapItem
	failed  atomic.Bool
	stopErr atomic.Pointer[error]

	runMu   sync.Mutex     // guards running; never held while sending to q
	running bool           // a drain goroutine is running
	drains  sync.WaitGroup // drain goroutines, for close

	mu      sync.Mutex // orders the queue; guards the fields below
	closed  bool
	tail    [promptTail]byte
	tailN   int
	masking bool
	mask    *mask.Scanner // recording masking of output; nil if none
	inMask  *mask.Scanner // recording masking of input; nil if none
	masked  bool          // a match was masked
}

// tapQueue is the number of chunks queued between the copy loops and the
// recorder (at most 256 KiB each).
const tapQueue = 4

type tapOp uint8

const (
	tapOutput tapOp = iota
	tapInput
	tapResize
	tapMarker
)

// tapItem is one queued recording operation.
type tapItem struct {
	op         tapOp
	buf        *[]byte // pooled buffer holding data, if any
	data       []byte
	cols, rows int
	label      string
	final      bool // a marker of the session's end: held-back output goes first
}

// tapSink is the part of *recorder.Session the tap uses.
type tapSink interface {
	Output(p []byte) error
	Input(p []byte) error
	Resize(cols, rows int) error
	Marker(label string) error
	Err() error
}

var _ tapSink = (*recorder.Session)(nil)

// newHopTap returns a tap feeding s; close stops it.
func newHopTap(s tapSink, required bool, onFail func(error)) *hopTap {
	return &hopTap{s: s, required: required, onFail: onFail, q: make(chan tapItem, tapQueue)}
}

// drain hands queued operations to the recorder, in order, until it finds
// the queue empty. It checks for that under runMu, and enqueue starts a new
// drain under runMu after every send, so no item is left without one.
func (t *hopTap) drain() {
	for {
		select {
		case it := <-t.q:
			t.apply(it)
			continue
		default:
		}
		t.runMu.Lock()
		if len(t.q) == 0 {
			t.running = false
			t.runMu.Unlock()
			return
		}
		t.runMu.Unlock()
	}
}

// apply hands one queued operation to the recorder and recycles its buffer.
func (t *hopTap) apply(it tapItem) {
	if !t.failed.Load() {
		var err error
		switch it.op {
		case tapOutput:
			err = t.s.Output(it.data)
		case tapInput:
			err = t.s.Input(it.data)
		case tapResize:
			err = t.s.Resize(it.cols, it.rows)
		case tapMarker:
			err = t.s.Marker(it.label)
		}
		if err != nil {
			t.fail(err)
		}
	}
	if it.buf != nil {
		putTapBuf(it.buf)
	}
}

// fail stops recording; only the first failure reaches onFail.
func (t *hopTap) fail(err error) {
	if !t.failed.CompareAndSwap(false, true) {
		return
	}
	if t.required {
		t.stopErr.Store(&err)
	}
	if t.onFail != nil {
		t.onFail(err)
	}
}

// stopped returns the error that stops the copy loops, if any.
func (t *hopTap) stopped() error {
	if p := t.stopErr.Load(); p != nil {
		return *p
	}
	return nil
}

// getTapBuf returns a pooled buffer of at least n bytes (nil if n is larger
// than any pooled buffer).
func getTapBuf(n int) *[]byte {
	switch {
	case n <= smallCopyBuf:
		return smallBufPool.Get().(*[]byte)
	case n <= largeCopyBuf:
		return largeBufPool.Get().(*[]byte)
	}
	return nil
}

func putTapBuf(b *[]byte) {
	if cap(*b) == largeCopyBuf {
		largeBufPool.Put(b)
	} else {
		smallBufPool.Put(b)
	}
}

// enqueue queues it and makes sure a drain goroutine runs. Called with mu
// held, which keeps the queue in the order the calls were made. A send that
// blocks on a full queue always has a drain running: the send that filled
// the queue's last free slot started one or found one running.
func (t *hopTap) enqueue(it tapItem) {
	if t.closed {
		if it.buf != nil {
			putTapBuf(it.buf)
		}
		return
	}
	t.q <- it
	t.runMu.Lock()
	if !t.running {
		t.running = true
		t.drains.Go(t.drain)
	}
	t.runMu.Unlock()
}

// copyItem returns an item holding a copy of p made by fill (which writes at
// most len(p) bytes into dst and returns them).
func copyItem(op tapOp, p []byte, fill func(dst []byte) []byte) tapItem {
	it := tapItem{op: op}
	if it.buf = getTapBuf(len(p)); it.buf != nil {
		it.data = fill((*it.buf)[:0])
	} else {
		it.data = fill(make([]byte, 0, len(p)))
	}
	return it
}

// output records p as terminal output.
func (t *hopTap) output(p []byte) error {
	if t == nil {
		return nil
	}
	if err := t.stopped(); err != nil {
		return err
	}
	t.mu.Lock()
	t.observe(p)
	if !t.failed.Load() {
		if t.mask != nil {
			out, n := t.mask.Next(p)
			t.queueMasked(out, n)
		} else {
			t.enqueue(copyItem(tapOutput, p, func(dst []byte) []byte { return append(dst, p...) }))
		}
	}
	t.mu.Unlock()
	return nil
}

// setMask installs recording masking (none if m is nil). Called before any
// output.
func (t *hopTap) setMask(m *mask.Masker) {
	if t == nil || m == nil {
		return
	}
	t.mu.Lock()
	t.mask = m.NewScanner()
	t.inMask = m.NewScanner()
	t.mu.Unlock()
}

// queueMasked queues masked output out that held n matches. Called with mu
// held.
func (t *hopTap) queueMasked(out []byte, n int) { t.queueMaskedOp(tapOutput, out, n) }

// queueMaskedOp queues masked data of op (output or input) that held n
// matches. Called with mu held.
func (t *hopTap) queueMaskedOp(op tapOp, out []byte, n int) {
	if n > 0 && !t.masked {
		t.masked = true
		if m, ok := t.s.(interface{ SetMasked() }); ok {
			m.SetMasked()
		}
		t.enqueue(tapItem{op: tapMarker, label: "masking applied"})
	}
	if len(out) > 0 {
		t.enqueue(copyItem(op, out, func(dst []byte) []byte { return append(dst, out...) }))
	}
}

// noteMasked marks the recording masked (and adds the "masking applied"
// marker once) for a match masked outside the streams: the command line.
func (t *hopTap) noteMasked() {
	if t == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.failed.Load() {
		t.queueMasked(nil, 1)
	}
}

// flushMask queues the output and input held back by masking, as final:
// only at the session's end. Called with mu held.
func (t *hopTap) flushMask() {
	if t.failed.Load() {
		return
	}
	if t.mask != nil && t.mask.Pending() {
		out, n := t.mask.Flush()
		t.queueMasked(out, n)
	}
	if t.inMask != nil && t.inMask.Pending() {
		out, n := t.inMask.Flush()
		t.queueMaskedOp(tapInput, out, n)
	}
}

// observe keeps the output tail and decides whether input is now masked.
// Called with mu held.
func (t *hopTap) observe(p []byte) {
	if len(p) >= promptTail {
		t.tailN = copy(t.tail[:], p[len(p)-promptTail:])
	} else {
		if t.tailN+len(p) > promptTail {
			drop := t.tailN + len(p) - promptTail
			copy(t.tail[:], t.tail[drop:t.tailN])
			t.tailN -= drop
		}
		t.tailN += copy(t.tail[t.tailN:], p)
	}
	// Cheap pre-check: a prompt ends in ':' and optional white space.
	i := t.tailN - 1
	for i >= 0 && (t.tail[i] == ' ' || t.tail[i] == '\t') {
		i--
	}
	if i < 0 || t.tail[i] != ':' {
		return
	}
	if passwordPrompt.Match(t.tail[:t.tailN]) {
		t.masking = true
	}
}

// input records p as typed input, masked as the type comment says.
func (t *hopTap) input(p []byte) error {
	if t == nil {
		return nil
	}
	if err := t.stopped(); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.failed.Load() {
		return nil
	}
	echoOff := t.echoOff != nil && t.echoOff()
	it := copyItem(tapInput, p, func(dst []byte) []byte {
		if !t.masking && !echoOff {
			return append(dst, p...)
		}
		for _, b := range p {
			switch {
			case b == '\r' || b == '\n':
				dst = append(dst, b)
				t.masking = false
			case !t.masking && !echoOff:
				dst = append(dst, b)
			case b < 0x20 || b == 0x7f:
				dst = append(dst, b) // control keys (backspace) stay
			case b >= 0x80 && b < 0xc0:
				// a UTF-8 continuation byte: its character is masked already
			default:
				dst = append(dst, '*')
			}
		}
		return dst
	})
	if t.inMask != nil {
		out, n := t.inMask.Next(it.data)
		t.queueMaskedOp(tapInput, out, n)
		if it.buf != nil {
			putTapBuf(it.buf)
		}
		return nil
	}
	t.enqueue(it)
	return nil
}

// resize records a terminal size change.
func (t *hopTap) resize(cols, rows int) error {
	return t.small(tapItem{op: tapResize, cols: cols, rows: rows})
}

// marker records a marker. Output held back by masking stays held (it is
// recorded after the marker once its line is complete).
func (t *hopTap) marker(label string) error {
	return t.small(tapItem{op: tapMarker, label: label})
}

// endMarker records a marker of the session's end (its exit status), after
// the output held back by masking: nothing follows it.
func (t *hopTap) endMarker(label string) error {
	return t.small(tapItem{op: tapMarker, label: label, final: true})
}

func (t *hopTap) small(it tapItem) error {
	if t == nil {
		return nil
	}
	if err := t.stopped(); err != nil {
		return err
	}
	t.mu.Lock()
	if !t.failed.Load() {
		if it.final {
			t.flushMask() // the session is over: what is held comes first
		}
		t.enqueue(it)
	}
	t.mu.Unlock()
	return nil
}

// setEchoOff installs the no-echo probe of a command target's pty.
func (t *hopTap) setEchoOff(f func() bool) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.echoOff = f
	t.mu.Unlock()
}

// close hands what is queued to the recorder and stops the tap. Later calls
// record nothing. It returns the recording error, if recording failed.
func (t *hopTap) close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if !t.closed {
		t.flushMask()
		t.closed = true // no enqueue, and so no new drain, after this
	}
	t.mu.Unlock()
	t.drains.Wait()
	if t.failed.Load() {
		if err := t.s.Err(); err != nil {
			return err
		}
		return errors.New("recording failed")
	}
	return nil
}
