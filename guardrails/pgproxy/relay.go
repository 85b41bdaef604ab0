package pgproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/posternhq/postern/state"
)

// maxShownRows bounds the rows of one statement rendered in the transcript.
const maxShownRows = 100

// deniedSQL raises the denial inside the server, so that the client gets
// ErrorResponse and ReadyForQuery in order and a transaction block fails as
// it would on any error.
func deniedSQL(msg string) string {
	return "DO $postern$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = " +
		quoteLiteral(msg) + "; END$postern$"
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// gate applies the rules to statements. It returns "" to let them pass or
// the client-visible reason of a denial.
func (c *conn) gate(stmts []string) string {
	for _, st := range stmts {
		norm := normalize(st)
		cls := classes(norm)
		for _, r := range c.s.Rules {
			if !r.matches(norm, cls) {
				continue
			}
			switch r.Action {
			case ActionAllow:
			case ActionApprove:
				if c.p.opts.Approver == nil {
					return "postern: statement needs approval, and approvals are not available"
				}
				err := c.p.opts.Approver.ApproveStatement(c.ctx, StatementRequest{
					Session: c.s.ID, Identity: c.s.Identity, Requester: c.s.Requester, Groups: c.s.Groups, Role: c.s.Role,
					Target: c.s.Target, Database: c.database, Statement: c.maskRec(st), Rule: r,
				})
				if err != nil {
					return "postern: statement not approved: " + err.Error()
				}
			default:
				return "postern: statement denied by policy: " + firstWord(strings.ToUpper(norm))
			}
			break
		}
	}
	return ""
}

func (r Rule) matches(norm string, cls []string) bool {
	if r.Class != "" {
		return containsString(cls, r.Class)
	}
	return r.Pattern != nil && r.Pattern.MatchString(norm)
}

func (c *conn) maskRec(s string) string {
	if c.s.Recording == nil {
		return s
	}
	out, _ := c.s.Recording.Mask([]byte(s))
	return string(out)
}

// push queues what the server will answer. Called with mu held.
func (c *conn) push(p *pending) {
	p.gen = c.gen
	p.start = c.p.now()
	c.queue = append(c.queue, p)
}

// errMalformed reports a protocol message the decoder could not read.
var errMalformed = errors.New("malformed protocol message")

// receive reads one message with r. A message pgproto3 cannot decode is
// errMalformed: older pgproto3 decoders panicked on some (FunctionCall with
// a truncated argument list, found by FuzzPGMessages), which here would take
// the whole bastion down, and newer ones return an error of their own
// unexported type; either way only the offending connection ends. Errors of
// the connection itself (EOF, a closed or timed-out socket) pass as they are.
func receive[M any](r func() (M, error)) (m M, err error) {
	defer func() {
		if p := recover(); p != nil {
			var zero M
			m, err = zero, fmt.Errorf("%w: %v", errMalformed, p)
		}
	}()
	m, err = r()
	if err != nil && !connError(err) {
		err = fmt.Errorf("%w: %w", errMalformed, err)
	}
	return m, err
}

// connError reports whether err is a failure of the connection rather than
// of a message's content.
func connError(err error) bool {
	var ne net.Error
	var se *os.SyscallError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) || errors.As(err, &se) || errors.Is(err, context.Canceled)
}

// fromClient relays client messages upstream, gating statements.
func (c *conn) fromClient() error {
	skip := false // a Parse was denied: drop messages until Sync
	sent := 0     // messages forwarded since the last Sync
	for {
		msg, err := receive(c.be.Receive)
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			stmts := splitStatements(m.String)
			if reason := c.gate(stmts); reason != "" {
				c.mu.Lock()
				for _, st := range stmts {
					c.push(&pending{sql: st, denied: reason})
				}
				c.gen++
				c.mu.Unlock()
				if err := c.writeUpstream(&pgproto3.Query{String: deniedSQL(reason)}); err != nil {
					return err
				}
				continue
			}
			c.mu.Lock()
			for _, st := range stmts {
				c.push(&pending{sql: st})
			}
			if len(stmts) == 0 {
				c.push(&pending{sql: ""})
			}
			c.gen++
			c.mu.Unlock()
		case *pgproto3.Parse:
			if skip {
				continue
			}
			if reason := c.gate(splitStatements(m.Query)); reason != "" {
				c.mu.Lock()
				p := &pending{sql: m.Query, denied: reason}
				p.start = c.p.now()
				c.mu.Unlock()
				c.complete(p, "", reason)
				if err := c.writeClient(&pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: "42501", Message: reason}); err != nil {
					return err
				}
				skip = true
				continue
			}
			c.mu.Lock()
			c.stmts[m.Name] = prepared{sql: m.Query, paramOID: append([]uint32(nil), m.ParameterOIDs...)}
			c.mu.Unlock()
		case *pgproto3.Bind:
			if skip {
				continue
			}
			c.mu.Lock()
			st := c.stmts[m.PreparedStatement]
			c.portals[m.DestinationPortal] = st
			c.mu.Unlock()
		case *pgproto3.Describe:
			if skip {
				continue
			}
			c.mu.Lock()
			c.push(&pending{describe: true, name: m.Name, portal: m.ObjectType == 'P'})
			c.mu.Unlock()
		case *pgproto3.Execute:
			if skip {
				continue
			}
			c.mu.Lock()
			st := c.portals[m.Portal]
			c.push(&pending{name: m.Portal, sql: st.sql, params: typeNames(st.paramOID), cols: st.cols})
			c.mu.Unlock()
		case *pgproto3.Sync:
			if skip {
				skip = false
				if sent == 0 {
					c.mu.Lock()
					tx := c.txStatus
					c.mu.Unlock()
					if err := c.writeClient(&pgproto3.ReadyForQuery{TxStatus: tx}); err != nil {
						return err
					}
					continue
				}
			}
			c.mu.Lock()
			c.gen++
			c.mu.Unlock()
			sent = -1
		case *pgproto3.Terminate:
			_ = c.writeUpstream(m)
			return errTerminate
		default:
			if skip {
				continue
			}
		}
		if err := c.writeUpstream(msg); err != nil {
			return err
		}
		sent++
	}
}

// head returns the first outstanding entry of the current cycle. Called
// with mu held.
func (c *conn) head() *pending {
	for _, p := range c.queue {
		if p.gen >= c.rfq {
			return p
		}
	}
	return nil
}

// pop removes p from the queue. Called with mu held.
func (c *conn) pop(p *pending) {
	for i, q := range c.queue {
		if q == p {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return
		}
	}
}

// fromServer relays server messages to the client, masking rows and
// completing statements.
func (c *conn) fromServer() error {
	for {
		msg, err := receive(c.fe.Receive)
		if err != nil {
			return err
		}
		var done *pending
		var tag, errText string
		c.mu.Lock()
		h := c.head()
		switch m := msg.(type) {
		case *pgproto3.ParameterDescription:
			if h != nil && h.describe && !h.portal {
				st := c.stmts[h.name]
				st.paramOID = append([]uint32(nil), m.ParameterOIDs...)
				c.stmts[h.name] = st
			}
		case *pgproto3.RowDescription:
			cols := c.columns(m)
			switch {
			case h == nil:
			case h.describe:
				if h.portal {
					st := c.portals[h.name]
					st.cols = cols
					c.portals[h.name] = st
				} else {
					st := c.stmts[h.name]
					st.cols = cols
					c.stmts[h.name] = st
				}
				c.pop(h)
			default:
				h.cols = cols
				c.renderHeader(h)
			}
		case *pgproto3.NoData:
			if h != nil && h.describe {
				c.pop(h)
			}
		case *pgproto3.DataRow:
			if h != nil && !h.describe {
				if h.rows == 0 && h.out.Len() == 0 {
					c.renderHeader(h)
				}
				h.rows++
				c.maskRow(h, m)
			}
		case *pgproto3.CommandComplete:
			if h != nil && !h.describe {
				done, tag = h, string(m.CommandTag)
				c.pop(h)
			}
		case *pgproto3.EmptyQueryResponse:
			if h != nil && !h.describe {
				done = h
				c.pop(h)
			}
		case *pgproto3.PortalSuspended:
			if h != nil && !h.describe {
				done, tag = h, "SUSPENDED"
				c.pop(h)
			}
		case *pgproto3.ErrorResponse:
			if h != nil {
				c.pop(h)
				if !h.describe {
					done = h
					if h.denied == "" {
						errText = m.Code + ": " + m.Message
					}
				}
			}
		case *pgproto3.ReadyForQuery:
			c.txStatus = m.TxStatus
			var keep []*pending
			for _, p := range c.queue {
				if p.gen > c.rfq {
					keep = append(keep, p)
				}
			}
			c.queue = keep
			c.rfq++
		}
		c.mu.Unlock()
		if done != nil {
			c.complete(done, tag, errText)
		}
		if err := c.writeClient(msg); err != nil {
			return err
		}
	}
}

// columns describes the columns of a result, with their mask labels.
func (c *conn) columns(m *pgproto3.RowDescription) []column {
	cols := make([]column, len(m.Fields))
	for i, f := range m.Fields {
		name := string(f.Name)
		cols[i] = column{name: name, binary: f.Format == 1,
			mask: c.s.Stream.MaskColumn(name), rmask: c.s.Recording.MaskColumn(name)}
	}
	return cols
}

// maskRow rewrites the values of m for the client and renders the row,
// masked for the recording, into the transcript. Called with mu held.
func (c *conn) maskRow(h *pending, m *pgproto3.DataRow) {
	show := c.rec != nil && h.shown < maxShownRows
	var line []string
	for i, v := range m.Values {
		var col column
		if i < len(h.cols) {
			col = h.cols[i]
		}
		if show {
			line = append(line, c.recValue(col, v))
		}
		if v == nil {
			continue
		}
		switch {
		case col.mask != "" && col.binary:
			m.Values[i] = nil
			c.noteMasked()
		case col.mask != "":
			m.Values[i] = []byte("[MASKED:" + col.mask + "]")
			c.noteMasked()
		case !col.binary && c.s.Stream != nil:
			if out, n := c.s.Stream.Mask(v); n > 0 {
				m.Values[i] = out
				c.noteMasked()
			}
		}
	}
	if show {
		h.shown++
		h.out.WriteString(" " + strings.Join(line, " | ") + "\r\n")
	}
}

func (c *conn) noteMasked() { c.p.m.masked.Inc() }

// recValue is a value as the transcript shows it.
func (c *conn) recValue(col column, v []byte) string {
	switch {
	case v == nil:
		return ""
	case col.rmask != "":
		c.recMasked()
		return "[MASKED:" + col.rmask + "]"
	case col.binary:
		return "<binary>"
	}
	if c.s.Recording != nil {
		if out, n := c.s.Recording.Mask(v); n > 0 {
			c.recMasked()
			v = out
		}
	}
	return printable(string(v))
}

// recMasked notes that the recording holds masked values. Called with mu
// held.
func (c *conn) recMasked() {
	if c.masked || c.rec == nil {
		return
	}
	c.masked = true
	c.rec.SetMasked()
	_ = c.rec.Marker("masking applied")
}

func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// renderHeader writes the column header of h into its transcript. Called
// with mu held.
func (c *conn) renderHeader(h *pending) {
	if c.rec == nil || len(h.cols) == 0 || h.out.Len() > 0 {
		return
	}
	names := make([]string, len(h.cols))
	seps := make([]string, len(h.cols))
	for i, col := range h.cols {
		names[i] = col.name
		seps[i] = strings.Repeat("-", len(col.name)+2)
	}
	h.out.WriteString(" " + strings.Join(names, " | ") + "\r\n")
	h.out.WriteString(strings.Join(seps, "+") + "\r\n")
}

// queryRecord is one line of the JSONL query log.
type queryRecord struct {
	Time       time.Time `json:"time"`
	Session    string    `json:"session,omitempty"`
	Identity   string    `json:"identity"`
	Target     string    `json:"target"`
	Database   string    `json:"database"`
	Statement  string    `json:"statement"`
	Params     []string  `json:"params,omitempty"`
	Rows       int64     `json:"rows"`
	Tag        string    `json:"tag,omitempty"`
	DurationMS float64   `json:"duration_ms"`
	Error      string    `json:"error,omitempty"`
	Denied     string    `json:"denied,omitempty"`
}

// complete records a finished statement: audit event, query log line and
// transcript.
func (c *conn) complete(p *pending, tag, errText string) {
	now := c.p.now()
	stmt := c.maskRec(p.sql)
	q := queryRecord{
		Time: now, Session: c.s.ID, Identity: c.s.Identity, Target: c.s.Target, Database: c.database,
		Statement: stmt, Params: p.params, Rows: p.rows, Tag: tag, Error: errText, Denied: p.denied,
		DurationMS: float64(now.Sub(p.start).Microseconds()) / 1000,
	}
	outcome := "ok"
	switch {
	case p.denied != "":
		outcome = "denied"
	case errText != "":
		outcome = "error"
	}
	c.p.m.statements.WithLabelValues(outcome).Inc()
	if a := c.p.opts.Audit; a != nil {
		d := map[string]any{"database": c.database, "statement": stmt, "rows": p.rows, "duration_ms": q.DurationMS, "outcome": outcome}
		if tag != "" {
			d["tag"] = tag
		}
		if len(p.params) > 0 {
			d["params"] = p.params
		}
		if errText != "" {
			d["error"] = errText
		}
		if p.denied != "" {
			d["denied"] = p.denied
		}
		a(c.ctx, state.Event{Type: EventQuery, Actor: c.s.Identity, Target: c.s.Target, Session: c.s.ID, Details: d})
	}
	line, _ := json.Marshal(q)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rec == nil {
		return
	}
	c.qlog.Write(line)
	c.qlog.WriteByte('\n')
	var b bytes.Buffer
	b.WriteString(c.database + "=> " + strings.ReplaceAll(stmt, "\n", "\r\n") + ";\r\n")
	b.Write(p.out.Bytes())
	switch {
	case p.denied != "":
		b.WriteString("ERROR:  " + p.denied + "\r\n")
	case errText != "":
		b.WriteString("ERROR:  " + errText + "\r\n")
	case len(p.cols) > 0 || p.rows > 0:
		if p.rows > int64(p.shown) {
			b.WriteString(fmt.Sprintf("... %d more rows\r\n", p.rows-int64(p.shown)))
		}
		if p.rows == 1 {
			b.WriteString("(1 row)\r\n")
		} else {
			b.WriteString("(" + strconv.FormatInt(p.rows, 10) + " rows)\r\n")
		}
	case tag != "":
		b.WriteString(tag + "\r\n")
	}
	b.WriteString("\r\n")
	_ = c.rec.Output(b.Bytes())
}

// typeNames names parameter type OIDs.
func typeNames(oids []uint32) []string {
	if len(oids) == 0 {
		return nil
	}
	out := make([]string, len(oids))
	for i, o := range oids {
		if n, ok := oidNames[o]; ok {
			out[i] = n
		} else {
			out[i] = "oid:" + strconv.FormatUint(uint64(o), 10)
		}
	}
	return out
}

var oidNames = map[uint32]string{
	0: "unknown", 16: "bool", 17: "bytea", 20: "int8", 21: "int2", 23: "int4", 25: "text", 700: "float4",
	701: "float8", 1042: "bpchar", 1043: "varchar", 1082: "date", 1114: "timestamp", 1184: "timestamptz",
	1700: "numeric", 2950: "uuid", 3802: "jsonb", 114: "json",
}
