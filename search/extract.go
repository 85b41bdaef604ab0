package search

import (
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"strings"
	"time"

	"github.com/posternhq/postern/recorder"
	"github.com/posternhq/postern/state"
)

// Limits bound what one recording adds to the index.
type Limits struct {
	// MaxOutputText bounds the terminal output text indexed per session, in
	// bytes, counted after escape sequences are removed and repeated lines
	// dropped; DefaultMaxOutputText if zero, no output at all if negative.
	MaxOutputText int
}

// DefaultMaxOutputText is the default bound on the output text indexed per
// session. Indexing costs about as much CPU per word as recording it does
// (docs/benchmarks.md), so the bound is what keeps indexing a small
// fraction of recording: commands, typed lines, SQL and SFTP operations are
// always indexed whole (up to maxInputText), output up to this much.
const DefaultMaxOutputText = 16 << 10

// maxInputText bounds the typed lines indexed per session (a session that
// pipes a file into a command records it as input).
const maxInputText = 256 << 10

// windowSpan bounds the time one output entry covers: lines that arrive
// within it of the entry's first line join the entry (up to
// state.MaxSearchEntryText), so that a hit opens the player within this
// much of the moment.
const windowSpan = 2 * time.Second

// Result is what Extract found in one recording.
type Result struct {
	// Entries are the session's search entries.
	Entries []state.SearchEntry
	// Truncated reports that output or input beyond the limits was left out.
	Truncated bool
}

// Audit event types Extract reads: SFTP operations and SQL statements.
// (The PostgreSQL proxy's type is spelled here because search must not
// import guardrails.)
const eventSQL = "sql.query"

// EventTypes are the audit event types Extract uses; pass a session's
// events of these types.
var EventTypes = []string{state.EventSFTP, eventSQL}

// Extract reads a sealed recording (cast) of session row, with the session's
// audit events of EventTypes, and returns its search entries: the command
// line of an exec or command session, every typed line (password prompts
// excluded), every SQL statement and SFTP operation, and the terminal
// output as text (see screenText) in entries of at most
// state.MaxSearchEntryText bytes and windowSpan, repeated lines dropped, up
// to lim.MaxOutputText. Each entry carries its offset in the recording. A
// cast cut off mid-line (a torn line) is read up to the tear. Past the
// output budget, output events are skipped without decoding their data.
// A *bufio.Reader of at least 64 KiB as cast is used as is (the indexer
// reuses one).
func Extract(cast io.Reader, row state.Session, events []state.Event, lim Limits) (Result, error) {
	maxOut := lim.MaxOutputText
	if maxOut == 0 {
		maxOut = DefaultMaxOutputText
	}
	x := &extractor{maxOut: maxOut, seen: map[uint64]struct{}{}, seed: maphash.MakeSeed()}
	if row.Command != "" && (row.Kind == state.KindExec || row.Kind == state.KindCommand) {
		x.add(state.SearchCommand, row.Command, 0)
	}
	x.screen = &screenText{emit: x.outputLine}
	x.input = &lineEditor{emit: x.inputLine, prompt: func() string {
		if x.outDone {
			return "" // past the output budget the screen is not followed
		}
		return x.screen.tail()
	}}
	dec := recorder.NewDecoder(cast)
	if maxOut < 0 {
		x.outDone = true
		dec.SkipData(recorder.CodeOutput)
	}
	if _, err := dec.Header(); err != nil {
		return Result{}, fmt.Errorf("read cast: %w", err)
	}
	for {
		ev, err := dec.Next()
		if errors.Is(err, io.EOF) || errors.Is(err, recorder.ErrTornLine) {
			break
		}
		if err != nil {
			return Result{}, fmt.Errorf("read cast: %w", err)
		}
		switch ev.Code {
		case recorder.CodeOutput:
			if !x.outDone {
				x.screen.write(ev.Data, ev.Time)
				if x.outDone { // the budget ran out inside this event
					dec.SkipData(recorder.CodeOutput)
				}
			}
		case recorder.CodeInput:
			x.input.write(ev.Data, ev.Time)
		}
	}
	if !x.outDone {
		x.screen.close()
	}
	x.flushWindow()
	for _, e := range events {
		at := max(e.Time.Sub(row.Start), 0)
		switch e.Type {
		case eventSQL:
			if stmt, _ := e.Details["statement"].(string); stmt != "" {
				x.add(state.SearchSQL, stmt, at)
			}
		case state.EventSFTP:
			if text := sftpText(e.Details); text != "" {
				x.add(state.SearchSFTP, text, at)
			}
		}
	}
	return Result{Entries: x.entries, Truncated: x.truncated}, nil
}

// extractor collects the entries of one recording.
type extractor struct {
	entries   []state.SearchEntry
	truncated bool
	screen    *screenText
	input     *lineEditor

	maxOut   int
	outBytes int
	outDone  bool
	inBytes  int
	seen     map[uint64]struct{} // output lines already indexed
	seed     maphash.Seed
	win      strings.Builder // output lines of the open window
	winAt    time.Duration
}

func (x *extractor) add(kind, text string, at time.Duration) {
	x.entries = append(x.entries, state.SearchEntry{Kind: kind, Offset: at, Text: text})
}

// outputLine takes one line of terminal output into the open window.
func (x *extractor) outputLine(line string, at time.Duration) {
	if x.outDone {
		return
	}
	h := maphash.String(x.seed, line)
	if _, dup := x.seen[h]; dup {
		return
	}
	if x.outBytes+len(line) > x.maxOut {
		x.outDone, x.truncated = true, true
		return
	}
	x.seen[h] = struct{}{}
	x.outBytes += len(line)
	if x.win.Len() > 0 && (x.win.Len()+1+len(line) > state.MaxSearchEntryText || at-x.winAt > windowSpan) {
		x.flushWindow()
	}
	if x.win.Len() == 0 {
		x.winAt = at
	} else {
		x.win.WriteByte('\n')
	}
	x.win.WriteString(line)
}

// flushWindow makes the open output window an entry.
func (x *extractor) flushWindow() {
	if x.win.Len() > 0 {
		x.add(state.SearchOutput, x.win.String(), x.winAt)
		x.win.Reset()
	}
}

// inputLine takes one typed line.
func (x *extractor) inputLine(line string, at time.Duration) {
	if x.inBytes+len(line) > maxInputText {
		x.truncated = true
		return
	}
	x.inBytes += len(line)
	x.add(state.SearchInput, line, at)
}

// sftpText spells an sftp.op audit event as a line: "remove /tmp/x",
// "rename /a -> /b", "write /etc/hosts" (a file opened for writing or
// written to), "read /etc/hosts".
func sftpText(d map[string]any) string {
	op, _ := d["op"].(string)
	path, _ := d["path"].(string)
	if op == "" || path == "" {
		return ""
	}
	switch op {
	case "rename":
		to, _ := d["to"].(string)
		return "rename " + path + " -> " + to
	case "close":
		flags, _ := d["flags"].(string)
		written := fmt.Sprint(d["bytes_written"])
		if strings.Contains(flags, "write") || strings.Contains(flags, "append") || (written != "0" && written != "<nil>") {
			return "write " + path
		}
		return "read " + path
	}
	return op + " " + path
}
