package bastion

import (
	"regexp"
	"sync"

	"github.com/posternhq/postern/recorder"
)

// passwordPrompt matches output that ends in a secret prompt.
var passwordPrompt = regexp.MustCompile(`(?i)(password|passphrase|pin)[^\n]*:\s*$`)

const promptTail = 128

// hopTap feeds one session's data to its recording.
//
// Input masking. Input typed at a no-echo prompt is recorded as '*', one per
// character, with control keys (Enter, backspace) kept. On an ssh target the inner hop sees the pty
// modes only once, in pty-req, and never sees later termios changes, so it
// uses a heuristic: after output whose tail matches
// (?i)(password|passphrase|pin)[^\n]*:\s*$ the input is masked until the next
// CR or LF typed. On a command target the pty is postern's own, and input is
// masked whenever the pty is at a no-echo prompt (echoOff: ECHO off in
// canonical mode), in addition to the heuristic.
//
// The tap never blocks beyond the recorder's bounded buffer. The first
// recording error stops recording and is reported to onFail. With required
// set (record: required) every later call returns that error, so the copy
// loops stop before unrecorded data reaches the user; otherwise (record:
// optional) the session goes on unrecorded.
type hopTap struct {
	s        tapSink
	required bool
	echoOff  func() bool // nil on ssh targets
	onFail   func(error)

	mu       sync.Mutex
	disabled bool
	stopErr  error
	tail     [promptTail]byte
	tailN    int
	masking  bool
	scratch  []byte
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

func newHopTap(s tapSink, required bool, onFail func(error)) *hopTap {
	return &hopTap{s: s, required: required, onFail: onFail}
}

// output records p as terminal output.
func (t *hopTap) output(p []byte) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.disabled {
		err := t.stopErr
		t.mu.Unlock()
		return err
	}
	err := t.s.Output(p)
	if err == nil {
		err = t.s.Err()
	}
	t.observe(p)
	t.mu.Unlock()
	if err != nil {
		return t.failed(err)
	}
	return nil
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
	t.mu.Lock()
	if t.disabled {
		err := t.stopErr
		t.mu.Unlock()
		return err
	}
	data := p
	echoOff := t.echoOff != nil && t.echoOff()
	if t.masking || echoOff {
		data = t.scratch[:0]
		for _, b := range p {
			switch {
			case b == '\r' || b == '\n':
				data = append(data, b)
				t.masking = false
			case !t.masking && !echoOff:
				data = append(data, b)
			case b < 0x20 || b == 0x7f:
				data = append(data, b) // control keys (backspace) stay
			case b >= 0x80 && b < 0xc0:
				// a UTF-8 continuation byte: its character is masked already
			default:
				data = append(data, '*')
			}
		}
		if cap(data) <= 64<<10 {
			t.scratch = data
		}
	}
	err := t.s.Input(data)
	t.mu.Unlock()
	if err != nil {
		return t.failed(err)
	}
	return nil
}

// resize records a terminal size change.
func (t *hopTap) resize(cols, rows int) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.disabled {
		err := t.stopErr
		t.mu.Unlock()
		return err
	}
	err := t.s.Resize(cols, rows)
	t.mu.Unlock()
	if err != nil {
		return t.failed(err)
	}
	return nil
}

// marker records a marker.
func (t *hopTap) marker(label string) error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	if t.disabled {
		err := t.stopErr
		t.mu.Unlock()
		return err
	}
	err := t.s.Marker(label)
	t.mu.Unlock()
	if err != nil {
		return t.failed(err)
	}
	return nil
}

// failed stops recording. Only the first failure reaches onFail.
func (t *hopTap) failed(err error) error {
	t.mu.Lock()
	first := !t.disabled
	if first {
		t.disabled = true
		if t.required {
			t.stopErr = err
		}
	}
	stop := t.stopErr
	t.mu.Unlock()
	if first && t.onFail != nil {
		t.onFail(err)
	}
	return stop
}
