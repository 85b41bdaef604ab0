package players

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/posternhq/postern/recorder"
)

// Source opens a cast from its beginning. A Player calls it once to start
// and again for every backward seek; a source that can be read only once
// (a pipe, a live stream) returns ErrNotSeekable on the second call, and
// backward seeks are then ignored.
type Source func() (io.ReadCloser, error)

// ErrNotSeekable reports a Source that cannot be opened again.
var ErrNotSeekable = errors.New("cast cannot be reopened to seek backwards")

// Frame is one event of a cast as the player delivers it.
type Frame struct {
	// At is the playback position of the event: its recorded time with
	// every pause longer than the idle-time limit shortened to the limit.
	At time.Duration
	// Event is the decoded event (its Time is the recorded time).
	Event recorder.Event
}

// Marker is a marker event ("m": approvals, flagged commands, exit status).
type Marker struct {
	// At is the playback position of the marker.
	At time.Duration
	// Label is the marker's text.
	Label string
}

// Options configures a Player. The zero value plays at normal speed without
// an idle-time limit other than the cast's own.
type Options struct {
	// Speed multiplies playback speed; 1 if zero.
	Speed float64
	// IdleTimeLimit shortens every pause longer than it to it; the cast
	// header's idle_time_limit if zero, none if both are zero; none at all
	// if negative.
	IdleTimeLimit time.Duration
	// Clock schedules playback; the real clock if nil.
	Clock Clock
}

// Clock is the time source of Run: the subset of package time it uses.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Speed limits of the +/- controls.
const (
	minSpeed = 1.0 / 16
	maxSpeed = 16.0
)

// SeekStep is how far the ←/→ controls move.
const SeekStep = 5 * time.Second

// resetTerminal is written before a cast is replayed from the start for a
// backward seek: RIS (full reset) clears the screen and every mode.
const resetTerminal = "\x1bc"

// Player replays one cast. It streams: it holds one decoded event at a time
// and the list of markers seen so far, never the whole cast, so it plays
// casts of any size. The core (Next, Seek, markers) knows nothing about
// terminals, which keeps it testable on golden casts; Run adds the clock and
// the controls. A Player is not safe for concurrent use.
type Player struct {
	open  Source
	opts  Options
	clock Clock
	limit time.Duration

	rc      io.ReadCloser
	dec     *recorder.Decoder
	header  recorder.Header
	pending *Frame // read but not yet delivered

	rawLast time.Duration // recorded time of the last event read
	atLast  time.Duration // playback position of the last event read
	pos     time.Duration // playback position of the last event delivered
	markers []Marker
	eof     bool
	n, maxN int // events read in this pass; most events read in any pass
}

// New opens src and reads the cast header.
func New(src Source, opts Options) (*Player, error) {
	if opts.Speed <= 0 {
		opts.Speed = 1
	}
	p := &Player{open: src, opts: opts, clock: opts.Clock}
	if p.clock == nil {
		p.clock = realClock{}
	}
	if err := p.reopen(); err != nil {
		return nil, err
	}
	p.limit = opts.IdleTimeLimit
	if p.limit == 0 && p.header.IdleTimeLimit > 0 {
		p.limit = time.Duration(p.header.IdleTimeLimit * float64(time.Second))
	}
	return p, nil
}

// reopen (re)starts the cast from its beginning.
func (p *Player) reopen() error {
	rc, err := p.open()
	if err != nil {
		return err
	}
	dec := recorder.NewDecoder(rc)
	h, err := dec.Header()
	if err != nil {
		rc.Close()
		return fmt.Errorf("read cast: %w", err)
	}
	if p.rc != nil {
		p.rc.Close()
	}
	p.rc, p.dec, p.header = rc, dec, h
	p.pending, p.rawLast, p.atLast, p.pos, p.eof, p.n = nil, 0, 0, 0, false, 0
	return nil
}

// Close releases the cast.
func (p *Player) Close() error {
	if p.rc == nil {
		return nil
	}
	err := p.rc.Close()
	p.rc = nil
	return err
}

// Header returns the cast header.
func (p *Player) Header() recorder.Header { return p.header }

// IdleTimeLimit returns the idle-time limit in force; zero for none.
func (p *Player) IdleTimeLimit() time.Duration { return p.limit }

// Position returns the playback position of the last delivered event.
func (p *Player) Position() time.Duration { return p.pos }

// Markers returns the markers seen so far, in order.
func (p *Player) Markers() []Marker { return append([]Marker(nil), p.markers...) }

// peek returns the next frame without delivering it; io.EOF at the end. A
// torn final line ends the cast like EOF: the events before it are intact.
func (p *Player) peek() (*Frame, error) {
	if p.pending != nil {
		return p.pending, nil
	}
	if p.eof {
		return nil, io.EOF
	}
	ev, err := p.dec.Next()
	if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
		p.eof = true
		return nil, io.EOF
	}
	if err != nil {
		return nil, err
	}
	gap := max(ev.Time-p.rawLast, 0)
	if p.limit > 0 && gap > p.limit {
		gap = p.limit
	}
	p.rawLast = ev.Time
	p.atLast += gap
	p.pending = &Frame{At: p.atLast, Event: ev}
	// Markers are listed the first time they are read; a replay after a
	// backward seek reads them again.
	p.n++
	if p.n > p.maxN {
		p.maxN = p.n
		if ev.Code == recorder.CodeMarker {
			p.markers = append(p.markers, Marker{At: p.atLast, Label: ev.Data})
		}
	}
	return p.pending, nil
}

// Next delivers the next event; io.EOF at the end of the cast.
func (p *Player) Next() (Frame, error) {
	f, err := p.peek()
	if err != nil {
		return Frame{}, err
	}
	p.pending = nil
	p.pos = f.At
	return *f, nil
}

// Seek moves the playback position to target and writes to w what brings a
// terminal to the state of the recording there: the output of the events up
// to target (after a terminal reset when seeking backwards). It returns the
// new position, which is target clamped to the cast. A backward seek on a
// source that cannot be reopened does nothing.
func (p *Player) Seek(w io.Writer, target time.Duration) (time.Duration, error) {
	target = max(target, 0)
	if target < p.pos {
		if err := p.reopen(); err != nil {
			if errors.Is(err, ErrNotSeekable) {
				return p.pos, nil
			}
			return p.pos, fmt.Errorf("seek: %w", err)
		}
		if _, err := io.WriteString(w, resetTerminal); err != nil {
			return p.pos, err
		}
	}
	for {
		f, err := p.peek()
		if errors.Is(err, io.EOF) {
			return p.pos, nil
		}
		if err != nil {
			return p.pos, err
		}
		if f.At > target {
			p.pos = target
			return target, nil
		}
		fr, _ := p.Next()
		if err := writeFrame(w, fr); err != nil {
			return p.pos, err
		}
	}
}

// NextMarker seeks to the first marker after the current position, writing
// the output on the way to w. It reports false (at the end of the cast) if
// there is none.
func (p *Player) NextMarker(w io.Writer) (Marker, bool, error) {
	for {
		f, err := p.peek()
		if errors.Is(err, io.EOF) {
			return Marker{}, false, nil
		}
		if err != nil {
			return Marker{}, false, err
		}
		fr, _ := p.Next()
		if err := writeFrame(w, fr); err != nil {
			return Marker{}, false, err
		}
		if f.Event.Code == recorder.CodeMarker {
			return Marker{At: fr.At, Label: fr.Event.Data}, true, nil
		}
	}
}

// PrevMarker seeks back to the last marker at least grace before the
// current position (so that pressing it twice goes further back), or to the
// start if there is none. It reports whether a marker was found.
func (p *Player) PrevMarker(w io.Writer, grace time.Duration) (Marker, bool, error) {
	var m Marker
	found := false
	for _, mk := range p.markers {
		if mk.At+grace <= p.pos && mk.At < p.pos {
			m, found = mk, true
		}
	}
	_, err := p.Seek(w, m.At)
	return m, found, err
}

// writeFrame writes an output event's data; other events write nothing.
func writeFrame(w io.Writer, f Frame) error {
	if f.Event.Code != recorder.CodeOutput {
		return nil
	}
	_, err := io.WriteString(w, f.Event.Data)
	return err
}

// Command is a playback control.
type Command int

// Playback controls (the keys of `postern play`).
const (
	CmdPause      Command = iota + 1 // space: pause or resume
	CmdStep                          // .: while paused, deliver the next output
	CmdSeekFwd                       // →: forward SeekStep
	CmdSeekBack                      // ←: back SeekStep
	CmdNextMarker                    // ]: next marker
	CmdPrevMarker                    // [: previous marker
	CmdFaster                        // +: double the speed
	CmdSlower                        // -: halve the speed
	CmdQuit                          // q, Ctrl-C: stop
)

// Run plays the cast to w in real time (scaled by the speed), obeying the
// controls that arrive on cmds (nil plays straight through). It returns nil
// at the end of the cast or on CmdQuit, and ctx's error if ctx ends first.
func (p *Player) Run(ctx context.Context, w io.Writer, cmds <-chan Command) error {
	speed := p.opts.Speed
	playing := true
	anchorWall := p.clock.Now()
	anchorPos := p.pos
	// cur is the playback position the clock has reached.
	cur := func() time.Duration {
		if !playing {
			return anchorPos
		}
		return anchorPos + time.Duration(float64(p.clock.Now().Sub(anchorWall))*speed)
	}
	reanchor := func(pos time.Duration) {
		anchorPos, anchorWall = pos, p.clock.Now()
	}
	for {
		f, err := p.peek()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		var timer <-chan time.Time
		if playing {
			wait := time.Duration(float64(f.At-cur()) / speed)
			if wait <= 0 {
				fr, _ := p.Next()
				if err := writeFrame(w, fr); err != nil {
					return err
				}
				continue
			}
			timer = p.clock.After(wait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer:
			continue // the frame is due: the loop delivers it
		case c, ok := <-cmds:
			if !ok {
				cmds = nil
				continue
			}
			here := min(max(cur(), p.pos), f.At)
			switch c {
			case CmdQuit:
				return nil
			case CmdPause:
				reanchor(here)
				playing = !playing
				reanchor(here)
			case CmdStep:
				if playing {
					continue
				}
				for {
					fr, err := p.Next()
					if errors.Is(err, io.EOF) {
						return nil
					}
					if err != nil {
						return err
					}
					if err := writeFrame(w, fr); err != nil {
						return err
					}
					if fr.Event.Code == recorder.CodeOutput {
						break
					}
				}
				reanchor(p.pos)
			case CmdSeekFwd, CmdSeekBack:
				target := here + SeekStep
				if c == CmdSeekBack {
					target = here - SeekStep
				}
				pos, err := p.Seek(w, target)
				if err != nil {
					return err
				}
				reanchor(pos)
			case CmdNextMarker:
				if _, _, err := p.NextMarker(w); err != nil {
					return err
				}
				reanchor(p.pos)
			case CmdPrevMarker:
				// Jump back over a marker only when more than a second of
				// playback separates us from it.
				p.pos = here
				if _, _, err := p.PrevMarker(w, time.Second); err != nil {
					return err
				}
				reanchor(p.pos)
			case CmdFaster, CmdSlower:
				reanchor(here)
				if c == CmdFaster {
					speed = min(speed*2, maxSpeed)
				} else {
					speed = max(speed/2, minSpeed)
				}
			}
		}
	}
}
