package innerhop

import (
	"io"

	"github.com/posternhq/postern/guardrails"
)

// maskStream wraps w, the client side of one output stream of s, with the
// stream masking of s's roles, and writes in packets that fit the outer
// channel (fitWriter). Without stream rules it returns a no-op flush: the
// bytes then take the unmasked path untouched.
func (s *hopSession) maskStream(w io.Writer) (io.Writer, func()) {
	w = fitWriter{w}
	m := s.c.h.opts.Masking.For(s.c.decision.Role).Stream
	if m == nil {
		return w, func() {}
	}
	mw := guardrails.NewStreamWriter(w, m, s.c.h.opts.StreamFlushDelay)
	return mw, mw.Flush
}
