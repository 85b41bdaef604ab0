package players

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/posternhq/postern/recorder"
)

// exitMarkerPrefix starts the marker a v2 cast carries for the exit status
// (v2 has no exit event).
const exitMarkerPrefix = "exit status "

// ExportOptions configures Export.
type ExportOptions struct {
	// Version is the asciicast version to write: 2 (default) or 3.
	Version int
	// ExitStatus is written as the v3 exit event when the cast itself does
	// not say it; none if nil.
	ExitStatus *int
}

// Export re-encodes the cast read from r as asciicast v2 or v3 to w,
// streaming (one event in memory at a time). Converting to v3 turns the
// absolute times into intervals (the encoder carries rounding so long casts
// do not drift) and the "exit status N" marker into an "x" event; converting
// to v2 does the reverse. A torn final line is dropped, so the export is
// always a cast every player accepts.
func Export(w io.Writer, r io.Reader, opts ExportOptions) error {
	version := opts.Version
	if version == 0 {
		version = 2
	}
	enc, err := recorder.NewEncoder(version)
	if err != nil {
		return err
	}
	dec := recorder.NewDecoder(r)
	h, err := dec.Header()
	if err != nil {
		return fmt.Errorf("read cast: %w", err)
	}
	bw := bufio.NewWriterSize(w, 256<<10)
	buf, err := enc.AppendHeader(make([]byte, 0, 64<<10), h)
	if err != nil {
		return fmt.Errorf("encode header: %w", err)
	}
	var last recorder.Event
	events := 0
	sawExit := false
	flush := func() error {
		if len(buf) >= 32<<10 {
			if _, err := bw.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
		}
		return nil
	}
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
			break
		}
		if err != nil {
			return fmt.Errorf("read cast: %w", err)
		}
		last = ev
		events++
		switch ev.Code {
		case recorder.CodeOutput:
			buf = enc.AppendOutput(buf, ev.Time, []byte(ev.Data))
		case recorder.CodeInput:
			buf = enc.AppendInput(buf, ev.Time, []byte(ev.Data))
		case recorder.CodeResize:
			cols, rows, ok := parseSize(ev.Data)
			if !ok {
				continue
			}
			buf = enc.AppendResize(buf, ev.Time, cols, rows)
		case recorder.CodeMarker:
			if st, ok := exitFromMarker(ev.Data); ok && version == 3 {
				buf = enc.AppendExit(buf, ev.Time, st)
				sawExit = true
				continue
			}
			buf = enc.AppendMarker(buf, ev.Time, ev.Data)
		case recorder.CodeExit:
			st, err := strconv.Atoi(strings.TrimSpace(ev.Data))
			if err != nil {
				continue
			}
			buf = enc.AppendExit(buf, ev.Time, st)
			sawExit = true
		default:
			// Event codes this version does not know are left out.
			continue
		}
		if err := flush(); err != nil {
			return err
		}
	}
	if !sawExit && opts.ExitStatus != nil {
		buf = enc.AppendExit(buf, last.Time, *opts.ExitStatus)
		events++
	}
	if events == 0 {
		// Players reject a cast without events; a resize to the header's
		// size changes nothing.
		buf = enc.AppendResize(buf, 0, h.Width, h.Height)
	}
	buf = enc.AppendFlush(buf, last.Time)
	if _, err := bw.Write(buf); err != nil {
		return err
	}
	return bw.Flush()
}

// exitFromMarker parses the "exit status N" marker.
func exitFromMarker(label string) (int, bool) {
	rest, ok := strings.CutPrefix(label, exitMarkerPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil
}

// parseSize parses a resize event's "COLSxROWS".
func parseSize(s string) (cols, rows int, ok bool) {
	c, r, found := strings.Cut(s, "x")
	if !found {
		return 0, 0, false
	}
	cols, err1 := strconv.Atoi(c)
	rows, err2 := strconv.Atoi(r)
	if err1 != nil || err2 != nil || cols <= 0 || rows <= 0 {
		return 0, 0, false
	}
	return cols, rows, true
}
