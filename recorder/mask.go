package recorder

// SetMasked marks the recording as masked: parts of what was recorded were
// replaced by the masking rules (guardrails/mask). The index row and the
// metadata JSON then carry masked: true. It records no value and no
// marker; the caller adds a "masking applied" marker. Calls after Finish
// do nothing.
func (s *Session) SetMasked() {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.finished {
		return
	}
	s.row.Masked = true
}
