package guardrails

import (
	"io"
	"sync"
	"time"

	"github.com/posternhq/postern/guardrails/mask"
)

// DefaultFlushDelay is how long a StreamWriter holds back a partial line
// before sending it, unless told otherwise: output that pauses longer than
// this (a prompt) reaches the client, and a secret split by such a pause is
// not caught.
const DefaultFlushDelay = 25 * time.Millisecond

// StreamWriter masks a stream on its way to the client. Write passes what is
// final at once and holds back the trailing partial line (see
// [mask.Scanner]); a timer sends it after the flush delay without more
// output, and Flush sends it at the end of the stream. It is safe for
// concurrent use.
type StreamWriter struct {
	w     io.Writer
	delay time.Duration

	mu     sync.Mutex
	sc     *mask.Scanner
	timer  *time.Timer
	err    error
	closed bool
}

// NewStreamWriter returns a StreamWriter that masks with m what it writes
// to w, holding a partial line back for at most delay (DefaultFlushDelay if
// zero).
func NewStreamWriter(w io.Writer, m *mask.Masker, delay time.Duration) *StreamWriter {
	if delay <= 0 {
		delay = DefaultFlushDelay
	}
	mw := &StreamWriter{w: w, delay: delay, sc: m.NewScanner()}
	mw.timer = time.AfterFunc(time.Hour, mw.timedFlush)
	mw.timer.Stop()
	return mw
}

// Write masks p and writes what is final. It reports len(p) written when
// the masked bytes were written.
func (m *StreamWriter) Write(p []byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return 0, m.err
	}
	m.timer.Stop()
	out, _ := m.sc.Next(p)
	if len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			m.err = err
			return 0, err
		}
	}
	if m.sc.Pending() && !m.closed {
		m.timer.Reset(m.delay)
	}
	return len(p), nil
}

func (m *StreamWriter) timedFlush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushLocked()
}

func (m *StreamWriter) flushLocked() {
	if m.err != nil {
		return
	}
	if out, _ := m.sc.Flush(); len(out) > 0 {
		if _, err := m.w.Write(out); err != nil {
			m.err = err
		}
	}
}

// Flush writes what is held back and stops the timer; later writes are
// still masked.
func (m *StreamWriter) Flush() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.timer.Stop()
	m.flushLocked()
}
