package innerhop

import (
	"io"

	"github.com/posternhq/postern/guardrails"
)

// maskStream wraps w, the client side of one output stream of s, with the
// stream masking of s's roles. Without stream rules it returns w and a
// no-op flush: the bytes then take the unmasked path untouched.
func (s *hopSession) maskStream(w io.Writer) (io.Writer, func()) {
	m := s.c.h.opts.Masking.For(s.c.decision.Role).Stream
	if m == nil {
		return w, func() {}
	}
	mw := guardrails.NewStreamWriter(w, m, s.c.h.opts.StreamFlushDelay)
	return mw, mw.Flush
}
